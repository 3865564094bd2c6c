"""Fuzz the server's decode path: seeded mutations of valid images, counted by outcome.

Valid JPEG, PNG, GIF (still and animated), TIFF, WebP and BMP files are mutated (bytes
flipped, runs zeroed, cut short, chunks repeated) and each mutant goes through
``load_image(..., still_only=True)``, as an upload does. The only acceptable outcomes are
an image or one of AgeLens's own errors; anything else is counted as untyped, with
the first examples kept. The CI test runs a few thousand of these; this script runs as
many as asked and writes the counts.

    python bench/fuzz_decode.py --inputs 200000 --out bench/results/fuzz_decode.json
"""

from __future__ import annotations

import argparse
import io
import json
import random
import struct
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from agelens import load_image
from agelens.errors import AgeLensError
from agelens.pipeline.runtime import machine_record

SEED_FORMATS = {"JPEG": {"quality": 90}, "PNG": {}, "GIF": {}, "TIFF": {}, "WEBP": {}, "BMP": {}}


def encoded(fmt: str, size: tuple[int, int] = (48, 40), **extra: object) -> bytes:
    """A small valid image of ``fmt`` (an animated GIF with ``save_all=True``)."""
    rng = np.random.default_rng(len(fmt))
    image = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8))
    buffer = io.BytesIO()
    if fmt == "GIF" and extra.get("save_all"):
        frames = [image.quantize(16), image.rotate(90).quantize(16)]
        frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    else:
        image.save(buffer, fmt, **{**SEED_FORMATS.get(fmt, {}), **extra})
    return buffer.getvalue()


def seeds() -> dict[str, bytes]:
    files = {fmt: encoded(fmt) for fmt in SEED_FORMATS}
    files["GIF-animated"] = encoded("GIF", save_all=True)
    files["TIFF-deflate"] = encoded("TIFF", compression="tiff_adobe_deflate")
    return files


def mutants(data: bytes, count: int, seed: int) -> Iterator[bytes]:
    """Seeded mutations: bytes flipped, runs zeroed, cut short, a chunk repeated."""
    rng = random.Random(seed)
    for _ in range(count):
        mutable = bytearray(data)
        kind = rng.randrange(4)
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                mutable[rng.randrange(len(mutable))] = rng.randrange(256)
        elif kind == 1:
            start = rng.randrange(len(mutable))
            mutable[start : start + rng.randint(1, 16)] = bytes(rng.randint(1, 16))
        elif kind == 2:
            mutable = mutable[: rng.randrange(1, len(mutable))]
        else:
            start = rng.randrange(len(mutable))
            mutable[start:start] = mutable[start : start + rng.randint(1, 64)]
        yield bytes(mutable)


def fuzz(inputs: int, seed: int = 0) -> dict[str, object]:
    """Run ``inputs`` mutants spread over the seed files; counts by outcome."""
    outcomes: Counter[str] = Counter()
    untyped: list[str] = []
    files = seeds()
    per_file = -(-inputs // len(files))
    for number, (name, data) in enumerate(files.items()):
        for mutant in mutants(data, per_file, seed * 1000 + number):
            try:
                load_image(mutant, still_only=True)
                outcomes["image"] += 1
            except AgeLensError as error:
                outcomes[type(error).__name__] += 1
            except Exception as error:  # what the fuzzing is looking for
                outcomes["untyped"] += 1
                if len(untyped) < 10:
                    untyped.append(f"{name}: {type(error).__name__}: {error}")
    return {"inputs": sum(outcomes.values()), "outcomes": dict(outcomes), "untyped": untyped}


def chained_tiff(count: int = 20_000) -> bytes:
    """An 8x8 TIFF followed by ``count`` more image directories, each chained to the next."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    first = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[first : first + 2])[0]
    directory = bytes(data[first + 2 : first + 2 + 12 * entries])
    size, start = 2 + 12 * entries + 4, len(data)
    struct.pack_into("<I", data, first + 2 + 12 * entries, start)
    for index in range(count):
        following = start + (index + 1) * size if index < count - 1 else 0
        data += struct.pack("<H", entries) + directory + struct.pack("<I", following)
    return bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fuzz_decode.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    result = fuzz(args.inputs, args.seed)
    result |= {
        "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine_record(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("inputs", "outcomes", "untyped", "seconds")}))


if __name__ == "__main__":
    main()
