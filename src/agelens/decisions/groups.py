"""Age-group schemes: named lower edges over whole years, and the group probabilities of a face.

A group's probability is the predicted age distribution's mass inside it, so a
face estimated at 30.4 years with a wide distribution can be 45% YOUNG and 50%
MIDDLE: the label is the most probable group, not a threshold on the point estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class GroupScheme:
    """Consecutive groups, group ``i`` covering whole years ``edges[i]`` to ``edges[i+1] - 1``."""

    name: str
    edges: tuple[int, ...]
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.edges or self.edges[0] != 0:
            raise ValueError(f"scheme {self.name!r}: the first group must start at age 0")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"scheme {self.name!r}: edges must increase, got {self.edges}")
        if len(self.labels) != len(self.edges):
            raise ValueError(
                f"scheme {self.name!r}: {len(self.edges)} edges, {len(self.labels)} labels"
            )

    def membership(self, ages: NDArray[np.floating]) -> NDArray[np.float32]:
        """``[len(ages), groups]`` one-hot matrix mapping each age class to its group."""
        index = np.searchsorted(np.asarray(self.edges), np.floor(ages), side="right") - 1
        # Ones set in place: an identity per group would cost groups^2 memory.
        matrix = np.zeros((len(index), len(self.edges)), dtype=np.float32)
        matrix[np.arange(len(index)), np.clip(index, 0, None)] = 1.0
        return matrix

    def group_of(self, age: float) -> str:
        """Label of the group a given age in years falls in."""
        index = int(np.searchsorted(np.asarray(self.edges), np.floor(age), side="right")) - 1
        return self.labels[max(index, 0)]


def _range_labels(edges: list[int]) -> tuple[str, ...]:
    bounds = [*edges[1:], None]
    return tuple(
        f"{low}+" if high is None else f"{low}-{high - 1}"
        for low, high in zip(edges, bounds, strict=True)
    )


def custom_scheme(lower_edges: list[int], name: str | None = None) -> GroupScheme:
    """Groups from lower edges: ``[13, 31, 51]`` gives ``0-12``, ``13-30``, ``31-50``, ``51+``."""
    edges = sorted(set(lower_edges) | {0})
    if len(edges) < 2:
        raise ValueError("give at least one lower edge above 0, for example 13,31,51")
    return GroupScheme(name or ",".join(map(str, lower_edges)), tuple(edges), _range_labels(edges))


#: The seed project's classes (Indian-actors set), plus CHILD so under-13s have a home.
IMFDB = GroupScheme("imfdb", (0, 13, 31, 51), ("CHILD", "YOUNG", "MIDDLE", "OLD"))
#: 0-10, 11-20, ..., 51-60, 61+.
DECADES = GroupScheme(
    "decades",
    (0, 11, 21, 31, 41, 51, 61),
    ("0-10", "11-20", "21-30", "31-40", "41-50", "51-60", "61+"),
)
#: Five bins holding 19.5/22/18.5/19/21% of UTKFace's 23,313 distinct faces.
UTK5 = GroupScheme("utk5", (0, 20, 27, 35, 50), _range_labels([0, 20, 27, 35, 50]))

#: Limits on a scheme given as edges: more groups than years of life say nothing more.
MAX_GROUPS = 100
MAX_EDGE = 150

SCHEMES: dict[str, GroupScheme] = {scheme.name: scheme for scheme in (IMFDB, DECADES, UTK5)}


def resolve_scheme(spec: str | GroupScheme) -> GroupScheme:
    """A scheme by name (``imfdb``, ``decades``, ``utk5``) or comma-separated lower edges."""
    if isinstance(spec, GroupScheme):
        return spec
    if spec in SCHEMES:
        return SCHEMES[spec]
    if spec.count(",") >= MAX_GROUPS:
        raise ValueError(f"at most {MAX_GROUPS} group edges, got {spec.count(',') + 1}")
    try:
        edges = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"unknown group scheme {spec!r}: use one of {', '.join(SCHEMES)} "
            "or lower edges such as 13,31,51"
        ) from None
    if any(edge < 0 or edge > MAX_EDGE for edge in edges):
        raise ValueError(f"group edges are ages from 0 to {MAX_EDGE} years, got {spec[:80]!r}")
    return custom_scheme(edges, spec)
