"""The bundled ResNet-10 age network in plain torch, with its weights read from the ONNX file.

dlib's ResNet differs from torchvision's in ways that matter for loading its weights:
the stem and the downsampling convolutions have no padding, batch norm is a frozen
per-channel affine layer, and a downsampling block's shortcut is a 2x2 average pool
whose output is zero-padded to the new channel count (and the residual branch padded
on the right and bottom when its map is one pixel smaller). The layers are rebuilt
here so that a port gives the ONNX network's outputs to float precision, and so that
the network can be trained at any chip size: it is convolutional up to the global pool.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional

from agelens.errors import ModelError

FEATURES = 256


class Affine(nn.Module):
    """dlib's ``affine`` layer: batch norm folded into a per-channel scale and shift."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class Block(nn.Module):
    """Two 3x3 convolutions with a residual; ``downsample`` halves the map and doubles channels."""

    def __init__(self, in_channels: int, out_channels: int, *, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        stride, padding = (2, 0) if downsample else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.affine2 = Affine(out_channels)
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.affine2(self.conv2(functional.relu(self.affine1(self.conv1(x)))))
        shortcut = x
        if self.downsample:
            shortcut = functional.avg_pool2d(x, 2)
            shortcut = functional.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
            short = shortcut.shape[-1] - branch.shape[-1]
            branch = functional.pad(branch, (0, short, 0, short))
        return functional.relu(branch + shortcut)


class AgeNet(nn.Module):
    """ResNet-10 trunk to 256 pooled features, then a linear head over ``classes`` ages."""

    def __init__(self, classes: int = 81) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 7, stride=2)
        self.stem_affine = Affine(64)
        self.blocks = nn.Sequential(
            Block(64, 64, downsample=False),
            Block(64, 128, downsample=True),
            Block(128, 128, downsample=False),
            Block(128, 256, downsample=True),
            Block(256, 256, downsample=False),
        )
        self.dropout = nn.Dropout(0.0)
        self.head = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``[N, 3, H, W]`` input -> ``[N, 256]`` pooled features."""
        x = functional.relu(self.stem_affine(self.stem(x)))
        x = functional.max_pool2d(x, 3, stride=2)
        return self.blocks(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits over the output classes."""
        return self.head(self.dropout(self.features(x)))

    def replace_head(self, classes: int) -> None:
        """A fresh linear head for another set of outputs (groups, or more ages)."""
        self.head = nn.Linear(FEATURES, classes)


# ONNX initialiser names of the converted dlib network, in the order of the layers above.
_CONVS = ["52", "47", "44", "39", "36", "28", "25", "20", "17", "9", "6"]
_AFFINES = ["51", "46", "43", "38", "35", "27", "24", "19", "16", "8", "5"]


def load_onnx_weights(path: Path) -> AgeNet:
    """An :class:`AgeNet` holding the weights of an ONNX age network.

    Reads the bundled dlib network and the bundles AgeLens exports (whose weights keep
    their torch names), so a trained bundle can be the base of further training.
    """
    try:
        graph = onnx.load(str(path)).graph
    except Exception as error:  # onnx raises several unrelated types for a bad file
        raise ModelError(f"{path}: not a readable ONNX model ({error})") from error
    arrays = {item.name: numpy_helper.to_array(item) for item in graph.initializer}
    if _EXPORTED_HEAD in arrays:
        return _from_exported(arrays)
    nodes = {node.name: node for node in graph.node}
    net = AgeNet(classes=_head_classes(nodes, arrays))
    convs = [net.stem] + [c for b in net.blocks for c in (b.conv1, b.conv2)]
    affines = [net.stem_affine] + [a for b in net.blocks for a in (b.affine1, b.affine2)]
    with torch.no_grad():
        for conv, number in zip(convs, _CONVS, strict=True):
            weight, bias = (arrays[name] for name in nodes[f"layer_{number}_conv"].input[1:3])
            conv.weight.copy_(torch.from_numpy(weight.copy()))
            conv.bias.copy_(torch.from_numpy(bias.copy()))
        for affine, number in zip(affines, _AFFINES, strict=True):
            scale = arrays[nodes[f"layer_{number}_affine_scale"].input[1]]
            shift = arrays[nodes[f"layer_{number}_affine"].input[1]]
            affine.scale.copy_(torch.from_numpy(scale.copy()))
            affine.shift.copy_(torch.from_numpy(shift.copy()))
        weight, bias = (arrays[name] for name in nodes["layer_1_fc"].input[1:3])
        net.head.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.T)))
        net.head.bias.copy_(torch.from_numpy(bias.copy()))
    return net


def _from_exported(arrays: dict[str, np.ndarray]) -> AgeNet:
    net = AgeNet(classes=int(arrays[_EXPORTED_HEAD].shape[0]))
    prefix = _EXPORTED_HEAD.removesuffix("head.weight")
    state = {name: torch.from_numpy(arrays[prefix + name].copy()) for name in net.state_dict()}
    net.load_state_dict(state)
    return net


def _head_classes(nodes: dict[str, onnx.NodeProto], arrays: dict[str, np.ndarray]) -> int:
    if "layer_1_fc" not in nodes:
        raise ModelError("not the dlib ResNet-10 age network: no layer_1_fc in the graph")
    return int(arrays[nodes["layer_1_fc"].input[1]].shape[1])


# Where :func:`export_onnx` puts the head's weight, under the wrapper's attribute name.
_EXPORTED_HEAD = "net.head.weight"


class WithSoftmax(nn.Module):
    """Wraps a network so the exported graph outputs probabilities, as bundles expect."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def export_onnx(net: nn.Module, path: Path, size: int, *, half_weights: bool = False) -> None:
    """Write ``net`` as an ONNX graph with input ``images`` and output ``probabilities``.

    ``half_weights`` stores each large weight as float16 behind a Cast back to float32,
    which onnxruntime folds away when it loads the graph: the file halves, and the
    computation stays in float32.
    """
    net.eval()
    export_module(WithSoftmax(net), torch.zeros(1, 3, size, size), path, "probabilities")
    if half_weights:
        _store_half(path)


def export_module(module: nn.Module, example: torch.Tensor, path: Path, output: str) -> None:
    """``module`` as ONNX (opset 17) with input ``images`` and one output, any batch size."""
    with warnings.catch_warnings():
        # Traced shapes are fixed but the batch (the tracer says so at length); harmless.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["images"],
            output_names=[output],
            dynamic_axes={"images": {0: "N"}, output: {0: "N"}},
            opset_version=17,
            dynamo=False,
        )


class Ensemble(nn.Module):
    """Several networks over the same chip; outputs the log of their mean probabilities.

    Log-probabilities stand in for logits, so training code and :class:`WithSoftmax`
    treat an ensemble like one network.
    """

    def __init__(self, nets: list[AgeNet]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([torch.softmax(net(x), dim=1) for net in self.nets]).mean(dim=0)
        return torch.log(mean.clamp_min(1e-12))


def _store_half(path: Path) -> None:
    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for initializer in graph.initializer:
        values = numpy_helper.to_array(initializer)
        if values.dtype == np.float32 and values.size >= 1024:
            original = initializer.name
            half = numpy_helper.from_array(values.astype(np.float16), original + "_fp16")
            initializer.CopyFrom(half)
            casts.append(
                onnx.helper.make_node(
                    "Cast", [original + "_fp16"], [original], to=onnx.TensorProto.FLOAT
                )
            )
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(path))
