"""The age gate: answer "is this person over N?" with *pass* or *refer to an ID check*.

Why a buffer: an age estimate from a face has an error of several years, and it
is biased upwards for teenagers. Letting a minor through is the costly mistake,
refusing an adult only costs an ID check. So a face passes only when its
estimate clears the legal threshold *plus* a buffer, as in the UK's
Challenge 25 (threshold 18, buffer 7: anyone who looks under 25 shows ID).
Everyone else is referred, never refused: the gate narrows who must show ID.

Three rules: ``estimate`` compares the estimated age with ``over + buffer``;
``lower_bound`` compares the lower end of the face's calibrated 90% interval, so a
face the network is unsure of must look older to pass; ``toward_lower_bound`` the
estimate less a share of the way down to that lower end. A bundle calibrated by
AgeLens stores the rule and buffer that, on the validation faces of every collection
it was fitted on (real photos it never trained on; or the made-up domains of
:mod:`agelens.evaluation.domains`), let at most 2% of 13-17-year-olds pass a gate over
18 while passing the most people aged 25+. A face that fails the quality check
(:mod:`agelens.decisions.quality`) is referred whatever its estimate.

The rate holds for photos like those it was fitted on, not every source a user may
bring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agelens.decisions.quality import QualityLimits
from agelens.pipeline.estimates import Face


class Decision(StrEnum):
    PASS = "pass"
    REFER = "refer"
    NO_FACE = "no_face"


ESTIMATE, LOWER_BOUND, TOWARD_LOWER_BOUND = "estimate", "lower_bound", "toward_lower_bound"
#: What a gate may be asked: an age from 1 to 100, a buffer of up to 40 years (a fitted
#: policy may need that much where a network reads minors far too old).
MIN_OVER, MAX_OVER, MAX_BUFFER = 1.0, 100.0, 40.0
RULES = (ESTIMATE, LOWER_BOUND, TOWARD_LOWER_BOUND)


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """Pass a face when its score reaches ``over + buffer`` and, with ``quality``, when the
    face can be judged at all. The score is the estimate, the lower end of its 90%
    interval, or (``toward_lower_bound``) the estimate less ``share`` of its distance to
    that lower end."""

    over: float = 18
    buffer: float = 7
    rule: str = ESTIMATE
    quality: QualityLimits | None = None
    #: Why no face may pass, when the model's fitted policy does not hold its promise:
    #: a gate must not state a rate it does not have, so it refers everyone instead.
    refer_all: str | None = None
    share: float = 1.0

    def __post_init__(self) -> None:
        # NaN compares false both ways, so a check written as "not within" catches it too.
        if not MIN_OVER <= self.over <= MAX_OVER:
            raise ValueError(f"the gate's age must be {MIN_OVER:g}-{MAX_OVER:g}, got {self.over}")
        if not 0 <= self.buffer <= MAX_BUFFER:
            raise ValueError(f"the gate's buffer must be 0-{MAX_BUFFER:g} years, got {self.buffer}")
        if self.rule not in RULES:
            raise ValueError(f"gate rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if not 0 <= self.share <= 1:
            raise ValueError(f"the gate's share must be 0-1, got {self.share}")

    @property
    def pass_age(self) -> float:
        return self.over + self.buffer

    def score(self, face: Face) -> float:
        """The age this policy compares with ``pass_age``."""
        if self.rule == ESTIMATE:
            return face.age
        if self.rule == LOWER_BOUND:
            return face.interval[0]
        return toward_lower_bound(face.age, face.interval[0], self.share)

    @property
    def measure(self) -> str:
        """What must reach ``pass_age``, in words: every answer says it the same way."""
        if self.rule == ESTIMATE:
            return "its estimated age"
        if self.rule == LOWER_BOUND:
            return "the lower end of its 90% interval"
        return f"its estimated age less {self.share:.0%} of the way to its 90% interval's low end"

    def to_dict(self) -> dict[str, Any]:
        """The rule as answers and reports record it."""
        record: dict[str, Any] = {"over": self.over, "rule": self.rule, "buffer": self.buffer}
        if self.rule == TOWARD_LOWER_BOUND:
            record["share"] = self.share
        return record

    def reasons(self, face: Face) -> list[str]:
        """Why the face is referred; empty when it passes."""
        if self.refer_all:
            return [self.refer_all]
        found = self.quality.reasons(face.quality) if self.quality else []
        if found:
            return found
        score = self.score(face)
        if score >= self.pass_age:
            return []
        return [f"{self.measure} is {score:.1f}, under {self.pass_age:g}"]

    def decide(self, face: Face) -> Decision:
        return Decision.REFER if self.reasons(face) else Decision.PASS

    def result(self, faces: list[Face]) -> GateResult:
        """The photo's decision and each face's, with the figures they were made on."""
        return GateResult(
            self.decide_image(faces),
            [self.decide(face) for face in faces],
            faces,
            self.pass_age,
            self.rule,
            [self.reasons(face) for face in faces],
            self.measure,
            self.share if self.rule == TOWARD_LOWER_BOUND else None,
            [self.score(face) for face in faces],
        )

    def decide_image(self, faces: list[Face]) -> Decision:
        """Overall answer for a photo: it passes only when it has faces and every one passes."""
        if not faces:
            return Decision.NO_FACE
        return (
            Decision.PASS if all(self.decide(f) is Decision.PASS for f in faces) else Decision.REFER
        )


def toward_lower_bound(estimate: Any, lower_end: Any, share: float) -> Any:
    """The estimate less ``share`` of the way down to its interval's lower end (numbers or
    arrays): the ``toward_lower_bound`` rule's score, as a policy applies it and a fit
    chooses it."""
    return estimate - share * (estimate - lower_end)


#: The ages whose pass rate a gate over 18 must hold down, and those it should let through.
MINORS = (13, 17)
ADULTS_FROM = 25


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


@dataclass(frozen=True, slots=True)
class GateResult:
    """Decision for the whole photo and for each face, in the order of ``faces``."""

    decision: Decision
    decisions: list[Decision]
    faces: list[Face]
    pass_age: float
    rule: str = "estimate"
    #: Per face, why it was referred (empty when it passed).
    reasons: list[list[str]] = field(default_factory=list)
    #: What had to reach ``pass_age``, in words (:attr:`GatePolicy.measure`).
    measure: str = "its estimated age"
    #: Of ``toward_lower_bound``, the share of the way to the interval's lower end.
    share: float | None = None
    #: Per face, the figure compared with ``pass_age`` (:meth:`GatePolicy.score`).
    scores: list[float] = field(default_factory=list)

    def to_dict(self, over: float) -> dict[str, Any]:
        """The one gate record of ``gate --json`` and ``POST /v1/gate``: the photo's
        decision, the rule it was made by, and each face with its own decision and reasons."""
        return {
            "decision": self.decision.value,
            "over": over,
            "buffer": round(self.pass_age - over, 4),
            "pass_age": self.pass_age,
            "rule": self.rule,
            **({"share": self.share} if self.share is not None else {}),
            "measure": self.measure,
            "faces": [
                {**face.to_dict(), "decision": decision.value, "reasons": reasons}
                for face, decision, reasons in zip(
                    self.faces, self.decisions, self.reasons, strict=True
                )
            ],
        }
