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

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agelens.decisions import calibration
from agelens.decisions.quality import QualityClass, QualityLimits
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
#: The shares of the way from the estimate down to its interval's lower end that a fit
#: tries (0 is the estimate, 1 the lower end). A face the network is unsure of must look
#: older to pass, but the full 90% interval asks so much of every face that it refers
#: adults a smaller share would let through at the same minor rate.
SHARES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: The buffer's step in a fit, in years.
BUFFER_STEP = 0.1


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
        return face.age - self.share * (face.age - face.interval[0])

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


#: What a fitted policy promises: at most this share of 13-17-year-olds pass in any domain.
MAX_MINOR_PASS = 0.02
#: The share each domain is fitted for where there are minors enough: half the promise.
#: The promise is judged on the worst of five domains of about 150 minors each, where the
#: highest of five noisy shares runs above their expectation: fitted for 2% itself,
#: `cydral-v1` let 5 of UTKFace test's 149 minors through on phone photos (3.4%).
FIT_MINOR_PASS = 0.01
#: Half the promise is used only where it still lets this many fitting minors pass in a
#: domain, so that one mislabelled face cannot set the buffer alone; with fewer minors
#: (UTKFace val's 138 allow none at 1%), the promise itself is fitted.
FEWEST_ALLOWED = 2
#: One domain's fitting faces: expected ages, interval lower ends, true ages, and which
#: faces the quality check lets be judged (the others are never passed).
DomainScores = tuple[
    NDArray[np.floating], NDArray[np.floating], NDArray[np.floating], NDArray[np.bool_]
]


def choose_policy(
    estimates: NDArray[np.floating],
    lower_bounds: NDArray[np.floating],
    true_ages: NDArray[np.floating],
    *,
    over: float = 18,
    max_minor_pass: float = MAX_MINOR_PASS,
    fit_minor_pass: float = FIT_MINOR_PASS,
) -> dict[str, Any]:
    """:func:`choose_policy_domains` for one set of faces, all of which can be judged."""
    judged = np.ones(len(true_ages), dtype=bool)
    return choose_policy_domains(
        {"val": (estimates, lower_bounds, true_ages, judged)},
        over=over,
        max_minor_pass=max_minor_pass,
        fit_minor_pass=fit_minor_pass,
    )


def choose_policy_domains(
    domains: dict[str, DomainScores],
    *,
    over: float = 18,
    max_minor_pass: float = MAX_MINOR_PASS,
    fit_minor_pass: float = FIT_MINOR_PASS,
) -> dict[str, Any]:
    """The rule and smallest buffer (:data:`BUFFER_STEP` steps) that hold
    ``fit_minor_pass`` for 13-17-year-olds in the worst domain, so that ``max_minor_pass``
    holds with a margin; of the rules (each share of :data:`SHARES`), the one passing more
    people aged 25+ on average over the domains.

    "Hold" is meant for minors not in the fitting data. A threshold put just above the
    fitting sample's own top 2% is too low for the next sample (the highest scores of a
    sample are its luckiest): on made data such fits let 3-4% of fresh minors through.
    So, as a conformal quantile, the pass age must lie above the ``ceil((n + 1)(1 - a))``-th
    smallest of the n minors' scores: then a fresh minor passes with probability at most
    ``a``. With 138 minors and a = 2%, one of them may pass, not two.

    Faces the quality check refers never pass. Fitted on validation data, stored in a
    bundle as its default gate policy.
    """
    allowed, minor_counts = {}, {}
    for name, (*_, truth, _) in domains.items():
        truth = np.asarray(truth)
        minor_counts[name] = int(((truth >= MINORS[0]) & (truth <= MINORS[1])).sum())
        allowed[name] = _allowed(minor_counts[name], fit_minor_pass, max_minor_pass)

    def scored(share: float) -> dict[str, tuple[NDArray[np.float64], NDArray[np.floating]]]:
        """Each domain's scores under ``share`` (unjudged faces never pass), and true ages."""
        return {
            name: (
                np.where(judged, estimates - share * (estimates - lower), -np.inf),
                np.asarray(truth),
            )
            for name, (estimates, lower, truth, judged) in domains.items()
        }

    def holds(
        found: dict[str, tuple[NDArray[np.float64], NDArray[np.floating]]], at: float
    ) -> bool:
        return all(
            int(((scores >= at) & (truth >= MINORS[0]) & (truth <= MINORS[1])).sum())
            <= allowed[name]
            for name, (scores, truth) in found.items()
        )

    candidates = []
    for share in SHARES:
        found = scored(share)
        steps = 0
        while steps * BUFFER_STEP < MAX_BUFFER and not holds(found, over + steps * BUFFER_STEP):
            steps += 1
        buffer = round(steps * BUFFER_STEP, 4)
        rates = {name: pass_rates(v, t, over + buffer) for name, (v, t) in found.items()}
        adults = float(np.nanmean([a for _, a in rates.values()]))
        held = holds(found, over + buffer)
        candidates.append((adults, -buffer, share, buffer, rates, held))
    adults, _, share, buffer, found, held = max(candidates, key=lambda c: c[:2])
    rule = {0.0: ESTIMATE, 1.0: LOWER_BOUND}.get(share, TOWARD_LOWER_BOUND)
    policy: dict[str, Any] = {
        "over": over,
        "rule": rule,
        **({"share": share} if rule == TOWARD_LOWER_BOUND else {}),
        "buffer": buffer,
        "max_minor_pass": max_minor_pass,
        "fit_minor_pass": fit_minor_pass,
        "fit": "conformal: at most n - ceil((n + 1)(1 - a)) fitting minors pass, a = "
        "fit_minor_pass where that allows 2 or more, else max_minor_pass",
        "chosen_on": "val",
        "val_pass_13_17": round(max(m for m, _ in found.values()), 4),
        # False when no buffer up to MAX_BUFFER held the minors down in every domain.
        "holds": held and max(m for m, _ in found.values()) <= max_minor_pass,
        "val_pass_25_plus": round(adults, 4),
        "val_minors": min(minor_counts.values()),
        "val_adults": min(
            int((np.asarray(t) >= ADULTS_FROM).sum()) for *_, t, _ in domains.values()
        ),
    }
    if len(domains) > 1:
        policy["domains"] = {
            name: {"pass_13_17": round(m, 4), "pass_25_plus": round(a, 4)}
            for name, (m, a) in found.items()
        }
    return policy


def _allowed(count: int, fit_minor_pass: float, max_minor_pass: float) -> int:
    """How many of ``count`` fitting minors may pass: the conformal count for
    ``fit_minor_pass``, or for ``max_minor_pass`` where that would allow too few."""
    for share in (fit_minor_pass, max_minor_pass):
        allowed = count - math.ceil((count + 1) * (1 - share))
        if allowed >= FEWEST_ALLOWED:
            return allowed
    return allowed


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
) -> dict[str, Any]:
    """:func:`fit_policy_domains` for one set of faces, all of which can be judged."""
    classes = np.full(len(true_ages), QualityClass.LARGE_FACE)
    return fit_policy_domains(
        {"val": (distributions, true_ages, classes)}, class_ages, calibration_record
    )


def fit_policy_domains(
    domains: dict[str, calibration.DomainFaces],
    class_ages: list[float],
    calibration_record: dict[str, Any],
) -> dict[str, Any]:
    """:func:`choose_policy_domains` from each domain's predicted distributions, true ages
    and quality classes, with the calibration fitted on them."""
    scores = {}
    for name, (distributions, truth, classes) in domains.items():
        estimates = calibration.moments(distributions, class_ages)[0]
        lower = calibration.intervals(distributions, class_ages, calibration_record, 0.9, classes)
        judged = np.asarray(classes) != QualityClass.POOR_QUALITY
        scores[name] = (estimates, lower[:, 0], truth, judged)
    return choose_policy_domains(scores)


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
