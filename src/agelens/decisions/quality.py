"""Whether a face can be judged at all: limits on its measured quality, and the reasons.

An age gate must not pass a face it cannot read. A face with few pixels, blurred, badly
lit, turned away or in a photo without colour loses what ages show, and the networks
then fall back on what they saw most in training: on such faces a child reads years too
old. The gate therefore refers such faces to an ID check, and says why, in words a
person can act on ("face too small: 22 px between the eyes, needs 32").

The limits were set on the domain suite's validation faces (see ``docs/age-gate.md``):
each refers the faces where the networks' errors grow, while keeping most faces of
ordinary photos.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

from agelens.pipeline.quality import FaceQuality


class QualityClass(IntEnum):
    """What the intervals are calibrated per (each class gets its own conformal multipliers):
    faces that can be judged, with many pixels or with few, and faces that cannot."""

    LARGE_FACE = 0
    SMALL_FACE = 1
    POOR_QUALITY = 2


@dataclass(frozen=True, slots=True)
class QualityLimits:
    """The least (or most) of each measure a face may have to be judged."""

    min_eye_distance: float = 32.0
    min_sharpness: float = 0.18
    max_sharpness: float = 0.8
    min_brightness: float = 50.0
    max_brightness: float = 220.0
    max_clipped: float = 0.3
    max_yaw: float = 0.3
    min_pitch: float = 0.4
    max_roll: float = 30.0
    min_colour: float = 4.0
    #: Pixels between the eyes from which a face that can be judged counts as large.
    large_face: float = 64.0

    def reasons(self, quality: FaceQuality | None) -> list[str]:
        """Why the face cannot be judged; empty when it can (or was not measured)."""
        if quality is None:
            return []
        q, found = quality, []
        if q.eye_distance < self.min_eye_distance:
            found.append(
                # One decimal: 31.6 rounded would read "32 px ..., needs 32".
                f"face too small: {q.eye_distance:.1f} px between the eyes, "
                f"needs {self.min_eye_distance:.0f}"
            )
        if q.sharpness < self.min_sharpness:
            found.append(f"face blurred: sharpness {q.sharpness:.2f}, needs {self.min_sharpness:g}")
        if q.sharpness > self.max_sharpness:
            found.append(
                f"face grainy: fine texture {q.sharpness:.2f}, at most {self.max_sharpness:g} "
                "(grain, a halftone screen or sensor noise reads as wrinkles)"
            )
        if q.brightness < self.min_brightness:
            found.append(
                f"face too dark: light {q.brightness:.1f} of 255, needs {self.min_brightness:.0f}"
            )
        if q.brightness > self.max_brightness:
            found.append(
                f"face too bright: light {q.brightness:.1f} of 255, "
                f"at most {self.max_brightness:.0f}"
            )
        if q.clipped > self.max_clipped:
            found.append(
                f"face badly exposed: {q.clipped:.0%} of it black or white, "
                f"at most {self.max_clipped:.0%}"
            )
        if q.yaw > self.max_yaw or abs(q.roll) > self.max_roll or q.pitch < self.min_pitch:
            found.append(
                f"face turned: yaw {q.yaw:.2f} (at most {self.max_yaw:g}), pitch {q.pitch:.2f} "
                f"(at least {self.min_pitch:g}), roll {q.roll:.0f}° (at most {self.max_roll:g}°)"
            )
        if q.colour < self.min_colour:
            found.append(
                f"no colour in the photo: chroma {q.colour:.1f}, needs {self.min_colour:g}"
            )
        return found

    def quality_class(self, quality: FaceQuality | None) -> QualityClass:
        """The class a face's interval is calibrated in; unmeasured faces count as large."""
        if self.reasons(quality):
            return QualityClass.POOR_QUALITY
        if quality is not None and quality.eye_distance < self.large_face:
            return QualityClass.SMALL_FACE
        return QualityClass.LARGE_FACE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> QualityLimits:
        """Limits as a manifest stores them; unknown keys are an error, missing ones default."""
        unknown = set(record) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown quality limits: {', '.join(sorted(unknown))}")
        return cls(**{key: float(value) for key, value in record.items()})
