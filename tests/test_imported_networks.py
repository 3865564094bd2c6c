"""Imported TFJS networks, training on several datasets, and the regularisers of tail training."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from agelens import AgeEstimator
from agelens.decisions.groups import IMFDB
from agelens.errors import ModelError
from agelens.networks.graph_age_net import load_graph_network
from agelens.networks.resnet10 import export_onnx
from agelens.networks.tfjs_graph import load_tfjs
from agelens.training.augmentation import Normalise
from agelens.training.config import LabelledChips, TrainConfig
from agelens.training.job import run
from agelens.training.objective import Objective, class_ages_for, distillation_loss
from agelens.training.prepared import JobOptions
from agelens.training.tail import cached_activations, l2sp_penalty, train_tail

SIZE = 16
AGES = [float(a) for a in range(1, 21)]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _conv_attr(stride: int) -> dict:
    return {
        "strides": {"list": {"i": ["1", str(stride), str(stride), "1"]}},
        "padding": {"s": _b64("SAME")},
        "data_format": {"s": _b64("NHWC")},
        "dilations": {"list": {"i": ["1", "1", "1", "1"]}},
    }


def made_graph(folder: Path, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A small MobileNet-like TFJS graph (conv, folded batch norm, ReLU6, depthwise, fused
    1x1 conv, mean, fused dense layers, softmax), its weights float32, float16 and uint8."""
    rng = np.random.default_rng(seed)
    weights = {
        "conv/kernel": rng.normal(0, 0.3, (3, 3, 3, 8)),
        "bn/mul": rng.uniform(0.5, 1.5, 8),
        "bn/sub": rng.normal(0, 0.1, 8),
        "six": np.array(6.0),
        "zero": np.array(0.0),
        "dw/kernel": rng.normal(0, 0.3, (3, 3, 8, 1)),
        "pw/kernel": rng.normal(0, 0.3, (1, 1, 8, 12)),
        "pw/bias": rng.normal(0, 0.1, 12),
        "axes": np.array([1, 2], dtype=np.int32),
        "feats/kernel": rng.normal(0, 0.3, (12, 10)),
        "feats/bias": rng.normal(0, 0.1, 10),
        "age/kernel": rng.normal(0, 0.3, (10, len(AGES))),
        "age/bias": rng.normal(0, 0.1, len(AGES)),
    }
    quantized = {"dw/kernel": "float16", "pw/kernel": "uint8"}
    nodes = [{"name": "input", "op": "Placeholder", "attr": {}}]
    nodes += [{"name": name, "op": "Const", "attr": {}} for name in weights]

    def node(name: str, op: str, inputs: list[str], **attr) -> None:
        nodes.append({"name": name, "op": op, "input": inputs, "attr": attr})

    fused = {"fused_ops": {"list": {"s": [_b64("BiasAdd"), _b64("Relu")]}}}
    node("conv", "Conv2D", ["input", "conv/kernel"], **_conv_attr(2))
    node("bn_mul", "Mul", ["conv", "bn/mul"])
    node("bn_add", "Add", ["bn_mul", "bn/sub"])
    node("relu", "Relu", ["bn_add"])
    node("relu6_min", "Minimum", ["relu", "six"])
    node("relu6", "Maximum", ["relu6_min", "zero"])
    node("dw", "DepthwiseConv2dNative", ["relu6", "dw/kernel"], **_conv_attr(1))
    node("pw", "_FusedConv2D", ["dw", "pw/kernel", "pw/bias"], **_conv_attr(1), **fused)
    node("pool", "Mean", ["pw", "axes"], keep_dims={"b": False})
    node("feats", "_FusedMatMul", ["pool", "feats/kernel", "feats/bias"], **fused)
    bias_only = {"fused_ops": {"list": {"s": [_b64("BiasAdd")]}}}
    node("age", "_FusedMatMul", ["feats", "age/kernel", "age/bias"], **bias_only)
    node("probabilities", "Softmax", ["age"])
    specs, chunks, stored = [], [], {}
    for name, value in weights.items():
        spec = {"name": name, "shape": list(value.shape), "dtype": str(value.dtype)}
        if value.dtype == np.float64:
            spec["dtype"] = "float32"
            kind = quantized.get(name)
            if kind == "float16":
                value = value.astype(np.float16)
                spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
                chunks.append(value.tobytes())
            elif kind == "uint8":
                low, scale = float(value.min()), float(value.max() - value.min()) / 255
                codes = np.round((value - low) / scale).astype(np.uint8)
                value = codes * np.float32(scale) + np.float32(low)
                spec["quantization"] = {"dtype": "uint8", "scale": scale, "min": low}
                chunks.append(codes.tobytes())
            else:
                chunks.append(value.astype(np.float32).tobytes())
        else:
            chunks.append(value.astype("<i4").tobytes())
        stored[name] = np.asarray(value, dtype=np.float32)
        specs.append(spec)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(b"".join(chunks))
    model = {
        "format": "graph-model",
        "modelTopology": {"node": nodes},
        "weightsManifest": [{"paths": ["weights.bin"], "weights": specs}],
    }
    (folder / "model.json").write_text(json.dumps(model))
    return folder / "model.json", stored


def _same_pad(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """TensorFlow's SAME padding of an NHWC array, written out independently."""
    pads = []
    for size in x.shape[1:3]:
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def _conv(x: np.ndarray, kernel: np.ndarray, stride: int, depthwise: bool = False) -> np.ndarray:
    k = kernel.shape[0]
    x = _same_pad(x, k, stride)
    n, h, w, _ = x.shape
    out_h, out_w = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.zeros((n, out_h, out_w, kernel.shape[2] if depthwise else kernel.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            if depthwise:
                out[:, i, j] = np.einsum("nhwc,hwc->nc", patch, kernel[..., 0])
            else:
                out[:, i, j] = np.einsum("nhwc,hwco->no", patch, kernel)
    return out


def reference(x_nhwc: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """The made graph's probabilities in numpy, NHWC, as TensorFlow computes them."""
    y = _conv(x_nhwc, w["conv/kernel"], 2) * w["bn/mul"] + w["bn/sub"]
    y = np.clip(y, 0, 6)
    y = _conv(y, w["dw/kernel"], 1, depthwise=True)
    y = np.maximum(_conv(y, w["pw/kernel"], 1) + w["pw/bias"], 0)
    y = np.maximum(y.mean(axis=(1, 2)) @ w["feats/kernel"] + w["feats/bias"], 0)
    logits = y @ w["age/kernel"] + w["age/bias"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


SPEC = {
    "graph": "model.json",
    "input": "input",
    "features": "feats",
    "head_kernel": "age/kernel",
    "head_bias": "age/bias",
    "channel_order": "RGB",
}


@pytest.fixture
def graph_file(tmp_path):
    return made_graph(tmp_path / "tfjs")


def test_the_graph_runs_as_tensorflow_computes_it(graph_file):
    path, weights = graph_file
    graph, _ = load_tfjs(path)
    x = np.random.default_rng(1).normal(0, 1, (2, SIZE, SIZE, 3))
    with torch.no_grad():
        got = graph.run(
            {"input": torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2)}, ["probabilities"]
        )
    assert np.abs(got["probabilities"].numpy() - reference(x, weights)).max() < 1e-5


def test_unsupported_ops_are_refused_by_name(tmp_path, graph_file):
    path, _ = graph_file
    model = json.loads(path.read_text())
    model["modelTopology"]["node"][-1]["op"] = "StridedSlice"
    path.write_text(json.dumps(model))
    with pytest.raises(ModelError, match="StridedSlice"):
        load_tfjs(path)


def test_onnx_export_and_the_written_graph_give_the_torch_network(tmp_path, graph_file):
    path, _ = graph_file
    net = load_graph_network(path.parent, SPEC).eval()
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = torch.softmax(net(x), dim=1).numpy()
    export_onnx(net, tmp_path / "model.onnx", SIZE)
    (got,) = onnxruntime.InferenceSession(str(tmp_path / "model.onnx")).run(
        None, {"images": x.numpy()}
    )
    assert np.abs(got - expected).max() < 1e-5
    net.save_graph(path, tmp_path / "written")
    again = load_graph_network(tmp_path / "written", SPEC).eval()
    with torch.no_grad():
        reread = torch.softmax(again(x), dim=1).numpy()
    assert np.abs(reread - expected).max() < 1e-2  # float16 shards


def test_tails_from_one_node_share_a_trunk_and_average_their_distributions(graph_file):
    from agelens.networks.graph_age_net import SharedTrunkEnsemble

    path, _ = graph_file
    first = load_graph_network(path.parent, SPEC).eval()
    second = load_graph_network(path.parent, SPEC).eval()
    with torch.no_grad():  # a second tail: what follows relu6 trained differently
        for parameter in second.graph.parameters_between("relu6", SPEC["features"]):
            parameter.add_(0.05 * torch.randn_like(parameter))
        second.head.bias.add_(torch.randn_like(second.head.bias))
        x = torch.randn(4, 3, SIZE, SIZE)
        p1, p2 = torch.softmax(first(x), dim=1), torch.softmax(second(x), dim=1)
        assert (p1 - p2).abs().max() > 0.01
        mean = torch.softmax(SharedTrunkEnsemble([first, second], "relu6")(x), dim=1)
    assert (mean - (p1 + p2) / 2).abs().max() < 1e-5


def test_regrid_keeps_the_distribution_over_the_source_ages(graph_file):
    path, _ = graph_file
    net = load_graph_network(path.parent, SPEC).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        before = torch.softmax(net(x), dim=1).numpy() @ np.asarray(AGES)
        net.regrid(AGES, class_ages_for(30))
        p = torch.softmax(net(x), dim=1).numpy()
    assert p.shape == (2, 31)
    # Rows past the source's 20 years are copies of its last row, a little less likely.
    assert np.all(np.diff(p[:, 21:], axis=1) < 0)
    assert np.abs(p @ np.asarray(class_ages_for(30)) - before).max() < 5


def test_the_import_tool_writes_a_bundle_the_estimator_runs(
    tmp_path, graph_file, monkeypatch, astronaut
):
    import tools.import_tfjs as tool

    path, _ = graph_file
    spec = {k: v for k, v in SPEC.items() if k != "graph"}
    preset = {**tool.PRESETS["faceres-deep"], "spec": spec, "size": SIZE, "ages": AGES}
    monkeypatch.setitem(tool.PRESETS, "made", preset)
    manifest = tool.import_network(path, "made", tmp_path / "bundle", "made-net")
    assert manifest["import_check"]["max_age_difference"] <= tool.MAX_AGE_DIFFERENCE
    assert manifest["license"]["research_only"] is True
    assert (tmp_path / "bundle" / "graph" / "model.json").is_file()
    (face,) = AgeEstimator(str(tmp_path / "bundle")).estimate(astronaut)
    assert 1 <= face.age <= 20


def test_mixed_batches_learn_ages_where_known_and_groups_where_not():
    config = TrainConfig(task="age", max_age=80)
    ages = class_ages_for(80)
    objective = Objective(config, ages, IMFDB, None)
    logits = torch.randn(6, len(ages), generator=torch.Generator().manual_seed(0))
    known = torch.tensor([30.0, 45.0, 8.0, float("nan"), float("nan"), float("nan")])
    groups = torch.tensor([1, 2, 0, 1, 3, -1])  # the last: neither age nor group
    mixed = objective.loss(logits, known, groups)
    age_part = objective.loss(logits[:3], known[:3], groups[:3])
    groups_only = Objective(TrainConfig(task="groups", max_age=80), ages, IMFDB, None)
    group_part = groups_only.loss(logits[3:5], known[3:5], groups[3:5])
    assert torch.isclose(mixed, (3 * age_part + 2 * group_part) / 5)
    scores = objective.score(torch.softmax(logits, 1), known, groups)
    assert set(scores) == {"mae", "group_only_accuracy", "score"}


def test_distillation_and_l2sp_are_zero_at_the_start_and_grow_away_from_it():
    teacher_logits = torch.randn(4, 10)
    teacher = torch.softmax(teacher_logits, dim=1)
    assert distillation_loss(teacher_logits, teacher).abs() < 1e-6
    assert distillation_loss(teacher_logits + torch.randn(4, 10), teacher) > 0.01
    weight = torch.nn.Parameter(torch.ones(3, 3))
    start = [weight.detach().clone()]
    assert l2sp_penalty([weight], start) == 0
    with torch.no_grad():
        weight.add_(0.5)
    assert torch.isclose(l2sp_penalty([weight], start), torch.tensor(9 * 0.25))


def _made_chips(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (count, SIZE, SIZE, 3), dtype=np.uint8)


def test_two_tail_steps_lower_the_loss_and_a_run_resumes(tmp_path, graph_file):
    path, _ = graph_file
    net = load_graph_network(path.parent, SPEC)
    ages = class_ages_for(30)
    net.regrid(AGES, ages)
    chips = _made_chips(32, 0)
    bright = chips.reshape(32, -1).mean(axis=1)
    train_set = LabelledChips(chips, (bright / 255 * 25 + 1).astype(np.float32), np.full(32, -1))
    normalise = Normalise((127.0, 127.0, 127.0), 1 / 64)
    config = TrainConfig(
        mode="tail",
        cut="relu6",
        epochs=2,
        batch_size=16,
        learning_rate=0.02,
        backbone_lr_ratio=1.0,
        distill=0.1,
        l2sp=1e-3,
        max_age=30,
        patience=5,
    )
    objective = Objective(config, ages, None, None)
    x = normalise(torch.from_numpy(chips))

    def loss() -> float:
        net.eval()
        with torch.no_grad():
            return float(
                objective.loss(
                    net(x), torch.from_numpy(train_set.ages), torch.from_numpy(train_set.groups)
                )
            )

    before = loss()
    checkpoint = tmp_path / "checkpoint.pt"

    def run(objective: Objective) -> list[dict[str, float]]:
        return train_tail(
            net,
            "relu6",
            train_set,
            train_set,
            normalise,
            objective,
            torch.Generator().manual_seed(0),
            cache_dir=tmp_path / "cache",
            checkpoint=checkpoint,
        )[0]

    history = run(objective)
    assert loss() < before
    assert len(history) == 2 and checkpoint.is_file()
    assert len(list((tmp_path / "cache").glob("activations-*.npy"))) == 1
    # Asked for one more epoch, a run from the same checkpoint trains only that one.
    more = Objective(replace(config, epochs=3), ages, None, None)
    resumed = run(more)
    assert len(resumed) == 3 and resumed[:2] == history
    # Training changed only the tail, so the resumed run found the same activations; a
    # change before the cut needs new ones.
    assert len(list((tmp_path / "cache").glob("activations-*.npy"))) == 1
    with torch.no_grad():
        net.graph.parameters_between("", "relu6")[0].add_(0.5)
    cached_activations(net, "relu6", chips, normalise, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("activations-*.npy"))) == 2


def test_a_job_on_two_datasets_trains_on_ages_and_groups(face_dataset, tmp_path, astronaut):
    from PIL import Image

    classes = tmp_path / "classes"
    for index, image in enumerate(sorted(face_dataset.glob("*.chip.jpg"))[:40]):
        group = "MIDDLE" if int(image.name.split("_")[0]) < 60 else "OLD"
        (classes / group).mkdir(parents=True, exist_ok=True)
        Image.open(image).rotate(3 * (index % 5 - 2)).save(classes / group / f"{index}.jpg")
    out = tmp_path / "model"
    manifest = run(
        JobOptions(
            f"utkface:{face_dataset}",
            out,
            TrainConfig(mode="head", epochs=2, max_age=100),
            IMFDB,
            cache_dir=tmp_path / "cache",
            device="cpu",
            more_data=(f"folder:{classes}",),
        ),
        show_progress=False,
    )
    assert (out / "split.json").is_file() and (out / "split-2.json").is_file()
    assert [d["spec"] for d in manifest["training"]["more_data"]] == [f"folder:{classes}"]
    assert "accuracy" in manifest["metrics"]["val"] and "mae" in manifest["metrics"]["val"]
    # Each collection's own figures beside the pooled ones: ages where it has them.
    by_collection = manifest["metrics"]["by_collection"]
    assert list(by_collection) == [f"utkface:{face_dataset}", f"folder:{classes}"]
    own = by_collection[f"folder:{classes}"]["val"]
    assert "mae" not in own and 0 <= own["accuracy"] <= 1
    assert "mae" in by_collection[f"utkface:{face_dataset}"]["val"]
    pooled = manifest["metrics"]["val"]["n"]
    assert sum(c["val"]["n"] for c in by_collection.values() if "val" in c) == pooled
    # Per epoch, the accuracy on the faces known only by group, named for what it counts.
    history = json.loads((out / "history.json").read_text())
    assert "val_group_only_accuracy" in history[0] and "val_accuracy" not in history[0]
    (face,) = AgeEstimator(str(out)).estimate(astronaut)
    assert 0 <= face.age <= 100
