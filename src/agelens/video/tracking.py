"""Which face in this frame is which person: a small tracker over detector boxes.

Each track predicts where its face will be from its last two positions (constant
velocity), and each frame's faces are matched to the predictions, the closest pairs
first: by overlap (IoU) where boxes overlap, else by the distance between centres over
the face's size, within a gate; and by how alike the faces look (their colour
histograms), which keeps two people apart where they cross and their boxes overlap.
A face matched to no track starts one; a track missing
its face coasts on its prediction for up to ``max_missing_s`` (people crossing hide each
other, for seconds when they walk slowly), then ends. Looks are a tie-breaker, not a
gate: a face coming out from behind another looks half like each. A track whose face
leaves the frame waits at the edge it left by, for twice as long: a person stepping out
and back comes in where they left.

Why not a Kalman filter: faces in these videos move slowly next to their size, and
what keeps crossing people apart is how they look, which SORT-style trackers do not use.
The measured identities kept on test clips are in ``docs/video.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]

#: A face is matched to a prediction within this many face widths of its centre, and
#: GATE_GROWTH more for each second its track has gone unseen (the prediction drifts).
MAX_JUMP = 1.0
GATE_GROWTH = 2.0
#: Overlap counts for more than distance: a match by IoU costs 1 - IoU (0-1), one by
#: distance alone 1 + the distance in face widths.
DISTANCE_COST = 1.0
#: Weight of the faces' difference in looks (0-1) in a match's cost.
LOOKS_WEIGHT = 1.0
#: How fast a track's looks follow its face (light changes; a face turns).
LOOKS_UPDATE = 0.2
#: Bins per colour channel of a face's histogram.
BINS = 8


def looks(image: np.ndarray, box: Box) -> np.ndarray:
    """A face's colour histogram, from the middle of its box (less background)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    height, width = image.shape[:2]
    left, right = int(max(0, x1 + 0.2 * w)), int(min(width, x2 - 0.2 * w))
    top, bottom = int(max(0, y1 + 0.2 * h)), int(min(height, y2 - 0.2 * h))
    patch = image[top:bottom, left:right].reshape(-1, 3)
    if len(patch) == 0:
        return np.full(3 * BINS, 1.0 / (3 * BINS))
    binned = patch.astype(np.int32) * BINS // 256
    counts = [np.bincount(binned[:, c], minlength=BINS) for c in range(3)]
    found = np.concatenate(counts).astype(np.float64)
    return found / found.sum()


@dataclass(slots=True)
class Track:
    """One person's faces over time."""

    number: int
    box: Box
    last_time: float
    velocity: tuple[float, float] = (0.0, 0.0)  # box centre, pixels a second
    #: The face left the frame: the track waits at the edge, not moving.
    outside: bool = False
    looks: np.ndarray | None = None

    def leave_if_out(self, time: float, size: tuple[int, int]) -> None:
        """Stop at the frame's edge once the predicted face is past it."""
        x1, y1, x2, y2 = self.predicted(time)
        width, height = size
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if 0 <= cx <= width and 0 <= cy <= height:
            return
        dx = min(max(cx, 0.0), float(width)) - cx
        dy = min(max(cy, 0.0), float(height)) - cy
        self.box = (x1 + dx, y1 + dy, x2 + dx, y2 + dy)
        self.velocity, self.last_time, self.outside = (0.0, 0.0), time, True

    def predicted(self, time: float) -> Box:
        dt = time - self.last_time
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        x1, y1, x2, y2 = self.box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)

    def see(self, found: np.ndarray) -> None:
        self.looks = (
            found
            if self.looks is None
            else ((1 - LOOKS_UPDATE) * self.looks + LOOKS_UPDATE * found)
        )

    def update(self, box: Box, time: float) -> None:
        self.outside = False
        dt = time - self.last_time
        if dt > 0:
            (ox, oy), (nx, ny) = _centre(self.box), _centre(box)
            vx, vy = self.velocity
            old_w, new_w = self.box[2] - self.box[0], box[2] - box[0]
            # Smoothed, so one jittery box does not throw the prediction; and not learnt
            # from a box that shrank or grew at once (a face half hidden by another).
            if 0.85 <= new_w / max(old_w, 1.0) <= 1.15:
                self.velocity = (
                    0.7 * vx + 0.3 * (nx - ox) / dt,
                    0.7 * vy + 0.3 * (ny - oy) / dt,
                )
        self.box, self.last_time = box, time


class FaceTracker:
    """Assigns each frame's face boxes to tracks; see the module's docstring."""

    def __init__(self, max_missing_s: float = 4.0) -> None:
        self.max_missing_s = max_missing_s
        self.tracks: list[Track] = []
        self._next = 1

    def update(
        self, boxes: list[Box], time: float, image: np.ndarray
    ) -> tuple[list[int], list[Track]]:
        """The track number of each box of ``image``, in order; and the tracks that ended
        (missing longer than ``max_missing_s``)."""
        size = (image.shape[1], image.shape[0])
        seen = [looks(image, box) for box in boxes]
        costs = np.full((len(self.tracks), len(boxes)), np.inf)
        for t, track in enumerate(self.tracks):
            guess = track.predicted(time)
            reach = MAX_JUMP + GATE_GROWTH * (time - track.last_time)
            for b, box in enumerate(boxes):
                costs[t, b] = _cost(guess, box, reach)
                if track.looks is not None:
                    costs[t, b] += LOOKS_WEIGHT * 0.5 * float(np.abs(track.looks - seen[b]).sum())
        numbers: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        # Closest pairs first: with a few faces a frame, as good as an optimal matching.
        for flat in np.argsort(costs, axis=None):
            t, b = divmod(int(flat), len(boxes))
            if not np.isfinite(costs[t, b]) or t in used or numbers[b] is not None:
                continue
            self.tracks[t].update(boxes[b], time)
            self.tracks[t].see(seen[b])
            numbers[b] = self.tracks[t].number
            used.add(t)
        for track in self.tracks:
            if track.last_time < time and not track.outside:
                track.leave_if_out(time, size)
        for b, box in enumerate(boxes):
            if numbers[b] is None:
                track = Track(self._next, box, time, looks=seen[b])
                self.tracks.append(track)
                numbers[b] = track.number
                self._next += 1
        ended = [
            t
            for t in self.tracks
            if time - t.last_time > self.max_missing_s * (2 if t.outside else 1)
        ]
        self.tracks = [t for t in self.tracks if t not in ended]
        return [n for n in numbers if n is not None], ended

    def finish(self) -> list[Track]:
        """Every track still open, at the end of the video."""
        ended, self.tracks = self.tracks, []
        return ended


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    return overlap / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap)


def _cost(guess: Box, box: Box, reach: float) -> float:
    """1 - IoU when the boxes overlap; else 1 + the centres' distance in face widths,
    or infinity past ``reach`` face widths. Boxes of very different sizes never match."""
    size = max(guess[2] - guess[0], box[2] - box[0], 1.0)
    ratio = (box[2] - box[0]) / max(guess[2] - guess[0], 1.0)
    if not 0.5 <= ratio <= 2.0:
        return float("inf")
    overlap = _iou(guess, box)
    if overlap > 0:
        return 1.0 - overlap
    (gx, gy), (bx, by) = _centre(guess), _centre(box)
    jump = float(np.hypot(gx - bx, gy - by)) / size
    return DISTANCE_COST + jump if jump <= reach else float("inf")
