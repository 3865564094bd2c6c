"""Draw boxes and "age (lo-hi)" labels on a copy of a photo, legible at any image size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from agelens.pipeline.estimates import Face
from agelens.pipeline.images import RGBImage

_BOX_COLOUR = (255, 196, 0)
_TEXT_COLOUR = (0, 0, 0)


def annotate(image: RGBImage, faces: list[Face]) -> Image.Image:
    """A copy of ``image`` with every face boxed and labelled; sizes scale with the image."""
    canvas = Image.fromarray(np.asarray(image)).copy()
    draw = ImageDraw.Draw(canvas)
    short_side = min(canvas.size)
    line = max(2, round(short_side / 250))
    font = ImageFont.load_default(size=max(12, round(short_side / 28)))
    for number, face in enumerate(faces, 1):
        x1, y1, x2, y2 = face.box
        draw.rectangle((x1, y1, x2, y2), outline=_BOX_COLOUR, width=line)
        # Numbered as the CLI's table and the page number the faces.
        text = f"#{number} {face.label}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = max(2, line)
        height = bottom - top + 2 * pad
        # Above the box when there is room, else just inside its top edge.
        y = y1 - height if y1 - height >= 0 else y1
        x = min(max(0.0, x1), max(0.0, canvas.width - (right - left) - 2 * pad))
        draw.rectangle((x, y, x + right - left + 2 * pad, y + height), fill=_BOX_COLOUR)
        draw.text((x + pad - left, y + pad - top), text, fill=_TEXT_COLOUR, font=font)
    return canvas


def save_annotated(image: RGBImage, faces: list[Face], destination: Path) -> Path:
    """Write the annotated copy; JPEG for ``.jpg``/``.jpeg`` names, else PNG."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        destination = destination.with_suffix(".png")
    annotate(image, faces).save(destination, quality=92)
    return destination
