"""Fit how far a video track's interval must reach to cover 90% of people, and write it
into the bundle's manifest (``calibration.video.interval_scale``; ``docs/video.md``).

A track's interval is the bundle's calibrated interval of its pooled distribution,
narrowed as far as its frames are different views. The bundle was calibrated on photos;
video frames are relit and compressed, and a track pools them. So each of a seeded
sample of the UTKFace faces the bundle was calibrated on (its calibration's split) is
made into a clip of itself (:func:`tools.make_test_clip.face_frames`) and tracked; the
scale that makes the final intervals cover 90% of the true ages is the split-conformal
quantile of each face's needed scale. The scale only widens: how far a track narrows is
the shared-error model's (``agelens.video.steady``), and a fit on the faces a bundle was
calibrated on is optimistic, so a fitted scale under 1 is recorded but not applied.
``agelens calibrate`` replaces the calibration, and this with it: fit again after it.

    python tools/fit_video_intervals.py --data data -m cydral-v1 --faces 800 --seconds 3
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import track

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agelens import AgeEstimator, strict_json
from agelens.data.datasets import read_dataset, select_split
from tools.make_test_clip import track_face_clip

LEVEL = 0.9


def needed_scale(age: float, interval: tuple[float, float], truth: float) -> float:
    """How many times its half-width on the truth's side the interval must reach."""
    low, high = interval
    reach = age - low if truth < age else high - age
    return abs(truth - age) / max(reach, 1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("-m", "--model", default="cydral-v1")
    parser.add_argument("--faces", type=int, default=800)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dry-run", action="store_true", help="print the fit; write nothing")
    args = parser.parse_args()
    estimator = AgeEstimator(args.model)
    calibration = estimator.bundle.manifest.get("calibration")
    if not calibration:
        sys.exit(f"{args.model} has no calibration to scale: run agelens calibrate first")
    split = calibration.get("split", "val")
    samples = select_split(read_dataset(f"utkface:{args.data}/UTKFace"), split)
    samples = random.Random(0).sample(samples, min(args.faces, len(samples)))
    current = float((calibration.get("video") or {}).get("interval_scale", 1.0))
    rng, scales = random.Random(1), []
    for sample in track(samples, description="Clips"):
        face = Image.open(sample.path).convert("RGB")
        person, _ = track_face_clip(estimator, face, rng, args.seconds)
        if person is not None and person.age is not None and person.interval is not None:
            scales.append(needed_scale(person.age, person.interval, float(sample.age)))
    rank = min(1.0, LEVEL * (1 + 1 / len(scales)))
    factor = float(np.quantile(scales, rank, method="higher"))
    video = {
        "interval_scale": round(max(1.0, current * factor), 4),
        "fitted_scale": round(current * factor, 4),
        "level": LEVEL,
        "covered_before": round(float(np.mean(np.array(scales) <= 1.0)), 4),
        "data": f"UTKFace {split} (content-hash dedup, sha1 60/20/20), a seeded sample",
        "faces": len(scales),
        "clip_seconds": args.seconds,
        "clips": "tools/make_test_clip.py face_frames, seed 1",
    }
    print(json.dumps(video, indent=2))
    if not args.dry_run:
        path = estimator.bundle.folder / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["calibration"]["video"] = video
        path.write_text(strict_json.dumps(manifest, indent=2) + "\n")
        print(f"written to {path}")


if __name__ == "__main__":
    main()
