"""Fitting a gate policy: the rule, share and buffer that hold the 13-17-year-olds down in
every collection fitted on, while passing the most people aged 25+ (see
:mod:`agelens.decisions.gate` for what a policy is)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agelens.decisions import calibration
from agelens.decisions.gate import (
    ADULTS_FROM,
    ESTIMATE,
    LOWER_BOUND,
    MAX_BUFFER,
    MINORS,
    TOWARD_LOWER_BOUND,
    pass_rates,
    toward_lower_bound,
)
from agelens.decisions.quality import QualityClass

#: The shares of the way from the estimate down to its interval's lower end that a fit
#: tries (0 is the estimate, 1 the lower end). A face the network is unsure of must look
#: older to pass, but the full 90% interval asks so much of every face that it refers
#: adults a smaller share would let through at the same minor rate.
SHARES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: The buffer's step in a fit, in years.
BUFFER_STEP = 0.1
#: Fewer 13-17-year-olds than this, and "at most 2% of minors pass" is not one person: a
#: policy fitted on them would be noise, so none is fitted.
MIN_MINORS = 50
#: What a fitted policy promises: at most this share of 13-17-year-olds pass in any domain.
MAX_MINOR_PASS = 0.02
#: The share each domain is fitted for where there are minors enough: half the promise.
#: The promise is judged on the worst of several collections of 100-150 minors each, where
#: the highest of several noisy shares runs above their expectation: fitted for 2% itself
#: on the made-up domain suite, `cydral-v1` let 5 of UTKFace test's 149 minors through on
#: phone photos (3.4%).
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
                np.where(judged, toward_lower_bound(estimates, lower, share), -np.inf),
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
