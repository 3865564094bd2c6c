"""Does a video track's 90% interval cover 90% of people, and does its shown age settle?
Each of a seeded sample of UTKFace test faces is made into a clip of itself (25 fps: the
face drifts, grows and shrinks a little, the light changes, each frame JPEG-compressed),
tracked with :class:`~agelens.video.AgeTracker`, and its final interval checked against
the true age; beside it, the coverage of the same faces' single-frame intervals. From
the track's first 2 s on: how far its shown age strays from its final one, and how much
it moves a frame.

    python bench/video_coverage.py --data data --faces 400 --seconds 2 \
        --out bench/results/video_coverage.json
    python bench/video_coverage.py --data data --faces 200 --seconds 8 \
        --out bench/results/video_settle.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agelens import AgeEstimator
from agelens.data.datasets import read_dataset, select_split
from agelens.pipeline.runtime import machine_record
from tools.make_test_clip import track_face_clip


def _settling(strays: list[float], moves: list[float]) -> dict:
    """From 2 s on: the shown age's largest distance from its final value, and its mean
    change a frame, over the tracks."""
    return {
        "tracks_over_2s": len(strays),
        "shown_age_most_from_final_after_2s": {
            "median": round(float(np.median(strays)), 2),
            "p90": round(float(np.quantile(strays, 0.9)), 2),
            "max": round(float(np.max(strays)), 2),
            "share_within_3_years": round(float(np.mean(np.array(strays) <= 3)), 4),
        },
        "shown_age_change_per_frame_after_2s": round(float(np.mean(moves)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("-m", "--model", default="cydral-v1")
    parser.add_argument("--faces", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/video_coverage.json"))
    args = parser.parse_args()
    samples = select_split(read_dataset(f"utkface:{args.data}/UTKFace"), "test")
    samples = random.Random(0).sample(samples, min(args.faces, len(samples)))
    estimator = AgeEstimator(args.model)
    rng = random.Random(1)
    track_hits, frame_hits, widths, frame_widths, found = [], [], [], [], 0
    strays, moves = [], []
    for sample in samples:
        face = Image.open(sample.path).convert("RGB")
        person, shown = track_face_clip(estimator, face, rng, args.seconds)
        if person is None or person.interval is None:
            continue
        found += 1
        low, high = person.interval
        track_hits.append(low <= sample.age <= high)
        widths.append(high - low)
        first = shown[0]  # the first frame's own interval, as a photo would give it
        frame_hits.append(first.interval[0] <= sample.age <= first.interval[1])
        frame_widths.append(first.interval[1] - first.interval[0])
        late = [f.age for f in shown if f.track == person.track and f.time >= first.time + 2]
        if len(late) > 1:
            strays.append(max(abs(age - late[-1]) for age in late))
            moves.append(float(np.abs(np.diff(late)).mean()))
    results = {
        "model": args.model,
        "data": "UTKFace test (content-hash dedup, sha1 60/20/20), a seeded sample",
        "faces": len(samples),
        "tracked": found,
        "seconds_per_clip": args.seconds,
        "track_interval_covers": round(float(np.mean(track_hits)), 4),
        "single_frame_interval_covers": round(float(np.mean(frame_hits)), 4),
        "track_interval_mean_width": round(float(np.mean(widths)), 2),
        "single_frame_interval_mean_width": round(float(np.mean(frame_widths)), 2),
        **(_settling(strays, moves) if strays else {}),
        "machine": machine_record(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
