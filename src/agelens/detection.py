"""Face detection with YuNet (libfacedetection, via ``yuface``).

Detection runs on a copy of the image scaled so its longer side is at most
``max_side`` pixels: YuNet's cost grows with the pixel count, while faces big
enough to estimate an age from stay detectable. Boxes and landmarks are mapped
back to the original image's coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import yuface
from PIL import Image

from agelens.images import RGBImage

#: Longer side of the image the detector sees. Chosen with ``bench/benchmark.py``:
#: it keeps faces down to about 4% of the image width and is the speed lever.
DEFAULT_MAX_SIDE = 480
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
    """Finds every face in an RGB image. Stateless after construction, so threads may share it."""

    def __init__(
        self,
        *,
        max_side: int = DEFAULT_MAX_SIDE,
        min_score: float = DEFAULT_MIN_SCORE,
        min_face: int = DEFAULT_MIN_FACE,
    ) -> None:
        if max_side < 64:
            raise ValueError(f"max_side must be at least 64 pixels, got {max_side}")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], got {min_score}")
        self.max_side = max_side
        self.min_score = min_score
        self.min_face = min_face

    def detect(self, image: RGBImage) -> list[Detection]:
        """Return the faces of ``image``, largest first."""
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small = _resize(image, scale)
        # YuNet expects BGR; its scores are integers 0-100.
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        scores, boxes, points = yuface.detect(bgr, conf=self.min_score)
        detections = []
        for score, raw_box, marks in zip(scores, boxes, points, strict=True):
            x, y, w, h = (float(v) for v in raw_box)
            box = (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
            if min(box[2] - box[0], box[3] - box[1]) < self.min_face:
                continue
            landmarks = tuple(
                (float(marks[2 * i]) / scale, float(marks[2 * i + 1]) / scale) for i in range(5)
            )
            clipped = (
                max(0.0, box[0]),
                max(0.0, box[1]),
                min(float(width), box[2]),
                min(float(height), box[3]),
            )
            detections.append(Detection(clipped, float(score) / 100.0, landmarks))
        return sorted(detections, key=lambda face: face.area, reverse=True)


def _resize(image: RGBImage, scale: float) -> RGBImage:
    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
