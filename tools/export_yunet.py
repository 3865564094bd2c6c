"""Export YuNet (libfacedetection, BSD-3) from the installed ``yuface`` library to ONNX.

``yuface`` runs YuNet in its own C++ kernels, built without AVX2 for portability,
at about 27 ms per 416x416 image here; the same network in onnxruntime takes about
3 ms. The weights are read, by their exported symbol names, straight out of the
library that ``yuface`` ships, and the graph is rebuilt to match libfacedetection's
``objectdetect_cnn``: a 3x3 stride-2 stem, depthwise-separable blocks (1x1
pointwise, then 3x3 depthwise with the batch norm folded in, then ReLU), a
three-level top-down neck, and per level cls, obj, bbox and kps heads.
``tests/test_detection.py`` checks the result against ``yuface`` itself.

    pip install onnx "yuface==2023.5.1"
    python tools/export_yunet.py src/agelens/models/yunet-2023
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import yuface
from onnx import TensorProto, helper, numpy_helper

LIBRARY = Path(yuface.__file__).parent / "libfacedetection.so"
STRIDES = (8, 16, 32)
HEADS = (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))


class GraphBuilder:
    """Collects ONNX nodes and weights, reading each weight from the C library by name."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.library = library
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []

    def read(self, symbol: str, count: int) -> np.ndarray:
        values = (ctypes.c_float * count).in_dll(self.library, symbol)
        return np.ctypeslib.as_array(values).astype(np.float32)

    def constant(self, name: str, value: np.ndarray) -> str:
        self.weights.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def stem(self, x: str, out: str) -> str:
        """3x3 stride-2 convolution, stored as 1x1 over a 27(+5)-wide im2col of the BGR image.

        The graph takes the image as it is decoded, ``[N, H, W, 3]`` RGB bytes: it casts
        and transposes them itself, and the stem's input channels are reversed so that
        the network still sees BGR, on raw 0-255 values as it was trained.
        """
        weight = self.read("backbone__model0_pw_weight", 16 * 32).reshape(16, 32)[:, :27]
        # im2col order is (row, column, channel); ONNX wants (channel, row, column).
        weight = weight.reshape(16, 3, 3, 3).transpose(0, 3, 1, 2)[:, ::-1]
        bias = self.read("backbone__model0_pw_bias", 16)
        self.nodes.append(helper.make_node("Cast", [x], ["image_float"], to=TensorProto.FLOAT))
        self.nodes.append(
            helper.make_node("Transpose", ["image_float"], ["image_nchw"], perm=[0, 3, 1, 2])
        )
        self.nodes.append(
            helper.make_node(
                "Conv",
                ["image_nchw", self.constant("stem_w", weight), self.constant("stem_b", bias)],
                ["stem_conv"],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
            )
        )
        self.nodes.append(helper.make_node("Relu", ["stem_conv"], [out]))
        return out

    def separable(self, x: str, prefix: str, cin: int, cout: int, relu: bool, out: str) -> str:
        """libfacedetection's ``convolutionDP``: 1x1 pointwise, 3x3 depthwise, optional ReLU."""
        pointwise = self.read(f"{prefix}_pw_weight", cin * cout).reshape(cout, cin, 1, 1)
        # Depthwise taps are stored tap-major: [9, channels].
        depthwise = self.read(f"{prefix}_dw_weight", cout * 9).reshape(9, cout).T
        self.nodes.append(
            helper.make_node(
                "Conv",
                [
                    x,
                    self.constant(f"{prefix}_pw_w", pointwise),
                    self.constant(f"{prefix}_pw_b", self.read(f"{prefix}_pw_bias", cout)),
                ],
                [f"{prefix}_pw"],
            )
        )
        depthwise_out = f"{prefix}_dw" if relu else out
        self.nodes.append(
            helper.make_node(
                "Conv",
                [
                    f"{prefix}_pw",
                    self.constant(f"{prefix}_dw_w", depthwise.reshape(cout, 1, 3, 3)),
                    self.constant(f"{prefix}_dw_b", self.read(f"{prefix}_dw_bias", cout)),
                ],
                [depthwise_out],
                group=cout,
                pads=[1, 1, 1, 1],
            )
        )
        if relu:
            self.nodes.append(helper.make_node("Relu", [depthwise_out], [out]))
        return out

    def block(self, x: str, prefix: str, cin: int, cout: int, out: str) -> str:
        """``convolution4layerUnit``: two separable convolutions, both with ReLU."""
        hidden = self.separable(x, f"{prefix}_dp1", cin, cin, True, f"{prefix}_hidden")
        return self.separable(hidden, f"{prefix}_dp2", cin, cout, True, out)

    def pool(self, x: str, out: str) -> str:
        self.nodes.append(
            helper.make_node("MaxPool", [x], [out], kernel_shape=[2, 2], strides=[2, 2])
        )
        return out

    def upsample_add(self, coarse: str, fine: str, out: str) -> str:
        scales = self.constant(f"{out}_scales", np.array([1, 1, 2, 2], dtype=np.float32))
        self.nodes.append(
            helper.make_node("Resize", [coarse, "", scales], [f"{out}_up"], mode="nearest")
        )
        self.nodes.append(helper.make_node("Add", [f"{out}_up", fine], [out]))
        return out


def build(library: ctypes.CDLL) -> onnx.ModelProto:
    g = GraphBuilder(library)
    x = g.separable(g.stem("image", "stem"), "backbone__model0_dp", 16, 16, True, "model0")
    x = g.block(g.pool(x, "pool0"), "backbone__model1", 16, 32, "model1")
    x = g.block(x, "backbone__model2", 32, 64, "model2")
    level8 = g.block(g.pool(x, "pool2"), "backbone__model3", 64, 64, "level8")
    level16 = g.block(g.pool(level8, "pool3"), "backbone__model4", 64, 64, "level16")
    level32 = g.block(g.pool(level16, "pool4"), "backbone__model5", 64, 64, "level32")
    neck32 = g.separable(level32, "neck__lateral_convs__2", 64, 64, True, "neck32")
    merged16 = g.upsample_add(neck32, level16, "merged16")
    neck16 = g.separable(merged16, "neck__lateral_convs__1", 64, 64, True, "neck16")
    merged8 = g.upsample_add(neck16, level8, "merged8")
    neck8 = g.separable(merged8, "neck__lateral_convs__0", 64, 64, True, "neck8")
    outputs = []
    for level, (stride, features) in enumerate(zip(STRIDES, (neck8, neck16, neck32), strict=True)):
        for head, channels in HEADS:
            name = f"{head}_{stride}"
            prefix = f"bbox_head__multi_level_{head}__{level}"
            g.separable(features, prefix, 64, channels, False, name)
            outputs.append(
                helper.make_tensor_value_info(
                    name, TensorProto.FLOAT, ["N", channels, f"H/{stride}", f"W/{stride}"]
                )
            )
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])
    graph = helper.make_graph(g.nodes, "yunet", [image], outputs, g.weights)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8, producer_name="agelens"
    )
    onnx.checker.check_model(model)
    return model


def manifest(model_bytes: bytes) -> dict:
    return {
        "schema": 1,
        "name": "yunet-2023",
        "description": "YuNet face detector (libfacedetection v3): boxes, scores, 5 landmarks.",
        "task": "face-detection",
        "artifact": {
            "path": "yunet.onnx",
            "bytes": len(model_bytes),
            "sha256": hashlib.sha256(model_bytes).hexdigest(),
        },
        "input": {
            "name": "image",
            "layout": "NHWC",
            "dtype": "uint8",
            "color_order": "RGB",
            "normalisation": "none: raw 0-255 values, cast and reordered to BGR in the graph",
            "multiple_of": 32,
        },
        "output": {
            "strides": list(STRIDES),
            "heads": [head for head, _ in HEADS],
            "score": "sqrt(sigmoid(cls) * sigmoid(obj))",
            "nms_iou": 0.3,
        },
        "license": {
            "spdx": "BSD-3-Clause",
            "attribution": "Shiqi Yu and contributors (libfacedetection)",
            "source": "https://github.com/ShiqiYu/libfacedetection",
            "research_only": False,
        },
        "source": f"weights read from yuface {version('yuface')} by tools/export_yunet.py",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for yunet.onnx and manifest.json")
    args = parser.parse_args()
    model_bytes = build(ctypes.CDLL(str(LIBRARY))).SerializeToString()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "yunet.onnx").write_bytes(model_bytes)
    (args.out / "manifest.json").write_text(json.dumps(manifest(model_bytes), indent=2) + "\n")
    print(f"wrote {args.out / 'yunet.onnx'} ({len(model_bytes):,} bytes)")


if __name__ == "__main__":
    main()
