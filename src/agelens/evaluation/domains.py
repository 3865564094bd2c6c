"""Photo sources unlike the training data, made from labelled face crops: the domain suite.

A model, an interval or a gate tuned on clean web crops can fail on what users bring:
old prints, webcams, CCTV and phones. Each domain here turns a face crop into what that
source makes of it, with seeded randomness per face, so that every run sees the same
faces and every model is judged on the same pixels.

- ``clean``: the crop as it is.
- ``print``: an old print, scanned: grey or sepia, faded contrast, film grain or a halftone
  screen, scanner blur, and a low resolution (60-120 pixels across the crop).
- ``webcam``: a face in a 320x240 frame in poor light: 70-120 pixels across the crop, dark, with
  sensor noise, and strong compression.
- ``cctv``: a crowd camera: 20-40 pixels between the eyes, motion blur, seen from above
  (the face foreshortened), compressed.
- ``phone``: heavy JPEG, a colour cast and over-sharpening.

Sizes are set through the crop's width: in UTKFace and the Indian actors' crops the eyes
lie about 0.39 of the width apart.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from agelens.pipeline.images import RGBImage

#: Eye distance over crop width in aligned face crops (UTKFace and the Indian actors: median).
EYES_PER_WIDTH = 0.39
CLEAN, PRINT, WEBCAM, CCTV, PHONE = "clean", "print", "webcam", "cctv", "phone"

Rng = np.random.Generator


def _resized(image: Image.Image, width: float) -> Image.Image:
    """The image at ``width`` pixels across (never enlarged), aspect kept."""
    scale = min(1.0, width / image.width)
    size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BOX) if size != image.size else image


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _noise(pixels: np.ndarray, rng: Rng, sigma: float, chroma: float = 0.0) -> np.ndarray:
    """Grain: luminance noise of ``sigma`` plus per-channel noise of ``chroma`` (0-255 units)."""
    height, width = pixels.shape[:2]
    shared = rng.normal(0, sigma, (height, width, 1))
    return pixels + shared + rng.normal(0, chroma, (height, width, 3))


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def _halftone(grey: np.ndarray, rng: Rng) -> np.ndarray:
    """A clustered-dot screen: each pixel compared with a periodic threshold pattern."""
    period = int(rng.integers(3, 6))
    ys, xs = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]]
    pattern = (np.cos(2 * np.pi * xs / period) + np.cos(2 * np.pi * ys / period) + 2) / 4
    dots = np.where(grey / 255.0 > pattern, 255.0, 0.0)
    # A scan resolves the dots only partly: the screen is mixed back with the tone.
    return 0.75 * grey + 0.25 * dots


def old_print(image: Image.Image, rng: Rng) -> Image.Image:
    image = _resized(image, rng.uniform(60, 120))
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    # Faded: contrast pulled towards a raised mid-grey, blacks lifted.
    fade = rng.uniform(0.45, 0.8)
    grey = 128 + (grey - grey.mean()) * fade + rng.uniform(0, 30)
    grey = _halftone(grey, rng) if rng.random() < 0.3 else grey + rng.normal(0, 7, grey.shape)
    if rng.random() < 0.5:
        pixels = np.repeat(grey[..., None], 3, axis=2)
    else:
        tone = np.array([1.07, 0.87, 0.62]) * rng.uniform(0.95, 1.05, 3)
        pixels = grey[..., None] * tone + np.array([10.0, 6.0, 0.0])
    scanned = _to_image(pixels).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2)))
    return _jpeg(scanned, int(rng.integers(60, 90)))


def webcam(image: Image.Image, rng: Rng) -> Image.Image:
    image = _resized(image, rng.uniform(70, 120))
    pixels = np.asarray(image, dtype=np.float64) / 255.0
    # Low light: the exposure falls, the camera's gain raises the noise with it.
    light = rng.uniform(0.25, 0.6)
    pixels = 255.0 * (pixels * light) ** rng.uniform(0.9, 1.1)
    pixels = _noise(pixels, rng, rng.uniform(4, 9), chroma=rng.uniform(2, 6))
    return _jpeg(_to_image(pixels), int(rng.integers(15, 35)))


def _motion_blur(image: Image.Image, rng: Rng) -> Image.Image:
    length = int(rng.integers(3, 8))
    angle = rng.uniform(0, np.pi)
    kernel = np.zeros((length, length))
    centre = (length - 1) / 2
    for step in np.linspace(-centre, centre, 4 * length):
        kernel[round(centre + step * np.sin(angle)), round(centre + step * np.cos(angle))] = 1
    pixels = np.asarray(image, dtype=np.float64)
    padded = np.pad(pixels, ((length, length), (length, length), (0, 0)), mode="edge")
    blurred = np.zeros_like(pixels)
    for y, x in zip(*np.nonzero(kernel), strict=True):
        dy, dx = y - length // 2, x - length // 2
        blurred += padded[
            length + dy : length + dy + pixels.shape[0], length + dx : length + dx + pixels.shape[1]
        ]
    return _to_image(blurred / kernel.sum())


def cctv(image: Image.Image, rng: Rng) -> Image.Image:
    width = rng.uniform(20, 40) / EYES_PER_WIDTH
    # Seen from above: the face is foreshortened top to bottom.
    squash = rng.uniform(0.78, 0.92)
    scale = min(1.0, width / image.width)
    size = (max(8, round(image.width * scale)), max(8, round(image.height * scale * squash)))
    small = _motion_blur(image.resize(size, Image.Resampling.BOX), rng)
    pixels = _noise(np.asarray(small, dtype=np.float64), rng, rng.uniform(2, 5))
    return _jpeg(_to_image(pixels), int(rng.integers(35, 65)))


def phone(image: Image.Image, rng: Rng) -> Image.Image:
    cast = rng.uniform(0.8, 1.2, 3)
    pixels = np.asarray(image, dtype=np.float64) * cast / cast.mean()
    sharpened = _to_image(pixels).filter(
        ImageFilter.UnsharpMask(
            radius=rng.uniform(1.5, 3), percent=int(rng.integers(150, 300)), threshold=0
        )
    )
    return _jpeg(sharpened, int(rng.integers(8, 25)))


#: name -> how a face crop becomes that source's picture of it.
DOMAINS: dict[str, Callable[[Image.Image, Rng], Image.Image]] = {
    CLEAN: lambda image, _: image,
    PRINT: old_print,
    WEBCAM: webcam,
    CCTV: cctv,
    PHONE: phone,
}


def degrade(image: RGBImage, domain: str, key: str, seed: int = 0) -> RGBImage:
    """``image`` as ``domain`` would show it; the same ``key`` and ``seed`` give the same
    pixels on every run and machine (name each face by something stable, such as its hash)."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {', '.join(DOMAINS)}, got {domain!r}")
    rng = np.random.default_rng([seed, zlib.crc32(f"{domain}:{key}".encode())])
    return np.asarray(DOMAINS[domain](Image.fromarray(image), rng), dtype=np.uint8)
