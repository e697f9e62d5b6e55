"""The HTTP API (spec §9.5, contract.md §8/§9) as a Starlette app over a :class:`RunManager`.

Every error is JSON ``{"error": message}`` (plus ``diagnostics`` for pipelines that do not
parse or validate), so clients never scrape HTML. Handlers stay thin: decoding and checks
live in :mod:`.submission` and :mod:`.http_interviewer`, runs in :mod:`.manager`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any, Final, cast

import trio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.staticfiles import StaticFiles

from ..core import redaction
from ..core.vocabulary import CancelCause
from ..dot.graph import Severity
from ..dot.inputs import DEFAULT_MAX_INPUT_SIZE, format_size
from ..errors import AttractorError, ConfigError, ValidationFailed
from ..observe.typed_events import Event
from ..persist.checkpoint import CHECKPOINT_FILE_NAME, load_checkpoint
from .auth import BearerAuth
from .guard import RequestGuard
from .http_interviewer import InvalidAnswer, UnknownQuestion, question_to_json
from .manager import (
    HTTP_CANCEL_REASON,
    OptionsError,
    RunManager,
    ServedRun,
    ServerClosing,
    parse_options,
)
from .responses import JSONResponse
from .submission import BadSubmission, check_source, decode_json, decode_submission

__all__ = ["MAX_BODY_BYTES", "STATIC_DIR", "create_app"]

STATIC_DIR: Final = Path(__file__).with_name("static")
#: Request bodies get the pipeline files' limit (contract.md §10), settable with --max-input-size.
MAX_BODY_BYTES: Final = DEFAULT_MAX_INPUT_SIZE
#: Rendering a pipeline with Graphviz must not hold a request forever.
RENDER_TIMEOUT_S: Final = 10.0
SSE_PING_S: Final = 15.0
DOT_MEDIA_TYPE: Final = "text/vnd.graphviz"


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _not_found(run_id: str) -> HTTPException:
    return HTTPException(
        404, f"no pipeline with id {run_id!r} on this server; GET /pipelines lists them"
    )


class _Api:
    """The route handlers, bound to one manager."""

    def __init__(self, manager: RunManager, max_body: int) -> None:
        self.manager = manager
        self.max_body = max_body

    def find(self, request: Request) -> ServedRun:
        run_id = str(request.path_params["id"])
        served = self.manager.get(run_id)
        if served is None:
            raise _not_found(run_id)
        return served

    def root_of(self, request: Request) -> tuple[str, Path]:
        """Id and logs root of a run of this process or, from disk, of an earlier one."""
        run_id = str(request.path_params["id"])
        served = self.manager.get(run_id)
        root = served.logs_root if served is not None else self.manager.on_disk(run_id)
        if root is None:
            raise _not_found(run_id)
        return run_id, root

    # --- pipelines --------------------------------------------------------------------------
    async def pipelines(self, request: Request) -> Response:
        """One route for both methods, so a wrong method gets a complete ``Allow`` header."""
        if request.method == "POST":
            return await self.submit(request)
        return await self.list_runs(request)

    async def submit(self, request: Request) -> Response:
        body = await _read_body(request, self.max_body)
        try:
            submission = decode_submission(request.headers.get("content-type", ""), body)
            options = parse_options(submission.options)
        except (BadSubmission, OptionsError) as exc:
            return _error(getattr(exc, "status", 400), str(exc))
        graph, diagnostics = check_source(submission.dot)
        errors = [d for d in diagnostics if d.severity is Severity.ERROR]
        if graph is None or errors:
            return _error(
                400,
                f"the pipeline is invalid ({len(errors)} error(s)); nothing was started",
                diagnostics=[d.to_json() for d in diagnostics],
            )
        try:
            served = await self.manager.submit(graph, options)
        except ValidationFailed as exc:
            return _error(400, str(exc), diagnostics=[d.to_json() for d in exc.diagnostics])
        except ConfigError as exc:
            return _error(400, str(exc))
        except ServerClosing as exc:
            return _error(503, str(exc))
        return JSONResponse(
            {
                "id": served.id,
                "state": served.status()["state"],
                "warnings": [d.to_json() for d in diagnostics],
            },
            status_code=201,
            headers={"location": f"/pipelines/{served.id}"},
        )

    async def list_runs(self, request: Request) -> Response:
        """Every run under the runs root, from disk: runs of earlier server processes too."""
        return JSONResponse(await self.manager.listing())

    async def status(self, request: Request) -> Response:
        run_id = str(request.path_params["id"])
        if self.manager.get(run_id) is None:
            doc = await self.manager.status_on_disk(run_id)
            if doc is not None:
                return JSONResponse(doc)
        return JSONResponse(self.find(request).status())

    async def cancel(self, request: Request) -> Response:
        """202 when cancellation was requested; 200 (untouched) for a finished run."""
        served = self.find(request)
        if served.finished.is_set():
            return JSONResponse({"id": served.id, "state": served.status()["state"]})
        served.cancel(HTTP_CANCEL_REASON, CancelCause.HTTP)
        return JSONResponse({"id": served.id, "state": served.status()["state"]}, 202)

    # --- events (SSE) -----------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        served = self.find(request)
        raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        try:
            after = int(raw) if raw else 0
        except ValueError:
            return _error(400, f"Last-Event-ID must be an event seq number, got {raw!r}")
        controller = served.controller
        assert controller is not None  # set before submit() returned
        stream = cast(AsyncGenerator[Event, None], controller.events())
        return EventSourceResponse(_sse(stream, after), ping=SSE_PING_S, sep="\n")

    # --- graph ------------------------------------------------------------------------------
    async def graph(self, request: Request) -> Response:
        """SVG via Graphviz ``dot`` when installed (and ``?format`` is not ``dot``), else the
        DOT source as ``text/vnd.graphviz``; a failed render falls back to DOT too."""
        served = self.find(request)
        source = redaction.current().text(served.graph.source)
        if request.query_params.get("format", "svg") != "dot":
            svg, problem = await _render_svg(source)
            if svg is not None:
                return Response(svg, media_type="image/svg+xml")
            headers = {"x-attractor-render": problem}
        else:
            headers = {}
        return Response(source, media_type=DOT_MEDIA_TYPE, headers=headers)

    # --- human gates ------------------------------------------------------------------------
    async def questions(self, request: Request) -> Response:
        served = self.find(request)
        return JSONResponse([question_to_json(p) for p in served.interviewer.pending()])

    async def answer(self, request: Request) -> Response:
        served = self.find(request)
        qid = str(request.path_params["qid"])
        try:
            payload = decode_json(await _read_body(request, self.max_body) or b"null")
        except BadSubmission as exc:
            return _error(400, f'the answer must be JSON like {{"value": "KEY"}}: {exc}')
        try:
            answer = served.interviewer.answer(qid, payload)
        except UnknownQuestion:
            return _error(
                404,
                f"no pending question {qid!r} in pipeline {served.id!r} (answered, timed out, "
                "or never asked); GET the questions to see what is pending",
            )
        except InvalidAnswer as exc:
            return _error(400, str(exc))
        return JSONResponse({"id": qid, "answer": answer.describe()})

    # --- state files ------------------------------------------------------------------------
    async def checkpoint(self, request: Request) -> Response:
        run_id, root = self.root_of(request)
        if not (root / CHECKPOINT_FILE_NAME).exists():
            return _error(
                404, f"pipeline {run_id!r} has no checkpoint yet (no stage has completed)"
            )
        try:
            return JSONResponse(load_checkpoint(root).to_json())
        except AttractorError as exc:
            return _error(500, str(exc))

    async def context(self, request: Request) -> Response:
        """The context as of the last checkpoint (after every stage); ``{}`` before one."""
        _, root = self.root_of(request)
        if not (root / CHECKPOINT_FILE_NAME).exists():
            return JSONResponse({})
        try:
            return JSONResponse(dict(load_checkpoint(root).context))
        except AttractorError as exc:
            return _error(500, str(exc))


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to exceed ``limit`` (by its declared length,
    before reading anything, or while reading)."""
    too_large = HTTPException(
        413, f"the body is larger than {format_size(limit)}; the server's --max-input-size"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _sse(events: AsyncGenerator[Event, None], after: int) -> AsyncIterator[ServerSentEvent]:
    """Every event with ``seq > after`` (``Last-Event-ID`` resumes); ends after the terminal
    event. The subscription is closed however the stream ends (client gone, shutdown)."""
    async with aclosing(events):
        async for event in events:
            if event.seq > after:
                yield ServerSentEvent(
                    data=json.dumps(event.to_envelope(), ensure_ascii=False),
                    event=event.name,
                    id=str(event.seq),
                )


async def _render_svg(source: str) -> tuple[bytes | None, str]:
    """``(svg, "")``, or ``(None, why)`` when Graphviz is missing or fails."""
    dot = shutil.which("dot")
    if dot is None:
        return None, "graphviz-not-installed"
    with trio.move_on_after(RENDER_TIMEOUT_S):
        done = await trio.run_process(
            [dot, "-Tsvg"],
            stdin=source.encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        if done.returncode == 0 and done.stdout:
            return done.stdout, ""
        return None, "graphviz-failed"
    return None, "graphviz-timed-out"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = _error(exc.status_code, exc.detail, path=request.url.path)
    response.headers.update(exc.headers or {})
    return response


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug: JSON for the client (Starlette still logs the traceback to the server log)."""
    return _error(500, f"internal server error: {type(exc).__name__}: {exc}")


def _index(static_dir: Path | None) -> list[BaseRoute]:
    """The viewer at ``/`` when its files are present, else a JSON pointer to the API."""
    if static_dir is not None and (static_dir / "index.html").is_file():
        # A GET/HEAD route rather than a Mount: a mount at "/" would claim every path and
        # answer a wrong method on an API route with the static files' Allow header.
        files = StaticFiles(directory=static_dir, html=True)
        return [Route("/{path:path}", files, methods=["GET", "HEAD"], name="viewer")]

    async def about(request: Request) -> Response:
        return JSONResponse({"service": "attractor-trio", "api": "/pipelines"})

    return [Route("/", about)]


def create_app(
    manager: RunManager,
    *,
    token: str | None = None,
    static_dir: Path | None = STATIC_DIR,
    allowed_hosts: Sequence[str] = (),
    bind_host: str = "",
    max_body: int = MAX_BODY_BYTES,
) -> Starlette:
    """The ASGI app. ``token`` (non-empty) makes every route, static files included,
    require ``Authorization: Bearer <token>`` or ``?token=<token>``. Before that, the
    :class:`~.guard.RequestGuard` refuses foreign ``Host``/``Origin`` headers (loopback names,
    ``bind_host`` and ``allowed_hosts`` are this server's names) and untyped POST bodies."""
    api = _Api(manager, max_body)
    routes: list[BaseRoute] = [
        Route("/pipelines", api.pipelines, methods=["GET", "POST"]),
        Route("/pipelines/{id}", api.status, methods=["GET"]),
        Route("/pipelines/{id}/events", api.events, methods=["GET"]),
        Route("/pipelines/{id}/cancel", api.cancel, methods=["POST"]),
        Route("/pipelines/{id}/graph", api.graph, methods=["GET"]),
        Route("/pipelines/{id}/questions", api.questions, methods=["GET"]),
        Route("/pipelines/{id}/questions/{qid}/answer", api.answer, methods=["POST"]),
        Route("/pipelines/{id}/checkpoint", api.checkpoint, methods=["GET"]),
        Route("/pipelines/{id}/context", api.context, methods=["GET"]),
        *_index(static_dir),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestGuard, allowed_hosts=allowed_hosts, bind_host=bind_host),
            Middleware(BearerAuth, token=token),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
