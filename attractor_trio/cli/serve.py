"""``attractor-trio serve``: the HTTP API (spec §9.5) until SIGINT/SIGTERM.

The first signal shuts down gracefully — every run is cancelled and gets its ``final.json``,
then the server stops listening; a second signal stops at once (the engine still finalizes
each run, shielded and bounded). Either way the command exits 130 (SIGINT) or 143 (SIGTERM),
like ``run`` (contract.md §10). The URL goes to stdout as one line so scripts can read it
(with ``--port 0`` the port is only known then); everything else goes to stderr.

Tool stages run commands from submitted pipelines on this machine, so the server refuses to
listen on a non-loopback address without a token (exit 2).
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

from ..core.exit_codes import EXIT_OK, EXIT_USAGE, SIGNAL_EXIT
from ..dot.values import AttributeValueError, parse_duration
from .limits import prepare_long_running_process
from .run import max_input_size_option

__all__ = ["register", "serve_command"]

#: Wildcard binds and the loopback address their printed URL uses.
WILDCARD_SHOWN_AS = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int) -> str:
    """The URL to print. A wildcard bind (``0.0.0.0``, ``::``) is shown as its loopback
    address: the Host check answers that name, not ``0.0.0.0`` (other names need
    ``--allow-host``)."""
    host = WILDCARD_SHOWN_AS.get(host, host)
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"


async def _watch_signals(
    shutdown: trio.Event,
    everything: trio.CancelScope,
    received: list[int],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The first signal (noted in ``received``) sets ``shutdown``; a second cancels all."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            received.append(signum)
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


async def _main(settings: dict[str, Any], received: list[int]) -> None:
    from ..core.redaction import register_environment, register_values
    from ..server import serve

    host, runs_dir, token = settings["host"], settings["runs_dir"], settings["token"]
    # The token and the environment's secrets never appear in a response (contract.md §10).
    register_environment(os.environ)
    register_values([token] if token else [])
    shutdown = trio.Event()
    async with trio.open_nursery() as outer:
        await outer.start(_watch_signals, shutdown, outer.cancel_scope, received)
        async with trio.open_nursery() as inner:
            start = functools.partial(serve, **settings, shutdown_trigger=shutdown)
            bound: int = await inner.start(start)
            url = _url(host, bound)
            auth = "token required" if token else "no token"
            where = f"{url} (every interface)" if host in WILDCARD_SHOWN_AS else url
            click.echo(
                f"attractor-trio serve: listening on {where} (runs under {runs_dir}/; {auth})",
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
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME[:PORT]",
    help="Also answer requests whose Host header is NAME (any port) or NAME:PORT "
    "(repeatable; loopback names and the --host address are always allowed).",
)
@click.option(
    "--shutdown-grace",
    default="30s",
    show_default=True,
    help="On shutdown, how long to wait for canceled runs to write final.json.",
)
@max_input_size_option
def serve_command(
    host: str,
    port: int,
    runs_dir: Path,
    token: str | None,
    allow_hosts: tuple[str, ...],
    shutdown_grace: str,
    max_input_size: int,
) -> None:
    """HTTP server mode with SSE events and human gates over HTTP (spec §9.5).

    Pipelines are submitted with POST /pipelines and run with the simulation backend (server
    mode has no provider configuration yet). Tool stages run commands from the submitted
    DOT on this machine: a non-loopback --host needs a token. Requests from web pages
    (a foreign Origin) and for other host names (Host not loopback, --host or --allow-host)
    are refused. Exits 130 on SIGINT, 143 on SIGTERM, after canceling the runs.
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
        _fail(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            "run commands here; set --token or ATTRACTOR_TOKEN, or keep the loopback default"
        )
    try:  # an unusable runs dir is refused now, not at the first POST (contract.md §10)
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"--runs-dir {runs_dir}: cannot create it: {exc.strerror or exc}")
    settings = {
        "host": host,
        "port": port,
        "runs_dir": runs_dir,
        "token": token or None,
        "shutdown_grace": grace,
        "allowed_hosts": allow_hosts,
        "max_body": max_input_size,
    }
    received: list[int] = []
    prepare_long_running_process()  # every run it serves may be a wide fan-out, as in `run`
    try:
        trio.run(_main, settings, received)
    except* OSError as group:
        _fail(f"cannot listen on {host}:{port}: {_first(group)}")
    sys.exit(SIGNAL_EXIT[signal.Signals(received[0]).name] if received else EXIT_OK)


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
