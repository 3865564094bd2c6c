"""Every kind of input becomes an upright RGB uint8 array, or a typed, readable error."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agelens import (
    EmptyImageError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    load_image,
)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_accepts_path_bytes_pil_and_array(astronaut, tmp_path: Path):
    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    for source in (path, str(path), path.read_bytes(), Image.fromarray(astronaut), astronaut):
        loaded = load_image(source)
        assert loaded.shape == (512, 512, 3) and loaded.dtype == np.uint8
        assert np.array_equal(loaded, astronaut)


def test_zero_bytes_is_empty(tmp_path: Path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(EmptyImageError, match="empty"):
        load_image(empty)


def test_text_is_not_an_image(tmp_path: Path):
    fake = tmp_path / "page.jpg"
    fake.write_text("<html><body>not a photo</body></html>")
    with pytest.raises(NotAnImageError, match="not an image"):
        load_image(fake)


def test_missing_file_is_reported():
    with pytest.raises(NotAnImageError, match="no such file"):
        load_image("/nonexistent/photo.jpg")


def test_truncated_jpeg(astronaut):
    data = encode(Image.fromarray(astronaut), "JPEG")
    with pytest.raises(TruncatedImageError, match="truncated"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (12_000, 12_000)), "PNG")  # 144 MP in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLargeError, match="pixels"):
        load_image(bomb)


def test_pixel_limit_is_configurable(astronaut):
    with pytest.raises(ImageTooLargeError):
        load_image(astronaut, max_pixels=100_000)


def test_cmyk_jpeg_becomes_rgb(astronaut):
    cmyk = encode(Image.fromarray(astronaut).convert("CMYK"), "JPEG", quality=95)
    loaded = load_image(cmyk)
    assert loaded.shape == (512, 512, 3)
    assert np.abs(loaded.astype(int) - astronaut.astype(int)).mean() < 12


def test_16_bit_grey_png_is_scaled_not_clipped():
    ramp = (np.arange(256 * 64, dtype=np.uint16).reshape(64, 256) * 4).astype(np.uint16)
    loaded = load_image(encode(Image.fromarray(ramp), "PNG"))
    assert loaded.shape == (64, 256, 3)
    assert loaded.max() > 200 and loaded.min() < 10
    assert np.array_equal(loaded[:, :, 0], loaded[:, :, 2])


def test_alpha_is_flattened_on_white():
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:16, :, :] = (255, 0, 0, 255)
    loaded = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert tuple(loaded[0, 0]) == (255, 0, 0)
    assert tuple(loaded[31, 31]) == (255, 255, 255)


def test_grey_and_palette_become_rgb(astronaut):
    grey = load_image(encode(Image.fromarray(astronaut).convert("L"), "PNG"))
    palette = load_image(encode(Image.fromarray(astronaut).convert("P"), "GIF"))
    assert grey.shape == palette.shape == (512, 512, 3)


def test_exif_orientation_is_applied(astronaut):
    image = Image.fromarray(astronaut[:, :300])  # 300 wide, 512 tall
    loaded = load_image(encode(image, "JPEG", exif=_turned()))
    assert loaded.shape == (300, 512, 3)


def test_a_pil_image_is_turned_upright_without_changing_the_callers(astronaut):
    image = Image.open(
        io.BytesIO(encode(Image.fromarray(astronaut[:, :300]), "JPEG", exif=_turned()))
    )
    assert load_image(image).shape == (300, 512, 3)
    assert image.size == (300, 512) and image.getexif()[0x0112] == 6


def _turned() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return exif


def test_float_and_grey_arrays():
    assert load_image(np.full((8, 8), 0.5)).max() == 128
    assert load_image(np.zeros((8, 8, 1), dtype=np.uint8)).shape == (8, 8, 3)
    with pytest.raises(NotAnImageError):
        load_image(np.zeros((8, 8, 5), dtype=np.uint8))


def test_unsupported_type_is_a_type_error():
    with pytest.raises(TypeError):
        load_image(42)  # type: ignore[arg-type]
