"""How much of a face's age error is shared by every frame of it: the basis of how far a
video track's interval may narrow (``docs/video.md``).

Each UTKFace val face is shown as several "frames": shifted, scaled, lit and compressed a
little differently, as consecutive video frames of one person are. A face's error on a
frame is its shared error (the person looks older or younger than they are, to this
network) plus frame noise; averaging frames removes only the noise. The script writes
the shares of the two and what they imply for an average of n frames.

    python bench/frame_correlation.py --data data -m cydral-v1 --faces 1000 --frames 6
"""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from agelens import AgeEstimator
from agelens.data.datasets import read_dataset, select_split
from agelens.pipeline.images import load_image
from agelens.pipeline.network import LIGHT_GAINS
from agelens.pipeline.runtime import machine_record


def frame_of(image: np.ndarray, rng: random.Random) -> np.ndarray:
    """One video-like view of a face crop: a shift and scale of up to 5%, light +-20%,
    JPEG quality 60-90."""
    pil = Image.fromarray(image)
    side = pil.width
    scale = rng.uniform(0.95, 1.05)
    crop = side / scale
    cx = side / 2 + rng.uniform(-0.05, 0.05) * side
    cy = side / 2 + rng.uniform(-0.05, 0.05) * side
    box = (cx - crop / 2, cy - crop / 2, cx + crop / 2, cy + crop / 2)
    pil = pil.transform((side, side), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR)
    pil = ImageEnhance.Brightness(pil).enhance(rng.uniform(0.8, 1.2))
    buffer = io.BytesIO()
    pil.save(buffer, "JPEG", quality=rng.randint(60, 90))
    return load_image(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("-m", "--model", default="cydral-v1")
    parser.add_argument("--faces", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("bench/results/frame_correlation.json"))
    args = parser.parse_args()
    samples = select_split(read_dataset(f"utkface:{args.data}/UTKFace"), "val")
    samples = random.Random(0).sample(samples, min(args.faces, len(samples)))
    estimator = AgeEstimator(args.model)
    rng = random.Random(1)
    errors = np.zeros((len(samples), args.frames))
    for row, sample in enumerate(samples):
        image = load_image(sample.path)
        frames = [frame_of(image, rng) for _ in range(args.frames)]
        # The light levels a track's reads cycle through, pooled.
        faces = estimator.estimate_arrays(frames, aligned=True, gains=LIGHT_GAINS)
        errors[row] = [found[0].age - sample.age for found in faces]
    within = float(errors.var(axis=1, ddof=1).mean())  # frame noise
    shared = max(0.0, float(errors.mean(axis=1).var(ddof=1)) - within / args.frames)
    share = shared / (shared + within)
    results = {
        "model": args.model,
        "data": "UTKFace val (content-hash dedup, sha1 60/20/20), a seeded sample",
        "faces": len(samples),
        "frames_per_face": args.frames,
        "frame_noise_sd": round(within**0.5, 3),
        "shared_sd": round(shared**0.5, 3),
        "shared_share": round(share, 4),
        # The sd of an n-frame average, as a share of one frame's.
        "average_sd_ratio": {
            str(n): round(float(np.sqrt(share + (1 - share) / n)), 4)
            for n in (1, 2, 5, 10, 25, 100)
        },
        "machine": machine_record(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
