"""Each candidate age model on the checks that stand in for collections we do not have.

For every model given with -m (a bundle name or folder), with `agelens evaluate`:

- ``utk-crops``: UTKFace test split (content-hash dedup, sha1 60/20/20), aligned crops:
  MAE, CS@5, 90% coverage, MAE by band, and the gate over 18 with the model's policy;
- ``utk-photos``: the same faces padded to 400x400 with their edge pixels, so YuNet must
  find them (MAE, and MAE of the 13-17-year-olds);
- ``imfdb``: the Indian-actors test split, YOUNG/MIDDLE/OLD accuracy from the sums of the
  age distribution (zero-shot for every model not trained on that set's train split);
- ``blur``, ``jpeg``, ``dark``: a seeded draw of UTKFace test crops degraded as phone
  photos are (Gaussian blur of radius 2 px, JPEG quality 15, a third of the light with
  sensor noise), MAE.

Rows of models not run this time are kept from the last run.

    python bench/cross_dataset.py --data data -m cydral-v1 -m agelens-utk-v1 \\
        --out bench/results/cross_dataset.json
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from rich.console import Console
from rich.table import Table
from seed_experiments import FOLDERS, evaluate, merged, padded_photos

from agelens import load_image
from agelens.data.datasets import read_dataset, select_split

DEGRADED_FACES = 1000


def _blur(image: Image.Image, _: np.random.Generator) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(2))


def _dark(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) / 3 + rng.normal(0, 3, (*image.size[::-1], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


#: name -> (how the crop is changed, the JPEG quality it is saved at).
DEGRADATIONS: dict[str, tuple[Callable[[Image.Image, np.random.Generator], Image.Image], int]] = {
    "blur": (_blur, 95),
    "jpeg": (lambda image, _: image, 15),
    "dark": (_dark, 95),
}


def degraded(data: Path, folder: Path, name: str) -> Path:
    """A seeded draw of UTKFace test crops, degraded, as a CSV dataset."""
    samples = select_split(read_dataset(f"utkface:{data}"), "test")
    random.Random(0).shuffle(samples)
    change, quality = DEGRADATIONS[name]
    rng = np.random.default_rng(0)
    rows = ["path,age,gender,race"]
    for index, sample in enumerate(samples[:DEGRADED_FACES]):
        image = change(Image.fromarray(load_image(sample.path)), rng)
        image.save(folder / f"{name}-{index:05d}.jpg", quality=quality)
        rows.append(f"{name}-{index:05d}.jpg,{sample.age:g},{sample.gender},{sample.race}")
    (folder / f"{name}.csv").write_text("\n".join(rows) + "\n")
    return folder / f"{name}.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("-m", "--model", action="append", required=True)
    parser.add_argument("--out", type=Path, default=Path("bench/results/cross_dataset.json"))
    args = parser.parse_args()
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    utk, imfdb = args.data / FOLDERS["utkface"], args.data / FOLDERS["imfdb"]
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def keep(check: str, rows: list[dict[str, Any]]) -> None:
        """Each check is written as soon as it is done, so a long run keeps what it did."""
        results[check] = merged(results.get(check, []), rows)
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    keep("utk-crops", evaluate(f"utkface:{utk}", "imfdb", args.model, "--aligned"))
    keep("imfdb", evaluate(f"imfdb:{imfdb}", "imfdb", args.model, "--aligned"))
    with tempfile.TemporaryDirectory() as folder:
        photos = f"csv:{padded_photos(utk, Path(folder))}"
        keep("utk-photos", evaluate(photos, "imfdb", args.model))
        for name in DEGRADATIONS:
            spec = f"csv:{degraded(utk, Path(folder), name)}"
            keep(name, evaluate(spec, "imfdb", args.model, "--aligned"))
    table = Table(title="Checks across datasets")
    table.add_column("model")
    for check in results:
        table.add_column(check)
    models = {row["model"] for rows in results.values() for row in rows}
    for model in sorted(models):
        cells = []
        for rows in results.values():
            row = next((r for r in rows if r["model"] == model), None)
            key = "accuracy" if row is not None and "mae" not in row else "mae"
            cells.append("-" if row is None else f"{row.get(key, float('nan')):.4g}")
        table.add_row(model, *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
