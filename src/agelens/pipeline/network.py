"""The age network: one onnxruntime session, batched, with optional flip test-time augmentation."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agelens.errors import ModelError
from agelens.models.bundles import Bundle
from agelens.pipeline.runtime import open_session

BATCH_SIZE = 64


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

    def distributions(self, chips: NDArray[np.uint8], *, flip: bool) -> NDArray[np.float32]:
        """``[N, size, size, 3]`` RGB chips -> ``[N, classes]`` probabilities (rows sum to 1)."""
        if len(chips) == 0:
            return np.zeros((0, len(self.bundle.ages)), dtype=np.float32)
        batch = chips
        if flip:
            # Flipped copies join the same batches; the two halves are averaged after.
            batch = np.concatenate([chips, chips[:, :, ::-1]])
        probabilities = np.concatenate(
            [
                self._run(batch[start : start + BATCH_SIZE])
                for start in range(0, len(batch), BATCH_SIZE)
            ]
        )
        if flip:
            probabilities = (probabilities[: len(chips)] + probabilities[len(chips) :]) / 2
        return probabilities

    def _run(self, chips: NDArray[np.uint8]) -> NDArray[np.float32]:
        inputs = network_input(chips, self.bundle)
        (outputs,) = self._session.run([self.bundle.output_name], {self.bundle.input_name: inputs})
        if not self.bundle.manifest["output"].get("softmax_in_graph", True):
            outputs = _softmax(outputs)
        return outputs.astype(np.float32, copy=False)


def network_input(chips: NDArray[np.uint8], bundle: Bundle) -> NDArray[np.float32]:
    """``[N, size, size, 3]`` RGB chips -> the network's normalised ``[N, 3, size, size]`` input."""
    mean = np.asarray(bundle.mean, dtype=np.float32)
    inputs = (chips.astype(np.float32) - mean) * np.float32(bundle.scale)
    return np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))


def _softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
