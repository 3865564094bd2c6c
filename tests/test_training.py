"""The torch port of the age network, training, export and the training job end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agelens import AgeEstimator
from agelens.data.chip_cache import AlignmentSettings, load_chips
from agelens.data.datasets import read_dataset, unique_samples
from agelens.decisions.groups import IMFDB
from agelens.models.bundles import FP32, load_bundle
from agelens.networks.resnet10 import export_onnx, load_onnx_weights
from agelens.pipeline.chips import Aligner
from agelens.pipeline.network import AgeModel
from agelens.training.augmentation import Normalise, augment
from agelens.training.config import TrainConfig, pick_device
from agelens.training.job import run
from agelens.training.loop import train
from agelens.training.objective import Objective, class_ages_for, widen_head
from agelens.training.prepared import JobOptions, labelled, split_rows


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(precision=FP32)


@pytest.fixture(scope="module")
def base_net(bundle):
    return load_onnx_weights(bundle.model_path)


def test_torch_port_matches_onnxruntime(bundle, base_net, astronaut, estimator):
    chips = np.stack([estimator.aligner.chip(astronaut, (150, 40, 330, 220))[0]] * 2)
    chips[1] = chips[1, :, ::-1]
    expected = AgeModel(bundle).distributions(chips, flip=False)
    with torch.no_grad():
        got = torch.softmax(
            base_net(Normalise(bundle.mean, bundle.scale)(torch.from_numpy(chips))), 1
        )
    assert np.abs(got.numpy() - expected).max() < 1e-4


def test_exported_onnx_gives_the_torch_outputs(tmp_path, bundle, base_net):
    net = load_onnx_weights(bundle.model_path)
    widen_head(net, len(class_ages_for(100)))
    export_onnx(net, tmp_path / "net.onnx", 80)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"))
    x = np.random.default_rng(1).normal(size=(3, 3, 80, 80)).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x)), 1).numpy()
    (got,) = session.run(None, {"images": x})
    assert got.shape == (3, 101) and np.abs(got - expected).max() < 1e-5


def test_low_resolution_augmentation_blurs_the_share_it_is_given(astronaut):
    face = torch.from_numpy(astronaut[40:232, 150:342:2][::2]).permute(2, 0, 1).float()
    batch = face[None].repeat(32, 1, 1, 1)

    def detail(low_resolution: float) -> float:
        out = augment(batch, torch.Generator().manual_seed(3), low_resolution)
        return float((out[..., 1:] - out[..., :-1]).abs().mean())  # neighbour differences

    # A share too small to pick any chip: the same random draws as the others, nothing blurred.
    sharp, some, all_low = detail(1e-9), detail(0.3), detail(1.0)
    assert all_low < some < sharp
    assert all_low < 0.85 * sharp


def test_no_low_resolution_leaves_the_random_draws_as_they_were(astronaut):
    batch = torch.from_numpy(astronaut[:96, :96]).permute(2, 0, 1).float()[None].repeat(8, 1, 1, 1)
    generator = torch.Generator().manual_seed(5)
    augment(batch, generator, low_resolution=0.0)
    after = torch.rand(4, generator=generator)
    generator = torch.Generator().manual_seed(5)
    augment(batch, generator, low_resolution=0.3)
    assert not torch.equal(after, torch.rand(4, generator=generator))


def test_widened_head_keeps_the_base_ages(base_net):
    net = load_onnx_weights(load_bundle(precision=FP32).model_path)
    widen_head(net, 117)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        old, new = base_net(x), net(x)
    assert torch.allclose(old, new[:, :81], atol=1e-5)
    assert (new[:, 81:] < new[:, 80:81]).all()


def _chips(face_dataset, size=64):
    dataset = read_dataset(f"utkface:{face_dataset}")
    return load_chips(
        unique_samples(dataset), AlignmentSettings(size, 0.2, "edge"), show_progress=False
    )


def test_two_training_steps_lower_the_loss(face_dataset, bundle, base_net, tmp_path):
    chips = _chips(face_dataset)
    data = labelled(chips, list(range(32)), None)
    normalise = Normalise(bundle.mean, bundle.scale)
    config = TrainConfig(epochs=2, batch_size=32, augment=False, patience=5, dropout=0.0)
    reference = base_net
    widened = load_onnx_weights(bundle.model_path)
    widen_head(widened, len(class_ages_for(config.max_age)))
    objective = Objective(config, class_ages_for(config.max_age), None, None)

    def loss_of(net):
        net.eval()
        with torch.no_grad():
            x = normalise(torch.from_numpy(data.chips))
            return float(
                objective.loss(net(x), torch.from_numpy(data.ages), torch.from_numpy(data.groups))
            )

    before = loss_of(widened)
    result = train(reference, data, data, normalise, config)
    assert len(result.history) == 2
    assert loss_of(result.net) < before


def test_a_finetune_run_stopped_part_way_resumes_to_the_same_end(
    face_dataset, bundle, base_net, tmp_path
):
    data = labelled(_chips(face_dataset), list(range(32)), None)
    normalise = Normalise(bundle.mean, bundle.scale)
    config = TrainConfig(epochs=3, batch_size=16, patience=5, average_last=2)
    whole = train(base_net, data, data, normalise, config)
    checkpoint = tmp_path / "checkpoint.pt"

    class Stopped(Exception):
        pass

    def stop_in_epoch_two(row: dict[str, float]) -> None:
        if row["epoch"] == 2:
            raise Stopped

    with pytest.raises(Stopped):
        train(
            base_net,
            data,
            data,
            normalise,
            config,
            on_epoch=stop_in_epoch_two,
            checkpoint=checkpoint,
        )
    epochs_run: list[float] = []
    resumed = train(
        base_net,
        data,
        data,
        normalise,
        config,
        on_epoch=lambda row: epochs_run.append(row["epoch"]),
        checkpoint=checkpoint,
    )
    assert epochs_run[:2] == [2, 3]  # then the average of the last two epochs' weights
    assert [r["val_loss"] for r in resumed.history] == pytest.approx(
        [r["val_loss"] for r in whole.history], rel=1e-4
    )
    assert resumed.best_epoch == whole.best_epoch


def test_device_choice_falls_back_to_the_cpu_and_rejects_what_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="torch sees none"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("gpu")


def test_group_task_with_class_weights_learns_groups(face_dataset, bundle, base_net):
    chips = _chips(face_dataset)
    rows = split_rows(chips)
    train_set = labelled(chips, rows["train"], IMFDB)
    val_set = labelled(chips, rows["val"] + rows["test"], IMFDB)
    assert set(train_set.groups) <= {2, 3}  # MIDDLE and OLD
    config = TrainConfig(task="groups", mode="head", epochs=30, class_weights=True, seed=1)
    result = train(
        base_net, train_set, val_set, Normalise(bundle.mean, bundle.scale), config, scheme=IMFDB
    )
    assert max(row["val_accuracy"] for row in result.history) >= 0.9


def test_chip_cache_is_reused_and_invalidated(face_dataset, tmp_path):
    dataset = read_dataset(f"utkface:{face_dataset}")
    items = unique_samples(dataset)
    settings = AlignmentSettings(48, 0.2, "edge")
    first = load_chips(items, settings, cache_dir=tmp_path, show_progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = load_chips(items, settings, cache_dir=tmp_path, show_progress=False)
    assert np.array_equal(first.chips, again.chips) and first.digests == again.digests
    load_chips(items, AlignmentSettings(48, 0.2, "zero"), cache_dir=tmp_path, show_progress=False)
    load_chips(items[:-1], settings, cache_dir=tmp_path, show_progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 3


def _face_and_wall(folder: Path, astronaut: np.ndarray) -> Path:
    """A labelled photo of a face and one of a bare wall; their ``labels.csv``."""
    folder.mkdir(exist_ok=True)
    Image.fromarray(astronaut).save(folder / "face.jpg")
    Image.new("RGB", (300, 300), (120, 130, 140)).save(folder / "wall.jpg")
    (folder / "labels.csv").write_text("path,age\nface.jpg,35\nwall.jpg,40\n")
    return folder / "labels.csv"


def test_a_photo_with_no_face_is_left_out_of_the_chips_and_counted(astronaut, tmp_path):
    """Training leaves out a photo without a face, as evaluate does, rather than learning
    the whole photo as if it were one."""
    items = unique_samples(read_dataset(f"csv:{_face_and_wall(tmp_path, astronaut)}"))
    settings = AlignmentSettings(48, 0.2, "edge", aligned=False)
    chips = load_chips(items, settings, cache_dir=tmp_path / "cache", show_progress=False)
    assert [s.path.name for s in chips.samples] == ["face.jpg"] and len(chips.chips) == 1
    assert chips.no_face == [str(tmp_path / "wall.jpg")] and chips.unreadable == []
    again = load_chips(items, settings, cache_dir=tmp_path / "cache", show_progress=False)
    assert again.no_face == chips.no_face


def test_edge_border_chips_have_no_black_frame(astronaut):
    tight = np.ascontiguousarray(astronaut[70:200, 180:300])
    box = (0.0, 0.0, float(tight.shape[1]), float(tight.shape[0]))
    zero = Aligner(64, 0.2, "zero").chip(tight, box)[0]
    edge, landmarks = Aligner(64, 0.2, "edge").chip(tight, box)

    def black_share(chip):
        return float((chip.max(axis=2) == 0).mean())

    assert black_share(zero) > 0.05 > 0.02 > black_share(edge)
    assert all(0 <= x <= tight.shape[1] and 0 <= y <= tight.shape[0] for x, y in landmarks)


def _head_job(
    face_dataset: Path,
    tmp_path: Path,
    out: str = "model",
    *,
    epochs: int = 1,
    seed: int = 0,
    more_data: tuple[str, ...] = (),
) -> JobOptions:
    """A head-mode job on the made UTKFace crops, on the CPU, caching under ``tmp_path``."""
    return JobOptions(
        f"utkface:{face_dataset}",
        tmp_path / out,
        TrainConfig(mode="head", epochs=epochs, max_age=100, seed=seed),
        IMFDB,
        cache_dir=tmp_path / "cache",
        device="cpu",
        more_data=more_data,
    )


def test_training_job_writes_a_bundle_the_estimator_loads(face_dataset, tmp_path, astronaut):
    out = tmp_path / "model"
    manifest = run(
        _head_job(face_dataset, tmp_path, epochs=3),
        show_progress=False,
        on_note=(notes := []).append,
    )
    # What became of the data's files, said as it is read and kept in the manifest.
    (collection,) = manifest["training"]["collections"]
    assert (collection["distinct"], collection["duplicates_dropped"]) == (90, 1)
    assert (collection["malformed"], collection["no_face"]) == (1, 0)
    assert "90 distinct files; 1 byte-identical copies dropped, 1 malformed" in notes[-1]
    for name in ("model.onnx", "manifest.json", "split.json", "history.json", "curves.png"):
        assert (out / name).is_file(), name
    split = json.loads((out / "split.json").read_text())
    assert split["duplicates_dropped"] == 1 and split["malformed"] == ["not_a_utkface_name.jpg"]
    assert sum(split["counts"].values()) == 90
    assert manifest["license"]["research_only"] is True
    assert manifest["alignment"]["border"] == "edge"
    assert manifest["training"]["split"]["counts"] == split["counts"]
    assert manifest["training"]["device"] == "cpu"
    assert len(manifest["output"]["ages"]) == 101
    estimator = AgeEstimator(str(out))
    (face,) = estimator.estimate(astronaut)
    assert 0 <= face.interval[0] <= face.age <= face.interval[1] <= 100


def test_an_exported_bundle_reads_back_as_the_same_network(tmp_path, bundle):
    net = load_onnx_weights(bundle.model_path)
    widen_head(net, 90)
    with torch.no_grad():
        net.head.bias += torch.linspace(0, 1, 90)
    export_onnx(net, tmp_path / "net.onnx", 64)
    again = load_onnx_weights(tmp_path / "net.onnx")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), again.eval()(x), atol=1e-5)


def test_ensemble_exports_mean_probabilities_in_half_the_bytes(tmp_path, bundle):
    import onnxruntime

    from agelens.networks.resnet10 import Ensemble

    first, second = load_onnx_weights(bundle.model_path), load_onnx_weights(bundle.model_path)
    with torch.no_grad():
        for parameter in second.parameters():
            parameter.mul_(1.01)
    ensemble = Ensemble([first, second])
    export_onnx(ensemble, tmp_path / "full.onnx", 64)
    export_onnx(ensemble, tmp_path / "half.onnx", 64, half_weights=True)
    assert (tmp_path / "half.onnx").stat().st_size < 0.55 * (tmp_path / "full.onnx").stat().st_size
    x = np.random.default_rng(3).normal(size=(4, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = (
            torch.softmax(first(torch.from_numpy(x)), 1)
            + torch.softmax(second(torch.from_numpy(x)), 1)
        ).numpy() / 2
    for name, tolerance in (("full.onnx", 1e-5), ("half.onnx", 5e-3)):
        session = onnxruntime.InferenceSession(str(tmp_path / name))
        (got,) = session.run(None, {"images": x})
        assert np.abs(got - expected).max() < tolerance, name


def _noise_images(folder: Path, column: str, labels: list[str]) -> Path:
    """Images of noise with ``labels`` in ``folder/labels.csv`` (columns path and
    ``column``): enough for a job to run, nothing for it to learn."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = [f"path,{column}"]
    for index, label in enumerate(labels):
        pixels = rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
        rows.append(f"{index}.png,{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_a_research_only_base_makes_a_research_only_bundle(tmp_path):
    folder = _noise_images(tmp_path / "data", "age", [str(20 + i) for i in range(40)])
    config = TrainConfig(mode="head", epochs=1)
    options = JobOptions(
        f"csv:{folder / 'labels.csv'}",
        tmp_path / "m",
        config,
        base="agelens-utk-v1",
        size=96,
        cache_dir=tmp_path / "cache",
    )
    manifest = run(options, show_progress=False)
    assert manifest["license"]["research_only"] is True
    assert "agelens-utk-v1" in manifest["license"]["note"]


def test_a_job_without_enough_minors_fits_no_gate_policy(face_dataset, tmp_path):
    manifest = run(_head_job(face_dataset, tmp_path), show_progress=False)
    assert "gate" not in manifest and "Challenge 25" in manifest["gate_not_fitted"]
    estimator = AgeEstimator(str(tmp_path / "model"))
    assert estimator.gate_policy(18).buffer == 7  # Challenge 25's rule


def test_a_groups_only_job_says_why_nothing_is_calibrated(tmp_path):
    groups = [("YOUNG", "MIDDLE", "OLD")[i % 3] for i in range(40)]
    folder = _noise_images(tmp_path / "data", "group", groups)
    options = JobOptions(
        f"csv:{folder / 'labels.csv'}",
        tmp_path / "m",
        TrainConfig(mode="head", epochs=1, task="groups"),
        IMFDB,
        cache_dir=tmp_path / "cache",
    )
    manifest = run(options, show_progress=False)
    # Not "only 0 faces with ages": the data has none to give.
    assert "groups, not ages" in manifest["gate_not_fitted"]


def test_a_second_head_run_on_the_same_data_reads_the_features_back(
    face_dataset, tmp_path, monkeypatch
):
    from agelens.training import head_only

    computed = []
    original = head_only._features

    def counted(*args, **kwargs):
        computed.append(kwargs["mirror"])
        return original(*args, **kwargs)

    monkeypatch.setattr(head_only, "_features", counted)
    for seed in (0, 1):
        run(_head_job(face_dataset, tmp_path, f"seed{seed}", seed=seed), show_progress=False)
        # Train (with mirrored copies) and val, computed by the first run only.
        assert computed == [True, False]
    assert len(list((tmp_path / "cache").glob("features-*.npy"))) == 2


def test_a_run_mixing_crops_and_photos_finds_faces_in_the_photos_only(
    face_dataset, astronaut, tmp_path
):
    photos = _face_and_wall(tmp_path / "photos", astronaut)
    manifest = run(
        _head_job(face_dataset, tmp_path, more_data=(f"csv:{photos}#photos",)),
        show_progress=False,
        on_note=(notes := []).append,
    )
    crops, found = manifest["training"]["collections"]
    assert (crops["images"], crops["no_face"], crops["distinct"]) == ("aligned crops", 0, 90)
    assert (found["images"], found["no_face"], found["distinct"]) == ("photos", 1, 2)
    assert "read as aligned crops" in notes[1] and "no face found in 1" in notes[3]


def test_balance_evens_out_collections_and_age_bands():
    from agelens.data.sampling import balanced_weights, cells, epoch_order

    # A large collection of adults, a small one of children and adults, and group labels.
    ages = np.array([30.0] * 900 + [8.0] * 50 + [30.0] * 50 + [np.nan] * 100, np.float32)
    sources = np.array([0] * 900 + [1] * 100 + [0] * 100)
    found = cells(ages, sources)
    assert len(set(found.tolist())) == 4
    generator = torch.Generator().manual_seed(0)
    assert balanced_weights(ages, sources, 0.0) is None
    shuffled = epoch_order(1100, generator, None)
    assert sorted(shuffled.tolist()) == list(range(1100))
    drawn = found[epoch_order(1100, generator, balanced_weights(ages, sources, 1.0)).numpy()]
    shares = np.bincount(drawn)[np.unique(found)] / 1100
    assert np.all(np.abs(shares - 0.25) < 0.05)  # four cells, a quarter each
    # Mirrored copies follow their faces: the weights repeat over twice the count.
    doubled = epoch_order(2200, generator, balanced_weights(ages, sources, 1.0)).numpy() % 1100
    assert abs(np.mean(found[doubled] == found[1000]) - 0.25) < 0.05
    with pytest.raises(ValueError, match="balance"):
        TrainConfig(balance=1.5)
