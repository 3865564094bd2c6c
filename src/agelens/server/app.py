"""The AgeLens web service: a REST API under ``/v1`` and an upload page at ``/``.

The model loads once, at start-up. Each request's image is read into memory,
decoded, estimated and answered in a worker thread, so the event loop keeps
serving; nothing of it is written to disk or to the log.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from agelens import __version__
from agelens.annotate import annotate
from agelens.decisions.gate import MAX_BUFFER, MAX_OVER, MIN_OVER
from agelens.decisions.groups import IMFDB, GroupScheme, resolve_scheme
from agelens.decisions.verify import MAX_CLAIM, MIN_CLAIM
from agelens.estimator import AgeEstimator
from agelens.models.bundles import describe_builtin_bundles
from agelens.pipeline.estimates import Face
from agelens.pipeline.images import RGBImage, load_image
from agelens.server.access import api_key_guard
from agelens.server.error_handlers import add_error_handlers
from agelens.server.json_response import StrictJSONResponse
from agelens.server.memory import is_large, return_free_memory
from agelens.server.parameters import (
    ERRORS,
    UPLOAD_BODY,
    AnnotateQuery,
    GenderQuery,
    GroupsQuery,
)
from agelens.server.schemas import EstimateOut, GateOut, VerifyOut
from agelens.server.settings import ServerSettings
from agelens.server.uploads import UploadError, read_image_bytes
from agelens.server.video.routes import add_video_routes
from agelens.server.video.sessions import Sessions
from agelens.server.wire.access_log import AccessLog
from agelens.server.wire.headers import SecurityHeaders

log = logging.getLogger("agelens.server")

WEB = files("agelens.server") / "web"


def create_app(
    settings: ServerSettings | None = None, estimator: AgeEstimator | None = None
) -> FastAPI:
    """The app; ``settings`` default to the environment, ``estimator`` to the settings' model."""
    settings = settings or ServerSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.estimator = estimator or await anyio.to_thread.run_sync(
            lambda: AgeEstimator(
                settings.model,
                precision=settings.precision,
                max_pixels=settings.max_pixels,
                threads=settings.threads,
                gender_model=settings.gender_model,
            )
        )
        # Loaded now: a gender bundle that is not one stops the server at start, and the
        # first request with gender=true waits for nothing.
        await anyio.to_thread.run_sync(lambda: app.state.estimator.gender)
        app.state.slots = anyio.CapacityLimiter(settings.inference_slots)
        # Large photos one at a time, queued here before they take a slot.
        app.state.large_lane = anyio.Lock()
        app.state.sessions = Sessions(app.state.estimator)
        yield

    app = FastAPI(
        docs_url=None,
        redoc_url=None,
        title="AgeLens",
        version=__version__,
        description="Ages of the faces in a photo, with intervals, age groups and an age gate. "
        "Photos are processed in memory and never stored.",
        lifespan=lifespan,
        default_response_class=StrictJSONResponse,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key", "Authorization"],
        )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(AccessLog)
    add_error_handlers(app)
    require_key = api_key_guard(settings.api_key)
    upload_route: dict[str, Any] = {
        "tags": ["estimate"],
        "response_model_exclude_none": True,
        "dependencies": [Depends(require_key)],
        "openapi_extra": UPLOAD_BODY,
        "responses": ERRORS,
    }

    @app.api_route("/healthz", methods=["GET", "HEAD"], tags=["service"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"], responses={503: {"description": "model not loaded"}})
    async def readyz(request: Request) -> StrictJSONResponse:
        """The model is loaded and requests will be answered."""
        ready = getattr(request.app.state, "estimator", None) is not None
        return StrictJSONResponse(
            {"status": "ready" if ready else "starting"}, status_code=200 if ready else 503
        )

    @app.get("/v1/models", tags=["models"], dependencies=[Depends(require_key)])
    async def models(request: Request) -> dict[str, Any]:
        """The models that come with AgeLens, with licences, and the one this server runs."""
        return {
            "serving": request.app.state.estimator.bundle.name,
            "models": describe_builtin_bundles(),
        }

    @app.post("/v1/estimate", response_model=EstimateOut, **upload_route)
    async def estimate(
        request: Request,
        groups: GroupsQuery = IMFDB.name,
        tta: Annotated[bool | None, Query(description="flip test-time augmentation")] = None,
        distribution: Annotated[bool, Query(description="add each face's distribution")] = False,
        annotate: AnnotateQuery = False,
        gender: GenderQuery = False,
    ) -> dict[str, Any]:
        """Every face in the photo, with its age, interval and age group."""
        return await _estimate_upload(
            request,
            settings.max_upload_bytes,
            groups,
            tta,
            distribution,
            lambda _, image, faces: _response(image, faces, distribution, annotate),
            gender=gender,
        )

    @app.post("/v1/gate", response_model=GateOut, **upload_route)
    async def gate(
        request: Request,
        over: Annotated[
            float, Query(ge=MIN_OVER, le=MAX_OVER, description="the age threshold")
        ] = 18,
        buffer: Annotated[
            float | None,
            Query(
                ge=0,
                le=MAX_BUFFER,
                description="policy buffer [the model's fitted buffer, else Challenge 25's 7]",
            ),
        ] = None,
        groups: GroupsQuery = IMFDB.name,
        annotate: AnnotateQuery = False,
        gender: GenderQuery = False,
    ) -> dict[str, Any]:
        """Pass, or refer to an ID check: a face passes when its age reaches over + buffer.

        Without ``buffer``, the model's fitted policy: its rule may compare the lower end
        of the 90% interval instead of the estimate (``rule`` in the answer says which).
        """

        def respond(estimator: AgeEstimator, image: RGBImage, faces: list[Face]) -> dict[str, Any]:
            gated = estimator.decide(faces, estimator.gate_policy(over, buffer))
            return {**_response(image, faces, False, annotate), **gated.to_dict(over)}

        return await _estimate_upload(
            request, settings.max_upload_bytes, groups, None, False, respond, gender=gender
        )

    @app.post("/v1/verify", response_model=VerifyOut, **upload_route)
    async def verify(
        request: Request,
        claimed: Annotated[
            float,
            Query(ge=MIN_CLAIM, le=MAX_CLAIM, description="the age the person claims, in years"),
        ],
        groups: GroupsQuery = IMFDB.name,
        annotate: AnnotateQuery = False,
    ) -> dict[str, Any]:
        """Is the claimed age consistent with the face? consistent (inside its calibrated
        90% interval), unlikely (outside its 98% interval), or refer (between the two, a
        face that cannot be judged, several faces)."""

        def respond(estimator: AgeEstimator, image: RGBImage, faces: list[Face]) -> dict[str, Any]:
            return {
                **_response(image, faces, False, annotate),
                **estimator.check_claim(faces, claimed).to_dict(),
            }

        return await _estimate_upload(
            request, settings.max_upload_bytes, groups, None, True, respond
        )

    add_video_routes(app, settings.max_upload_bytes, upload_route)

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((WEB / "index.html").read_text(encoding="utf-8"))

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        """Browsers ask for it whatever the page says; the same icon the page links."""
        return FileResponse(str(WEB / "favicon.svg"), media_type="image/svg+xml")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """Swagger UI from the swagger-ui-bundle package: the docs work offline too."""
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="AgeLens API",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon-32x32.png",
        )

    app.mount("/static/docs", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    app.mount("/static", StaticFiles(directory=str(WEB)), name="static")
    return app


def _scheme(groups: str) -> GroupScheme:
    try:
        return resolve_scheme(groups)
    except ValueError as error:
        raise UploadError(422, str(error)) from error


async def _estimate_upload(
    request: Request,
    limit: int,
    groups: str,
    tta: bool | None,
    distribution: bool,
    respond: Callable[[AgeEstimator, RGBImage, list[Face]], dict[str, Any]],
    *,
    gender: bool = False,
) -> dict[str, Any]:
    """Read the upload, then decode, estimate and ``respond`` in a worker thread.

    At most ``inference_slots`` requests are in the CPU-bound part at once, and at most
    one of them a large photo: large photos wait for each other before taking a slot.
    """
    scheme = _scheme(groups)
    data = await read_image_bytes(request, limit)
    estimator: AgeEstimator = request.app.state.estimator
    large = is_large(data)

    def run() -> dict[str, Any]:
        image = load_image(data, max_pixels=estimator.max_pixels, still_only=True)
        faces = estimator.estimate(
            image, groups=scheme, tta=tta, distribution=distribution, gender=gender
        )
        answer = respond(estimator, image, faces)
        del image  # freed before the memory is handed back
        if large:
            return_free_memory()
        return answer

    if not large:
        return await anyio.to_thread.run_sync(run, limiter=request.app.state.slots)
    async with request.app.state.large_lane:
        return await anyio.to_thread.run_sync(run, limiter=request.app.state.slots)


def _response(
    image: RGBImage, faces: list[Face], distribution: bool, with_annotation: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "faces": [face.to_dict(distribution=distribution) for face in faces],
    }
    if with_annotation:
        buffer = io.BytesIO()
        annotate(image, faces).save(buffer, format="JPEG", quality=90)
        result["annotated_jpeg_base64"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    return result
