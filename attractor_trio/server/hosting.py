"""``serve``: the HTTP server and the runs it hosts, as one trio task.

Shutdown order matters. When the trigger fires, every run is cancelled first and the server
waits (bounded) for each ``final.json``; only then does Hypercorn stop listening. That way
SSE clients receive each run's terminal event and their streams end on their own, instead of
being cut off while runs are still finalizing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final, cast
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.typing import Framework

from .app import MAX_BODY_BYTES, STATIC_DIR, create_app
from .manager import open_run_manager

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "serve"]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8400
#: How long open connections (idle keep-alives, stragglers) get after runs have finalized.
CONNECTION_GRACE_S: Final = 3.0


def _bind(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"{host}:{port}"


def _config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [_bind(host, port)]
    config.graceful_timeout = CONNECTION_GRACE_S
    config.loglevel = "WARNING"  # the caller prints the URL; errors still reach stderr
    config.accesslog = None
    return config


def _port_of(binds: list[str]) -> int:
    port = urlsplit(binds[0]).port
    assert port is not None
    return port


async def serve(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    runs_dir: str | os.PathLike[str] = "runs",
    token: str | None = None,
    shutdown_trigger: trio.Event | None = None,
    shutdown_grace: float = 30.0,
    static_dir: Path | None = STATIC_DIR,
    allowed_hosts: Sequence[str] = (),
    max_body: int = MAX_BODY_BYTES,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until ``shutdown_trigger`` is set (or the caller cancels).

    Reports the bound port through ``task_status.started(port)`` (``port=0`` picks a free
    one). On the trigger, cancels every run, waits up to ``shutdown_grace`` seconds for their
    ``final.json``, then stops accepting and returns. Cancelling the caller's scope instead
    cancels everything at once; the engine still finalizes each run. Requests must name this
    server in ``Host`` (loopback names, ``host`` itself, or ``allowed_hosts``) and carry no
    foreign ``Origin`` (see :mod:`.guard`); bodies over ``max_body`` bytes get 413.
    """
    async with open_run_manager(Path(runs_dir), shutdown_grace=shutdown_grace) as manager:
        # Starlette's ASGI types are looser than Hypercorn's; the app is a valid ASGI 3 app.
        app = cast(
            Framework,
            create_app(
                manager,
                token=token,
                static_dir=static_dir,
                allowed_hosts=allowed_hosts,
                bind_host=host,
                max_body=max_body,
            ),
        )
        stop_listening = trio.Event()
        async with trio.open_nursery() as nursery:
            start = functools.partial(
                hypercorn_serve, app, _config(host, port), shutdown_trigger=stop_listening.wait
            )
            binds: list[str] = await nursery.start(start)
            task_status.started(_port_of(binds))
            if shutdown_trigger is None:
                await trio.sleep_forever()
            else:
                await shutdown_trigger.wait()
            await manager.shutdown(shutdown_grace)
            stop_listening.set()
