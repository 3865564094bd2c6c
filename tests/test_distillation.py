"""Distilling a teacher bundle into a student: the teacher's distributions, their move
onto the student's ages, the loss that learns them, and the job that records them."""

from __future__ import annotations

import numpy as np
import pytest

from agelens.data.chip_cache import AlignmentSettings, load_chips
from agelens.data.datasets import read_dataset, unique_samples
from agelens.data.teacher_labels import regrid_matrix
from agelens.decisions.groups import IMFDB
from agelens.models.bundles import FP32, load_bundle
from agelens.networks.resnet10 import load_onnx_weights
from agelens.training.augmentation import Normalise
from agelens.training.config import LabelledChips, TrainConfig
from agelens.training.job import run
from agelens.training.loop import train
from agelens.training.objective import class_ages_for
from agelens.training.prepared import JobOptions


def test_regrid_moves_mass_to_the_nearest_ages_and_keeps_the_expected_age():
    source = [0.25, *range(1, 101)]
    target = class_ages_for(116)
    assert np.array_equal(regrid_matrix(target, target), np.eye(len(target), dtype=np.float32))
    matrix = regrid_matrix([2.5, 10.0, 130.0], target)
    assert np.allclose(matrix.sum(axis=1), 1.0)
    assert np.allclose(matrix @ np.asarray(target), [2.5, 10.0, 116.0])
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(len(source)), size=5)
    assert np.allclose(p @ regrid_matrix(source, target) @ np.asarray(target), p @ source)


def test_a_student_learns_the_teachers_distribution(face_dataset):
    bundle = load_bundle(precision=FP32)
    chips = load_chips(
        unique_samples(read_dataset(f"utkface:{face_dataset}")),
        AlignmentSettings(64, bundle.chip_padding, "edge"),
        show_progress=False,
    ).chips[:32]
    ages = class_ages_for(116)
    # Labels say nothing (no age, no group): only the teacher teaches, and it says 60.
    teacher = np.zeros((len(chips), len(ages)), dtype=np.float32)
    teacher[:, 60] = 1.0
    data = LabelledChips(
        chips, np.full(len(chips), np.nan, np.float32), np.full(len(chips), -1), teacher
    )
    val = LabelledChips(chips, np.full(len(chips), 60, np.float32), np.full(len(chips), -1))
    normalise = Normalise(bundle.mean, bundle.scale)
    config = TrainConfig(epochs=3, batch_size=16, augment=False, patience=5, average_last=0)
    result = train(load_onnx_weights(bundle.model_path), data, val, normalise, config)
    maes = [row["val_mae"] for row in result.history]
    # With nothing else to learn from, the faces' expected age goes to the teacher's 60.
    assert maes[-1] < min(0.5, maes[0]), maes


def test_a_teacher_outside_finetune_mode_is_refused_not_ignored():
    for mode in ("head", "tail"):
        with pytest.raises(ValueError, match="finetune"):
            TrainConfig(mode=mode, teacher="agelens-utk-v1")


def test_a_job_with_a_teacher_records_it_and_inherits_its_licence(face_dataset, tmp_path):
    config = TrainConfig(epochs=1, teacher="agelens-utk-v1", teacher_weight=0.5, max_age=100)
    options = JobOptions(
        f"utkface:{face_dataset}", tmp_path / "student", config, IMFDB, cache_dir=tmp_path / "c"
    )
    manifest = run(options, show_progress=False)
    teacher = load_bundle("agelens-utk-v1")
    assert manifest["training"]["teacher"] == {
        "name": "agelens-utk-v1",
        "sha256": teacher.manifest["artifact"]["sha256"],
    }
    assert manifest["training"]["config"]["teacher_weight"] == 0.5
    assert "the teacher agelens-utk-v1" in manifest["license"]["note"]
    assert "distilled from agelens-utk-v1" in manifest["description"]
    # The teacher ran once: its distributions wait in the cache for the next run.
    (cached,) = (tmp_path / "c").glob("teacher-*.npy")
    stored = np.load(cached)
    assert stored.shape[1] == 101 and np.allclose(stored.sum(axis=1), 1.0, atol=1e-4)
    # The made faces are 39-45 and 74-80 years old; the teacher sees adults.
    assert 30 < float((stored @ np.asarray(class_ages_for(100))).mean()) < 90
