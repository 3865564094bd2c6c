"""From what the networks predict to what a person reads: an age, an interval, a group, and
(on request) an apparent gender."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agelens.decisions import calibration
from agelens.decisions.groups import GroupScheme
from agelens.pipeline.quality import FaceQuality

#: Share of the predicted distribution the reported interval holds.
DEFAULT_INTERVAL_LEVEL = 0.9
#: The gender answer of a face whose likelier label falls short of the bundle's threshold.
UNCERTAIN = "uncertain"


@dataclass(frozen=True, slots=True)
class GenderEstimate:
    """The answer for one face: a label (or ``uncertain``) and each label's probability."""

    label: str
    probability: float
    probabilities: dict[str, float]

    @property
    def likelier(self) -> str:
        """The label the network finds likelier, even where the answer is ``uncertain``."""
        return max(self.probabilities, key=lambda label: self.probabilities[label])

    @property
    def text(self) -> str:
        """``female 93%``, or ``uncertain (female 58%)``: the words of tables and labels."""
        likelier = self.likelier
        share = f"{likelier} {self.probabilities[likelier]:.0%}"
        return share if self.label == likelier else f"{self.label} ({share})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "probability": round(self.probability, 4),
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
        }


def gender_estimates(
    probabilities: NDArray[np.floating], labels: Sequence[str], uncertain_below: float
) -> list[GenderEstimate]:
    """One answer per row of ``[N, labels]`` probabilities (rows sum to 1)."""
    answers = []
    for row in np.asarray(probabilities, dtype=np.float64):
        best = int(np.argmax(row))
        likelier = float(row[best])
        label = labels[best] if likelier >= uncertain_below else UNCERTAIN
        answers.append(
            GenderEstimate(label, likelier, dict(zip(labels, map(float, row), strict=True)))
        )
    return answers


@dataclass(frozen=True, slots=True)
class Face:
    """One face and its age estimate; ``box`` is ``[x1, y1, x2, y2]`` in image pixels."""

    box: tuple[float, float, float, float]
    score: float | None
    landmarks: list[tuple[float, float]]
    age: float
    interval: tuple[float, float]
    #: The most likely group (a classifier's answer) and its probability; every output,
    #: the confusion matrix included, uses this one meaning (README, group schemes).
    group: str
    group_probability: float
    group_probabilities: dict[str, float]
    #: The group the age estimate falls in; for a wide distribution it can differ from
    #: ``group`` (an age of 33 with YOUNG at 65%), and outputs then show both.
    age_group: str = ""
    distribution: NDArray[np.float32] | None = field(default=None, repr=False, compare=False)
    #: The network's oldest age, when the interval reaches it: the interval is open above
    #: ("80+"), for the network cannot say how much older the face may be.
    ceiling: float | None = None
    #: Most of the distribution sits on the oldest age: the age itself reads "80+".
    at_ceiling: bool = False
    #: How well the face can be judged (size, sharpness, light, pose, colour).
    quality: FaceQuality | None = None
    #: Apparent gender, only when it was asked for (``gender=True``).
    gender: GenderEstimate | None = None

    @property
    def group_text(self) -> str:
        """``YOUNG 65%``, and where the age falls in another group ``; age in MIDDLE``."""
        text = f"{self.group} {self.group_probability:.0%}"
        if self.age_group and self.age_group != self.group:
            text += f"; age in {self.age_group}"
        return text

    @property
    def gender_text(self) -> str:
        """:attr:`GenderEstimate.text`; empty when gender was not asked for."""
        return "" if self.gender is None else self.gender.text

    @property
    def label(self) -> str:
        """What a person reads: ``34 (19-50)``, or at the network's top ``80+ (66-80+)``."""
        top = None if self.ceiling is None else f"{self.ceiling:.0f}+"
        age = top if self.at_ceiling and top else f"{self.age:.0f}"
        low, high = self.interval
        return f"{age} ({low:.0f}-{top or f'{high:.0f}'})"

    def to_dict(self, *, distribution: bool = False) -> dict[str, Any]:
        """JSON-ready form, the shape ``agelens predict --json`` prints."""
        result: dict[str, Any] = {
            "box": [round(v, 1) for v in self.box],
            "score": None if self.score is None else round(self.score, 3),
            "landmarks": [[round(x, 1), round(y, 1)] for x, y in self.landmarks],
            "age": round(self.age, 2),
            "interval": [self.interval[0], self.interval[1]],
            "label": self.label,
            "group": {
                "label": self.group,
                "probability": round(self.group_probability, 4),
                "age_group": self.age_group,
            },
            "groups": {k: round(v, 4) for k, v in self.group_probabilities.items()},
        }
        if self.ceiling is not None:
            result["ceiling"] = self.ceiling
            # The label reads "80+" while the expected age is under 80: say which is meant.
            result["at_ceiling"] = self.at_ceiling
        if self.quality is not None:
            result["quality"] = self.quality.to_dict()
        if self.gender is not None:
            result["gender"] = self.gender.to_dict()
        if distribution and self.distribution is not None:
            result["distribution"] = [round(float(p), 5) for p in self.distribution]
        return result


@dataclass(frozen=True, slots=True)
class AgeSummary:
    """Per-face numbers derived from a batch of distributions."""

    ages: NDArray[np.float64]
    intervals: NDArray[np.float64]
    group_probabilities: NDArray[np.float64]


def summarize(
    distributions: NDArray[np.float32],
    class_ages: list[float],
    scheme: GroupScheme,
    level: float = DEFAULT_INTERVAL_LEVEL,
    calibration_record: dict[str, Any] | None = None,
    classes: NDArray[np.integer] | None = None,
) -> AgeSummary:
    """Expected age, ``level`` interval and group masses, for each row.

    With a bundle's conformal calibration for ``level`` the interval is the calibrated
    one (see :mod:`agelens.decisions.calibration`), each row with its quality class's
    multipliers (wider for small faces and faces the quality check fails); without, it is
    the central ``level`` mass of the distribution in whole years, which is only as
    honest as the network's softmax.
    """
    values = np.asarray(class_ages, dtype=np.float64)
    probabilities = distributions.astype(np.float64)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    ages = probabilities @ values
    groups = probabilities @ scheme.membership(values).astype(np.float64)
    if calibration.quantile_for(calibration_record, level) is not None:
        assert calibration_record is not None
        bounds = calibration.intervals(
            probabilities, class_ages, calibration_record, level, classes
        )
        return AgeSummary(ages, np.round(bounds, 1), groups)
    tail = (1.0 - level) / 2
    years = np.floor(values)
    low = years[quantile_classes(probabilities, tail)]
    high = years[quantile_classes(probabilities, 1.0 - tail)]
    return AgeSummary(ages, np.stack([low, high], axis=1), groups)


def ceilings(
    distributions: NDArray[np.float32], intervals: NDArray[np.float64], class_ages: list[float]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Per face: whether its interval reaches the oldest age class, and whether most of its
    distribution sits on that class."""
    top = float(max(class_ages))
    return intervals[:, 1] >= top, distributions[:, int(np.argmax(class_ages))] >= 0.5


def quantile_classes(probabilities: NDArray[np.float64], level: float) -> NDArray[np.intp]:
    """For each row of normalised probabilities, the first class where its cumulative mass
    reaches ``level`` (the last class when rounding keeps it short)."""
    cdf = np.cumsum(probabilities, axis=1)
    return np.minimum((cdf < level).sum(axis=1), probabilities.shape[1] - 1)
