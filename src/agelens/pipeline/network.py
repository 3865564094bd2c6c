"""The age network: one onnxruntime session, batched, with optional test-time augmentation:
the chip mirrored, and (for video) the chip's light scaled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from agelens.errors import ModelError
from agelens.models.bundles import Bundle
from agelens.pipeline.runtime import open_session

if TYPE_CHECKING:
    import onnxruntime as ort

BATCH_SIZE = 64
#: The chip's light, scaled, for :meth:`AgeModel.distributions`'s ``gains``. The
#: networks read one face differently as its light changes (cydral-v1: a face reads
#: 28-35 years as its light goes from 0.75 to 1.25 of itself); a video's frames of one
#: person are lit differently, and averaging each over these levels makes its reading
#: depend less on the light of the moment (``docs/video.md``).
LIGHT_GAINS = (0.85, 1.0, 1.15)


def mean_over_copies(
    session: ort.InferenceSession, bundle: Bundle, copies: list[NDArray[np.uint8]]
) -> NDArray[np.float32]:
    """Each chip's probabilities averaged over its copies (mirrored, relit): the copies
    join the same batches, and each chip's are averaged after."""
    batch = np.concatenate(copies)
    outputs = []
    for start in range(0, len(batch), BATCH_SIZE):
        inputs = network_input(batch[start : start + BATCH_SIZE], bundle)
        (found,) = session.run([bundle.output_name], {bundle.input_name: inputs})
        if not bundle.manifest["output"].get("softmax_in_graph", True):
            found = softmax(found)
        outputs.append(np.asarray(found, dtype=np.float32))
    return np.concatenate(outputs).reshape(len(copies), len(copies[0]), -1).mean(axis=0)


class AgeModel:
    """Turns aligned uint8 chips into age distributions. ``InferenceSession.run`` is thread-safe."""

    def __init__(self, bundle: Bundle, *, threads: int | None = None) -> None:
        self.bundle = bundle
        self._session = open_session(bundle.model_path, threads)
        self._check_output_width()

    def _check_output_width(self) -> None:
        width = self._session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(self.bundle.ages):
            raise ModelError(
                f"{self.bundle.name}: the network outputs {width} classes, "
                f"the manifest lists {len(self.bundle.ages)} ages"
            )

    def distributions(
        self, chips: NDArray[np.uint8], *, flip: bool, gains: Sequence[float] = (1.0,)
    ) -> NDArray[np.float32]:
        """``[N, size, size, 3]`` RGB chips -> ``[N, classes]`` probabilities (rows sum to 1):
        each chip's mean over its copies with its light scaled by each of ``gains`` (such
        as :data:`LIGHT_GAINS`) and, with ``flip``, their mirror images."""
        if len(chips) == 0:
            return np.zeros((0, len(self.bundle.ages)), dtype=np.float32)
        copies = [_relit(chips, gain) for gain in gains]
        if flip:
            copies += [copy[:, :, ::-1] for copy in copies]
        return mean_over_copies(self._session, self.bundle, copies)


def _relit(chips: NDArray[np.uint8], gain: float) -> NDArray[np.uint8]:
    if gain == 1.0:
        return chips
    return np.clip(chips.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def network_input(chips: NDArray[np.uint8], bundle: Bundle) -> NDArray[np.float32]:
    """``[N, size, size, 3]`` RGB chips -> the network's normalised ``[N, 3, size, size]`` input."""
    mean = np.asarray(bundle.mean, dtype=np.float32)
    inputs = (chips.astype(np.float32) - mean) * np.float32(bundle.scale)
    return np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows of logits -> rows of probabilities, for networks that end before their softmax."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
