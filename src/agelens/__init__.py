"""AgeLens: estimate people's ages from photos of their faces."""

from agelens.decisions.gate import Decision, GatePolicy, GateResult
from agelens.decisions.groups import GroupScheme, resolve_scheme
from agelens.errors import (
    AgeLensError,
    BoxError,
    DatasetError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    ModelError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
)
from agelens.estimator import AgeEstimator
from agelens.models.bundles import Bundle, builtin_bundle_names, load_bundle
from agelens.pipeline.estimates import Face
from agelens.pipeline.images import load_image

__version__ = "0.1.0"

__all__ = [
    "AgeEstimator",
    "AgeLensError",
    "BoxError",
    "Bundle",
    "DatasetError",
    "Decision",
    "EmptyImageError",
    "Face",
    "GatePolicy",
    "GateResult",
    "GroupScheme",
    "ImageError",
    "ImageTooLargeError",
    "ModelError",
    "NotAnImageError",
    "TruncatedImageError",
    "UnsupportedImageError",
    "__version__",
    "builtin_bundle_names",
    "load_bundle",
    "load_image",
    "resolve_scheme",
]
