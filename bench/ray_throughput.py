"""Ray engine against the local worker pool, in one run, on the same whole photos.

The first N files of the UTKFace test split (content-hash split after dedup), each crop
padded to 400x400 with its edge pixels (as ``benchmark.py`` makes them, in a temporary
folder deleted afterwards), go through:

- the local pool (``agelens predict DIR``'s engine: a worker process per core);
- ``--engine ray`` with 1 actor, then 2 actors, on a local Ray started once.

Each run reports images/s; the Ray runs also report the driver's resident memory before
and after. Results go to ``bench/results/ray.json``.

    python bench/ray_throughput.py --data data/UTKFace --files 2000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import psutil
import ray
from benchmark import make_photos
from rich.console import Console
from rich.table import Table

from agelens import AgeEstimator
from agelens.batch import EstimatorPool
from agelens.data.datasets import read_dataset, select_split
from agelens.distributed import job
from agelens.pipeline.runtime import machine_record


def local_pool(photos: list[Path]) -> dict:
    estimator = AgeEstimator()
    started = time.perf_counter()
    with EstimatorPool(estimator) as pool:
        faces = sum(len(result.faces) for result in pool.estimate_files(photos))
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 1),
        "images_per_s": round(len(photos) / seconds, 1),
        "faces": faces,
    }


def on_ray(folder: Path, count: int, actors: int, out: Path) -> dict:
    driver = psutil.Process()
    rss_before = driver.memory_info().rss
    started = time.perf_counter()
    job.run(
        str(folder),
        out,
        address=None,
        actors=actors,
        resume=False,
        model="cydral-v1",
        aligned=False,
        on_start=lambda todo, done: None,
        on_images=lambda n: None,
    )
    seconds = time.perf_counter() - started
    rss_after = driver.memory_info().rss
    return {
        "actors": actors,
        "seconds": round(seconds, 1),
        "images_per_s": round(count / seconds, 1),
        "driver_rss_mb": [round(rss_before / 2**20, 1), round(rss_after / 2**20, 1)],
        "driver_rss_growth_mb": round((rss_after - rss_before) / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/UTKFace"))
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/ray.json"))
    args = parser.parse_args()

    samples = select_split(read_dataset(f"utkface:{args.data}"), "test")[: args.files]
    results: dict = {
        "data": f"{args.data.name} test split (sha1 60/20/20 after dedup), first {len(samples)}"
        " crops padded to 400x400",
        "machine": machine_record(),
        "ray": ray.__version__,
    }
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "photos").mkdir()
        photos = make_photos([s.path for s in samples], Path(folder) / "photos")
        ray.init(include_dashboard=False, logging_level="warning")
        results["local_pool"] = local_pool(photos)
        results["ray"] = [
            on_ray(Path(folder) / "photos", len(photos), actors, Path(folder) / f"{actors}.parquet")
            for actors in (1, 2)
        ]
        ray.shutdown()
    one, two = results["ray"]
    local = results["local_pool"]["images_per_s"]
    results["ray_2_over_local"] = round(two["images_per_s"] / local, 3)
    results["ray_2_over_1"] = round(two["images_per_s"] / one["images_per_s"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = Table(title=results["data"])
    for column in ("engine", "images/s", "driver RSS growth"):
        table.add_column(column)
    table.add_row("local pool", str(results["local_pool"]["images_per_s"]), "-")
    for run in results["ray"]:
        table.add_row(
            f"ray, {run['actors']} actor(s)",
            str(run["images_per_s"]),
            f"{run['driver_rss_growth_mb']:+.1f} MB",
        )
    Console().print(table)
    Console().print(
        f"2 actors / local pool: {results['ray_2_over_local']}; "
        f"2 actors / 1: {results['ray_2_over_1']}"
    )


if __name__ == "__main__":
    main()
