"""One steady, honest age per tracked person, pooled over the frames of their face.

**The estimate.** Each read of the face (:mod:`agelens.video.reads`) gives the network's
age distribution at one of three light levels in turn
(:data:`~agelens.pipeline.network.LIGHT_GAINS`). A track's distribution is their
weighted mean, each read weighted by how well its face can be
judged (:data:`QUALITY_WEIGHTS`); its age is that distribution's mean. A running mean
moves less with every frame it holds, so the shown age settles within a second or two
and then stays put, where a frame's own estimate jumps by years.

**The interval.** Frames of one face are not independent opinions. A face's error on a
frame is the error this network makes on this person, shared by every frame, plus frame
noise (pose, light, compression), and averaging removes only the noise. Measured on
UTKFace val faces shown as video-like frames (``bench/frame_correlation.py``), the
shared part is :data:`SHARED_SHARE` of the variance. So the track's interval is the
calibrated interval of its pooled distribution, narrowed by
``sqrt(shared + (1 - shared) / n)``, where n counts frames that are really different: at
most :data:`VIEWS_PER_SECOND` a second (25 frames a second of a still face are one view).
It never narrows below ``sqrt(shared)`` of one frame's, however long the video.

**Fitted on clips.** The bundle's intervals were calibrated on photos; video frames are
relit and compressed, and pooled. Where the bundle's calibration holds a ``video``
entry (``tools/fit_video_intervals.py``), the track's interval is also scaled by its
``interval_scale``: the scale, 1 or more, that made tracks of clips of the faces the
bundle was calibrated on cover 90%.

**Apparent gender**, when asked for, is pooled the same way (:class:`SteadyGender`): the
weighted mean of the reads' probabilities, answered ``uncertain`` below the gender
bundle's threshold as one photo's would be.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from numpy.typing import NDArray

from agelens.decisions.quality import QualityClass
from agelens.estimator import AgeEstimator
from agelens.models.bundles import Bundle
from agelens.pipeline.estimates import Face, GenderEstimate, gender_estimates, summarize

#: A frame's weight in its track by the quality class of its face.
QUALITY_WEIGHTS = {
    QualityClass.LARGE_FACE: 1.0,
    QualityClass.SMALL_FACE: 0.5,
    QualityClass.POOR_QUALITY: 0.1,
}
#: The share of a face's frame-to-frame error variance that every frame shares
#: (``bench/results/frame_correlation.json``, cydral-v1 on UTKFace val).
SHARED_SHARE = 0.87
#: Frames a second that count as different views of a face.
VIEWS_PER_SECOND = 2.0


def read_weight(bundle: Bundle, face: Face) -> float:
    """How much one read of ``face`` counts in its track, by its quality class."""
    return QUALITY_WEIGHTS[QualityClass(bundle.quality_limits.quality_class(face.quality))]


class SteadyAge:
    """A track's pooled distribution, and the age, interval and group shown for it."""

    def __init__(self, estimator: AgeEstimator) -> None:
        self.estimator = estimator
        video = (estimator.bundle.manifest.get("calibration") or {}).get("video") or {}
        self.scale = float(video.get("interval_scale", 1.0))
        self.pooled: NDArray[np.float64] | None = None
        self.weight = 0.0
        self.frames = 0
        self.first_time: float | None = None
        self.last_time = 0.0
        #: Frames pooled per quality class: a count, not a list, so that a long track's
        #: summary costs the same on its last frame as on its first.
        self.classes: Counter[int] = Counter()

    def add(self, face: Face, time: float) -> None:
        """Pool one frame's face (estimated with ``distribution=True``)."""
        if face.distribution is None:
            raise ValueError("pooling needs each face's distribution")
        kind = self.estimator.bundle.quality_limits.quality_class(face.quality)
        weight = read_weight(self.estimator.bundle, face)
        contribution = weight * face.distribution.astype(np.float64)
        self.pooled = contribution if self.pooled is None else self.pooled + contribution
        self.weight += weight
        self.frames += 1
        self.classes[int(kind)] += 1
        self.first_time = time if self.first_time is None else self.first_time
        self.last_time = time

    @property
    def views(self) -> float:
        """Frames that count as different views: at most VIEWS_PER_SECOND a second."""
        assert self.first_time is not None
        span = self.last_time - self.first_time
        return float(min(self.frames, 1 + span * VIEWS_PER_SECOND))

    def narrowing(self) -> float:
        """The pooled interval's width as a share of one frame's."""
        return math.sqrt(SHARED_SHARE + (1 - SHARED_SHARE) / self.views)

    def summary(self) -> tuple[float, tuple[float, float], str, float]:
        """The age, the 90% interval, the most likely group and its probability."""
        if self.pooled is None:
            raise ValueError("no frame pooled yet")
        distribution = (self.pooled / self.weight)[None, :]
        estimator = self.estimator
        # The class most of its frames had: how wide one frame's interval is for it.
        kind = self.classes.most_common(1)[0][0]
        found = summarize(
            distribution,
            estimator.bundle.ages,
            estimator.groups,
            estimator.interval_level,
            estimator.bundle.manifest.get("calibration"),
            np.array([kind]),
        )
        age = float(found.ages[0])
        low, high = (float(v) for v in found.intervals[0])
        shrink = self.narrowing() * self.scale
        interval = (age - (age - low) * shrink, age + (high - age) * shrink)
        masses = found.group_probabilities[0]
        best = int(np.argmax(masses))
        return age, interval, estimator.groups.labels[best], float(masses[best])


class SteadyGender:
    """A track's pooled apparent gender: reads weighted as its age's are."""

    def __init__(self, estimator: AgeEstimator) -> None:
        self.estimator = estimator
        self.pooled: NDArray[np.float64] | None = None
        self.weight = 0.0

    def add(self, face: Face) -> None:
        """Pool one read's face (estimated with ``gender=True``)."""
        if face.gender is None:
            raise ValueError("pooling gender needs each face's gender")
        labels = self.estimator.gender.bundle.labels
        weight = read_weight(self.estimator.bundle, face)
        contribution = weight * np.array([face.gender.probabilities[label] for label in labels])
        self.pooled = contribution if self.pooled is None else self.pooled + contribution
        self.weight += weight

    def summary(self) -> GenderEstimate:
        """The track's answer, from the mean of its reads."""
        if self.pooled is None:
            raise ValueError("no read pooled yet")
        bundle = self.estimator.gender.bundle
        (found,) = gender_estimates(
            (self.pooled / self.weight)[None, :], bundle.labels, bundle.uncertain_below
        )
        return found
