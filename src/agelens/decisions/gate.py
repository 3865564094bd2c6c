"""The age gate: answer "is this person over N?" with *pass* or *refer to an ID check*.

Why a buffer: an age estimate from a face has an error of several years, and it
is biased upwards for teenagers. Letting a minor through is the costly mistake,
refusing an adult only costs an ID check. So a face passes only when its
estimate clears the legal threshold *plus* a buffer, as in the UK's
Challenge 25 (threshold 18, buffer 7: anyone who looks under 25 shows ID).
Everyone else is referred, never refused: the gate narrows who must show ID.

Two rules: ``estimate`` compares the estimated age with ``over + buffer``;
``lower_bound`` compares the lower end of the face's calibrated 90% interval, so a
face the network is unsure of must look older to pass. A bundle calibrated by
AgeLens stores the rule and buffer that, on validation data, let at most 2% of
13-17-year-olds pass a gate over 18 while passing the most people aged 25+.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agelens.decisions import calibration
from agelens.pipeline.estimates import Face


class Decision(StrEnum):
    PASS = "pass"
    REFER = "refer"
    NO_FACE = "no_face"


ESTIMATE, LOWER_BOUND = "estimate", "lower_bound"
#: What a gate may be asked: an age from 1 to 100, a buffer of up to 30 years.
MIN_OVER, MAX_OVER, MAX_BUFFER = 1.0, 100.0, 30.0
RULES = (ESTIMATE, LOWER_BOUND)


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """Pass a face when its estimate (or its interval's lower end) reaches ``over + buffer``."""

    over: float = 18
    buffer: float = 7
    rule: str = ESTIMATE

    def __post_init__(self) -> None:
        # NaN compares false both ways, so a check written as "not within" catches it too.
        if not MIN_OVER <= self.over <= MAX_OVER:
            raise ValueError(f"the gate's age must be {MIN_OVER:g}-{MAX_OVER:g}, got {self.over}")
        if not 0 <= self.buffer <= MAX_BUFFER:
            raise ValueError(f"the gate's buffer must be 0-{MAX_BUFFER:g} years, got {self.buffer}")
        if self.rule not in RULES:
            raise ValueError(f"gate rule must be one of {', '.join(RULES)}, got {self.rule!r}")

    @property
    def pass_age(self) -> float:
        return self.over + self.buffer

    def score(self, face: Face) -> float:
        """The age this policy compares with ``pass_age``."""
        return face.age if self.rule == ESTIMATE else face.interval[0]

    def decide(self, face: Face) -> Decision:
        return Decision.PASS if self.score(face) >= self.pass_age else Decision.REFER

    def decide_image(self, faces: list[Face]) -> Decision:
        """Overall answer for a photo: it passes only when it has faces and every one passes."""
        if not faces:
            return Decision.NO_FACE
        return (
            Decision.PASS if all(self.decide(f) is Decision.PASS for f in faces) else Decision.REFER
        )


#: The ages whose pass rate a gate over 18 must hold down, and those it should let through.
MINORS = (13, 17)
ADULTS_FROM = 25
#: Fewer 13-17-year-olds than this, and "at most 2% of minors pass" is not one person: a
#: policy fitted on them would be noise, so none is fitted.
MIN_MINORS = 50


def pass_rates(
    scores: NDArray[np.floating], true_ages: NDArray[np.floating], pass_age: float
) -> tuple[float, float]:
    """Share of true 13-17-year-olds and of true 25+ whose score reaches ``pass_age``."""
    truth = np.asarray(true_ages)
    passed = np.asarray(scores) >= pass_age
    minors = (truth >= MINORS[0]) & (truth <= MINORS[1])
    adults = truth >= ADULTS_FROM
    rate = lambda mask: float(passed[mask].mean()) if mask.any() else float("nan")  # noqa: E731
    return rate(minors), rate(adults)


def _smallest_buffer(
    scores: NDArray[np.floating], truth: NDArray[np.floating], over: float, max_minor_pass: float
) -> float:
    buffer = 0.0
    while buffer < 40 and pass_rates(scores, truth, over + buffer)[0] > max_minor_pass:
        buffer += 0.5
    return buffer


def choose_policy(
    estimates: NDArray[np.floating],
    lower_bounds: NDArray[np.floating],
    true_ages: NDArray[np.floating],
    *,
    over: float = 18,
    max_minor_pass: float = 0.02,
) -> dict[str, float | str]:
    """The rule and smallest buffer (0.5-year steps) letting at most ``max_minor_pass`` of
    13-17-year-olds pass; of the two rules, the one passing more people aged 25+.

    Fitted on validation data, stored in a bundle as its default gate policy.
    """
    candidates = []
    for rule, scores in ((ESTIMATE, estimates), (LOWER_BOUND, lower_bounds)):
        buffer = _smallest_buffer(scores, true_ages, over, max_minor_pass)
        minors, adults = pass_rates(scores, true_ages, over + buffer)
        candidates.append((adults, -buffer, rule, buffer, minors))
    adults, _, rule, buffer, minors = max(candidates)
    truth = np.asarray(true_ages)
    return {
        "over": over,
        "rule": rule,
        "buffer": buffer,
        "max_minor_pass": max_minor_pass,
        "chosen_on": "val",
        "val_pass_13_17": round(minors, 4),
        "val_pass_25_plus": round(adults, 4),
        "val_minors": int(((truth >= MINORS[0]) & (truth <= MINORS[1])).sum()),
        "val_adults": int((truth >= ADULTS_FROM).sum()),
    }


def too_few_minors(policy: dict[str, Any]) -> str | None:
    """Why ``policy`` should not be kept, or None when it rests on enough minors."""
    count = int(policy.get("val_minors", 0))
    if count >= MIN_MINORS:
        return None
    return (
        f"only {count} people aged 13-17 in the data, fewer than {MIN_MINORS}: no gate "
        "policy fitted on them"
    )


def fit_policy(
    distributions: NDArray[np.floating],
    class_ages: list[float],
    calibration_record: dict[str, Any],
    true_ages: NDArray[np.floating],
) -> dict[str, float | str]:
    """:func:`choose_policy` from predicted distributions and their fitted calibration."""
    estimates = calibration.moments(distributions, class_ages)[0]
    lower = calibration.intervals(distributions, class_ages, calibration_record, 0.9)[:, 0]
    return choose_policy(estimates, lower, true_ages)
