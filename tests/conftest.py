"""Shared fixtures: real faces that installed packages ship, and the estimator (built once)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
from skimage import data

from agelens import AgeEstimator


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
