"""A TensorFlow.js graph model run in plain torch, so its weights can be trained and exported.

TFJS graph models (``model.json`` plus binary weight shards, read by
:mod:`agelens.networks.tfjs_files`) carry a TensorFlow graph: nodes with an op, inputs
and attributes. This module runs the graph node by node in torch. TensorFlow lays
images out NHWC; the module keeps tensors NCHW inside (torch's convolutions want it)
and follows TensorFlow's semantics, 'SAME' padding included, which pads the extra
pixel on the right and bottom.

Only the ops that face-attribute networks of this kind use are supported; any other op
is refused by name when the graph is read, never run wrongly.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional

from agelens.errors import ModelError
from agelens.networks.tfjs_files import Node, layout_of, read_tfjs, to_tf, to_torch

_ELEMENTWISE = {
    "Add": torch.add,
    "AddV2": torch.add,
    "BiasAdd": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "RealDiv": torch.div,
    "Minimum": torch.minimum,
    "Maximum": torch.maximum,
}
_ACTIVATIONS = {
    "Relu": torch.relu,
    "Relu6": lambda x: torch.clamp(x, 0, 6),
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Identity": lambda x: x,
}
#: Ops whose second input is a weight that training may change (kernels, biases, affine).
_WEIGHT_OPS = {"Conv2D", "DepthwiseConv2dNative", "_FusedConv2D", "_FusedMatMul", "MatMul"}
SUPPORTED_OPS = frozenset(
    {"Placeholder", "Const", "Mean", "Softmax", "MaxPool", "AvgPool", "MatMul"}
    | set(_ELEMENTWISE)
    | set(_ACTIVATIONS)
    | _WEIGHT_OPS
)


def _attr_ints(node: Node, key: str, default: list[int]) -> list[int]:
    return [int(v) for v in node.attr.get(key, {}).get("list", {}).get("i", default)]


def _attr_string(node: Node, key: str, default: str) -> str:
    raw = node.attr.get(key, {}).get("s")
    return base64.b64decode(raw).decode() if raw else default


def _fused_ops(node: Node) -> list[str]:
    return [
        base64.b64decode(s).decode()
        for s in node.attr.get("fused_ops", {}).get("list", {}).get("s", [])
    ]


def _same_padding(
    x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], value: float = 0.0
) -> torch.Tensor:
    """TensorFlow's 'SAME': the output is ceil(input / stride); the odd pixel goes after."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return functional.pad(x, pads, value=value)


class TfjsGraph(nn.Module):
    """The graph as a torch module. Kernels, biases and per-channel affine constants are
    parameters (trainable); scalars and shapes are buffers.

    ``run`` evaluates only what the asked-for outputs need, from any node whose value is
    given, so a network can be run from a cached activation of one of its layers.
    """

    def __init__(self, nodes: list[Node], arrays: Mapping[str, NDArray[Any]]) -> None:
        super().__init__()
        self.nodes = {node.name: node for node in nodes}
        self.inputs = [n.name for n in nodes if n.op == "Placeholder"]
        self._keys: dict[str, str] = {}
        self._layouts: dict[str, str] = {}
        self.weights = nn.ParameterDict()
        for node in nodes:
            if node.op != "Const":
                continue
            if node.name not in arrays:
                raise ModelError(f"constant {node.name} has no weights in the shards")
            value = torch.from_numpy(np.array(arrays[node.name]))
            key = f"c{len(self._keys)}"
            self._keys[node.name] = key
            if value.dtype == torch.float32 and value.ndim >= 1:
                self._layouts[node.name] = layout_of(node.name, nodes)
                self.weights[key] = nn.Parameter(to_torch(value, self._layouts[node.name]))
            else:
                self.register_buffer(key, value)

    def constant(self, name: str) -> torch.Tensor:
        key = self._keys[name]
        return self.weights[key] if key in self.weights else getattr(self, key)

    def replace_constant(self, name: str, value: torch.Tensor) -> None:
        """Give a trainable constant a new value, in torch's layout (its shape may change)."""
        self.weights[self._keys[name]] = nn.Parameter(value.detach().clone())

    def tf_arrays(self) -> dict[str, NDArray[Any]]:
        """Every constant in TensorFlow's layout, as the shards store it."""
        arrays = {}
        for name, key in self._keys.items():
            if key in self.weights:
                value = to_tf(self.weights[key].detach().cpu(), self._layouts[name])
            else:
                value = getattr(self, key).cpu()
            arrays[name] = value.numpy()
        return arrays

    def parameters_between(self, start: str, end: str) -> list[nn.Parameter]:
        """The parameters that turn node ``start``'s value into node ``end``'s."""
        found: list[nn.Parameter] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen or name == start:
                return
            seen.add(name)
            node = self.nodes[name]
            if node.op == "Const":
                key = self._keys[name]
                if key in self.weights:
                    found.append(self.weights[key])
                return
            for parent in node.inputs:
                visit(parent)

        visit(end)
        return found

    def run(
        self, given: Mapping[str, torch.Tensor], outputs: Iterable[str]
    ) -> dict[str, torch.Tensor]:
        values: dict[str, torch.Tensor] = dict(given)
        order = self._order(list(outputs), set(given))
        for name in order:
            values[name] = self._evaluate(self.nodes[name], values)
        return {name: values[name] for name in outputs}

    def _order(self, outputs: list[str], known: set[str]) -> list[str]:
        order: list[str] = []
        done = set(known)
        stack = [(name, False) for name in reversed(outputs)]
        while stack:
            name, expanded = stack.pop()
            if name in done:
                continue
            node = self.nodes.get(name)
            if node is None:
                raise ModelError(f"the graph has no node {name!r}")
            if node.op == "Placeholder":
                raise ModelError(f"input {name!r} was not given")
            if expanded or node.op == "Const":
                done.add(name)
                if node.op != "Const":
                    order.append(name)
                continue
            stack.append((name, True))
            stack.extend((parent, False) for parent in node.inputs if parent not in done)
        return order

    def _value(
        self, name: str, values: Mapping[str, torch.Tensor], like: torch.Tensor | None = None
    ) -> torch.Tensor:
        if name in values:
            return values[name]
        value = self.constant(name)
        if like is not None and like.ndim == 4 and value.ndim == 1:
            return value.view(1, -1, 1, 1)  # a per-channel NHWC vector, broadcast over NCHW
        return value

    def _evaluate(self, node: Node, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        op = node.op
        first = self._value(node.inputs[0], values)
        if op in _ELEMENTWISE:
            return _ELEMENTWISE[op](first, self._value(node.inputs[1], values, first))
        if op in _ACTIVATIONS:
            return _ACTIVATIONS[op](first)
        if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative"):
            return self._convolution(node, first, values)
        if op in ("_FusedMatMul", "MatMul"):
            out = first @ self._value(node.inputs[1], values)
            return self._fused(node, out, values, 2)
        if op == "Mean":
            axes = [int(a) for a in np.atleast_1d(self.constant(node.inputs[1]).cpu().numpy())]
            keep = bool(node.attr.get("keep_dims", {}).get("b", False))
            if first.ndim != 4 or sorted(axes) != [1, 2]:
                raise ModelError(f"{node.name}: Mean over axes {axes} is not supported")
            return first.mean(dim=(2, 3), keepdim=keep)
        if op == "Softmax":
            return torch.softmax(first, dim=-1)
        if op in ("MaxPool", "AvgPool"):
            kernel = tuple(_attr_ints(node, "ksize", [1, 1, 1, 1])[1:3])
            stride = tuple(_attr_ints(node, "strides", [1, 1, 1, 1])[1:3])
            if _attr_string(node, "padding", "VALID") == "SAME":
                first = _same_padding(first, kernel, stride, -math.inf if op == "MaxPool" else 0.0)
            pool = functional.max_pool2d if op == "MaxPool" else functional.avg_pool2d
            return pool(first, kernel, stride)
        raise ModelError(f"{node.name}: unsupported op {op}")

    def _convolution(
        self, node: Node, x: torch.Tensor, values: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        kernel = self._value(node.inputs[1], values)
        stride = tuple(_attr_ints(node, "strides", [1, 1, 1, 1])[1:3])
        dilation = tuple(_attr_ints(node, "dilations", [1, 1, 1, 1])[1:3])
        if _attr_string(node, "data_format", "NHWC") != "NHWC":
            raise ModelError(f"{node.name}: only NHWC graphs are supported")
        if _attr_string(node, "padding", "VALID") == "SAME":
            size = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel.shape[2:], strict=True))
            x = _same_padding(x, size, stride)  # type: ignore[arg-type]
        groups = x.shape[1] if node.op == "DepthwiseConv2dNative" else 1
        out = functional.conv2d(x, kernel, stride=stride, dilation=dilation, groups=groups)
        return self._fused(node, out, values, 2) if node.op == "_FusedConv2D" else out

    def _fused(
        self, node: Node, out: torch.Tensor, values: Mapping[str, torch.Tensor], first_arg: int
    ) -> torch.Tensor:
        for index, fused in enumerate(_fused_ops(node)):
            if fused == "BiasAdd":
                out = out + self._value(node.inputs[first_arg + index], values, out)
            elif fused in _ACTIVATIONS:
                out = _ACTIVATIONS[fused](out)
            else:
                raise ModelError(f"{node.name}: unsupported fused op {fused}")
        return out


def load_tfjs(model_json: Path) -> tuple[TfjsGraph, dict[str, Any]]:
    """The graph of a TFJS ``model.json`` as a torch module, and the file's other fields."""
    nodes, arrays, info = read_tfjs(model_json)
    unsupported = sorted({n.op for n in nodes} - SUPPORTED_OPS)
    if unsupported:
        raise ModelError(f"{model_json}: unsupported ops {', '.join(unsupported)}")
    return TfjsGraph(nodes, arrays), info
