"""The server's JSON response: redacted like every file and event (contract.md §10).

A run's context or checkpoint can hold a value that is a secret (a ``--set`` equal to an API
key, a tool's output); whatever the handler builds, the bytes sent go through the process's
redactor. Without secrets this is one attribute test per response.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse as _StarletteJSONResponse

from ..core import redaction

__all__ = ["JSONResponse"]


class JSONResponse(_StarletteJSONResponse):
    """Starlette's ``JSONResponse`` whose body never carries a secret value."""

    def render(self, content: Any) -> bytes:
        return redaction.current().json_bytes(super().render(content))
