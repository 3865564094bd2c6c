"""Every error as JSON ``{"error": ...}`` with a 4xx status; nothing unexpected leaks out."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from agelens.errors import (
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
)
from agelens.server.json_response import StrictJSONResponse
from agelens.server.uploads import UploadError

log = logging.getLogger("agelens.server")

#: Status per image error: too large 413, not an image we take 415, cannot be decoded 422.
IMAGE_ERROR_STATUS: dict[type[ImageError], int] = {
    ImageTooLargeError: 413,
    NotAnImageError: 415,
    UnsupportedImageError: 415,
    EmptyImageError: 422,
    TruncatedImageError: 422,
}


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UploadError)
    async def upload_error(_: Request, error: UploadError) -> StrictJSONResponse:
        headers = {"connection": "close"} if error.body_unread else None
        return StrictJSONResponse(
            {"error": error.message}, status_code=error.status, headers=headers
        )

    @app.exception_handler(ImageError)
    async def image_error(_: Request, error: ImageError) -> StrictJSONResponse:
        status = next(
            (code for kind, code in IMAGE_ERROR_STATUS.items() if isinstance(error, kind)), 422
        )
        # The message names the problem, never the content: "<bytes>: ...".
        return StrictJSONResponse(
            {"error": str(error).removeprefix("<bytes>: ")}, status_code=status
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(
        request: Request, error: RequestValidationError
    ) -> StrictJSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in issue['loc'])}: {issue['msg']}" for issue in error.errors()
        )
        # Query parameters are checked before an upload's body is read: the connection
        # cannot carry another request after it, and the answer says so.
        headers = {"connection": "close"} if request.method == "POST" else None
        return StrictJSONResponse({"error": problems}, status_code=422, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> StrictJSONResponse:
        return StrictJSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> StrictJSONResponse:
        log.error("unexpected %s while serving a request", type(error).__name__)
        return StrictJSONResponse({"error": "internal error"}, status_code=500)
