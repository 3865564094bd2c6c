"""Shared fixtures: real faces that installed packages ship, and the estimator (built once)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
from skimage import data

from agelens import AgeEstimator, load_bundle


@pytest.fixture(scope="session")
def fp32_manifest() -> Callable[..., dict]:
    """Makes the default bundle's manifest for a folder of its own: fp32 weights only, as
    a variant's file would stay in AgeLens's folder."""
    base = {key: value for key, value in load_bundle().manifest.items() if key != "variants"}
    return lambda **changes: {**base, "inference": {"flip_tta": True}, **changes}


@pytest.fixture(scope="session")
def estimator() -> AgeEstimator:
    return AgeEstimator()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """Eileen Collins, a woman in her early 40s, 512x512 RGB."""
    return data.astronaut()


@pytest.fixture(scope="session")
def grace_hopper_path() -> Path:
    """Grace Hopper at 77, a JPEG file."""
    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="session")
def face_dataset(tmp_path_factory, astronaut, grace_hopper_path) -> Path:
    """A tiny UTKFace-style folder: 90 face crops of two real faces, varied, named by age.

    The two people stand for two ages (the astronaut 42, Grace Hopper 77), and each crop
    is shifted, scaled, mirrored and lit differently, so a network can learn from them.
    One name is malformed and one file is a byte-identical copy, as in UTKFace.
    """
    from PIL import Image, ImageEnhance

    folder = tmp_path_factory.mktemp("utk")
    hopper = np.asarray(Image.open(grace_hopper_path).convert("RGB"))
    faces = {42: (astronaut, (150, 40, 330, 220)), 77: (hopper, (100, 70, 420, 390))}
    rng = np.random.default_rng(0)
    for index in range(90):
        age = (42, 77)[index % 2]
        image, (x1, y1, x2, y2) = faces[age]
        side = (x2 - x1) * rng.uniform(0.95, 1.1)
        cx, cy = (x1 + x2) / 2 + rng.uniform(-8, 8), (y1 + y2) / 2 + rng.uniform(-8, 8)
        crop = Image.fromarray(image).crop(
            (int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))
        )
        crop = ImageEnhance.Brightness(crop.resize((96, 96))).enhance(rng.uniform(0.7, 1.3))
        if index % 3 == 0:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        label = age + int(rng.integers(-3, 4))
        crop.save(folder / f"{label}_{index % 2}_{index % 5}_2017{index:06d}.jpg.chip.jpg")
    (folder / "not_a_utkface_name.jpg").write_bytes(b"\xff\xd8")
    first = sorted(folder.glob("*.chip.jpg"))[0]
    (folder / "99_0_0_20990101000000.jpg.chip.jpg").write_bytes(first.read_bytes())
    return folder


@pytest.fixture(scope="session")
def photos(tmp_path_factory, astronaut, grace_hopper_path) -> Path:
    """A folder of three photos: the astronaut, Grace Hopper and a wall with no face."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    (folder / "hopper.jpg").write_bytes(grace_hopper_path.read_bytes())
    Image.fromarray(np.full((240, 320, 3), 128, dtype=np.uint8)).save(folder / "wall.jpg")
    return folder
