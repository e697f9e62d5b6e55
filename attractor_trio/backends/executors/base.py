"""The executor seam (contract.md §10 "Scale-out on Ray"): protocol, settings, typed error.

Why a context variable: the run's scope tree, retry loop and handlers stay exactly as they are;
only the place where an attempt's *process* runs changes. The CLI (or an embedding app) installs
an executor around the run, trio copies the context into every task, and the three callers that
start stage processes (tool stage, CLI agent, agent-loop ``shell``) reach it through
:func:`run_stage_process`. Git bookkeeping and other engine-internal processes keep calling
``run_in_process_group`` directly: they belong to the driver.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, cast, final

from attrs import field, frozen

from ...aio.process import ProcessResult, run_in_process_group
from ...errors import ConfigError

if TYPE_CHECKING:
    from ..remote_session import SessionEnd, SessionSpec

__all__ = [
    "DEFAULT_QUEUE_TIMEOUT",
    "DEFAULT_UPLOAD_LIMIT_MB",
    "EXECUTOR_KINDS",
    "AttemptStart",
    "Executor",
    "ExecutorFailure",
    "ExecutorLost",
    "ExecutorSettings",
    "SessionRunner",
    "StageContext",
    "WorkdirRefused",
    "current_stage",
    "defers_start",
    "orphans_outlive_the_driver",
    "parse_resources",
    "run_stage_process",
    "session_executor",
    "use_executor",
    "use_stage_context",
]

EXECUTOR_KINDS = ("local", "ray")
#: contract.md §10: an attempt that cannot be placed within this long fails as transient_infra.
DEFAULT_QUEUE_TIMEOUT = 600.0
#: contract.md §10: ``executor.upload_limit_mb``, the largest work-directory snapshot (and patch
#: back) of one attempt.
DEFAULT_UPLOAD_LIMIT_MB = 256


class ExecutorFailure(Exception):
    """The executor could not run the attempt, or not bring its work back: the attempt scope
    turns it into a ``fail`` outcome of class :attr:`failure_class` with this message."""

    failure_class = "transient_infra"


class ExecutorLost(ExecutorFailure):
    """The place running an attempt went away ("ray node lost …", "ray worker died …").

    ``transient_infra``: the node's retry policy decides whether it runs again (elsewhere)."""


class WorkdirRefused(ExecutorFailure):
    """``executor.upload_workdir``: the work directory cannot travel (over the size limit) or the
    stage's changes cannot come back (the driver's files changed since the snapshot). The same
    attempt would fail the same way again, so ``deterministic``: no retry."""

    failure_class = "deterministic"


@frozen
class ExecutorSettings:
    """``--executor``/``--ray-address`` and run config ``executor:``, resolved."""

    kind: str = "local"
    address: str = ""
    num_cpus_per_stage: float = 1.0
    upload_workdir: bool = False
    upload_limit_mb: int = DEFAULT_UPLOAD_LIMIT_MB
    upload_excludes: tuple[str, ...] = ()
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT
    extra: Mapping[str, str] = field(factory=dict)


class Executor(Protocol):
    """Runs one stage process somewhere and reports like ``run_in_process_group`` does:
    output appended to the two log files, ``on_output`` on growth, the group gone on return
    (also when cancelled: within ``kill_grace`` plus a few seconds)."""

    async def run_process(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        stdout_path: Path,
        stderr_path: Path,
        kill_grace: float,
        on_output: Callable[[], None] | None,
        resources: Mapping[str, float],
    ) -> ProcessResult: ...


class SessionRunner(Protocol):
    """An executor that runs a whole agent-loop attempt where it places it: ``spec`` is a
    ``remote_session.SessionSpec``, the value its ``SessionEnd``; a provider error is raised
    again as the same class."""

    async def run_session(self, spec: SessionSpec) -> SessionEnd: ...


_EXECUTOR: ContextVar[Executor | None] = ContextVar("attractor_trio_executor", default=None)


def _no_emit(event: str, **fields: Any) -> None:
    pass


#: Events that may precede a deferred ``stage_attempt_started`` without announcing it.
_BEFORE_START = frozenset({"stage_queued"})


@final
class AttemptStart:
    """An attempt's one ``stage_attempt_started`` (contract.md §4), announced once.

    Why deferred: with ``--executor ray`` an attempt whose whole work is one stage process
    (a tool stage, a CLI agent) starts when a node starts it, not when it is submitted —
    contract.md §10: ``stage_queued`` first, then ``stage_attempt_started`` with the Ray node
    id. The executor announces it with those fields; any other event of the attempt, and the
    attempt's end, announce it first without them, so every attempt still starts exactly once
    and before anything else it reports."""

    def __init__(self, emit: Callable[..., Any], fields: Mapping[str, Any]) -> None:
        self._emit = emit
        # Kept as given, not copied: the engine hands over a fresh dict per attempt.
        self._fields = fields
        self.pending = True

    def announce(self, **extra: Any) -> None:
        """Emit ``stage_attempt_started`` (with ``extra``) unless it was emitted already."""
        if self.pending:
            self.pending = False
            self._emit("stage_attempt_started", **self._fields, **extra)

    def emit(self, event: str, **fields: Any) -> Any:
        """The attempt's event emitter: announces the start before the attempt's first event."""
        if event not in _BEFORE_START:
            self.announce()
        return self._emit(event, **fields)


@frozen
class StageContext:
    """What an executor needs to know about the attempt it runs a process for: the node's
    ``executor.resources`` (raw JSON), where its events go, its liveness node (which a
    queued remote attempt holds: waiting for cluster resources is not silence), its start
    (which a remote executor announces when a node starts the process), and where its logs
    root, stage dir and workdir are (a remote attempt writes nothing under the logs root: the
    driver does). Set by the attempt scope; executors sit below the scopes and cannot ask
    them."""

    resources: str = ""
    node_id: str = ""
    attempt_id: str = ""
    emit: Callable[..., None] = _no_emit
    liveness: Any = None
    start: AttemptStart | None = None
    logs_root: Path | None = None
    stage_dir: Path | None = None
    workdir: Path | None = None


_NO_STAGE = StageContext()  # frozen: safe to share
#: The attempt's :class:`StageContext`, or how to build it: only an executor ever reads it,
#: so without one installed (the usual local run) it is never built at all.
_STAGE: ContextVar[StageContext | Callable[[], StageContext]] = ContextVar(
    "attractor_trio_stage",
    default=_NO_STAGE,
)


@contextlib.contextmanager
def use_executor(executor: Executor | None) -> Iterator[None]:
    """Run stage processes started in this context (and tasks started from it) on ``executor``;
    ``None`` means local."""
    token = _EXECUTOR.set(executor)
    try:
        yield
    finally:
        _EXECUTOR.reset(token)


#: :class:`use_stage_context` without its object and two method calls, for the attempt scope
#: (entered once per attempt): ``token = set_stage_context(stage)`` …
#: ``reset_stage_context(token)``. The context variable's own C methods.
set_stage_context: Final = _STAGE.set
reset_stage_context: Final = _STAGE.reset
#: The executor installed by :func:`use_executor`, or ``None`` (local): the context
#: variable's own C method, asked once per attempt.
installed_executor: Final = _EXECUTOR.get


class use_stage_context:
    """Tell executors about the attempt whose handler runs in this context. A class, not a
    generator-based context manager: it is entered once per attempt, and the generator's
    machinery cost several times the two context variable calls."""

    __slots__ = ("_stage", "_token")

    def __init__(self, stage: StageContext | Callable[[], StageContext]) -> None:
        """``stage``, or a function that builds it when an executor first asks."""
        self._stage = stage

    def __enter__(self) -> None:
        self._token = _STAGE.set(self._stage)

    def __exit__(self, *_exc: object) -> None:
        _STAGE.reset(self._token)


def orphans_outlive_the_driver() -> bool:
    """Whether a stage process a dead run started may still be running, so that ``resume`` should
    *adopt* it (wait for it, use its exit code) rather than run the command again.

    Locally yes: the process group does not depend on the engine. On an executor no — contract.md
    §10: when the driver dies its remote tasks die with it (the orphan guard ends their groups),
    and ``resume`` re-runs them as new attempts. The journal a remote attempt leaves in the stage
    dir is no evidence either way: it travels back with the attempt's other files once the
    process has ended (``_staging.py``), one file at a time, so a driver that died meanwhile may
    hold ``.tool-exit`` without the ``status.json`` behind it — or, with ``upload_workdir``,
    without the patch applied. Only the attempt's end marker commits it."""
    return _EXECUTOR.get() is None


def current_stage() -> StageContext:
    stage = _STAGE.get()
    return stage if isinstance(stage, StageContext) else stage()


def defers_start(handler: Any, node: Any) -> bool:
    """Whether the attempt's ``stage_attempt_started`` waits for the remote start: an
    executor that places processes on a cluster is installed, and the handler says the
    attempt runs as one remote unit (``runs_one_process(node)``: one stage process, or a whole
    agent-loop session on an executor that offers ``run_session``). Anything else starts at
    once, as locally."""
    executor = _EXECUTOR.get()
    if executor is None or not getattr(executor, "defers_start", False):
        return False
    runs_one_process = getattr(handler, "runs_one_process", None)
    return bool(runs_one_process(node)) if callable(runs_one_process) else False


def session_executor() -> SessionRunner | None:
    """The installed executor when it runs whole agent-loop sessions (it offers
    ``run_session(spec)``, see ``backends/remote_session.py``), else ``None``: the session
    runs here and only its stage processes go through :func:`run_stage_process`."""
    executor = _EXECUTOR.get()
    if executor is None or not callable(getattr(executor, "run_session", None)):
        return None
    return cast(SessionRunner, executor)


def parse_resources(raw: str) -> dict[str, float]:
    """``executor.resources`` as a Ray resource mapping; a bad value is a :class:`ConfigError`."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"executor.resources: invalid JSON: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise ConfigError(
            'executor.resources: expected a JSON object of non-negative numbers, e.g. {"GPU": 1}'
        )
    return {k: float(v) for k, v in value.items()}


def resources_problem(raw: str) -> str | None:
    """Why ``raw`` is not a valid ``executor.resources`` value (for ``validate``)."""
    try:
        parse_resources(raw)
    except ConfigError as exc:
        return str(exc).removeprefix("executor.resources: ")
    return None


async def run_stage_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    stdout_path: Path,
    stderr_path: Path,
    kill_grace: float,
    on_output: Callable[[], None] | None = None,
) -> ProcessResult:
    """Run a stage's process on the installed executor (local when none is installed)."""
    executor = _EXECUTOR.get()
    if executor is None:
        return await run_in_process_group(
            argv,
            cwd=cwd,
            env=env,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            kill_grace=kill_grace,
            on_output=on_output,
        )
    return await executor.run_process(
        argv,
        cwd=cwd,
        env=env,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        kill_grace=kill_grace,
        on_output=on_output,
        resources=parse_resources(current_stage().resources),
    )
