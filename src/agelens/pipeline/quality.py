"""How well a face can be judged: its size, sharpness, light, pose and colour.

Measured once per face from the photo and dlib's 5 landmarks, independently of the age
network, so that every model and every output reports the same figures. Whether a face
is good enough is a decision (:mod:`agelens.decisions.quality`); this module only measures.

- ``eye_distance``: pixels between the eye centres in the photo as given. A face with
  few pixels carries little of what ages show (skin texture, fine lines).
- ``sharpness``: the mean absolute Laplacian of the inner face, cut upright at a fixed
  scale and divided by its contrast, so that a faded or dark face is not called blurred.
  A face upscaled from few pixels reads as blurred, as it should; film grain, a
  halftone screen or sensor noise read as too much fine texture.
- ``brightness`` and ``clipped``: the inner face's mean light (0-255) and the share of
  its pixels crushed to black or burnt to white.
- ``yaw``, ``pitch`` and ``roll``: from the landmarks. ``yaw`` is the nose's offset
  from the eyes' midpoint across the face, in eye distances (0 frontal, about 0.5 in
  profile); ``pitch`` is its drop below the eye line in eye distances (about 0.55 for a
  frontal face, less when seen from above or below); ``roll`` is the eye line's angle.
- ``colour``: the inner face's mean chroma (max minus min of R, G, B); about 0 for a
  grey photo, where skin tone and flush, which carry age, are lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from agelens.pipeline.chips import upright_crop
from agelens.pipeline.images import RGBImage

#: The inner face is cut at this many pixels a side, between eyebrows and chin.
_SCALE = 48
#: dlib's chip padding for the inner face: the landmarks' own square, a little wider.
_INNER_PADDING = 0.1
_DARK, _BRIGHT = 12, 243


@dataclass(frozen=True, slots=True)
class FaceQuality:
    """Measured properties of one face; see the module's docstring for each."""

    eye_distance: float
    sharpness: float
    brightness: float
    clipped: float
    yaw: float
    pitch: float
    roll: float
    colour: float

    def to_dict(self) -> dict[str, Any]:
        return {key: round(value, 3) for key, value in asdict(self).items()}


def measure(image: RGBImage, landmarks: Sequence[tuple[float, float]]) -> FaceQuality:
    """The quality of the face whose 5 dlib landmarks in ``image`` are given."""
    return measure_many([(image, landmarks)])[0]


def measure_many(
    faces: Sequence[tuple[RGBImage, Sequence[tuple[float, float]]]],
) -> list[FaceQuality]:
    """:func:`measure` for many faces at once: one pass of array operations over all of
    them, as per-face operations on small arrays cost more in overhead than in work."""
    if not faces:
        return []
    points = np.asarray([landmarks for _, landmarks in faces], dtype=np.float64)
    first_eye, second_eye = points[:, 0:2].mean(axis=1), points[:, 2:4].mean(axis=1)
    axis = first_eye - second_eye
    eye_distance = np.hypot(axis[:, 0], axis[:, 1])
    scale = np.maximum(eye_distance, 1e-6)
    unit = axis / scale[:, None]
    offset = points[:, 4] - (first_eye + second_eye) / 2
    # The eye line's angle, from the image's left eye to its right eye.
    flip = np.where(axis[:, 0] < 0, -1.0, 1.0)
    roll = np.degrees(np.arctan2(axis[:, 1] * flip, axis[:, 0] * flip))
    inner = np.stack(
        [upright_crop(image, marks, _SCALE, _INNER_PADDING) for image, marks in faces]
    ).astype(np.float32)
    red, green, blue = inner[..., 0], inner[..., 1], inner[..., 2]
    grey = 0.299 * red + 0.587 * green + 0.114 * blue
    laplacian = (
        grey[:, 1:-1, :-2]
        + grey[:, 1:-1, 2:]
        + grey[:, :-2, 1:-1]
        + grey[:, 2:, 1:-1]
        - 4 * grey[:, 1:-1, 1:-1]
    )
    # Reductions over one flat axis each: numpy is slow on several small axes, or the last
    # axis of three colours.
    flat = grey.reshape(len(faces), -1)
    contrast = np.maximum(flat.std(axis=1), 1.0)
    chroma = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    columns = zip(
        eye_distance,
        np.abs(laplacian).reshape(len(faces), -1).mean(axis=1) / contrast,
        flat.mean(axis=1),
        ((flat <= _DARK) | (flat >= _BRIGHT)).mean(axis=1),
        np.abs((offset * unit).sum(axis=1)) / scale,
        np.abs(offset[:, 0] * unit[:, 1] - offset[:, 1] * unit[:, 0]) / scale,
        roll,
        chroma.reshape(len(faces), -1).mean(axis=1),
        strict=True,
    )
    return [FaceQuality(*(float(value) for value in row)) for row in columns]
