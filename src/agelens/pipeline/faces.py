"""Face detection with YuNet (libfacedetection), run in onnxruntime.

The network is the one ``yuface`` ships, exported to ONNX by ``tools/export_yunet.py``
(about 8x faster than yuface's portable C++ kernels). Detection runs on a copy of
the image scaled so its longer side is at most ``max_side`` pixels: YuNet's cost
grows with the pixel count, while faces big enough to estimate an age from stay
detectable. Boxes and landmarks are mapped back to the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import dlib
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from agelens.errors import ModelError
from agelens.models.bundles import DEFAULT_DETECTOR, FACE_DETECTION, Bundle, load_bundle
from agelens.pipeline.images import RGBImage
from agelens.pipeline.runtime import open_session

#: Longer side of the image the detector sees, at the least. Chosen with
#: ``bench/benchmark.py``: the speed lever for ordinary photos.
DEFAULT_MAX_SIDE = 480
#: In a large photo the detector sees at least this share of its pixels' side, so that a
#: 24-px face stays about 10 px, the smallest YuNet finds (eight 45-px faces in a
#: 3000x2000 photo: none found at 480 px, all eight at 1250, for 49 ms more), up to
#: ``LARGEST_SIDE``.
SMALLEST_FACE_SCALE = 10 / 24
LARGEST_SIDE = 1600
DEFAULT_MIN_SCORE = 0.6
DEFAULT_MIN_FACE = 20


@dataclass(frozen=True, slots=True)
class Detection:
    """One face: box ``[x1, y1, x2, y2]``, score in ``[0, 1]``, 5 landmarks ``[[x, y], ...]``.

    Landmark order is YuNet's: right eye, left eye, nose tip, right and left mouth corner
    (right and left as seen from the person).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


class FaceDetector:
    """Finds every face in an RGB image. Read-only after construction, so threads may share it."""

    def __init__(
        self,
        model: str | Bundle = DEFAULT_DETECTOR,
        *,
        max_side: int | None = None,
        min_score: float = DEFAULT_MIN_SCORE,
        min_face: int = DEFAULT_MIN_FACE,
        threads: int | None = None,
    ) -> None:
        if max_side is not None and max_side < 64:
            raise ValueError(f"max_side must be at least 64 pixels, got {max_side}")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], got {min_score}")
        self.max_side = max_side
        self.min_score = min_score
        self.min_face = min_face
        self.bundle = (
            model if isinstance(model, Bundle) else load_bundle(model, task=FACE_DETECTION)
        )
        self._network = _YuNet(self.bundle, threads)

    def detect(self, image: RGBImage) -> list[Detection]:
        """Return the faces of ``image``, largest first."""
        height, width = image.shape[:2]
        scale = min(1.0, self.side_for(width, height) / max(height, width))
        boxes, scores, landmarks = self._network.detect(_resize(image, scale), self.min_score)
        boxes, landmarks = boxes / scale, landmarks / scale
        detections = []
        for (x1, y1, x2, y2), score, marks in zip(boxes, scores, landmarks, strict=True):
            if min(x2 - x1, y2 - y1) < self.min_face:
                continue
            clipped = (
                max(0.0, float(x1)),
                max(0.0, float(y1)),
                min(float(width), float(x2)),
                min(float(height), float(y2)),
            )
            points = tuple((float(x), float(y)) for x, y in marks.reshape(5, 2))
            detections.append(Detection(clipped, float(score), points))
        return sorted(detections, key=lambda face: face.area, reverse=True)

    def side_for(self, width: int, height: int) -> int:
        """The longer side the detector sees: ``max_side`` when given, else 480 px for
        ordinary photos and more for large ones, so that small faces stay findable."""
        if self.max_side is not None:
            return self.max_side
        wanted = round(max(width, height) * SMALLEST_FACE_SCALE)
        return min(max(wanted, DEFAULT_MAX_SIDE), LARGEST_SIDE)


class _YuNet:
    """The network and its decoding: anchor-free heads at strides 8, 16 and 32, then NMS."""

    def __init__(self, bundle: Bundle, threads: int | None) -> None:
        self._session = open_session(bundle.model_path, threads)
        self._output_names = [output.name for output in self._session.get_outputs()]
        inputs, outputs = bundle.manifest["input"], bundle.manifest["output"]
        if (inputs["layout"], inputs["dtype"], inputs["color_order"]) != ("NHWC", "uint8", "RGB"):
            raise ModelError(f"{bundle.name}: a detector must take NHWC uint8 RGB images")
        self._input_name = str(inputs["name"])
        self._multiple = int(inputs["multiple_of"])
        self._strides = [int(stride) for stride in outputs["strides"]]
        self._nms_iou = float(outputs["nms_iou"])

    def detect(
        self, image: RGBImage, min_score: float
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        """Boxes ``[N, 4]`` (x1, y1, x2, y2), scores ``[N]`` and landmarks ``[N, 10]``."""
        height, width = image.shape[:2]
        padded_h = -(-height // self._multiple) * self._multiple
        padded_w = -(-width // self._multiple) * self._multiple
        # Zero padding to the network's stride grid, bottom and right, as libfacedetection does.
        tensor = np.zeros((1, padded_h, padded_w, 3), dtype=np.uint8)
        tensor[0, :height, :width] = image
        heads = dict(
            zip(
                self._output_names, self._session.run(None, {self._input_name: tensor}), strict=True
            )
        )
        boxes, scores, landmarks = [], [], []
        for stride in self._strides:
            score = np.sqrt(
                _sigmoid(heads[f"cls_{stride}"][0, 0]) * _sigmoid(heads[f"obj_{stride}"][0, 0])
            )
            rows, cols = np.nonzero(score >= min_score)
            reg = heads[f"bbox_{stride}"][0][:, rows, cols]
            kps = heads[f"kps_{stride}"][0][:, rows, cols]
            centre_x, centre_y = (cols + reg[0]) * stride, (rows + reg[1]) * stride
            half_w, half_h = np.exp(reg[2]) * stride / 2, np.exp(reg[3]) * stride / 2
            boxes.append(
                np.stack(
                    [centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], 1
                )
            )
            scores.append(score[rows, cols])
            points = np.empty((len(rows), 10), dtype=np.float32)
            points[:, 0::2] = (kps[0::2] + cols).T * stride
            points[:, 1::2] = (kps[1::2] + rows).T * stride
            landmarks.append(points)
        all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
        keep = _nms(all_boxes, all_scores, self._nms_iou)
        return all_boxes[keep], all_scores[keep], np.concatenate(landmarks)[keep]


def _sigmoid(values: NDArray[np.float32]) -> NDArray[np.float32]:
    return 1.0 / (1.0 + np.exp(-np.clip(values, -50, 50)))


def _nms(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou: float) -> list[int]:
    """Greedy non-maximum suppression: indices kept, best score first."""
    order = np.argsort(-scores)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        overlap = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        union = areas[best] + areas[rest] - overlap
        order = rest[overlap <= iou * union]
    return keep


def _resize(image: RGBImage, scale: float) -> RGBImage:
    """``image`` scaled by ``scale`` (at most 1) for the detector.

    Whole-number reductions average blocks of pixels (no aliasing); what is left, a
    factor between 1/2 and 1, is bilinear in dlib, 2.6x faster than Pillow's filter on a
    640x480 photo (0.9 against 2.4 ms).
    """
    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    factor = int(1.0 / scale)
    if factor >= 2:
        image = np.asarray(Image.fromarray(image).reduce(factor))
    if image.shape[1::-1] == size:
        return image
    return np.asarray(dlib.resize_image(np.ascontiguousarray(image), size[1], size[0]))
