"""The video routes: ``POST /v1/video`` (a short clip, its people) and ``POST /v1/stream``
(the page's camera mode: one frame of a session at a time). Nothing of a clip or a frame
is kept; a camera session holds only its tracks (``server/video/sessions.py``)."""

from __future__ import annotations

import io
import time
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Query, Request

from agelens.decisions.gate import MAX_BUFFER, MAX_OVER, MIN_OVER
from agelens.estimator import AgeEstimator
from agelens.pipeline.images import load_image
from agelens.server.schemas import StreamOut, VideoOut
from agelens.server.uploads import UploadError, read_image_bytes
from agelens.video import AgeTracker
from agelens.video.frames import Frame, VideoError, read_frames
from agelens.video.reads import DEFAULT_READS_PER_SECOND, ReadBudget

#: What ``POST /v1/video`` takes: a short clip, not a film.
MAX_VIDEO_BYTES = 25 * 2**20
MAX_VIDEO_SECONDS = 60.0
MAX_VIDEO_PIXELS = 1920 * 1080

#: The gate's options where a route gives each person its answer (video, camera).
PersonOverQuery = Annotated[
    float | None,
    Query(ge=MIN_OVER, le=MAX_OVER, description="give each person the gate's answer"),
]
PersonBufferQuery = Annotated[
    float | None, Query(ge=0, le=MAX_BUFFER, description="the gate's buffer")
]


def add_video_routes(app: FastAPI, max_upload_bytes: int, upload_route: dict[str, Any]) -> None:
    """Add the two routes to ``app``, with the upload routes' guards and documentation."""

    @app.post("/v1/stream", response_model=StreamOut, **upload_route)
    async def stream(
        request: Request,
        session: Annotated[
            str,
            Query(
                pattern=r"^[A-Za-z0-9_-]{8,64}$",
                description="the camera session's id, chosen by the client (8-64 letters, "
                "digits, - or _); frames of one session share their face tracks",
            ),
        ],
        over: PersonOverQuery = None,
        buffer: PersonBufferQuery = None,
    ) -> dict[str, Any]:
        """One camera frame of a session: its faces, each with its person's track and
        steady age (pooled over the session's frames). Nothing of the frame is kept."""
        data = await read_image_bytes(request, max_upload_bytes)
        estimator: AgeEstimator = request.app.state.estimator
        policy = None if over is None else estimator.gate_policy(over, buffer)
        current = request.app.state.sessions.get(session)

        def run() -> dict[str, Any]:
            image = load_image(data, max_pixels=estimator.max_pixels, still_only=True)
            size = {"width": int(image.shape[1]), "height": int(image.shape[0])}
            # A frame that comes while the session still reads an earlier one is late:
            # dropped at once, so a client sending faster than frames are read never
            # waits behind a queue of them.
            if not current.lock.acquire(blocking=False):
                return {**size, "frame": None, "faces": [], "late": True, "dropped": current.late()}
            try:
                frame = Frame(current.frames, time.monotonic() - current.started, image)
                current.frames += 1
                faces = current.tracker.update(frame)
                decisions = [
                    None if policy is None else current.tracker.decision(f, policy) for f in faces
                ]
            finally:
                current.lock.release()
            return {
                **size,
                "frame": frame.index,
                "faces": [
                    {**f.to_dict(), "decision": d} for f, d in zip(faces, decisions, strict=True)
                ],
                "dropped": current.dropped,
            }

        return await anyio.to_thread.run_sync(run, limiter=request.app.state.slots)

    @app.post("/v1/video", response_model=VideoOut, **upload_route)
    async def video(
        request: Request,
        over: PersonOverQuery = None,
        buffer: PersonBufferQuery = None,
        every: Annotated[int, Query(ge=1, le=25, description="estimate every Nth frame")] = 1,
        reads_per_second: Annotated[
            float,
            Query(
                ge=0.1,
                le=60,
                description="reads of each person's face a second once their track has "
                "settled, as agelens video --reads-per-second",
            ),
        ] = DEFAULT_READS_PER_SECOND,
    ) -> dict[str, Any]:
        """A short clip (at most 25 MB, 60 s, 1920x1080): each person in it, tracked, with
        one steady age, as ``agelens video --json`` gives them. Nothing of it is kept."""
        data = await read_image_bytes(request, MAX_VIDEO_BYTES, media=b"video/")
        estimator: AgeEstimator = request.app.state.estimator
        policy = None if over is None else estimator.gate_policy(over, buffer)

        def run() -> dict[str, Any]:
            budget = ReadBudget(reads_per_second)
            tracker = AgeTracker(estimator, every=every, policy=policy, budget=budget)
            frames = 0
            for frame in read_frames(io.BytesIO(data), max_pixels=MAX_VIDEO_PIXELS):
                if frame.time > MAX_VIDEO_SECONDS:
                    raise UploadError(413, f"the clip is longer than {MAX_VIDEO_SECONDS:g} s")
                tracker.update(frame)
                frames += 1
            return {"frames": frames, "people": [p.to_dict() for p in tracker.finish()]}

        try:
            return await anyio.to_thread.run_sync(run, limiter=request.app.state.slots)
        except VideoError as error:
            status = {"too_large": 413, "empty": 422}.get(error.kind, 415)
            raise UploadError(status, str(error).removeprefix("<stream>: ")) from error
