"""Server settings, read from the environment so every uvicorn worker process sees the same."""

from __future__ import annotations

import os
from dataclasses import dataclass

from agelens.models.bundles import DEFAULT_BUNDLE, DEFAULT_GENDER_BUNDLE

#: Uploads above this many bytes are refused with 413 before they are read in full.
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: 40 megapixels: any phone photo, while a small PNG claiming a huge canvas is refused.
DEFAULT_MAX_PIXELS = 40_000_000
#: Requests estimated at once, one per core (each runs its networks on one thread);
#: the rest wait their turn.
DEFAULT_INFERENCE_SLOTS = os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class ServerSettings:
    model: str = DEFAULT_BUNDLE
    precision: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    inference_slots: int = DEFAULT_INFERENCE_SLOTS
    threads: int | None = None
    gender_model: str = DEFAULT_GENDER_BUNDLE

    @classmethod
    def from_env(cls) -> ServerSettings:
        """``AGELENS_MODEL``, ``AGELENS_PRECISION``, ``AGELENS_MAX_UPLOAD_MB``,
        ``AGELENS_MAX_PIXELS``, ``AGELENS_API_KEY``, ``AGELENS_CORS_ORIGINS``
        (comma-separated), ``AGELENS_SLOTS``, ``AGELENS_THREADS`` (onnxruntime threads
        per network), ``AGELENS_GENDER_MODEL`` (the bundle of ``gender=true``)."""
        env = os.environ
        origins = env.get("AGELENS_CORS_ORIGINS", "")
        return cls(
            model=env.get("AGELENS_MODEL", DEFAULT_BUNDLE),
            precision=env.get("AGELENS_PRECISION") or None,
            max_upload_bytes=round(
                float(env.get("AGELENS_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_BYTES / 2**20)) * 2**20
            ),
            max_pixels=int(env.get("AGELENS_MAX_PIXELS", DEFAULT_MAX_PIXELS)),
            api_key=env.get("AGELENS_API_KEY") or None,
            cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            inference_slots=int(env.get("AGELENS_SLOTS", DEFAULT_INFERENCE_SLOTS)),
            threads=int(env["AGELENS_THREADS"]) if env.get("AGELENS_THREADS") else None,
            gender_model=env.get("AGELENS_GENDER_MODEL", DEFAULT_GENDER_BUNDLE),
        )
