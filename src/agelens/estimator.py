"""``AgeEstimator``: image -> faces -> chips -> model -> estimates, batched over many images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agelens.decisions.gate import GatePolicy, GateResult
from agelens.decisions.groups import IMFDB, GroupScheme, resolve_scheme
from agelens.decisions.verify import ClaimCheck, check_claimed, verify
from agelens.models.bundles import (
    DEFAULT_BUNDLE,
    DEFAULT_DETECTOR,
    DEFAULT_GENDER_BUNDLE,
    Bundle,
    load_bundle,
)
from agelens.pipeline.chips import Aligner, Box, checked_boxes, landmark_box
from agelens.pipeline.estimates import DEFAULT_INTERVAL_LEVEL, Face, ceilings, summarize
from agelens.pipeline.faces import (
    DEFAULT_MIN_FACE,
    DEFAULT_MIN_SCORE,
    Detection,
    FaceDetector,
)
from agelens.pipeline.gender import GenderModel, LazyGenderModel
from agelens.pipeline.images import DEFAULT_MAX_PIXELS, ImageSource, RGBImage, load_image
from agelens.pipeline.network import AgeModel
from agelens.pipeline.quality import measure_many

if TYPE_CHECKING:  # the video extra is imported only when a video is read
    from agelens.video import TrackedFace


@dataclass(frozen=True, slots=True)
class _FaceCrop:
    """A face found in one image, before the network has seen it."""

    image_index: int
    box: Box
    score: float | None
    landmarks: list[tuple[float, float]]


class AgeEstimator:
    """Finds every face in a photo and estimates its age.

    One instance holds one onnxruntime session and one landmark model, all
    read-only after construction: share it between threads rather than
    building one per request.

    >>> from agelens import AgeEstimator
    >>> faces = AgeEstimator().estimate("photo.jpg")  # doctest: +SKIP
    >>> faces[0].age, faces[0].interval, faces[0].group  # doctest: +SKIP
    (41.3, (33.0, 52.0), 'MIDDLE')

    Apparent gender is off unless asked for (``estimate(..., gender=True)``); the gender
    network, ``gender_model``, is loaded the first time it is.
    """

    def __init__(
        self,
        model: str | Bundle = DEFAULT_BUNDLE,
        *,
        detector: str | Bundle = DEFAULT_DETECTOR,
        groups: str | GroupScheme = IMFDB,
        tta: bool | None = None,
        precision: str | None = None,
        interval_level: float = DEFAULT_INTERVAL_LEVEL,
        detect_max_side: int | None = None,
        min_score: float = DEFAULT_MIN_SCORE,
        min_face: int = DEFAULT_MIN_FACE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
        gender_model: str | Bundle = DEFAULT_GENDER_BUNDLE,
    ) -> None:
        if not 0.0 < interval_level < 1.0:
            raise ValueError(f"interval_level must be within (0, 1), got {interval_level}")
        self.bundle = (
            model if isinstance(model, Bundle) else load_bundle(model, precision=precision)
        )
        self.groups = resolve_scheme(groups)
        self.tta = self.bundle.flip_tta if tta is None else tta
        self.interval_level = interval_level
        self.max_pixels = max_pixels
        self.detector = FaceDetector(
            detector,
            max_side=detect_max_side,
            min_score=min_score,
            min_face=min_face,
            threads=threads,
        )
        self.aligner = Aligner(
            self.bundle.input_size, self.bundle.chip_padding, self.bundle.chip_border
        )
        self.model = AgeModel(self.bundle, threads=threads)
        #: onnxruntime threads per network call (None: one).
        self.threads = threads
        self.gender_model = gender_model
        self._gender = LazyGenderModel(gender_model, threads=threads)

    @property
    def gender(self) -> GenderModel:
        """The gender network, loaded on first use (a :class:`ModelError` for a bundle that
        is not a gender model)."""
        return self._gender.get()

    def estimate(
        self,
        image: ImageSource,
        *,
        boxes: Sequence[Sequence[float]] | None = None,
        aligned: bool = False,
        distribution: bool = False,
        groups: str | GroupScheme | None = None,
        tta: bool | None = None,
        gender: bool = False,
    ) -> list[Face]:
        """Faces of one image, largest first (or in the order of ``boxes``).

        ``aligned=True`` treats the whole image as one face crop (as in UTKFace) and
        skips detection; ``boxes`` (``[x1, y1, x2, y2]`` each) skips it with your own boxes.
        ``groups`` and ``tta`` override the estimator's own settings for this call.
        ``gender=True`` adds each face's apparent gender (:attr:`Face.gender`).
        """
        (faces,) = self.estimate_many(
            [image],
            boxes=boxes,
            aligned=aligned,
            distribution=distribution,
            groups=groups,
            tta=tta,
            gender=gender,
        )
        return faces

    def estimate_many(
        self,
        images: Sequence[ImageSource],
        *,
        boxes: Sequence[Sequence[float]] | None = None,
        aligned: bool = False,
        distribution: bool = False,
        groups: str | GroupScheme | None = None,
        tta: bool | None = None,
        gender: bool = False,
    ) -> list[list[Face]]:
        """Faces of many images; all their faces go through the network in shared batches."""
        decoded = [load_image(image, max_pixels=self.max_pixels) for image in images]
        return self.estimate_arrays(
            decoded,
            boxes=boxes,
            aligned=aligned,
            distribution=distribution,
            groups=groups,
            tta=tta,
            gender=gender,
        )

    def estimate_arrays(
        self,
        images: Sequence[RGBImage],
        *,
        boxes: Sequence[Sequence[float]] | None = None,
        aligned: bool = False,
        distribution: bool = False,
        groups: str | GroupScheme | None = None,
        tta: bool | None = None,
        gains: Sequence[float] = (1.0,),
        detections: Sequence[Sequence[Detection]] | None = None,
        gender: bool = False,
    ) -> list[list[Face]]:
        """As :meth:`estimate_many`, for images already in memory as arrays.

        Each is checked and made contiguous as :func:`load_image` does (a view such as
        ``a[::2, ::2]`` is a valid image; an empty one raises :class:`EmptyImageError`).
        ``gains`` reads each face at each of these light levels, and averages (video
        frames: :data:`~agelens.pipeline.network.LIGHT_GAINS`, or one of them a frame).
        ``detections``, one list per image, are faces the detector already found in them:
        only those are estimated, and nothing is detected again.
        """
        images = [load_image(image, max_pixels=self.max_pixels) for image in images]
        scheme = self.groups if groups is None else resolve_scheme(groups)
        crops: list[_FaceCrop] = []
        chips: list[np.ndarray] = []
        for index, image in enumerate(images):
            found = None if detections is None else detections[index]
            for box, score, fit_box in self._face_boxes(image, boxes, aligned, found):
                chip, landmarks = self.aligner.chip(image, fit_box)
                crops.append(_FaceCrop(index, box, score, landmarks))
                chips.append(chip)
        faces: list[list[Face]] = [[] for _ in images]
        if not chips:
            return faces
        flip = self.tta if tta is None else tta
        distributions = self.model.distributions(np.stack(chips), flip=flip, gains=gains)
        qualities = measure_many([(images[c.image_index], c.landmarks) for c in crops])
        limits = self.bundle.quality_limits
        summary = summarize(
            distributions,
            self.bundle.ages,
            scheme,
            self.interval_level,
            self.bundle.manifest.get("calibration"),
            np.array([limits.quality_class(quality) for quality in qualities]),
        )
        open_above, at_top = ceilings(distributions, summary.intervals, self.bundle.ages)
        top = float(max(self.bundle.ages))
        genders = (
            self.gender.estimate([(images[c.image_index], c.landmarks) for c in crops])
            if gender
            else [None] * len(crops)
        )
        for row, crop in enumerate(crops):
            group_masses = summary.group_probabilities[row]
            # The reported group is the most likely one; the group the age falls in is
            # kept beside it, for a wide distribution's mean can lie in another.
            best = int(np.argmax(group_masses))
            faces[crop.image_index].append(
                Face(
                    box=crop.box,
                    score=crop.score,
                    landmarks=crop.landmarks,
                    age=float(summary.ages[row]),
                    interval=(float(summary.intervals[row, 0]), float(summary.intervals[row, 1])),
                    group=scheme.labels[best],
                    group_probability=float(group_masses[best]),
                    group_probabilities=dict(
                        zip(scheme.labels, map(float, group_masses), strict=True)
                    ),
                    age_group=scheme.group_of(float(summary.ages[row])),
                    distribution=distributions[row] if distribution else None,
                    ceiling=top if open_above[row] else None,
                    at_ceiling=bool(at_top[row]),
                    quality=qualities[row],
                    gender=genders[row],
                )
            )
        return faces

    def video(self, source: str, *, every: int = 1) -> Iterator[list[TrackedFace]]:
        """Each frame's tracked faces, with each person's steady age, as ``agelens video``
        tracks them (needs the ``video`` extra); :class:`~agelens.video.AgeTracker` gives
        the people at the end, for a loop of your own."""
        from agelens.video import AgeTracker, read_frames

        tracker = AgeTracker(self, every=every)
        for frame in read_frames(source):
            yield tracker.update(frame)

    def gate(self, image: ImageSource, over: float = 18, buffer: float | None = None) -> GateResult:
        """Pass or refer the people in a photo; see :mod:`agelens.decisions.gate` for the policy.

        Without ``buffer`` the bundle's fitted policy applies (see
        :meth:`Bundle.gate_policy`); with it, the estimate must reach ``over + buffer``.
        """
        return self.decide(self.estimate(image), self.gate_policy(over, buffer))

    def gate_policy(self, over: float = 18, buffer: float | None = None) -> GatePolicy:
        """The bundle's policy for ``over``, or the plain estimate rule with ``buffer``;
        either refers the faces that fail the bundle's quality check."""
        if buffer is None:
            return self.bundle.gate_policy(over)
        return GatePolicy(over, buffer, quality=self.bundle.quality_limits)

    def verify(self, image: ImageSource, claimed: float) -> tuple[ClaimCheck, list[Face]]:
        """Is ``claimed`` (years) consistent with the face in the photo? See
        :mod:`agelens.decisions.verify`; the faces come back with their distributions."""
        claimed = check_claimed(claimed)
        faces = self.estimate(image, distribution=True)
        return self.check_claim(faces, claimed), faces

    def check_claim(self, faces: list[Face], claimed: float) -> ClaimCheck:
        """The claimed-age check for faces already estimated with their distributions."""
        return verify(
            faces,
            claimed,
            self.bundle.ages,
            self.bundle.manifest.get("calibration"),
            self.bundle.quality_limits,
        )

    @staticmethod
    def over(faces: list[Face], threshold: float = 18, buffer: float = 7) -> GateResult:
        """Gate decisions for faces already estimated: the estimate must reach over + buffer."""
        return AgeEstimator.decide(faces, GatePolicy(threshold, buffer))

    @staticmethod
    def decide(faces: list[Face], policy: GatePolicy) -> GateResult:
        """Gate decisions for faces already estimated, under ``policy``."""
        return policy.result(faces)

    def _face_boxes(
        self,
        image: RGBImage,
        boxes: Sequence[Sequence[float]] | None,
        aligned: bool,
        found: Sequence[Detection] | None = None,
    ) -> list[tuple[Box, float | None, Box]]:
        """(reported box, detector score, box in the landmark model's framing) per face."""
        height, width = image.shape[:2]
        if aligned:
            whole = (0.0, 0.0, float(width), float(height))
            return [(whole, None, whole)]
        if boxes is not None:
            return [(box, None, box) for box in checked_boxes(boxes, width, height)]
        detected = self.detector.detect(image) if found is None else found
        return [(face.box, face.score, landmark_box(face.landmarks)) for face in detected]
