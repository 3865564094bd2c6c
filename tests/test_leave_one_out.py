"""One leave-one-collection-out fold on tiny made collections: train on two, score the third."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agelens import AgeEstimator
from agelens.batch import EstimatorPool
from agelens.errors import AgeLensError
from agelens.evaluation.leave_one_out import (
    Collection,
    fold_plan,
    score_collections,
    seen_kinds,
    train_fold,
)

NAMES = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def collections(face_dataset, tmp_path_factory) -> list[Collection]:
    """The 90 crops of the face dataset dealt into three CSV collections of 30."""
    root = tmp_path_factory.mktemp("collections")
    crops = sorted(face_dataset.glob("*_2017*.jpg.chip.jpg"))
    found = []
    for number, name in enumerate(NAMES):
        folder = root / name
        folder.mkdir()
        rows = ["path,age"]
        for crop in crops[number::3]:
            shutil.copy(crop, folder / crop.name)
            rows.append(f"{crop.name},{crop.name.split('_')[0]}")
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")
        found.append(Collection(name, f"csv:{folder / 'labels.csv'}", aligned=True))
    return found


def test_each_collection_is_held_out_once_and_trained_on_otherwise(collections):
    plan = fold_plan(collections)
    assert [held.name for held, _ in plan] == list(NAMES)
    for held, training in plan:
        assert held not in training and len(training) == 2


def test_a_fold_trains_without_the_held_out_collection_and_scores_it(collections, tmp_path):
    held_out, training = fold_plan(collections)[2]
    options = ["--mode", "head", "--epochs", "2", "--cache", str(tmp_path / "cache")]
    bundle = train_fold(held_out, training, tmp_path / "fold", [*options, "--device", "cpu"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    trained = [manifest["training"]["data"], *manifest["training"]["more_data"]]
    assert sorted(Path(record["spec"][4:]).parent.name for record in trained) == ["alpha", "beta"]
    estimator = AgeEstimator(str(bundle))
    seen = seen_kinds(estimator.bundle)
    assert seen == {"alpha", "beta"}
    with EstimatorPool(estimator, workers=1) as pool:
        scored = score_collections(pool, collections, seen=seen)
    figures = scored["collections"]
    assert [name for name, row in figures.items() if row["held_out"]] == ["gamma"]
    assert figures["gamma"]["scored"] == 30 and figures["gamma"]["mae"] > 0
    # Each band's bias beside its MAE; weighted by the band's size, they make the whole's.
    bands = figures["gamma"]["per_band"].values()
    assert all(abs(band["bias"]) <= band["mae"] for band in bands)
    pooled = sum(band["bias"] * band["n"] for band in bands) / 30
    assert pooled == pytest.approx(figures["gamma"]["bias"], abs=1e-3)
    # Only the held-out collection counts towards the worst figures.
    assert scored["worst_held_out"]["mae_max"] == figures["gamma"]["mae"]


def test_a_fold_refuses_to_train_on_what_it_holds_out(collections, tmp_path):
    with pytest.raises(AgeLensError, match="held out and cannot be trained on"):
        train_fold(collections[0], collections, tmp_path / "fold", [])
    photos = Collection("photos", collections[1].spec, aligned=False)
    with pytest.raises(AgeLensError, match="crops or on photos"):
        train_fold(collections[2], [collections[0], photos], tmp_path / "fold", [])
