"""Safe image loading: any supported input becomes a C-contiguous RGB uint8 array.

Every decoding problem is raised as a typed :class:`~agelens.errors.ImageError`,
so a bad upload never surfaces as a Pillow traceback.
"""

from __future__ import annotations

import ctypes
import io
import os
import stat
import warnings
from pathlib import Path
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from agelens.errors import (
    EmptyImageError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
)

ImageSource: TypeAlias = str | os.PathLike[str] | bytes | bytearray | Image.Image | np.ndarray
RGBImage: TypeAlias = NDArray[np.uint8]

#: Formats decoded. Pillow identifies the format from the bytes themselves, never from a
#: file name; anything else (EPS, which would run Ghostscript, PDF, HTML...) is refused.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

#: The first bytes of each format decoded. Bytes that start like one of them but cannot be
#: read are a truncated or corrupt image of that format, not "not an image".
SIGNATURES = (b"\xff\xd8", b"\x89PNG", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_WEBP = (b"RIFF", b"WEBP")

#: The largest file read as one image: no photo comes near it.
MAX_FILE_BYTES = 256 * 2**20

#: Default pixel limit: 50 megapixels covers every phone and DSLR photo, while a
#: 30 kB PNG that claims 100,000 x 100,000 pixels is refused before it is decoded.
DEFAULT_MAX_PIXELS = 50_000_000


def _quiet_libtiff() -> None:
    """Stop the libtiff that Pillow carries from printing its warnings and errors to
    standard error: a server fed broken TIFFs wrote 32,217 such lines in 200,000 requests.
    Its errors still fail the decode, and the caller gets a typed error with the reason."""
    folder = Path(Image.__file__).resolve().parent.parent / "pillow.libs"
    for path in folder.glob("libtiff*.so*"):
        try:
            library = ctypes.CDLL(str(path))
            library.TIFFSetWarningHandler(None)
            library.TIFFSetErrorHandler(None)
        except (OSError, AttributeError):  # another build of Pillow: nothing to quiet
            pass


_quiet_libtiff()


def load_image(
    source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, still_only: bool = False
) -> RGBImage:
    """Return ``source`` as an ``[H, W, 3]`` uint8 RGB array, upright per its EXIF tag.

    Accepts a path, encoded bytes, a PIL image, or an array (grey ``[H, W]``,
    RGB ``[H, W, 3]`` or RGBA ``[H, W, 4]``; integer or float in ``[0, 1]``).
    An animation gives its first frame, or with ``still_only`` an
    :class:`~agelens.errors.UnsupportedImageError`.
    """
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels)
        try:
            return _pil_to_rgb(source.copy())
        except Exception as error:  # a lazily loaded file, or a mode Pillow cannot convert
            raise TruncatedImageError(f"<image>: cannot read this image ({error})") from error
    if isinstance(source, np.ndarray) or hasattr(source, "__array__"):
        # np.asarray first: np.matrix and other subclasses misbehave in numpy's own code.
        try:
            array = np.asarray(source)
        except Exception as error:
            raise NotAnImageError(f"cannot read {type(source).__name__} as an array") from error
        return _array_to_rgb(array, max_pixels)
    if isinstance(source, bytes | bytearray):
        return _decode(bytes(source), "<bytes>", max_pixels, still_only)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return _decode(_read_file(path), str(path), max_pixels, still_only)
    raise TypeError(f"cannot load an image from {type(source).__name__}")


def over_file_limit(size: int, *, read_so_far: bool = False) -> str | None:
    """Why ``size`` bytes are refused as one image, or None when they are not;
    ``read_so_far``: a stream was read only until it passed the limit."""
    if size <= MAX_FILE_BYTES:
        return None
    limit = f"the limit of {MAX_FILE_BYTES / 2**20:.0f} MB for one image file"
    return f"more than {limit}" if read_so_far else f"{size / 2**20:,.0f} MB, over {limit}"


def _read_file(path: Path) -> bytes:
    """A file's bytes, after checking it is a regular file of a sane size (a 1 GB file
    named .jpg is refused before it is read), with a message that says what is wrong."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise NotAnImageError(f"{path}: no such file") from None
    except OSError as error:  # a symbolic link loop, a path too long, no permission
        raise NotAnImageError(f"{path}: cannot read ({error.strerror or error})") from None
    except ValueError:  # a NUL byte in the name: no file can be called so
        raise NotAnImageError(f"{path!r}: a file name cannot hold a NUL byte") from None
    if stat.S_ISDIR(info.st_mode):
        readable = os.access(path, os.R_OK | os.X_OK)
        raise NotAnImageError(f"{path}: a folder{'' if readable else ' that cannot be opened'}")
    if not stat.S_ISREG(info.st_mode):
        raise NotAnImageError(f"{path}: not a regular file (a pipe, socket or device)")
    if too_large := over_file_limit(info.st_size):
        raise ImageTooLargeError(f"{path}: {too_large}")
    try:
        return path.read_bytes()
    except OSError as error:
        raise NotAnImageError(f"{path}: cannot read ({error.strerror or error})") from None


def _decode(data: bytes, name: str, max_pixels: int, still_only: bool) -> RGBImage:
    """Decode, turning every failure into a typed error: Pillow's plugins raise many kinds
    (OSError, SyntaxError, TypeError, IndexError, struct.error...) on hostile files."""
    if not data:
        raise EmptyImageError(f"{name}: the file is empty (0 bytes)")
    with warnings.catch_warnings():
        # Pillow warns about bombs (we enforce our own limit) and about corrupt metadata
        # (EXIF, TIFF tags): a hostile file is answered by its error, not by log lines.
        warnings.simplefilter("ignore")
        return _decode_quietly(data, name, max_pixels, still_only)


def _decode_quietly(data: bytes, name: str, max_pixels: int, still_only: bool) -> RGBImage:
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{name}: {error}") from error
    except Exception as error:
        if _looks_like_a_supported_format(data):
            raise TruncatedImageError(
                f"{name}: image data is truncated or corrupt ({_reason(error)})"
            ) from error
        raise NotAnImageError(
            f"{name}: not an image in a supported format ({', '.join(FORMATS)})"
        ) from error
    # Samples of 2 or 4 bytes (16-bit, int32, float) cost that much more to decode and
    # convert: the pixel limit shrinks with them, so a request's memory stays bounded.
    wide = _BYTES_PER_SAMPLE.get(image.mode, 1)
    samples = f" for {8 * wide}-bit samples" if wide > 1 else ""
    _check_pixels(image.size, max_pixels // wide, name, samples)
    try:
        # is_animated looks only for a second frame: counting them (n_frames) walks every
        # frame, and Pillow's walk of a TIFF's chained IFDs takes time quadratic in their
        # number (90,000 in 9 MB). A camera's MPO (a JPEG with a large preview or a gain
        # map after it) is a still.
        animated = getattr(image, "is_animated", False)
        if still_only and animated and image.format != "MPO":
            raise UnsupportedImageError(
                f"{name}: an animated {image.format} (more than one frame); send a still photo"
            )
        image.load()
        return _pil_to_rgb(image)
    except UnsupportedImageError:
        raise
    except Exception as error:
        raise TruncatedImageError(
            f"{name}: image data is truncated or corrupt ({_reason(error)})"
        ) from error


def _looks_like_a_supported_format(data: bytes) -> bool:
    return data.startswith(SIGNATURES) or (data[:4] == _WEBP[0] and data[8:12] == _WEBP[1])


def _reason(error: Exception) -> str:
    """Pillow's message, without the object repr it sometimes carries."""
    if isinstance(error, UnidentifiedImageError):
        return "no readable header"
    return str(error) or type(error).__name__


def _check_pixels(
    size: tuple[int, int], max_pixels: int, name: str = "<image>", samples: str = ""
) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise EmptyImageError(f"{name}: the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,}{samples} (a guard against decompression bombs)"
        )


def _pil_to_rgb(image: Image.Image) -> RGBImage:
    """Apply EXIF orientation and bring any mode (grey, palette, CMYK, 16-bit, alpha) to RGB.

    ``image`` is turned in place: pass a copy of an image the caller still holds.
    """
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = Image.fromarray(_scale_to_uint8(np.asarray(image)))
    if image.mode in ("La", "RGBa"):  # premultiplied alpha: Pillow converts it from LA/RGBA
        image = image.convert(image.mode.upper())
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = _flatten_alpha(image.convert("RGBA"))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite on white: transparent regions otherwise decode as black, which is not a face."""
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image)


def _scale_to_uint8(values: np.ndarray) -> NDArray[np.uint8]:
    """Map 16-bit, 32-bit or float samples to bytes by their nominal range, a band of rows
    at a time: converting a 40-megapixel int32 image whole took float64 copies of it
    (+700 MB); by bands, the bytes out are all that is added."""
    out = np.empty(values.shape, dtype=np.uint8)
    if values.size == 0:
        return out
    peak = float(values.max())
    for start in range(0, values.shape[0], _BAND_ROWS):
        band = values[start : start + _BAND_ROWS].astype(np.float32)
        if values.dtype.kind == "f":
            band = band * 255.0 + 0.5 if peak <= 1.0 else band
        else:
            band = band * (255.0 / (65535 if peak > 255 else 255)) + 0.5
        out[start : start + _BAND_ROWS] = np.clip(band, 0, 255)
    return out


#: Bytes per sample of the wide modes (the rest take 1).
_BYTES_PER_SAMPLE = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}
#: Rows converted at a time by :func:`_scale_to_uint8`.
_BAND_ROWS = 256


def _array_to_rgb(array: np.ndarray, max_pixels: int) -> RGBImage:
    if array.dtype.kind not in "uifb":
        raise NotAnImageError(f"an image array must hold numbers, not {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise NotAnImageError(
            f"an image array must be [H, W], [H, W, 3] or [H, W, 4], got {array.shape}"
        )
    _check_pixels((array.shape[1], array.shape[0]), max_pixels)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise NotAnImageError("the image array holds NaN or infinite values")
    if array.dtype.kind == "b":
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        array = _scale_to_uint8(array)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        return _pil_to_rgb(Image.fromarray(np.ascontiguousarray(array), "RGBA"))
    return np.ascontiguousarray(array)
