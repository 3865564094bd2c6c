"""The server's JSON: an undefined figure is ``null``, as in the CLI's ``--json``."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from agelens import strict_json


class StrictJSONResponse(JSONResponse):
    """Starlette's JSON response refuses NaN with an exception (a 500); this writes null."""

    def render(self, content: Any) -> bytes:
        return strict_json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
