"""``attractor-trio serve``: the HTTP API (spec §9.5) until SIGINT/SIGTERM.

The first signal shuts down gracefully — every run is cancelled and gets its ``final.json``,
then the server stops listening; a second signal stops at once (the engine still finalizes
each run, shielded and bounded). The URL goes to stdout as one line so scripts can read it
(with ``--port 0`` the port is only known then); everything else goes to stderr.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
import trio

from .values import AttributeValueError, parse_duration

__all__ = ["register", "serve_command"]

EXIT_USAGE = 2


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"


async def _watch_signals(
    shutdown: trio.Event,
    everything: trio.CancelScope,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if shutdown.is_set():
                click.echo(f"attractor-trio serve: {name} again: stopping now", err=True)
                everything.cancel()
                return
            click.echo(
                f"attractor-trio serve: {name}: canceling runs and shutting down "
                "(send it again to stop at once)",
                err=True,
            )
            shutdown.set()


async def _main(host: str, port: int, runs_dir: Path, token: str | None, grace: float) -> None:
    from .redaction import register_environment, register_values
    from .server import serve

    # The token and the environment's secrets never appear in a response (CONTRACT §10).
    register_environment(os.environ)
    register_values([token] if token else [])
    shutdown = trio.Event()
    async with trio.open_nursery() as outer:
        await outer.start(_watch_signals, shutdown, outer.cancel_scope)
        async with trio.open_nursery() as inner:
            start = functools.partial(
                serve,
                host=host,
                port=port,
                runs_dir=runs_dir,
                token=token,
                shutdown_trigger=shutdown,
                shutdown_grace=grace,
            )
            bound: int = await inner.start(start)
            url = _url(host, bound)
            auth = "token required" if token else "no token"
            click.echo(
                f"attractor-trio serve: listening on {url} (runs under {runs_dir}/; {auth})",
                err=True,
            )
            click.echo(url)
        outer.cancel_scope.cancel()
    click.echo("attractor-trio serve: stopped", err=True)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--port",
    default=8400,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to bind; 0 picks a free one (the URL is printed).",
)
@click.option(
    "--runs-dir",
    default=Path("runs"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Each run's logs root is RUNS_DIR/<id>.",
)
@click.option(
    "--token",
    envvar="ATTRACTOR_TOKEN",
    help="Require `Authorization: Bearer TOKEN` (or ?token=TOKEN) on every request "
    "[env: ATTRACTOR_TOKEN].",
)
@click.option(
    "--shutdown-grace",
    default="30s",
    show_default=True,
    help="On shutdown, how long to wait for canceled runs to write final.json.",
)
def serve_command(
    host: str, port: int, runs_dir: Path, token: str | None, shutdown_grace: str
) -> None:
    """HTTP server mode with SSE events and human gates over HTTP (spec §9.5).

    Pipelines are submitted with POST /pipelines and run with the simulation backend (server
    mode has no provider configuration yet). Tool stages run commands from the submitted
    DOT on this machine: keep the default loopback bind or set a token.
    """
    try:
        grace = parse_duration(shutdown_grace)
    except AttributeValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shutdown-grace") from None
    try:
        import hypercorn  # noqa: F401
        import sse_starlette  # noqa: F401
        import starlette  # noqa: F401
    except ImportError as exc:
        _fail(
            f"server mode needs the `server` extra ({exc.name} is missing): "
            "pip install 'attractor-trio[server]'"
        )
    if not token and not _is_loopback(host):
        click.echo(
            f"attractor-trio serve: warning: listening on {host} without a token; anyone who "
            "can reach it can run tool commands here (set --token or ATTRACTOR_TOKEN)",
            err=True,
        )
    try:
        trio.run(_main, host, port, runs_dir, token or None, grace)
    except* OSError as group:
        _fail(f"cannot listen on {host}:{port}: {_first(group)}")
    sys.exit(0)


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def _fail(message: str) -> None:
    click.echo(f"attractor-trio serve: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def register(group: click.Group) -> None:
    group.add_command(serve_command)
