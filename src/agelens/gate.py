"""The age gate: answer "is this person over N?" with *pass* or *refer to an ID check*.

Why a buffer: an age estimate from a face has an error of several years, and it
is biased upwards for teenagers. Letting a minor through is the costly mistake,
refusing an adult only costs an ID check. So a face passes only when its
estimate clears the legal threshold *plus* a buffer, as in the UK's
Challenge 25 (threshold 18, buffer 7: anyone who looks under 25 shows ID).
Everyone else is referred, never refused: the gate narrows who must show ID.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agelens.estimates import Face


class Decision(StrEnum):
    PASS = "pass"
    REFER = "refer"
    NO_FACE = "no_face"


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """Pass a face when its estimated age is at least ``over + buffer``."""

    over: float = 18
    buffer: float = 7

    @property
    def pass_age(self) -> float:
        return self.over + self.buffer

    def decide(self, face: Face) -> Decision:
        return Decision.PASS if face.age >= self.pass_age else Decision.REFER

    def decide_image(self, faces: list[Face]) -> Decision:
        """Overall answer for a photo: it passes only when it has faces and every one passes."""
        if not faces:
            return Decision.NO_FACE
        return (
            Decision.PASS if all(self.decide(f) is Decision.PASS for f in faces) else Decision.REFER
        )
