"""Quantized variants must give the ages of the network they come from, on every CPU.

int8 kernels differ by CPU: on x86 without VNNI, onnxruntime's u8s8 kernels add pairs of
products in 16 bits, which saturate, so one variant gave a 1-year-old 54 years on one CPU
and 17 on another. A variant is fit to ship only when, on the CPU at hand, every chip's
expected age is within :data:`MAX_AGE_DIFFERENCE` of the float network's.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agelens.errors import ModelError
from agelens.models.bundles import Bundle
from agelens.pipeline.network import AgeModel

#: Years a variant's expected age may differ from fp32's on any one chip.
MAX_AGE_DIFFERENCE = 1.0


def age_differences(
    reference: Bundle, variant: Bundle, chips: NDArray[np.uint8]
) -> NDArray[np.float64]:
    """Per chip, |expected age of ``variant``'s weights - that of ``reference``'s|."""
    ages = np.asarray(reference.ages, dtype=np.float64)
    reference_ages, variant_ages = (
        AgeModel(bundle).distributions(chips, flip=False).astype(np.float64) @ ages
        for bundle in (reference, variant)
    )
    return np.abs(variant_ages - reference_ages)


def check_variant(reference: Bundle, variant: Bundle, chips: NDArray[np.uint8]) -> float:
    """The largest difference on ``chips``; :class:`ModelError` when it is over the limit."""
    differences = age_differences(reference, variant, chips)
    worst = float(differences.max())
    if worst > MAX_AGE_DIFFERENCE:
        over = int((differences > MAX_AGE_DIFFERENCE).sum())
        raise ModelError(
            f"{variant.name}: the {variant.precision} weights' expected age differs from "
            f"{reference.precision}'s by up to {worst:.2f} years "
            f"({over} of {len(chips)} chips over {MAX_AGE_DIFFERENCE:g})"
        )
    return worst
