"""The image bytes of a request, read in memory under a size limit; nothing touches the disk.

Starlette's own form parser spools uploads over 1 MB to a temporary file, so
multipart bodies are parsed here instead, with ``python-multipart``'s streaming
parser writing into memory. Three ways in: a multipart form field ``file``, JSON
``{"image_base64": ...}``, or the raw image as the body.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging

import anyio
from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

log = logging.getLogger("agelens.server")
# The parser logs a warning for each malformed body, so a client could fill the log; the
# client's 422 already says what was wrong.
logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)

#: Room for multipart boundaries and part headers, or base64's 4/3 growth plus JSON.
_FORM_SLACK = 64 * 1024
#: A form with an image needs one part and a few headers; more is refused, not parsed.
MAX_PARTS = 16
MAX_PART_HEADER_BYTES = 16 * 1024
#: An image's JSON body is one object holding a base64 string (which has no braces).
MAX_JSON_CONTAINERS = 64
#: RFC 2046 allows boundaries of 1-70 characters; the parser itself takes up to 256.
MAX_BOUNDARY = 70
#: Seconds a client may take to send its body: one that declares more bytes than it
#: sends would otherwise hold a connection for ever.
BODY_TIMEOUT_S = 30.0


class UploadError(Exception):
    """A request the server refuses, with its HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, *, body_unread: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        #: The answer comes before the body was read: the connection cannot carry another
        #: request, so the answer says it closes.
        self.body_unread = body_unread


async def read_image_bytes(
    request: Request, limit: int, timeout: float = BODY_TIMEOUT_S, *, media: bytes = b"image/"
) -> bytes:
    """The uploaded file's bytes; raises :class:`UploadError` (400, 408, 413, 415 or 422).
    A raw body may have any content type under ``media`` (``video/`` for clips)."""
    try:
        with anyio.fail_after(timeout):
            return await _read_image_bytes(request, limit, media)
    except TimeoutError as error:
        raise UploadError(
            408, f"the body did not arrive within {timeout:g} s", body_unread=True
        ) from error
    except ClientDisconnect as error:
        # Routine on phones and flaky networks: one line, not a traceback.
        log.info("the client closed the connection before its upload arrived")
        raise UploadError(400, "the connection closed before the upload arrived") from error


async def _read_image_bytes(request: Request, limit: int, media: bytes) -> bytes:
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    if media_type == b"multipart/form-data":
        if b"boundary" not in options:
            raise UploadError(422, "multipart body without a boundary", body_unread=True)
        if not 1 <= len(options[b"boundary"]) <= MAX_BOUNDARY:
            raise UploadError(
                422,
                f"the multipart boundary must be 1-{MAX_BOUNDARY} characters (RFC 2046)",
                body_unread=True,
            )
        body = await _read_body(request, limit + _FORM_SLACK, limit)
        # A body of many tiny parts takes seconds to parse: off the event loop.
        data = await anyio.to_thread.run_sync(_form_file, body, options[b"boundary"])
    elif media_type == b"application/json":
        body = await _read_body(request, limit * 4 // 3 + _FORM_SLACK, limit)
        # Refused unparsed when it has the shape of millions of small values, and parsed
        # off the event loop otherwise: 13 MB of JSON takes a second or more.
        if body.count(b"{") + body.count(b"[") > MAX_JSON_CONTAINERS:
            raise UploadError(
                422,
                f"JSON bodies hold one object with 'image_base64' (over "
                f"{MAX_JSON_CONTAINERS} objects or lists here)",
            )
        data = await anyio.to_thread.run_sync(_json_image, body)
    elif media_type.startswith(media) or media_type in (b"application/octet-stream", b""):
        data = await _read_body(request, limit, limit)
        if not data:
            raise UploadError(
                422,
                "the request has no body: send the photo as a multipart field 'file', "
                "as JSON {'image_base64': ...}, or as the raw bytes",
            )
    else:
        raise UploadError(
            415,
            f"unsupported content type {media_type.decode(errors='replace')!r}: send "
            "multipart/form-data with a 'file' field, JSON with 'image_base64', or the image",
            body_unread=True,
        )
    if len(data) > limit:
        raise UploadError(413, _too_large(limit))
    return data


async def _read_body(request: Request, cap: int, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise UploadError(413, _too_large(limit), body_unread=True)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise UploadError(413, _too_large(limit), body_unread=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> str:
    return f"the upload is larger than the limit of {limit / 2**20:.1f} MB"


def _form_file(body: bytes, boundary: bytes) -> bytes:
    """The bytes of the form field named ``file``."""
    parts: list[tuple[str, bytearray]] = []
    header: dict[str, bytearray] = {"field": bytearray(), "value": bytearray()}

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise UploadError(413, f"the form has more than {MAX_PARTS} parts")
        parts.append(("", bytearray()))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]
        _check_header(header)

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]
        _check_header(header)

    def on_header_end() -> None:
        if header["field"].lower() == b"content-disposition":
            _, params = parse_options_header(bytes(header["value"]))
            parts[-1] = (params.get(b"name", b"").decode(errors="replace"), parts[-1][1])
        header["field"], header["value"] = bytearray(), bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    try:
        # Inside the try: the parser refuses some boundaries (over 256 characters, say)
        # when it is built, not when it parses.
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_part_data": on_part_data,
            },
        )
        parser.write(body)
        parser.finalize()
    except UploadError:
        raise
    except Exception as error:  # python-multipart raises several unrelated types
        raise UploadError(422, f"malformed multipart body ({str(error)[:200]})") from error
    for name, data in parts:
        if name == "file":
            return bytes(data)
    raise UploadError(422, "the form has no 'file' field")


def _check_header(header: dict[str, bytearray]) -> None:
    if len(header["field"]) + len(header["value"]) > MAX_PART_HEADER_BYTES:
        raise UploadError(413, f"a form header is over {MAX_PART_HEADER_BYTES // 1024} kB")


def _json_image(body: bytes) -> bytes:
    try:
        payload = json.loads(body)
    except RecursionError as error:
        raise UploadError(422, "the JSON body is nested too deeply") from error
    except ValueError as error:  # bad JSON, bad UTF-8, an integer of thousands of digits
        raise UploadError(422, f"the body is not valid JSON ({str(error)[:200]})") from error
    encoded = payload.get("image_base64") if isinstance(payload, dict) else None
    if not isinstance(encoded, str):
        raise UploadError(422, "JSON bodies need a string field 'image_base64'")
    if encoded.startswith("data:"):  # a data URL, as a browser's FileReader gives
        encoded = encoded.partition(",")[2]
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise UploadError(422, f"'image_base64' is not valid base64 ({error})") from error
