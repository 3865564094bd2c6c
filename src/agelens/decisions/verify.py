"""The claimed-age check: is the age a person states consistent with their face?

A face cannot prove an age, but its calibrated distribution says how surprising a claim
is. The check reads the claim's conformal p-value: the share of faces of the claimed age
that, by the calibration, would look at least this far from it.

- ``consistent``: the claim lies inside the face's calibrated 90% interval (p >= 0.10);
- ``unlikely``: it lies on or outside the 98% interval (p <= 0.02): one honest claim in
  fifty or fewer looks like this;
- ``refer``: anything between, a face the quality check cannot judge, a photo with more
  than one face (which person claims?), or a model without a calibration: a person
  should look.

Like the gate, it holds for photos like those it was calibrated on (the domain suite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from agelens.decisions import calibration
from agelens.decisions.quality import QualityLimits
from agelens.pipeline.estimates import Face

#: A claim is an age in years, 0 to 120.
MIN_CLAIM, MAX_CLAIM = 0.0, 120.0
CONSISTENT_FROM, UNLIKELY_UP_TO = 0.10, 0.02


class Verdict(StrEnum):
    CONSISTENT = "consistent"
    UNLIKELY = "unlikely"
    REFER = "refer"
    NO_FACE = "no_face"


@dataclass(frozen=True, slots=True)
class ClaimCheck:
    """The answer for one photo: the verdict, the p-value behind it (None without a face or
    a calibration), and why it was referred."""

    claimed: float
    verdict: Verdict
    p_value: float | None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "verdict": self.verdict.value,
            "p_value": None if self.p_value is None else round(self.p_value, 4),
            "reasons": self.reasons,
        }


def check_claimed(claimed: float) -> float:
    """The claimed age as a number, or a ValueError that says what a claim may be."""
    try:
        value = float(claimed)
    except (TypeError, ValueError) as error:
        raise ValueError(f"the claimed age must be a number, got {claimed!r:.40}") from error
    # NaN fails both comparisons, so it is refused here too.
    if not (MIN_CLAIM <= value <= MAX_CLAIM) or not math.isfinite(value):
        raise ValueError(
            f"the claimed age must be {MIN_CLAIM:g}-{MAX_CLAIM:g} years, got {claimed!r:.40}"
        )
    return value


def verify(
    faces: list[Face],
    claimed: float,
    class_ages: list[float],
    record: dict[str, Any] | None,
    limits: QualityLimits,
) -> ClaimCheck:
    """The verdict on ``claimed`` for a photo's faces (each with its distribution)."""
    claimed = check_claimed(claimed)
    if not faces:
        return ClaimCheck(claimed, Verdict.NO_FACE, None, ["no face found"])
    face = faces[0]
    if face.distribution is None:
        raise ValueError("the claimed-age check needs each face's distribution")
    if calibration.quantile_for(record, 0.9) is None:
        return ClaimCheck(claimed, Verdict.REFER, None, ["the model has no calibration"])
    assert record is not None
    unjudged = limits.reasons(face.quality)
    row, kind = face.distribution[None, :], np.array([limits.quality_class(face.quality)])
    p_value = float(calibration.p_values(row, class_ages, record, np.array([claimed]), kind)[0])
    reasons = list(unjudged)
    if len(faces) > 1:
        reasons.append(f"{len(faces)} faces in the photo: the claim is one person's")
    if reasons:
        return ClaimCheck(claimed, Verdict.REFER, p_value, reasons)
    low, high = calibration.intervals(row, class_ages, record, 0.9, kind)[0]
    if p_value >= CONSISTENT_FROM:
        return ClaimCheck(claimed, Verdict.CONSISTENT, p_value)
    if p_value <= UNLIKELY_UP_TO:
        return ClaimCheck(
            claimed,
            Verdict.UNLIKELY,
            p_value,
            [f"{claimed:g} lies outside the face's 98% interval (90%: {low:.0f}-{high:.0f})"],
        )
    return ClaimCheck(
        claimed,
        Verdict.REFER,
        p_value,
        [f"{claimed:g} lies just outside the face's 90% interval ({low:.0f}-{high:.0f})"],
    )
