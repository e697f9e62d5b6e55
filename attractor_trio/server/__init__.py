"""Server mode (spec §9.5): the HTTP API with SSE events and human gates over HTTP.

Needs the ``server`` extra (Hypercorn, Starlette, sse-starlette). ``serve`` runs the server
in the current trio task; ``create_app`` gives the ASGI app for embedding or other servers.
"""

from __future__ import annotations

from .app import create_app as create_app
from .hosting import serve as serve
from .http_interviewer import HttpInterviewer as HttpInterviewer
from .manager import RunManager as RunManager
from .manager import SubmissionOptions as SubmissionOptions
from .manager import open_run_manager as open_run_manager

#: Deprecated alias: the submission options were called ``RunOptions`` before the engine's
#: :class:`attractor_trio.RunOptions` existed (``SubmissionOptions.run_options`` builds one).
RunOptions = SubmissionOptions

__all__ = [
    "HttpInterviewer",
    "RunManager",
    "RunOptions",
    "SubmissionOptions",
    "create_app",
    "open_run_manager",
    "serve",
]
