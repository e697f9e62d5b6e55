"""``run``, ``resume`` and ``status``: option handling, signals, display, exit codes."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import trio

from ..core.exit_codes import (
    EXIT_FAIL,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_SIGTERM,
    EXIT_USAGE,
    RUN_STATUS_EXIT,
    SIGNAL_EXIT,
)
from ..core.vocabulary import DEFAULT_KILL_GRACE, CancelCause, ExitPath
from ..dot.graph import Severity
from ..dot.values import AttributeValueError, parse_duration
from ..errors import AttractorError, ConfigError, DotSyntaxError, ValidationFailed, error_line
from .detach import (
    detach,
    prepare_logs_root,
    recorded_options,
    reuse_recorded_options,
)
from .limits import prepare_long_running_process

if TYPE_CHECKING:
    from ..scopes.options import RunOptions

__all__ = ["max_input_size_option", "resume_command", "run_command"]


def _duration_option(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except AttributeValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    from ..dot.inputs import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def max_input_size_option(func: Callable[..., None]) -> Callable[..., None]:
    """``--max-input-size``: pipeline files over it are refused before being read whole."""
    return click.option(
        "--max-input-size",
        default="16MiB",
        show_default=True,
        callback=_size,
        metavar="SIZE",
        help="Refuse pipeline files (for serve: request bodies) larger than this, e.g. 64MiB.",
    )(func)


def _run_options(func: Callable[..., None]) -> Callable[..., None]:
    options: list[Callable[[Callable[..., None]], Callable[..., None]]] = [
        max_input_size_option,
        click.option(
            "--config",
            "config_path",
            metavar="FILE",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Run config (YAML): backend, providers, timeouts, env.pass, workspace.",
        ),
        click.option("--backend", help="Codergen backend: simulate, or a configured provider."),
        click.option("--simulate", is_flag=True, help="Same as --backend simulate."),
        click.option(
            "--sim-script",
            metavar="FILE",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Script the simulation backend's outcomes per node (YAML).",
        ),
        click.option("--auto-approve", is_flag=True, help="Human gates pick the first option."),
        click.option(
            "--interviewer", help="How human gates are answered: auto | console | queue:FILE."
        ),
        click.option(
            "--stall-timeout",
            help="Watchdog: no progress for this long fails the run (default 10m; 0: off).",
        ),
        click.option(
            "--heartbeat-interval", help="stage_heartbeat period (default min(stall/3, 30s))."
        ),
        click.option(
            "--kill-grace", help="SIGTERM→SIGKILL grace for stage processes (default 5s)."
        ),
        click.option(
            "--workdir",
            type=click.Path(file_okay=False, path_type=Path),
            help="The stages' working directory (ATTRACTOR_WORKDIR); default: the current one.",
        ),
        click.option(
            "--quiet", is_flag=True, help="Print nothing but errors and the final result line."
        ),
        click.option("--json", "as_json", is_flag=True, help="Events as NDJSON on stdout."),
        click.option("--seed", type=int, help="Seed for retry jitter (reproducible runs)."),
        click.option(
            "--detach",
            is_flag=True,
            help="Run in its own session, immune to the terminal; output in LOGS_ROOT/run.log.",
        ),
        click.option(
            "--pass-env",
            "pass_env",
            multiple=True,
            metavar="NAME",
            help="Pass this environment variable (glob allowed) to stages; repeatable.",
        ),
        click.option(
            "--executor",
            type=click.Choice(["local", "ray"]),
            help="Where stage processes run: here (default) or as Ray tasks (contract.md §10).",
        ),
        click.option("--ray-address", help="Ray cluster: host:port, ray://host:port or auto."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _guard(func: Callable[..., None]) -> Callable[..., None]:
    """Bad input gets a clear message and exit 2 — never a traceback.

    Errors raised inside ``trio.run`` arrive wrapped in exception groups; a group whose every
    leaf is one of ours is reported leaf by leaf, anything else propagates (it is a bug).
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except BaseExceptionGroup as group:
            matched, rest = group.split((AttractorError, AttributeValueError))
            if rest is not None or matched is None:
                raise
            for leaf in _leaves(matched):
                _report(leaf, kwargs)
            sys.exit(EXIT_USAGE)
        except (AttractorError, AttributeValueError) as exc:
            _report(exc, kwargs)
            sys.exit(EXIT_USAGE)

    return wrapper


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


def _report(exc: BaseException, kwargs: dict[str, Any]) -> None:
    from ..core.redaction import current

    echo = current().text
    if isinstance(exc, DotSyntaxError):
        click.echo(echo(str(exc)), err=True)
    elif isinstance(exc, ValidationFailed):
        for diagnostic in exc.diagnostics:
            if diagnostic.severity is Severity.ERROR:
                click.echo(diagnostic.format(kwargs.get("pipeline_path", "")), err=True)
        click.echo("attractor-trio: pipeline is invalid; nothing was executed", err=True)
    else:
        click.echo(echo(error_line(exc)), err=True)


def _settings(opts: dict[str, Any]) -> dict[str, Any]:
    """Resolve backend, interviewer and timing from options and ``--config``."""
    from ..backends.executors.options import RAY_SECRET_NAMES, executor_settings
    from ..core.redaction import register_environment
    from ..runconfig import RunConfig, load_run_config
    from ..scopes.retention import DEFAULT_ATTEMPT_RETENTION

    config = load_run_config(opts["config_path"]) if opts["config_path"] else RunConfig()
    backend_name = "simulate" if opts["simulate"] else (opts["backend"] or config.backend)
    stall = _duration_option(opts["stall_timeout"], "--stall-timeout")
    if stall is None:
        stall = config.stall_timeout if config.stall_timeout is not None else 600.0
    heartbeat = _duration_option(opts["heartbeat_interval"], "--heartbeat-interval")
    if heartbeat is None:
        heartbeat = config.heartbeat_interval
    if heartbeat is None:
        heartbeat = min(stall / 3, 30.0) if stall else 30.0
    grace = _duration_option(opts["kill_grace"], "--kill-grace")
    if grace is None:
        grace = config.kill_grace if config.kill_grace is not None else DEFAULT_KILL_GRACE
    keys = [p.api_key_env for p in config.providers.values()]
    register_environment(os.environ, [*keys, *RAY_SECRET_NAMES])
    # Checked here, before the run directory exists: a missing extra is exit 2, one line.
    opts["executor_settings"] = executor_settings(opts["executor"], opts["ray_address"], config)
    return {
        "pass_env": _passes(config.env_pass, opts["pass_env"]),
        "backend": _backend(backend_name, opts["sim_script"], config),
        "interviewer": _interviewer(opts["auto_approve"], opts["interviewer"]),
        "heartbeat_interval": heartbeat,
        "stall_timeout": stall,
        "kill_grace": grace,
        "max_parallel_default": config.max_parallel_default or 4,
        "attempt_retention": config.retention_attempts or DEFAULT_ATTEMPT_RETENTION,
    }


def _passes(configured: tuple[str, ...], given: tuple[str, ...]) -> tuple[str, ...]:
    """Run config ``env.pass`` plus every ``--pass-env`` (contract.md §10)."""
    from ..stage_env import check_pass_pattern

    for pattern in given:
        problem = check_pass_pattern(pattern)
        if problem:
            raise ConfigError(f"--pass-env: {problem}")
    return (*configured, *given)


def _backend(name: str, sim_script: Path | None, config: Any) -> Any:
    from ..backends.simulate import SimulationBackend, load_sim_script

    if sim_script is not None and name not in ("", "simulate"):
        raise ConfigError("--sim-script scripts the simulation backend; use it with --simulate")
    if name == "simulate" or sim_script is not None:
        return SimulationBackend(load_sim_script(sim_script) if sim_script else None)
    if not name:
        return None
    if name in config.providers:
        return _provider_backend(name, config)
    known = ", ".join(["simulate", *config.providers]) or "simulate"
    raise ConfigError(f"unknown backend '{name}'; known backends: {known}")


def _provider_backend(name: str, config: Any) -> Any:
    """A configured provider: a CLI agent, or the API backend (one-shot completions)."""
    provider = config.providers[name]
    if provider.kind == "cli":
        from ..backends.cli_agents import CliAgentBackend

        return CliAgentBackend(provider)
    from ..backends.provider import ApiBackend

    return ApiBackend(config, name)


def _interviewer(auto_approve: bool, spec: str | None) -> Any:
    from ..interviewers import (
        AutoApproveInterviewer,
        ConsoleInterviewer,
        NonInteractiveInterviewer,
        interviewer_from_spec,
    )

    if auto_approve:
        return AutoApproveInterviewer()
    if spec:
        return interviewer_from_spec(spec)
    return ConsoleInterviewer() if sys.stdin.isatty() else NonInteractiveInterviewer()


def _sinks(as_json: bool, quiet: bool) -> list[Any]:
    """``--json``: every event on stdout; ``--quiet``: no display (the summary is the one
    line); else a live panel on a terminal, timestamped lines otherwise."""
    from ..observe.display import JsonLines, PlainDisplay, RichDisplay

    if as_json:
        return [JsonLines()]
    if quiet:
        return []
    if sys.stderr.isatty():
        return [RichDisplay()]
    return [PlainDisplay()]


def _parse_sets(pairs: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        values[key.strip()] = value
    return values


_SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


async def _with_signals(start: Callable[..., Any], holder: dict[str, Any]) -> Any:
    """Run ``start(task_status)`` with SIGINT/SIGTERM/SIGHUP turned into run cancellation."""
    from ..scopes.engine import RunHandle

    handle = RunHandle()
    holder["handle"] = handle
    async with trio.open_nursery() as nursery:

        async def watch_signals(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with trio.open_signal_receiver(*_SIGNAL_NAMES) as signals:
                task_status.started()
                async for signum in signals:
                    _on_signal(_SIGNAL_NAMES[signal.Signals(signum)], handle, holder)

        # Signals are ours before the run takes its lock: a `stop` right after start finalizes.
        await nursery.start(watch_signals)
        result = await start(handle)
        nursery.cancel_scope.cancel()
    return result


def _on_signal(name: str, handle: Any, holder: dict[str, Any]) -> None:
    """The first signal cancels the run (and decides the exit code); any further SIGINT or
    SIGTERM — after a SIGINT, SIGTERM, SIGHUP or ``stop`` — skips the rest of the kill grace
    (contract.md §10). SIGHUP means the terminal is gone: console output goes nowhere from then
    on, so that writing it cannot fail the run's finalization."""
    if name == "SIGHUP":
        _detach_from_dead_terminal()
    elif "signal" in holder:
        handle.skip_grace()
    holder.setdefault("signal", name)
    handle.cancel(name, CancelCause(name))


def _detach_from_dead_terminal() -> None:
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            if _is_terminal(fd):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _is_terminal(fd: int) -> bool:
    """``isatty`` — which a hung-up terminal may answer with an error — or, on Linux, what
    the descriptor points at."""
    import os

    try:
        if os.isatty(fd):
            return True
    except OSError:
        pass
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    return target.startswith(("/dev/pts/", "/dev/tty"))


async def _close(backend: Any) -> None:
    """Backends holding connections (the API backend's HTTP client) are closed after the run."""
    aclose = getattr(backend, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            await aclose()


def _exit_for(result: Any, holder: dict[str, Any]) -> int:
    if result.exit_path == ExitPath.INTERNAL_ERROR:
        return EXIT_INTERNAL
    if result.status == "canceled":
        return SIGNAL_EXIT.get(holder.get("signal", "SIGTERM"), EXIT_SIGTERM)
    return RUN_STATUS_EXIT.get(result.status, EXIT_FAIL)


def _summary(result: Any, quiet: bool, as_json: bool) -> None:
    """The run's last words on stderr: ``--quiet`` makes them its only line."""
    if as_json:
        return
    from ..core.redaction import current
    from ..observe.display import summary_line

    if quiet:
        line = summary_line(
            result.status, result.exit_path, result.logs_root, result.failure_reason or ""
        )
        click.echo(current().text(line), err=True)
        return
    reason = f" — {result.failure_reason}" if result.failure_reason else ""
    summary = f"attractor-trio: {result.status} ({result.exit_path}){reason}"
    click.echo(f"{current().text(summary)}\nlogs root: {result.logs_root}", err=True)


@click.command("run")
@click.argument(
    "pipeline_path", metavar="PIPELINE.dot", type=click.Path(exists=True, dir_okay=False)
)
@click.option(
    "--logs-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="The run directory (default: runs/<run_id>); it must not hold a run yet.",
)
@click.option("--run-id", help="The run's id (default: <UTC time>-<6 hex>).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set a context key.")
@click.option(
    "--workspace",
    "workspace_kind",
    type=click.Choice(["git"]),
    help="Run on a git branch and worktree of the workdir's repository (contract.md §10).",
)
@click.option("--allow-dirty", is_flag=True, help="--workspace git: snapshot uncommitted changes.")
@_run_options
@_guard
def run_command(
    pipeline_path: str,
    logs_root: Path | None,
    run_id: str | None,
    sets: tuple[str, ...],
    workspace_kind: str | None,
    allow_dirty: bool,
    **opts: Any,
) -> None:
    """Parse, transform, validate and execute PIPELINE.dot."""
    from ..dot.pipeline import prepare_pipeline
    from ..scopes import engine

    graph, diagnostics = prepare_pipeline(pipeline_path, max_size=opts["max_input_size"])
    if not opts["quiet"]:
        for diagnostic in diagnostics:
            click.echo(diagnostic.format(pipeline_path), err=True)
    settings = _settings(opts)
    initial = _parse_sets(sets)
    run_id = run_id or engine.new_run_id()
    root = logs_root or Path("runs") / run_id
    engine.refuse_used_logs_root(root)
    engine.check_runnable(graph, backend=settings["backend"])
    workspace = _workspace(workspace_kind, allow_dirty, opts)
    _check_workspace(workspace, run_id, opts, root, settings["kill_grace"])
    from ..backends.executors.options import running_executor

    with running_executor(opts["executor_settings"], connect=not opts["detach"]):
        prepare_logs_root(root)
        if opts["detach"]:
            detach(["--logs-root", str(root), "--run-id", run_id], root)
        if not opts["quiet"]:
            click.echo(f"logs root: {root}", err=True)
        options = _engine_options(
            settings,
            opts,
            logs_root=root,
            run_id=run_id,
            context=initial,
            argv=sys.argv,
            manifest_options=recorded_options(opts),
            workspace=workspace,
        )
        _drive(engine.start_run, graph, options, opts)


def _check_workspace(
    config: Any, run_id: str, opts: dict[str, Any], root: Path, kill_grace: float
) -> None:
    """A repository the run cannot start from is refused before the logs root exists
    (contract.md §10: exit 2, no run directory); ``engine.run`` checks again for API callers."""
    if config is None:
        return
    from functools import partial

    from ..workspace import check_repository

    check = partial(
        check_repository,
        config,
        run_id=run_id,
        workdir=opts["workdir"],
        kill_grace=kill_grace,
        logs_root=root,
    )
    trio.run(check)


def _workspace(kind: str | None, allow_dirty: bool, opts: dict[str, Any]) -> Any:
    """``--workspace git`` and/or run config ``workspace:`` (which turns it on by itself)."""
    from ..runconfig import load_run_config
    from ..workspace import WorkspaceConfig

    doc = load_run_config(opts["config_path"]).workspace if opts["config_path"] else None
    if kind is None and doc is None:
        if allow_dirty:
            raise ConfigError("--allow-dirty needs a git workspace (--workspace git)")
        return None
    if doc is None:
        return WorkspaceConfig(allow_dirty=allow_dirty)
    return WorkspaceConfig(
        repo=Path(doc.repo) if doc.repo else None,
        branch_prefix=doc.branch_prefix,
        keep_worktree=doc.keep_worktree,
        allow_dirty=allow_dirty,
    )


def _engine_options(settings: dict[str, Any], opts: dict[str, Any], **kw: Any) -> RunOptions:
    """The engine's options from the resolved ``settings`` and the flags both commands share
    (``kw``: what only one of them sets)."""
    from ..scopes.options import RunOptions

    return RunOptions(
        workdir=opts["workdir"],
        sinks=_sinks(opts["as_json"], opts["quiet"]),
        seed=opts["seed"],
        **kw,
        **settings,
    )


def _drive(
    entry: Callable[[Any, RunOptions], Awaitable[Any]],
    graph: Any,
    options: RunOptions,
    opts: dict[str, Any],
) -> NoReturn:
    """Run ``entry`` (``engine.start_run`` or ``engine.resume_run``) with ``options`` under
    the signal handlers, close the backend, print the summary and exit with the run's code."""
    holder: dict[str, Any] = {}

    async def start(handle: Any) -> Any:
        try:
            return await entry(graph, options.evolve(handle=handle))
        finally:
            await _close(options.backend)

    prepare_long_running_process()
    result = trio.run(_with_signals, start, holder)
    _summary(result, opts["quiet"], opts["as_json"])
    sys.exit(_exit_for(result, holder))


@click.command("resume")
@click.argument(
    "logs_root", metavar="LOGS_ROOT", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--from", "from_node", metavar="NODE", help="Continue at NODE (any run).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set a context key.")
@_run_options
@_guard
def resume_command(
    logs_root: Path, from_node: str | None, sets: tuple[str, ...], **opts: Any
) -> None:
    """Continue a run from LOGS_ROOT/checkpoint.json without re-running completed stages.

    Continues a canceled, stalled, crashed or internally failed run with the options it was
    started with (unless given again); --from NODE continues any run at NODE.
    """
    from ..dot.pipeline import load
    from ..persist.final import read_final
    from ..persist.manifest import read_manifest
    from ..recovery import check_resumable
    from ..scopes import engine

    final = read_final(logs_root)
    if final is not None and from_node is None:
        if final.status == "success":
            click.echo(
                f"attractor-trio: run {final.run_id} succeeded; nothing to resume "
                f"(--from NODE runs it again from NODE)",
                err=True,
            )
            sys.exit(EXIT_OK)
        check_resumable(logs_root, final)
    manifest = read_manifest(logs_root)
    if manifest is None or not (logs_root / "graph.dot").exists():
        raise ConfigError(
            f"{logs_root}: no manifest.json/graph.dot — not a run directory "
            "(pass the LOGS_ROOT that `attractor-trio run` printed)"
        )
    opts = reuse_recorded_options(opts, manifest.options or {})
    graph = load(logs_root / "graph.dot", max_size=opts["max_input_size"])
    settings = _settings(opts)
    engine.check_runnable(graph, backend=settings["backend"])
    from ..backends.executors.options import running_executor

    with running_executor(opts["executor_settings"], connect=not opts["detach"]):
        if opts["detach"]:
            detach([], logs_root)
        if not opts["quiet"]:
            click.echo(f"resuming run {manifest.run_id} in {logs_root}", err=True)
        options = _engine_options(settings, opts, logs_root=logs_root, context=_parse_sets(sets))
        _drive(functools.partial(engine.resume_run, from_node=from_node), graph, options, opts)


def register(group: click.Group) -> None:
    for command in (run_command, resume_command):
        group.add_command(command)
