"""Camera sessions for ``POST /v1/stream``: one face tracker per session, in memory.

The page sends a camera frame every few hundred milliseconds with its session id; the
session's :class:`~agelens.video.AgeTracker` keeps each person's pooled age across frames.
A session holds no image: only boxes, age distributions and colour histograms of faces,
and it is dropped after ``IDLE_S`` without a frame. At most ``MAX_SESSIONS`` run at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from agelens.estimator import AgeEstimator
from agelens.server.uploads import UploadError
from agelens.video import AgeTracker

MAX_SESSIONS = 16
IDLE_S = 30.0


@dataclass
class Session:
    tracker: AgeTracker
    started: float
    last_used: float
    frames: int = 0
    #: Frames that came while an earlier one was being read, and were dropped.
    dropped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _count_lock: threading.Lock = field(default_factory=threading.Lock)

    def late(self) -> int:
        """Count a late frame; the count so far."""
        with self._count_lock:
            self.dropped += 1
            return self.dropped


class Sessions:
    """The open camera sessions of one server process."""

    def __init__(self, estimator: AgeEstimator) -> None:
        self.estimator = estimator
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Session:
        """The session ``name``, started on its first frame; 503 when too many run."""
        now = time.monotonic()
        with self._lock:
            for stale in [k for k, s in self._sessions.items() if now - s.last_used > IDLE_S]:
                del self._sessions[stale]
            session = self._sessions.get(name)
            if session is None:
                if len(self._sessions) >= MAX_SESSIONS:
                    raise UploadError(503, f"{MAX_SESSIONS} camera sessions are running: retry")
                session = Session(AgeTracker(self.estimator), now, now)
                self._sessions[name] = session
            session.last_used = now
            return session
