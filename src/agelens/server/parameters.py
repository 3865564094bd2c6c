"""What the routes share in their OpenAPI page: the upload body, the query parameters
several routes take, and the error answers each can give."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"image_base64": {"type": "string"}},
                    "required": ["image_base64"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
GroupsQuery = Annotated[
    str, Query(description="imfdb, decades, utk5, or lower edges such as 13,31,51")
]
AnnotateQuery = Annotated[bool, Query(description="add the annotated photo (JPEG)")]
GenderQuery = Annotated[
    bool, Query(description="add each face's apparent gender (two labels; never race)")
]
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"example": {"error": "..."}}}}
    for status, text in (
        (401, "missing or wrong API key"),
        (413, "upload or pixel count over the limit"),
        (415, "not an image of a supported kind (sniffed from the bytes)"),
        (422, "empty, truncated or malformed input, or a bad parameter"),
    )
}
