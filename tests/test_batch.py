"""Folders on one machine: worker processes must give exactly what one process gives."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from agelens.batch import CHUNK, EstimatorPool, collect_images, estimate_files


def test_worker_processes_give_the_results_of_one_process(estimator, face_dataset: Path):
    paths = collect_images([face_dataset])
    assert len(paths) > CHUNK  # more than one chunk, so the workers share the files
    alone = list(estimate_files(estimator, paths, aligned=True, workers=1))
    with EstimatorPool(estimator, workers=2) as pool:
        assert pool.uses_processes == sys.platform.startswith("linux")
        pooled = list(pool.estimate_files(paths, aligned=True))
    assert [result.path for result in pooled] == paths
    assert [result.error is None for result in pooled] == [r.error is None for r in alone]
    assert sum(result.error is not None for result in pooled) == 1  # the 2-byte JPEG
    ages = [[face.age for face in result.faces] for result in pooled]
    assert ages == [[pytest.approx(face.age, abs=1e-6) for face in r.faces] for r in alone]


def test_an_estimator_with_thread_pools_is_shared_by_threads_not_forked(face_dataset: Path):
    from agelens import AgeEstimator

    paths = collect_images([face_dataset])
    with EstimatorPool(AgeEstimator(threads=2), workers=2) as pool:
        assert not pool.uses_processes
        results = list(pool.estimate_files(paths, aligned=True))
    assert sum(result.error is None for result in results) == len(paths) - 1


def test_images_come_back_only_when_asked_for(estimator, face_dataset: Path):
    paths = collect_images([face_dataset])[:3]
    assert all(r.image is None for r in estimate_files(estimator, paths, aligned=True))
    kept = list(estimate_files(estimator, paths, aligned=True, keep_images=True))
    assert all(r.image is not None and r.image.shape == (96, 96, 3) for r in kept)


def test_a_photo_without_a_face_can_be_scored_whole(estimator, tmp_path: Path):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 160, 3), 128, dtype=np.uint8)).save(blank)
    with EstimatorPool(estimator, workers=1) as pool:
        (plain,) = pool.estimate_files([blank])
        (whole,) = pool.estimate_files([blank], whole_if_no_face=True)
    assert plain.faces == [] and not plain.whole_image
    assert len(whole.faces) == 1 and whole.whole_image
    assert whole.faces[0].box == (0.0, 0.0, 160.0, 120.0)


def test_a_finished_output_is_checked_for_missing_and_twice_written_images(tmp_path):
    import json

    from agelens.distributed.output import check_output

    out = tmp_path / "ages.jsonl"
    rows = [{"image": "a.jpg", "face": 1}, {"image": "a.jpg", "face": 2}]
    rows += [{"image": "b.jpg", "face": 1}, {"image": "b.jpg", "face": 1}]
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    problems = check_output(out, ["a.jpg", "b.jpg", "c.jpg"])
    assert problems == ["b.jpg written 2 times", "1 image(s) missing, the first c.jpg"]
    assert check_output(out, ["a.jpg"]) == ["b.jpg written 2 times"]
