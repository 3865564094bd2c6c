"""Apparent gender, on request: a second network on a chip cut from the same landmarks.

This is the gender a face appears to have, as the datasets the networks learned from
label it (two labels), not a person's identity. AgeLens never estimates race or
ethnicity. A face whose likelier label falls short of the bundle's ``uncertain_below``
is answered ``uncertain``: the network's guess is kept beside it, in the probabilities.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from agelens.errors import ModelError
from agelens.models.bundles import GENDER, Bundle, load_bundle
from agelens.pipeline.chips import chip_from_landmarks
from agelens.pipeline.estimates import GenderEstimate, gender_estimates
from agelens.pipeline.images import RGBImage
from agelens.pipeline.network import mean_over_copies
from agelens.pipeline.runtime import open_session


class GenderModel:
    """Chips cut as the bundle was trained, through one onnxruntime session."""

    def __init__(self, bundle: Bundle, *, threads: int | None = None) -> None:
        self.bundle = bundle
        self._session = open_session(bundle.model_path, threads)
        width = self._session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(bundle.labels):
            raise ModelError(
                f"{bundle.name}: the network outputs {width} classes, "
                f"the manifest lists {len(bundle.labels)} labels"
            )

    def chips(
        self, faces: Sequence[tuple[RGBImage, Sequence[tuple[float, float]]]]
    ) -> NDArray[np.uint8]:
        """``[N, size, size, 3]`` chips of (image, its face's 5 dlib landmarks) pairs."""
        bundle = self.bundle
        return np.stack(
            [
                chip_from_landmarks(
                    image, landmarks, bundle.input_size, bundle.chip_padding, bundle.chip_border
                )
                for image, landmarks in faces
            ]
        )

    def probabilities(self, chips: NDArray[np.uint8]) -> NDArray[np.float32]:
        """``[N, labels]`` probabilities, the mean of each chip and its mirror image where
        the bundle asks for it."""
        if len(chips) == 0:
            return np.zeros((0, len(self.bundle.labels)), dtype=np.float32)
        copies = [chips, chips[:, :, ::-1]] if self.bundle.flip_tta else [chips]
        return mean_over_copies(self._session, self.bundle, copies)

    def estimate(
        self, faces: Sequence[tuple[RGBImage, Sequence[tuple[float, float]]]]
    ) -> list[GenderEstimate]:
        """The answer for each (image, landmarks) pair."""
        if not faces:
            return []
        found = self.probabilities(self.chips(faces))
        return gender_estimates(found, self.bundle.labels, self.bundle.uncertain_below)


class LazyGenderModel:
    """A gender model loaded on first use, once, whichever thread asks first: most callers
    never ask for gender, and its network should cost them nothing."""

    def __init__(self, bundle: str | Bundle, *, threads: int | None = None) -> None:
        self.bundle = bundle
        self.threads = threads
        self._model: GenderModel | None = None
        self._lock = threading.Lock()

    def get(self) -> GenderModel:
        """The model (a :class:`ModelError` for a bundle that is not a gender model)."""
        with self._lock:
            if self._model is None:
                chosen = self.bundle
                bundle = chosen if isinstance(chosen, Bundle) else load_bundle(chosen, task=GENDER)
                self._model = GenderModel(bundle, threads=self.threads)
            return self._model
