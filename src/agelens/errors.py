"""Typed errors, so callers (CLI, server) can turn each failure into a clear message."""

from __future__ import annotations


class AgeLensError(Exception):
    """Base class of every error AgeLens raises on purpose."""


class ImageError(AgeLensError, ValueError):
    """The input could not be turned into an RGB image."""


class EmptyImageError(ImageError):
    """The input has zero bytes or zero pixels."""


class NotAnImageError(ImageError):
    """The bytes are not in an image format we can decode."""


class UnsupportedImageError(ImageError):
    """An image, but not one photo: an animation, where one still frame is needed."""


class TruncatedImageError(ImageError):
    """The file starts like an image but its data is cut short or corrupt."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the configured limit (decompression-bomb guard)."""


class BoxError(AgeLensError, ValueError):
    """Face boxes given by the caller that cannot be a face in this image, or too many."""


class ModelError(AgeLensError):
    """A model bundle is missing, malformed, or fails its checksum."""


class DatasetError(AgeLensError):
    """A dataset spec or its files cannot be read."""
