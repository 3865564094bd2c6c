"""Frames of a video file, a stream URL or standard input, decoded with PyAV (FFmpeg).

Frames come one at a time, never held, so a long or endless stream takes bounded
memory. A phone video's rotation is applied, so faces are upright. What cannot be read
raises :class:`VideoError` with a message that says why: not a video, no video stream
(audio only), no frames, frames too large.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np

from agelens.errors import AgeLensError
from agelens.pipeline.images import RGBImage

#: The largest frame decoded, in pixels: 4K (3840x2160) and a little more; an 8K frame
#: (33 MP) would cost 100 MB a frame for faces a tenth of the size would show as well.
MAX_FRAME_PIXELS = 9_000_000
#: Seconds to wait for a stream's server, each time it is read from.
STREAM_TIMEOUT_S = 30.0


class VideoError(AgeLensError):
    """A video that cannot be read, with the reason; ``kind`` says which sort of
    problem, as the server answers it: ``unreadable`` (415), ``empty`` (422) or
    ``too_large`` (413)."""

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: its number from 0, its time in seconds, its upright pixels, and
    the stream's average frame rate."""

    index: int
    time: float
    image: RGBImage
    rate: float = 25.0


def read_frames(
    source: str | BinaryIO,
    *,
    max_pixels: int = MAX_FRAME_PIXELS,
    timeout: float = STREAM_TIMEOUT_S,
) -> Iterator[Frame]:
    """The frames of ``source`` (a path, an http(s)/rtsp URL, or a binary stream such as
    standard input), upright, in order. A stream that sends nothing for ``timeout``
    seconds is given up. Raises :class:`VideoError`."""
    try:
        import av
    except ImportError as error:
        raise VideoError("video needs its extra: pip install 'agelens[video]'") from error
    name = source if isinstance(source, str) else "<stream>"
    if isinstance(source, str) and "://" not in source and not Path(source).is_file():
        raise VideoError(f"{source}: no such file", "empty")
    try:
        container = av.open(source, timeout=timeout)
    except av.FFmpegError as error:
        if isinstance(error, av.ExitError):  # PyAV cut the wait short: the timeout passed
            raise VideoError(f"{name}: no answer for {timeout:g} s", "empty") from error
        raise VideoError(f"{name}: not a video AgeLens can read ({_reason(error)})") from error
    with container:
        if not container.streams.video:
            raise VideoError(f"{name}: no video stream (audio only?)", "empty")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        try:
            for frame in container.decode(stream):
                if frame.width * frame.height > max_pixels:
                    raise VideoError(
                        f"{name}: frames of {frame.width}x{frame.height} are over the limit "
                        f"of {max_pixels / 1e6:g} megapixels; scale the video down",
                        "too_large",
                    )
                image = _upright(frame.to_ndarray(format="rgb24"), _rotation(frame))
                yield Frame(count, _seconds(frame, stream, count), image, _rate(stream))
                count += 1
        except av.FFmpegError as error:
            if isinstance(error, av.ExitError):
                raise VideoError(
                    f"{name}: the stream stalled: nothing for {timeout:g} s after {count} frames",
                    "empty",
                ) from error
            if count == 0:
                raise VideoError(f"{name}: cannot decode ({_reason(error)})") from error
            raise VideoError(
                f"{name}: cut or corrupt after frame {count - 1} ({_reason(error)})", "empty"
            ) from error
        if count == 0:
            raise VideoError(f"{name}: the video has no frames", "empty")


class LatestFrames:
    """A live source's newest frame, each time the caller is ready for one.

    A camera or a stream sends frames at its own pace. Read in order, frames that come
    faster than they are processed queue up, and what is shown falls further behind every
    second. Here a thread decodes the source and keeps only its newest frame; a frame
    that a newer one replaced before it was taken is dropped and counted in ``dropped``,
    so a frame waits at most while the one before it is processed. Files are not live:
    read them with :func:`read_frames` and every frame is kept.
    """

    def __init__(self, frames: Iterator[Frame]) -> None:
        self.frames = frames
        #: Frames the source sent, and those dropped unprocessed.
        self.received = 0
        self.dropped = 0
        self._slot: Frame | None = None
        self._done = False
        self._stop = False
        self._error: BaseException | None = None
        self._ready = threading.Condition()

    def __iter__(self) -> Iterator[Frame]:
        thread = threading.Thread(target=self._pull, name="agelens-live-frames", daemon=True)
        thread.start()
        try:
            while True:
                with self._ready:
                    self._ready.wait_for(lambda: self._slot is not None or self._done)
                    frame, self._slot = self._slot, None
                if frame is None:
                    break
                yield frame
            if self._error is not None:
                raise self._error
        finally:
            with self._ready:
                self._stop = True

    def _pull(self) -> None:
        try:
            for frame in self.frames:
                with self._ready:
                    if self._stop:
                        return
                    self.received += 1
                    self.dropped += self._slot is not None
                    self._slot = frame
                    self._ready.notify()
        except BaseException as error:  # raised again in the caller's thread
            self._error = error
        finally:
            with self._ready:
                self._done = True
                self._ready.notify()


def _rotation(frame: object) -> int:
    """Degrees the frame must be turned counter-clockwise to be upright (phone videos)."""
    return round(float(getattr(frame, "rotation", 0) or 0)) % 360


def _upright(image: np.ndarray, degrees: int) -> RGBImage:
    turns = {0: 0, 90: 1, 180: 2, 270: 3}.get(degrees, 0)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _seconds(frame: object, stream: object, index: int) -> float:
    """The frame's time: its timestamp where it has one (variable frame rates included),
    else its number over the stream's rate."""
    time = getattr(frame, "time", None)
    if time is not None:
        return float(time)
    rate = getattr(stream, "average_rate", None) or Fraction(25)
    return index / float(rate)


def _rate(stream: object) -> float:
    rate = getattr(stream, "average_rate", None)
    return float(rate) if rate else 25.0


def _reason(error: Exception) -> str:
    """FFmpeg's words for what went wrong, without the file name it repeats."""
    return str(getattr(error, "strerror", None) or type(error).__name__)[:120]
