"""Response shapes, so ``/docs`` shows exactly what each endpoint answers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class GroupOut(BaseModel):
    label: str = Field(description="the most likely group")
    probability: float = Field(description="its probability")
    age_group: str = Field(description="the group the estimated age falls in")


class GenderOut(BaseModel):
    label: str = Field(description="female, male, or uncertain below the bundle's threshold")
    probability: float = Field(description="the likelier label's probability")
    probabilities: dict[str, float] = Field(description="probability of each label")


class FaceOut(BaseModel):
    """The same face object as ``agelens predict --json`` prints."""

    box: list[float] = Field(description="[x1, y1, x2, y2] in pixels of the upright image")
    score: float | None = Field(description="detector confidence in [0, 1]")
    landmarks: list[list[float]] = Field(
        description="5 points [x, y], as dlib's predictor put them"
    )
    age: float = Field(description="expected age in years")
    interval: list[float] = Field(description="[lo, hi], the calibrated 90% interval")
    label: str = Field(description="what a person reads: '34 (19-50)', or '80+ (66-80+)'")
    ceiling: float | None = Field(
        default=None,
        description="the network's oldest age, when the interval reaches it: open above",
    )
    at_ceiling: bool | None = Field(
        default=None,
        description="with ceiling: most of the distribution is on the oldest age, so the "
        "label reads '80+' whatever the expected age",
    )
    group: GroupOut = Field(
        description="the most likely age group, its probability, and the group the age "
        "falls in (they differ when the distribution is wide)"
    )
    groups: dict[str, float] = Field(description="probability of every group of the scheme")
    distribution: list[float] | None = Field(
        default=None, description="probability per age class, when asked for"
    )
    quality: dict[str, float] | None = Field(
        default=None,
        description="how well the face can be judged: eye_distance (px), sharpness, "
        "brightness, clipped, yaw, pitch, roll (degrees), colour",
    )
    gender: GenderOut | None = Field(
        default=None,
        description="apparent gender as datasets label it (not identity), when asked for",
    )


class EstimateOut(BaseModel):
    width: int
    height: int
    faces: list[FaceOut]
    annotated_jpeg_base64: str | None = Field(
        default=None, description="the photo with boxes and ages drawn, when asked for"
    )


class GatedFaceOut(FaceOut):
    decision: str = Field(description="pass or refer, for this face")
    reasons: list[str] = Field(
        description="why it was referred (a face that cannot be judged, or an age under "
        "pass_age); empty when it passes"
    )


class GateOut(BaseModel):
    """The same record as ``agelens gate --json`` (which adds ``image`` and ``error``)."""

    width: int
    height: int
    decision: str = Field(description="pass, refer or no_face, for the whole photo")
    over: float = Field(description="the age threshold asked")
    buffer: float = Field(description="the policy's buffer: pass_age - over")
    pass_age: float = Field(description="the age a face must reach to pass: over + buffer")
    rule: str = Field(
        description="what must reach pass_age: the estimate, the 90% interval's "
        "lower_bound, or toward_lower_bound: the estimate less share of the way down to it"
    )
    share: float | None = Field(
        default=None, description="of toward_lower_bound, the share of the way down"
    )
    measure: str = Field(description="what must reach pass_age, in words")
    faces: list[GatedFaceOut]
    annotated_jpeg_base64: str | None = Field(
        default=None, description="the photo with boxes and ages drawn, when asked for"
    )


class VerifyOut(EstimateOut):
    claimed: float = Field(description="the claimed age, in years")
    verdict: str = Field(description="consistent, unlikely, refer or no_face")
    p_value: float | None = Field(
        description="how surprising the claim is for this face: the share of faces of the "
        "claimed age that would look at least this far from it (0.01 means 0.01 or less)"
    )
    reasons: list[str] = Field(description="why the answer is refer, unlikely or no_face")


class StreamFaceOut(BaseModel):
    frame: int
    time: float = Field(description="seconds since the session's first frame")
    track: int = Field(description="the person's number in this session")
    box: list[float]
    age: float | None = Field(description="the person's steady age, pooled over frames")
    interval: list[float] | None = Field(description="its 90% interval")
    frame_age: float | None = Field(description="this frame's own estimate")
    decision: str | None = Field(default=None, description="with over: pass or refer")


class StreamOut(BaseModel):
    width: int
    height: int
    frame: int | None = Field(
        description="the frame's number in its session, from 0; absent for a late frame"
    )
    faces: list[StreamFaceOut]
    late: bool = Field(
        default=False,
        description="the session was still reading an earlier frame, so this one was "
        "dropped unread (no faces): the newest frame is read, never a queue",
    )
    dropped: int = Field(default=0, description="frames of this session dropped as late")


class PersonOut(BaseModel):
    track: int
    first_frame: int
    last_frame: int
    frames: int = Field(description="frames the person's face was found in")
    age: float | None = Field(description="the person's steady age, pooled over frames")
    interval: list[float] | None
    label: str | None
    group: dict[str, Any] | None
    decision: str | None = Field(default=None, description="with over: pass or refer")


class VideoOut(BaseModel):
    frames: int
    people: list[PersonOut]


class ErrorOut(BaseModel):
    error: str
