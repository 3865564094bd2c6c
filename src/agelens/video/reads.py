"""When a tracked face is read by the age network: densely while its track is new, then a
few times a second, each read at the next of the light levels.

A person's age does not change between frames, and once a track's pooled age has
settled, another read of nearly the same picture adds almost nothing (successive frames
share 87% of their error, :data:`~agelens.video.steady.SHARED_SHARE`). Reading every face
of every frame at three light levels, each mirrored, made the network 83% of the video
command's time and left it behind real time with three faces on two cores. So a track is
read on every frame of its first :data:`SETTLING_SECONDS` (and at least
:data:`SETTLING_READS` frames), which settle the shown age, and after that at most
``reads_per_second`` times a second; each read is one light level of
:data:`~agelens.pipeline.network.LIGHT_GAINS` (with its mirror, where the bundle reads
mirrors), the next one each time, so that a track's reads average over light as one
frame's six copies did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from agelens.pipeline.network import LIGHT_GAINS

#: Seconds of a new track read on every frame, and the fewest frames so read (two rounds
#: of the light levels): with 6 reads, the shown age strayed up to 3.4 years from its
#: final value after 2 s on ``bench/video.py``'s clip, against 2.6 reading every frame.
SETTLING_SECONDS = 1.0
SETTLING_READS = 2 * len(LIGHT_GAINS)
#: Reads a second of a settled track, by default (``agelens video --reads-per-second``).
DEFAULT_READS_PER_SECOND = 3.0


@dataclass(slots=True)
class _TrackReads:
    first_time: float
    count: int = 0
    last_time: float = -math.inf


@dataclass(slots=True)
class ReadBudget:
    """Which tracks are read on a frame, and at which light level."""

    reads_per_second: float = DEFAULT_READS_PER_SECOND
    #: Every read at every light level (six copies a face), as video was read before the
    #: budget: what benchmarks compare the budget with.
    every_light: bool = False
    tracks: dict[int, _TrackReads] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.reads_per_second > 0:
            raise ValueError(f"reads per second must be above 0, got {self.reads_per_second}")

    def due(self, track: int, time: float) -> bool:
        """Whether ``track`` is read on the frame at ``time``."""
        reads = self.tracks.get(track)
        if reads is None or reads.count < SETTLING_READS:
            return True
        if time - reads.first_time < SETTLING_SECONDS:
            return True
        # A little early rather than a frame late: at 25 fps, 3 a second is every 8 frames.
        return time - reads.last_time >= 0.99 / self.reads_per_second

    def gains(self, track: int) -> tuple[float, ...]:
        """The light levels of ``track``'s next read."""
        if self.every_light:
            return LIGHT_GAINS
        reads = self.tracks.get(track)
        return (LIGHT_GAINS[(reads.count if reads else 0) % len(LIGHT_GAINS)],)

    def read(self, track: int, time: float) -> None:
        """Count a read of ``track`` at ``time``."""
        reads = self.tracks.setdefault(track, _TrackReads(time))
        reads.count += 1
        reads.last_time = time

    def forget(self, track: int) -> None:
        """A track that ended needs no more reads."""
        self.tracks.pop(track, None)
