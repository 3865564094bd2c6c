"""An imported TFJS age network as an AgeLens training network.

The bundle's manifest names, under ``network``, the graph file and its nodes: the input,
the features the age head reads, the head's kernel and bias, and the channel order the
network was trained with. The head becomes an ``nn.Linear`` over AgeLens's age classes,
so the training loop, the objective and the export treat this network as they treat the
bundled ResNet-10 (``features``, ``head``, ``dropout``, ``replace_head``). The channel
order is reversed inside the network, so its bundle takes RGB chips like every other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agelens.errors import ModelError
from agelens.networks.tfjs_files import write_tfjs
from agelens.networks.tfjs_graph import TfjsGraph, load_tfjs

#: How far below the oldest source row a row added past it starts, per year (log-odds).
_PAST_OLDEST_STEP = 0.05


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """The ``network`` entry of a bundle built from a TFJS graph."""

    graph: str
    input: str
    features: str
    head_kernel: str
    head_bias: str
    channel_order: str = "RGB"
    format: str = "tfjs-graph"

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> GraphSpec:
        try:
            return cls(**entry)
        except TypeError as error:
            raise ModelError(f"a bundle's network entry is malformed: {error}") from error

    def to_manifest(self) -> dict[str, Any]:
        return asdict(self)


class GraphAgeNet(nn.Module):
    """Features from the graph, then a linear head over age classes (logits)."""

    def __init__(self, graph: TfjsGraph, spec: GraphSpec) -> None:
        super().__init__()
        if spec.channel_order not in ("RGB", "BGR"):
            raise ModelError(f"channel order {spec.channel_order!r}: use RGB or BGR")
        self.graph, self.spec = graph, spec
        kernel, bias = graph.constant(spec.head_kernel), graph.constant(spec.head_bias)
        self.head = nn.Linear(kernel.shape[0], kernel.shape[1])
        with torch.no_grad():
            self.head.weight.copy_(kernel.T)
            self.head.bias.copy_(bias)
        self.dropout = nn.Dropout(0.0)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) if self.spec.channel_order == "BGR" else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x, self.spec.features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))

    def trunk(self, x: torch.Tensor, cut: str) -> torch.Tensor:
        """The activation of node ``cut`` for normalised RGB input."""
        return self.graph.run({self.spec.input: self._input(x)}, [cut])[cut]

    def tail(self, activation: torch.Tensor, cut: str) -> torch.Tensor:
        """Logits from node ``cut``'s activation: the rest of the graph, then the head."""
        features = self.graph.run({cut: activation}, [self.spec.features])[self.spec.features]
        return self.head(self.dropout(features))

    def replace_head(self, classes: int) -> None:
        self.head = nn.Linear(self.head.in_features, classes)

    def regrid(self, source_ages: list[float], target_ages: list[float]) -> None:
        """Rows of the head for ``target_ages`` from the rows of the nearest source ages;
        ages past the oldest source age start a little less likely with each year."""
        old_weight, old_bias = self.head.weight.detach(), self.head.bias.detach()
        source = np.asarray(source_ages)
        self.replace_head(len(target_ages))
        with torch.no_grad():
            for row, age in enumerate(target_ages):
                nearest = int(np.abs(source - age).argmin())
                self.head.weight[row] = old_weight[nearest]
                past = max(age - float(source.max()), 0.0)
                self.head.bias[row] = old_bias[nearest] - _PAST_OLDEST_STEP * past

    def save_graph(self, source_json: Path, out_dir: Path) -> Path:
        """The network's current weights, head included, as a TFJS graph in ``out_dir``."""
        self.graph.replace_constant(self.spec.head_kernel, self.head.weight.T)
        self.graph.replace_constant(self.spec.head_bias, self.head.bias)
        return write_tfjs(self.graph.tf_arrays(), source_json, out_dir)


class SharedTrunkEnsemble(nn.Module):
    """Networks whose training changed only what follows node ``cut`` of one imported
    network: the trunk runs once, each tail on its activation, and the output is the log
    of the tails' mean probabilities (which stands in for logits, as for ``Ensemble``)."""

    def __init__(self, nets: list[GraphAgeNet], cut: str) -> None:
        super().__init__()
        self.nets, self.cut = nn.ModuleList(nets), cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activation = self.nets[0].trunk(x, self.cut)
        probabilities = [torch.softmax(net.tail(activation, self.cut), dim=1) for net in self.nets]
        return torch.log(torch.stack(probabilities).mean(dim=0).clamp_min(1e-12))


def load_graph_network(folder: Path, entry: dict[str, Any]) -> GraphAgeNet:
    """The training network of a bundle whose manifest has a ``network`` entry."""
    spec = GraphSpec.from_manifest(entry)
    graph, _ = load_tfjs(folder / spec.graph)
    return GraphAgeNet(graph, spec)
