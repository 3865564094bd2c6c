"""The age gate: answer "is this person over N?" with *pass* or *refer to an ID check*.

Why a buffer: an age estimate from a face has an error of several years, and it
is biased upwards for teenagers. Letting a minor through is the costly mistake,
refusing an adult only costs an ID check. So a face passes only when its
estimate clears the legal threshold *plus* a buffer, as in the UK's
Challenge 25 (threshold 18, buffer 7: anyone who looks under 25 shows ID).
Everyone else is referred, never refused: the gate narrows who must show ID.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from agelens.estimates import Face


class Decision(StrEnum):
    PASS = "pass"
    REFER = "refer"
    NO_FACE = "no_face"


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """Pass a face when its estimated age is at least ``over + buffer``."""

    over: float = 18
    buffer: float = 7

    @property
    def pass_age(self) -> float:
        return self.over + self.buffer

    def decide(self, face: Face) -> Decision:
        return Decision.PASS if face.age >= self.pass_age else Decision.REFER

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


def pass_rates(
    estimates: NDArray[np.floating], true_ages: NDArray[np.floating], pass_age: float
) -> tuple[float, float]:
    """Share of true 13-17-year-olds and of true 25+ whose estimate reaches ``pass_age``."""
    truth = np.asarray(true_ages)
    passed = np.asarray(estimates) >= pass_age
    minors = (truth >= MINORS[0]) & (truth <= MINORS[1])
    adults = truth >= ADULTS_FROM
    rate = lambda mask: float(passed[mask].mean()) if mask.any() else float("nan")  # noqa: E731
    return rate(minors), rate(adults)


def choose_buffer(
    estimates: NDArray[np.floating],
    true_ages: NDArray[np.floating],
    *,
    over: float = 18,
    max_minor_pass: float = 0.02,
) -> dict[str, float | str]:
    """The smallest buffer (0.5-year steps) that lets at most ``max_minor_pass`` of minors pass.

    Fitted on validation data, stored in a bundle as its default gate policy.
    """
    buffer = 0.0
    while buffer < 40 and pass_rates(estimates, true_ages, over + buffer)[0] > max_minor_pass:
        buffer += 0.5
    minors, adults = pass_rates(estimates, true_ages, over + buffer)
    return {
        "over": over,
        "buffer": buffer,
        "max_minor_pass": max_minor_pass,
        "chosen_on": "val",
        "val_pass_13_17": round(minors, 4),
        "val_pass_25_plus": round(adults, 4),
    }
