"""Degraded copies of a dataset's train split, as a CSV dataset to train on beside it.

Each train face is copied once, as one domain of the suite shows it (old print, webcam,
CCTV or phone, drawn per face with its own seed), so that a network learns the true age
of faces as other photo sources make them. Only the train split is copied: the copies'
own 60/20/20 split then puts some of them in val, where early stopping sees them, and
none of a val or test face ever reaches training.

    python tools/degraded_copies.py --data utkface:data/UTKFace \\
        --out data/degraded-utkface
    agelens train --data utkface:data/UTKFace \\
        --data csv:data/degraded-utkface/labels.csv ...

The copies are derived from the dataset's images and carry its licence: keep them out of
any repository.
"""

from __future__ import annotations

import argparse
import csv
import zlib
from pathlib import Path

from PIL import Image
from rich.progress import track

from agelens.data.datasets import read_dataset, select_split
from agelens.evaluation.domains import CLEAN, DOMAINS, degrade
from agelens.pipeline.images import load_image

#: The suite is seeded with 0; training copies use another seed, so they are other pictures.
SEED = 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset spec, as agelens train takes")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    samples = select_split(read_dataset(args.data), "train")
    domains = [name for name in DOMAINS if name != CLEAN]
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "labels.csv").open("w", newline="") as table:
        writer = csv.writer(table)
        writer.writerow(["path", "age", "group", "gender", "race"])
        for sample in track(samples, description="Degrading"):
            domain = domains[zlib.crc32(sample.path.name.encode()) % len(domains)]
            picture = degrade(load_image(sample.path), domain, sample.path.name, SEED)
            name = f"{domain}-{sample.path.stem}.png"
            Image.fromarray(picture).save(args.out / name, compress_level=1)
            writer.writerow(
                [name, sample.age, sample.group or "", sample.gender or "", sample.race or ""]
            )


if __name__ == "__main__":
    main()
