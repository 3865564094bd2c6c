"""``--mode tail``: train the last blocks of a network on activations cached once.

A 224-px network costs about 20 ms a face forward on two cores, and a full fine-tune three
times that, with every epoch. Here the network's activation at one node (``--from``) is
computed once for every chip, in onnxruntime, and kept on disk as float16, so a run can
be resumed and rerun without it; training then runs only what follows that node.

Two regularisers keep what the pretrained network knew (Li and Hoiem's learning without
forgetting; Li et al.'s L2-SP), both measured against the network as training found it:

- ``distill``: the KL divergence from the starting network's own distribution on each
  training chip to the network being trained, so ages of faces unlike the training data
  move less;
- ``l2sp``: the squared distance of the trained weights from their starting values.

Each epoch is checkpointed; a run started again with the same checkpoint resumes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from numpy.typing import NDArray
from torch import nn

from agelens.data.sampling import balanced_weights, epoch_order
from agelens.networks.graph_age_net import GraphAgeNet
from agelens.networks.resnet10 import export_module
from agelens.pipeline.runtime import open_session
from agelens.training.augmentation import Normalise
from agelens.training.checkpoint import resume_checkpoint, save_checkpoint
from agelens.training.config import LabelledChips
from agelens.training.objective import Objective, distillation_loss
from agelens.training.validation import BestSoFar, end_epoch, val_scores

_CHUNK = 64


class Trunk(nn.Module):
    """The network up to node ``cut``, for export to onnxruntime."""

    def __init__(self, net: GraphAgeNet, cut: str) -> None:
        super().__init__()
        self.net, self.cut = net, cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.trunk(x, self.cut)


def cached_activations(
    net: GraphAgeNet,
    cut: str,
    chips: NDArray[np.uint8],
    normalise: Normalise,
    cache_dir: Path,
    on_progress: Callable[[int, int], None] | None = None,
) -> NDArray[np.float16]:
    """Node ``cut``'s activation for every chip, float16, memory-mapped from ``cache_dir``.

    The file is named by the weights that compute the node (so a bundle whose tail was
    trained, started from again, reuses it), the node and the chips' bytes; one
    interrupted part way is continued where it stopped.
    """
    identity = hashlib.sha1(cut.encode())
    for tensor in [*net.graph.parameters_between("", cut), *net.graph.buffers()]:
        identity.update(tensor.detach().cpu().numpy().tobytes())
    identity.update(np.ascontiguousarray(chips).data)
    path = cache_dir / f"activations-{identity.hexdigest()[:20]}.npy"
    done_path = path.with_suffix(".done")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "trunk.onnx"
        example = normalise(torch.from_numpy(chips[:1]))
        net.eval()
        export_module(Trunk(net, cut), example, onnx_path, "activation")
        session = open_session(onnx_path, os.cpu_count())
        shape = session.run(None, {"images": example.contiguous().numpy()})[0].shape[1:]
        done = int(done_path.read_text()) if done_path.is_file() and path.is_file() else 0
        mode = "r+" if done else "w+"
        stored = np.lib.format.open_memmap(
            path, mode=mode, dtype=np.float16, shape=(len(chips), *shape)
        )
        for start in range(done, len(chips), _CHUNK):
            x = normalise(torch.from_numpy(chips[start : start + _CHUNK])).contiguous().numpy()
            stored[start : start + len(x)] = _run(session, x)
            done_path.write_text(str(start + len(x)))
            if on_progress:
                on_progress(start + len(x), len(chips))
        stored.flush()
    return np.load(path, mmap_mode="r")


def _run(session: ort.InferenceSession, x: NDArray[np.float32]) -> NDArray[np.float16]:
    return session.run(None, {"images": x})[0].astype(np.float16)


def train_tail(
    net: GraphAgeNet,
    cut: str,
    train_set: LabelledChips,
    val_set: LabelledChips,
    normalise: Normalise,
    objective: Objective,
    generator: torch.Generator,
    *,
    cache_dir: Path,
    checkpoint: Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, float]], int]:
    """Train what follows ``cut`` (and the head) on cached activations; best val epoch kept."""
    config = objective.config
    train_x = cached_activations(net, cut, train_set.chips, normalise, cache_dir)
    val_x = cached_activations(net, cut, val_set.chips, normalise, cache_dir)
    # What training from the cached node changes: the graph after it, and the head.
    blocks = net.graph.parameters_between(cut, net.spec.features)
    head = list(net.head.parameters())
    parameters = [*blocks, *head]
    start_values = [p.detach().clone() for p in parameters]
    teacher = _distributions(net, cut, train_x) if config.distill > 0 else None
    ages = torch.from_numpy(train_set.ages)
    groups = torch.from_numpy(train_set.groups)
    # L2-SP replaces weight decay: decay would pull the weights to zero instead.
    decay = 0.0 if config.l2sp else config.weight_decay
    optimiser = torch.optim.AdamW(
        [
            {"params": blocks, "lr": config.learning_rate * config.backbone_lr_ratio},
            {"params": head, "lr": config.learning_rate},
        ],
        weight_decay=decay,
    )
    val_ages, val_groups = torch.from_numpy(val_set.ages), torch.from_numpy(val_set.groups)
    weights = balanced_weights(train_set.ages, train_set.sources, config.balance)
    best = BestSoFar(net, config.patience)
    progress = resume_checkpoint(checkpoint, net, optimiser, generator, best)
    history = progress.history
    for epoch in progress.epochs_left(config.epochs):
        net.train()
        order = epoch_order(len(train_x), generator, weights)
        running, seen = 0.0, 0
        steps = (len(order) + config.batch_size - 1) // config.batch_size
        for step, begin in enumerate(range(0, len(order), config.batch_size)):
            index = order[begin : begin + config.batch_size]
            rows = np.sort(index.numpy())
            x = torch.from_numpy(np.asarray(train_x[rows], dtype=np.float32))
            logits = net.tail(x, cut)
            loss = objective.loss(logits, ages[rows], groups[rows])
            if teacher is not None:
                loss = loss + config.distill * distillation_loss(logits, teacher[rows])
            if config.l2sp:
                loss = loss + config.l2sp * l2sp_penalty(parameters, start_values)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            running += loss.item() * len(rows)
            seen += len(rows)
            if on_step:
                on_step(step + 1, steps)
        probabilities = _distributions(net, cut, val_x)
        row = {
            "epoch": epoch,
            "train_loss": running / seen,
            **val_scores(objective, probabilities, val_ages, val_groups),
        }
        stop = end_epoch(history, row, best, on_epoch)
        if checkpoint is not None:
            progress.epoch, progress.stopped = epoch, stop
            save_checkpoint(checkpoint, net, optimiser, generator, best, progress)
        if stop:
            break
    best.restore()
    return history, best.epoch


def l2sp_penalty(parameters: list[nn.Parameter], start: list[torch.Tensor]) -> torch.Tensor:
    """Squared distance of the weights from where training started (L2-SP)."""
    return sum(((p - s) ** 2).sum() for p, s in zip(parameters, start, strict=True))  # type: ignore[return-value]


def _distributions(net: GraphAgeNet, cut: str, activations: NDArray[np.float16]) -> torch.Tensor:
    net.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(activations), 256):
            x = torch.from_numpy(np.asarray(activations[start : start + 256], dtype=np.float32))
            outputs.append(torch.softmax(net.tail(x, cut), dim=1))
    return torch.cat(outputs)
