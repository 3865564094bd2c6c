"""TensorFlow.js graph model files: reading the topology and weight shards, writing them back.

The shards hold every constant end to end, as float32, float16 or affine-quantized
uint8/uint16. Kernels are stored in TensorFlow's layouts (HWIO, and HWC1 for depthwise
ones); torch wants OIHW, so each constant is converted by the op that reads it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from agelens.errors import ModelError

_DTYPES = {"float32": np.float32, "int32": np.int32, "float16": np.float16, "uint8": np.uint8}
_QUANTIZED = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    attr: Mapping[str, Any]


def read_tfjs(model_json: Path) -> tuple[list[Node], dict[str, NDArray[Any]], dict[str, Any]]:
    """Nodes, constants by name, and the model file's other fields (format, signature...)."""
    try:
        model = json.loads(model_json.read_text())
        nodes = [
            Node(
                n["name"],
                n["op"],
                tuple(i.split(":")[0] for i in n.get("input", [])),
                n.get("attr", {}),
            )
            for n in model["modelTopology"]["node"]
        ]
        arrays: dict[str, NDArray[Any]] = {}
        for group in model["weightsManifest"]:
            data = b"".join((model_json.parent / path).read_bytes() for path in group["paths"])
            arrays |= _unpack(group["weights"], data)
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise ModelError(f"{model_json}: not a TFJS graph model ({error})") from error
    info = {k: v for k, v in model.items() if k not in ("modelTopology", "weightsManifest")}
    return nodes, arrays, info


def _unpack(specs: Iterable[dict[str, Any]], data: bytes) -> dict[str, NDArray[Any]]:
    """Weights laid end to end in the shards, each decoded to float32 (int32 kept)."""
    arrays, offset = {}, 0
    for spec in specs:
        count = math.prod(spec["shape"])
        quantization = spec.get("quantization")
        stored = np.dtype(
            _QUANTIZED[quantization["dtype"]] if quantization else _DTYPES[spec["dtype"]]
        )
        values = np.frombuffer(data, stored, count, offset).reshape(spec["shape"])
        offset += count * stored.itemsize
        if quantization and quantization["dtype"] != "float16":
            values = values * np.float32(quantization["scale"]) + np.float32(quantization["min"])
        arrays[spec["name"]] = values.astype(np.int32 if spec["dtype"] == "int32" else np.float32)
    if offset != len(data):
        raise ValueError(f"the shards hold {len(data)} bytes, the manifest lists {offset}")
    return arrays


def layout_of(name: str, nodes: list[Node]) -> str:
    """How a constant is laid out for torch: by the op that reads it as its kernel."""
    for node in nodes:
        if len(node.inputs) > 1 and node.inputs[1] == name:
            if node.op in ("Conv2D", "_FusedConv2D"):
                return "conv"
            if node.op == "DepthwiseConv2dNative":
                return "depthwise"
    return "plain"


def to_torch(value: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "conv":
        return value.permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
    if layout == "depthwise":
        h, w, c, m = value.shape
        return value.permute(2, 3, 0, 1).reshape(c * m, 1, h, w).contiguous()
    return value


def to_tf(value: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "conv":
        return value.permute(2, 3, 1, 0).contiguous()  # OIHW -> HWIO
    if layout == "depthwise":
        # Depthwise kernels here have one output per input channel (multiplier 1).
        return value.permute(2, 3, 0, 1).contiguous()
    return value


def write_tfjs(arrays: Mapping[str, NDArray[Any]], source_json: Path, out_dir: Path) -> Path:
    """Constants (TensorFlow layout) as a TFJS graph model with float16 shards in ``out_dir``.

    The topology is the source's; constants whose shape changed (a widened head) get
    their new shape. ``load_tfjs`` reads the result back into the same network.
    """
    model = json.loads(source_json.read_text())
    for node in model["modelTopology"]["node"]:
        if node["op"] == "Const" and node["name"] in arrays:
            shape = node.get("attr", {}).get("value", {}).get("tensor", {}).get("tensorShape")
            if shape is not None and arrays[node["name"]].ndim:
                shape["dim"] = [{"size": str(d)} for d in arrays[node["name"]].shape]
    specs, chunks = [], []
    for name, value in arrays.items():
        spec: dict[str, Any] = {"name": name, "shape": list(value.shape)}
        if value.dtype == np.int32:
            spec["dtype"] = "int32"
            chunks.append(value.astype("<i4").tobytes())
        else:
            spec |= {
                "dtype": "float32",
                "quantization": {"dtype": "float16", "original_dtype": "float32"},
            }
            chunks.append(value.astype("<f2").tobytes())
        specs.append(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "weights.bin").write_bytes(b"".join(chunks))
    model["weightsManifest"] = [{"paths": ["weights.bin"], "weights": specs}]
    path = out_dir / "model.json"
    path.write_text(json.dumps(model))
    return path
