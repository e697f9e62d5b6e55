"""The Ray executor (contract.md §10 "Scale-out on Ray"): each stage process as a Ray task.

Design (see ``ARCHITECTURE.md`` "Scale-out"): the ``run`` process stays the driver — scope tree,
retries, run directory, events, ``final.json``. An attempt's process runs in a Ray
*streaming-generator* task (``_remote.attempt_stream``, ``max_retries=0``: the engine's retry
policy decides, and a silent Ray re-run would collide with the attempt-claim files). One driver
thread per executor follows every attempt's generator (``_dispatch.py``: one ``ray.wait`` over
all of them) and hands the items to the attempt's trio task, which appends the streamed
output — redacted here, so secrets never travel back into a file — to the stage's logs and
bumps liveness on growth: a busy remote stage keeps the run alive, a silent one trips the watchdog.

Time queued for cluster resources is not silence: the attempt's liveness node is *held* from
submission until the task reports its start (``stage_queued`` … ``stage_attempt_started`` with
the Ray node id, for an attempt that is one stage process: see ``base.AttemptStart``);
``queue_timeout`` bounds the wait (``transient_infra``). The worker writes nothing under the
logs root (``_staging.py``): the files the stage wrote travel back and are written here.
With ``upload_workdir`` the work directory travels too (``_upload.py``): a snapshot out, the
stage's changes back as a patch applied here before ``run_process`` returns.
Lost nodes and dead workers surface as Ray exceptions from the generator and become
:class:`ExecutorLost` ("ray node lost …" / "ray worker died …") — ``transient_infra``, retried
per the node's policy, on whichever node Ray picks next. Cancellation: the driver force-cancels
the task and asks the attempt's node to end the process group (SIGTERM → ``kill_grace`` →
SIGKILL; SIGKILL at once after a second SIGINT), waiting at most ``kill_grace + 5 s``; the
orphan guard that leads the remote group kills it anyway if its worker dies.
"""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, final

import trio

from ...aio.process import ProcessResult, _grace_skip_event
from ...core import redaction
from ._dispatch import END, Dispatcher, Stream
from ._staging import FileSink, Outbound
from ._upload import WorkdirShipping
from .base import ExecutorLost, ExecutorSettings, StageContext, WorkdirRefused, current_stage

__all__ = [
    "RayExecutor",
    "cluster_address",
    "connect",
    "missing_ray_message",
    "probe",
    "ray_available",
]

_AFTER_GRACE_S = 5.0
#: How long the address check waits for the cluster's port to accept a connection.
_PROBE_S = 5.0
#: Blocking Ray calls on the cancel path run in worker threads of their own, so a canceled
#: 1,000-branch fan-out cannot starve the engine's other thread users (status ingestion, fsync).
_THREADS = trio.CapacityLimiter(512)


def ray_available() -> bool:
    """Whether the extra is installed — without importing Ray: some of its settings are read
    once at import time, and :func:`connect` adjusts them first."""
    return importlib.util.find_spec("ray") is not None


def missing_ray_message() -> str:
    return "--executor ray needs Ray: install the extra with pip install 'attractor-trio[ray]'"


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cluster_address(settings: ExecutorSettings) -> str:
    """Address precedence per contract.md §10 (``settings.address`` is already
    ``--ray-address`` > ``executor.address``), then ``RAY_ADDRESS``; ``""``: a local Ray."""
    return settings.address or os.environ.get("RAY_ADDRESS", "")


def probe(settings: ExecutorSettings) -> None:
    """Fail fast when nothing listens at the cluster's address: ``ray.init`` would retry for
    minutes, and the run must be refused before its logs root exists (contract.md §10)."""
    address = cluster_address(settings)
    if not address or address == "auto":
        return  # a local Ray, or the one this machine's ``ray start`` recorded
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConnectionError(f"{address!r} is not host:port, ray://host:port or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_S).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers there: {exc.strerror or exc}") from None


def connect(settings: ExecutorSettings) -> RayExecutor:
    """Connect the driver (blocking, before the logs root exists): the cluster at
    :func:`cluster_address`, else a local Ray started for the run (shut down by
    :meth:`close`)."""
    probe(settings)
    address = cluster_address(settings)
    local = not address
    if local or _is_loopback(address):
        # A cluster on this machine: keep the driver on loopback too (Ray would otherwise
        # resolve 127.0.0.1 to the machine's external address). Explicit RAY_* settings win.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if local:
        kwargs.update(include_dashboard=False, num_cpus=os.cpu_count() or 1)
    else:
        kwargs["address"] = address
    ray.init(**kwargs)
    return RayExecutor(settings, started_local=local)


@final
class RayExecutor:
    """Runs stage processes as Ray tasks; see the module docstring."""

    def __init__(self, settings: ExecutorSettings, *, started_local: bool = False) -> None:
        import ray

        from . import _remote

        self.settings = settings
        self._started_local = started_local
        self._stream = ray.remote(max_retries=0, num_cpus=settings.num_cpus_per_stage)(
            _remote.attempt_stream
        )
        self._end_group = ray.remote(max_retries=0, num_cpus=0)(_remote.end_group)
        self._dispatcher = Dispatcher(_advance)
        self._shipping = WorkdirShipping(settings) if settings.upload_workdir else None

    def close(self) -> None:
        """Disconnect (and stop the local Ray started for the run)."""
        import ray

        self._dispatcher.close()
        ray.shutdown()

    #: Attempts that are one stage process start when a node starts them (contract.md §10).
    defers_start = True

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
    ) -> ProcessResult:
        stage = current_stage()
        spec = _remote_spec(stage, argv, cwd, env, kill_grace, (stdout_path, stderr_path))
        if self._shipping is not None:  # upload_workdir: the stage runs in a snapshot of cwd
            spec["upload"] = await self._shipping.ship(cwd, env)  # the driver's paths
        start = stage.start
        queued = start is not None and start.pending
        if queued:
            stage.emit(
                "stage_queued", node_id=stage.node_id, attempt_id=stage.attempt_id, executor="ray"
            )
        hold = _LivenessHold(stage.liveness)
        submitted = time.monotonic()
        gen = self._stream.options(**_ray_options(resources)).remote(spec)
        task = _RemoteTask(gen, self._dispatcher.follow(gen), spec["token"])
        files = FileSink(stage.logs_root) if stage.logs_root is not None else None
        with _StageLogs(stdout_path, stderr_path) as logs:
            try:
                with hold:
                    first = await self._wait_started(task)
                task.node_id = first["node_id"]
                if start is not None:
                    start.announce(
                        ray_node_id=first["node_id"],
                        host=first["host"],
                        queued_s=round(time.monotonic() - submitted, 3),
                    )
                result = await self._follow(task, logs, files, on_output)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._cancel(task, kill_grace)
                raise
        if result["kind"] == "error":
            raise OSError(result["errno"], result["message"])
        if result["kind"] == "refused":
            raise WorkdirRefused(result["message"])
        if self._shipping is not None:
            await self._shipping.bring_back(cwd, result["patch"])
        code = int(result["exit_code"])
        return ProcessResult(
            exit_code=code,
            signaled=code < 0,
            duration_s=float(result["duration_s"]),
            stdout_bytes=logs.written[0],
            stderr_bytes=logs.written[1],
        )

    async def _wait_started(self, task: _RemoteTask) -> dict[str, Any]:
        timeout = self.settings.queue_timeout
        with trio.move_on_after(timeout):
            item = await task.next_item()
            if item is END or item.get("kind") != "started":
                raise ExecutorLost("ray task ended before it started")
            return dict(item)
        raise ExecutorLost(
            f"ray could not place the attempt within {timeout:g}s (executor.queue_timeout)"
        )

    async def _follow(
        self,
        task: _RemoteTask,
        logs: _StageLogs,
        files: FileSink | None,
        on_output: Callable[[], None] | None,
    ) -> dict[str, Any]:
        while True:
            item = await task.next_item()
            if item is END:
                raise ExecutorLost("ray task ended without a result")
            kind = item["kind"]
            if kind == "out":
                logs.append(item["stream"], item["data"])
                if on_output is not None:
                    on_output()
            elif kind == "group":
                task.pgid = int(item["pgid"])
            elif kind == "file":
                if files is not None:
                    files.receive(item)
            else:
                logs.flush()
                if on_output is not None and logs.grew_since_flush():
                    on_output()
                return dict(item)

    async def _cancel(self, task: _RemoteTask, kill_grace: float) -> None:
        """Cancel the Ray task and end its process group on its node; bounded by
        ``kill_grace + 5 s`` (contract.md §10)."""

        skip = _grace_skip_event(None).is_set()
        with trio.move_on_after(kill_grace + _AFTER_GRACE_S):
            ref = None
            if task.node_id:  # started: its group may live there (pgid known or not yet)
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                strategy = NodeAffinitySchedulingStrategy(task.node_id, soft=False)
                ref = self._end_group.options(scheduling_strategy=strategy).remote(
                    task.pgid, kill_grace, skip, task.token
                )
            self._dispatcher.forget(task.stream)
            await _in_thread(functools.partial(_force_cancel, task.gen))
            if ref is not None:
                await _in_thread(functools.partial(_get_quietly, ref))


def _remote_spec(
    stage: StageContext,
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    kill_grace: float,
    logs: Sequence[Path],
) -> dict[str, Any]:
    """What the worker gets: no path under the logs root (``_staging.py``), the stage dir's
    inputs instead."""
    spec: dict[str, Any] = {
        "kill_grace": kill_grace,
        "dirs": [],
        "inputs": [],
        "token": secrets.token_hex(8),
    }
    if stage.logs_root is None or stage.stage_dir is None:
        return {**spec, "argv": list(argv), "cwd": str(cwd), "env": dict(env)}
    outbound = Outbound(stage.logs_root, stage.workdir or cwd, stage.stage_dir)
    spec.update(
        argv=[outbound.rewrite(a) for a in argv],
        cwd=outbound.rewrite(str(cwd)),
        env={k: outbound.rewrite(v) for k, v in env.items()},
    )
    spec["inputs"] = outbound.inputs(exclude=logs)
    spec["dirs"] = sorted(outbound.dirs | {os.path.dirname(p) for p, _ in spec["inputs"]})
    return spec


def _ray_options(resources: Mapping[str, float]) -> dict[str, Any]:
    """``executor.resources`` as Ray task options (``CPU``/``GPU`` have their own keys)."""
    options: dict[str, Any] = {}
    if resources:
        options["resources"] = {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
        if "CPU" in resources:
            options["num_cpus"] = resources["CPU"]
        if "GPU" in resources:
            options["num_gpus"] = resources["GPU"]
    return options


def _force_cancel(gen: Any) -> None:
    import ray

    try:
        ray.cancel(gen, force=True)
    except Exception:  # already finished, or the node is gone: nothing left to cancel
        pass


def _get_quietly(ref: Any) -> None:
    import ray

    try:
        ray.get(ref)
    except Exception:  # the node is gone with its processes
        pass


async def _in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=True, limiter=_THREADS)


@final
class _RemoteTask:
    """One attempt's Ray generator, its stream of items, and what the driver learned."""

    def __init__(self, gen: Any, stream: Stream, token: str) -> None:
        self.gen = gen
        self.stream = stream
        #: Names the attempt's scratch dir on its node (where end_group finds the group).
        self.token = token
        self.node_id = ""
        self.pgid: int | None = None

    async def next_item(self) -> Any:
        return await self.stream.next_item()


def _advance(gen: Any) -> Any:
    """The next item of a generator ``ray.wait`` found ready (in the dispatcher thread);
    :data:`END` at its end; Ray failures become :class:`ExecutorLost`."""
    import ray

    try:
        ref = next(gen)
    except StopIteration:
        return END
    except ray.exceptions.RayError as exc:
        raise lost_error(exc) from None
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        raise lost_error(exc) from None


def lost_error(exc: BaseException) -> BaseException:
    """A Ray failure in the typed taxonomy (contract.md §10)."""
    import ray.exceptions as rex

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, rex.NodeDiedError):
        return ExecutorLost(f"ray node lost: {text}")
    if isinstance(exc, rex.OutOfMemoryError):
        return ExecutorLost(f"ray worker died (out of memory): {text}")
    if isinstance(exc, rex.WorkerCrashedError | rex.LocalRayletDiedError):
        # A worker whose whole node went away is reported as a crashed worker at times.
        return ExecutorLost(f"ray node lost or ray worker died: {text}")
    if isinstance(exc, rex.ObjectLostError | rex.OwnerDiedError):
        return ExecutorLost(f"ray node lost (result lost): {text}")
    if isinstance(exc, rex.TaskCancelledError):
        return ExecutorLost(f"ray task canceled outside the run: {text}")
    if isinstance(exc, rex.RayTaskError):
        return ExecutorLost(f"ray worker died: {type(exc).__name__}: {text}")
    return ExecutorLost(f"ray error: {type(exc).__name__}: {text}")


@final
class _LivenessHold:
    """While queued the attempt is not silent (contract.md §10); the watchdog counts from the
    remote start."""

    def __init__(self, liveness: Any) -> None:
        self._liveness = liveness

    def __enter__(self) -> None:
        if self._liveness is not None:
            self._liveness.hold(1)

    def __exit__(self, *exc: object) -> None:
        if self._liveness is not None:
            self._liveness.hold(-1)
            self._liveness.bump()


@final
class _StageLogs:
    """The stage's ``stdout.log``/``stderr.log`` on the driver, written through the run's
    redactor (contract.md §10) exactly as the local pumps write them."""

    def __init__(self, stdout_path: Path, stderr_path: Path) -> None:
        self._paths = (stdout_path, stderr_path)
        self._files: list[BinaryIO] = []
        redactor = redaction.current()
        self._redactors = (
            [redaction.StreamRedactor(redactor), redaction.StreamRedactor(redactor)]
            if redactor
            else None
        )
        self.written = [0, 0]
        self._flushed = [0, 0]

    def __enter__(self) -> _StageLogs:
        for path in self._paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._files.append(open(path, "ab"))
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        for f in self._files:
            f.close()

    def append(self, stream: int, data: bytes) -> None:
        index = stream - 1
        if self._redactors is not None:
            data = self._redactors[index].feed(data)
        self._write(index, data)

    def flush(self) -> None:
        if self._redactors is not None:
            for index, redactor in enumerate(self._redactors):
                self._write(index, redactor.flush())

    def grew_since_flush(self) -> bool:
        grew = self.written != self._flushed
        self._flushed = list(self.written)
        return grew

    def _write(self, index: int, data: bytes) -> None:
        if not data:
            return
        try:
            self._files[index].write(data)
            self._files[index].flush()
        except OSError:
            return
        self.written[index] += len(data)
