"""Draw boxes and "age (lo-hi)" labels on a copy of a photo, legible at any image size.

Labels are placed as the web page places them: above the face's box, else below, else
just inside its top, else a line further out; inside the photo and never over another
label. Where the full labels do not all fit, shorter wordings are tried ("#n age", then
"#n"), so that no label hides another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from agelens.pipeline.estimates import Face
from agelens.pipeline.images import RGBImage

_BOX_COLOUR = (255, 196, 0)
_TEXT_COLOUR = (0, 0, 0)

#: A label's rectangle: x, y, width, height.
Spot = tuple[float, float, float, float]

#: The wordings tried in turn, as on the page: the full label (with the apparent gender
#: when it was asked for), "#n age", "#n".
_WORDINGS: tuple[Callable[[Face, int], str], ...] = (
    lambda face, n: f"#{n} {face.label}" + (f" {face.gender.label}" if face.gender else ""),
    lambda face, n: f"#{n} {face.label.split(' ')[0]}",
    lambda face, n: f"#{n}",
)


def _overlaps(a: Spot, b: Spot) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def place_labels(
    boxes: Sequence[tuple[float, float, float, float]],
    widths: Sequence[float],
    height: float,
    size: tuple[int, int],
) -> list[Spot | None]:
    """Each label's rectangle near its box, or None where no spot near it is free."""
    image_width, image_height = size
    placed: list[Spot] = []
    spots: list[Spot | None] = []
    for (x1, y1, _, y2), width in zip(boxes, widths, strict=True):
        width = min(width, image_width)
        x = min(max(x1, 0.0), image_width - width)
        spot = None
        # Near its face or not at all: a label far away would name the wrong face.
        for y in (y1 - height, y2, y1, y1 - 2 * height, y2 + height):
            candidate = (x, y, width, height)
            inside = y >= 0 and y + height <= image_height
            if inside and not any(_overlaps(other, candidate) for other in placed):
                spot = candidate
                break
        if spot is not None:
            placed.append(spot)
        spots.append(spot)
    return spots


def annotate(image: RGBImage, faces: list[Face]) -> Image.Image:
    """A copy of ``image`` with every face boxed and labelled; sizes scale with the image."""
    wordings = [
        [wording(face, number) for wording in _WORDINGS] for number, face in enumerate(faces, 1)
    ]
    return draw_labels(image, [face.box for face in faces], wordings)


def draw_labels(
    image: RGBImage,
    boxes: Sequence[tuple[float, float, float, float]],
    wordings: Sequence[Sequence[str]],
) -> Image.Image:
    """A copy of ``image`` with each box drawn and labelled by the first of its wordings
    (longest first) that lets every label find a place; see :func:`place_labels`."""
    canvas = Image.fromarray(np.asarray(image)).copy()
    draw = ImageDraw.Draw(canvas)
    short_side = min(canvas.size)
    line = max(2, round(short_side / 250))
    font = ImageFont.load_default(size=max(12, round(short_side / 28)))
    pad = max(2, line)
    _, top, _, bottom = draw.textbbox((0, 0), "#0 80+ (0-80+)", font=font)
    height = bottom - top + 2 * pad
    texts: list[str] = []
    spots: list[Spot | None] = []
    for choice in range(max((len(w) for w in wordings), default=0)):
        texts = [w[min(choice, len(w) - 1)] for w in wordings]
        widths = [draw.textlength(text, font=font) + 2 * pad for text in texts]
        spots = place_labels(boxes, widths, height, canvas.size)
        if all(spot is not None for spot in spots):
            break
    for box in boxes:
        draw.rectangle(box, outline=_BOX_COLOUR, width=line)
    for text, spot in zip(texts, spots, strict=True):
        if spot is None:
            continue  # no room near its face: the table still lists it, by number
        x, y, width, _ = spot
        draw.rectangle((x, y, x + width, y + height), fill=_BOX_COLOUR)
        draw.text((x + pad, y + pad - top), text, fill=_TEXT_COLOUR, font=font)
    return canvas


def save_annotated(image: RGBImage, faces: list[Face], destination: Path) -> Path:
    """Write the annotated copy; JPEG for ``.jpg``/``.jpeg`` names, else PNG."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        destination = destination.with_suffix(".png")
    annotate(image, faces).save(destination, quality=92)
    return destination
