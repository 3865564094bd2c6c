"""``agelens video``'s tracker on a made clip whose truth is known: speed against real
time, identities kept, the shown age's jitter against each frame's own, and memory.

The clip (``tools/make_test_clip.py``): three people at 960x540, 25 fps; two cross at
one height (the one in front hides the other), one walks out of the frame and back; the
light changes and the clip is MPEG-4 compressed.

    python bench/video.py --seconds 20 --out bench/results/video.json
    python bench/video.py --seconds 600 --one-run --out bench/results/video_10min.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agelens import AgeEstimator
from agelens.pipeline.runtime import machine_record
from agelens.video import AgeTracker, read_frames
from agelens.video.reads import DEFAULT_READS_PER_SECOND, SETTLING_SECONDS, ReadBudget
from tools.make_test_clip import make_clip, sample_faces

#: The reading before the per-person budget: every face of every frame, six copies each.
EVERY_FRAME = "every frame, 3 light levels x mirror"


def run(
    clip: Path, truth: list[list[dict]], every: int, fps: int, threads: int, reads: str
) -> dict:
    budget = ReadBudget(math.inf, every_light=True) if reads == EVERY_FRAME else ReadBudget()
    tracker = AgeTracker(AgeEstimator(threads=threads), every=every, budget=budget)
    process = psutil.Process()
    rows, rss = [], []
    started = time.perf_counter()
    for frame in read_frames(str(clip)):
        rows += tracker.update(frame)
        if frame.index % fps == 0:
            rss.append(process.memory_info().rss)
    seconds = time.perf_counter() - started
    people = tracker.finish()
    kept: dict[int, float] = {}
    held: dict[int, int] = {}
    by_frame: dict[int, list] = {}
    for r in rows:
        by_frame.setdefault(r.frame, []).append(r)
    for person in {box["person"] for boxes in truth for box in boxes}:
        tracks = []
        for index, boxes in enumerate(truth):
            for true in boxes:
                if true["person"] != person or true["hidden"] > 0.5:
                    continue  # counted where the person can be seen
                x1, y1, x2, y2 = true["box"]
                tracks += [
                    r.track
                    for r in by_frame.get(index, [])
                    if x1 <= (r.box[0] + r.box[2]) / 2 <= x2
                    and y1 <= (r.box[1] + r.box[3]) / 2 <= y2
                ]
        kept[person] = round(max(tracks.count(t) for t in set(tracks)) / len(tracks), 4)
        # Tracks that held this person for a second or more: 1 when identity is kept.
        held[person] = sum(1 for t in set(tracks) if tracks.count(t) >= fps)
    shown_jitter, frame_jitter, settle = [], [], []
    by_track: dict[int, list] = {}
    for r in rows:
        if r.age is not None:
            by_track.setdefault(r.track, []).append(r)
    for mine in by_track.values():
        late = [r for r in mine if r.time - mine[0].time >= 2.0]
        if len(late) < 10:
            continue
        ages = np.array([r.age for r in late])
        shown_jitter.append(float(np.abs(np.diff(ages)).mean()))
        own = np.array([r.frame_age for r in late if r.frame_age is not None])
        frame_jitter.append(float(np.abs(np.diff(own)).mean()))
        settle.append(float(np.abs(ages - ages[-1]).max()))
    frames = len(truth)
    read = sum(r.frame_age is not None for r in rows)
    return {
        "reads": reads,
        "network_reads_per_face_frame": round(read / len(rows), 4),
        "final_ages": {str(p.track): p.age for p in people if p.age is not None},
        "every": every,
        "threads_per_network_run": threads,
        "frames": frames,
        "seconds": round(seconds, 2),
        "times_real_time": round(frames / fps / seconds, 2),
        "people_found": len(people),
        "share_of_frames_in_own_track": kept,
        "tracks_holding_each_person_1s_or_more": held,
        "counted": "frames where at most half of the person's face is hidden",
        "shown_age_change_per_frame_after_2s": round(float(np.mean(shown_jitter)), 4),
        "frame_age_change_per_frame_after_2s": round(float(np.mean(frame_jitter)), 4),
        "shown_age_most_from_final_after_2s": round(float(np.max(settle)), 3),
        "rss_growth_mb": round((max(rss) - rss[min(len(rss) - 1, 2)]) / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("bench/results/video.json"))
    parser.add_argument(
        "--one-run", action="store_true", help="only the budget with every core (long clips)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "people.mp4"
        truth = make_clip(clip, sample_faces(), seconds=args.seconds, size=(960, 540), fps=args.fps)
        # As ``agelens video`` runs it, each network run gets every core; and with one.
        cores = os.cpu_count() or 1
        rate = DEFAULT_READS_PER_SECOND
        budget = f"every frame for {SETTLING_SECONDS:g} s, then {rate:g} a second"
        settings = [(1, cores, budget)]
        if not args.one_run:
            settings += [(1, cores, EVERY_FRAME), (1, 1, budget)]
        runs = [run(clip, truth, every, args.fps, threads, r) for every, threads, r in settings]
        whole = None
        if not args.one_run:  # the whole command, from start-up to its last line
            started = time.perf_counter()
            command = [sys.executable, "-m", "agelens", "video", str(clip), "--json"]
            subprocess.run(command, check=True, capture_output=True)
            whole = time.perf_counter() - started
    final = [run["final_ages"] for run in runs if run["reads"] == EVERY_FRAME]
    for row in runs:
        if final and row["reads"] != EVERY_FRAME:
            gaps = [abs(age - final[0][t]) for t, age in row["final_ages"].items() if t in final[0]]
            row["final_age_most_from_every_frame"] = round(max(gaps), 3) if gaps else None
    results = {
        "clip": f"tools/make_test_clip.py: 3 people, 960x540, {args.fps} fps, {args.seconds:g} s",
        "model": "cydral-v1",
        "runs": runs,
        "whole_command": None
        if whole is None
        else {
            "command": "agelens video CLIP --json",
            "seconds": round(whole, 2),
            "times_real_time": round(len(truth) / args.fps / whole, 2),
        },
        "machine": machine_record(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
