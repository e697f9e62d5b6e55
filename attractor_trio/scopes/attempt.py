"""One stage: its retry loop, and each attempt as a cancel scope plus a nursery.

The attempt's nursery holds the handler and the heartbeat task, so a heartbeat cannot outlive
its attempt: when the handler returns (or is cancelled) the nursery closes and the heartbeat
goes with it. The node ``timeout`` is the scope's deadline; the run's cancellation reaches the
handler through the same tree, and a retry sleep is a checkpoint inside the run scope, so no
retry can start once the run is cancelled.
"""

from __future__ import annotations

import math
import random
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from attrs import define, field

from ..context import Context
from ..core.outcome import Outcome, StageStatus
from ..core.retry import Blocked, Retry, after_attempt, delay_for_attempt, policy_for
from ..graph import Graph, Node
from ..handlers.base import AttemptInfo, HandlerRegistry, reset_attempt, set_attempt
from ..persist.atomic import write_json_atomic
from .cancel import only_cancelled
from ..values import format_duration

__all__ = ["StageExecutor"]

Emit = Callable[..., Any]


@define
class StageExecutor:
    """Runs stages for one traversal (the main one, or a parallel branch)."""

    graph: Graph
    registry: HandlerRegistry
    context: Context
    emit: Emit
    run_id: str
    stage_root: Path
    workdir: Path
    node_retries: dict[str, int]
    node_attempts: dict[str, int]
    rng: random.Random
    heartbeat_interval: float | None = 30.0
    kill_grace: float = 5.0
    branch: str = ""
    progress: Callable[[], None] = field(default=lambda: None)
    #: ``human_wait(+1/-1)`` around a human gate's attempt (the watchdog pauses).
    human_wait: Callable[[int], None] = field(default=lambda _delta: None)
    stage_index: int = 0

    async def run_stage(self, node: Node, predecessor: str = "") -> Outcome:
        """Execute ``node`` with its retry policy; return its final outcome (S3.5)."""
        policy = policy_for(node, self.graph)
        handler_type = self.registry.resolve_type(node)
        self.stage_index += 1
        index = self.stage_index
        started = time.monotonic()
        self.emit("stage_started", node_id=node.id, handler=handler_type, index=index)
        attempt = 1
        while True:
            outcome = await self._attempt(node, attempt, policy.max_attempts, predecessor)
            decision = after_attempt(outcome, attempt, policy, node.allow_partial)
            if isinstance(decision, Retry):
                delay = delay_for_attempt(policy.backoff, attempt, self.rng)
                self.node_retries[node.id] = self.node_retries.get(node.id, 0) + 1
                self.context.set(f"internal.retry_count.{node.id}", self.node_retries[node.id])
                self.emit(
                    "stage_retrying", node_id=node.id, attempt=attempt + 1, delay_s=round(delay, 3)
                )
                await trio.sleep(delay)
                attempt += 1
                continue
            if isinstance(decision, Blocked):
                self.emit(
                    "stage_retry_blocked",
                    node_id=node.id,
                    failure_class=decision.outcome.failure_class,
                    failure_reason=decision.outcome.failure_reason,
                )
            final = decision.outcome
            if final.status in (StageStatus.SUCCESS, StageStatus.PARTIAL_SUCCESS):
                self.node_retries[node.id] = 0
            if final is not outcome:
                _write_status(self.stage_root / node.id / "status.json", final)
            self.emit(
                "stage_completed",
                node_id=node.id,
                handler=handler_type,
                index=index,
                status=final.status.value,
                duration_s=round(time.monotonic() - started, 3),
            )
            return final

    async def _attempt(
        self, node: Node, attempt: int, max_attempts: int, predecessor: str
    ) -> Outcome:
        stage_dir = self.stage_root / node.id
        number = self.node_attempts.get(node.id, 0) + 1
        self.node_attempts[node.id] = number
        _archive_previous_attempt(stage_dir, number - 1)
        attempt_id = f"{node.id}-{number}-{secrets.token_hex(3)}"
        info = AttemptInfo(
            run_id=self.run_id,
            node_id=node.id,
            attempt=attempt,
            max_attempts=max_attempts,
            attempt_id=attempt_id,
            logs_root=self.stage_root,
            stage_dir=stage_dir,
            workdir=self.workdir,
            predecessor_node=predecessor,
            predecessor_outcome=self.context.get_string("outcome") if predecessor else "",
            branch=self.branch,
            emit=self.emit,
            progress=self.progress,
            kill_grace=self.kill_grace,
        )
        self.emit(
            "stage_attempt_started",
            node_id=node.id,
            attempt=attempt,
            max_attempts=max_attempts,
            attempt_id=attempt_id,
        )
        self.progress()
        try:
            outcome = await self._run_handler(node, info)
        except BaseException as exc:
            cancelled = only_cancelled(exc)
            if cancelled is None:
                raise
            reason = cancelled.reason or "canceled"
            canceled = Outcome(
                StageStatus.FAIL, failure_reason=f"canceled: {reason}", failure_class="canceled"
            )
            _write_status(stage_dir / "status.json", canceled)
            self.emit(
                "cancellation_exit",
                node_id=node.id,
                attempt_id=attempt_id,
                reason=reason,
                scope="run",
            )
            self._finished(node, attempt_id, canceled)
            raise
        _write_status(stage_dir / "status.json", outcome)
        self._finished(node, attempt_id, outcome)
        self.progress()
        return outcome

    def _finished(self, node: Node, attempt_id: str, outcome: Outcome) -> None:
        self.emit(
            "stage_attempt_finished",
            node_id=node.id,
            attempt_id=attempt_id,
            status=outcome.status.value,
            failure_reason=outcome.failure_reason,
            failure_class=outcome.failure_class,
        )

    async def _run_handler(self, node: Node, info: AttemptInfo) -> Outcome:
        """The attempt scope: deadline = node timeout; nursery = handler + heartbeat."""
        handler = self.registry.resolve(node)
        human = self.registry.resolve_type(node) == "wait.human"
        result: list[Outcome] = []
        timeout = node.timeout
        token = set_attempt(info)
        if human:
            self.human_wait(1)
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
                async with trio.open_nursery() as nursery:
                    if self.heartbeat_interval:
                        nursery.start_soon(self._heartbeat, info, self.heartbeat_interval)
                    result.append(
                        await _call_handler(handler, node, self.context, self.graph, info)
                    )
                    nursery.cancel_scope.cancel(reason="attempt finished")
        finally:
            reset_attempt(token)
            if human:
                self.human_wait(-1)
        if scope.cancelled_caught and not result:
            assert timeout is not None
            return Outcome(
                StageStatus.FAIL,
                failure_reason=f"stage '{node.id}' timed out after {format_duration(timeout)}",
                failure_class="transient_infra",
            )
        return result[0]

    async def _heartbeat(self, info: AttemptInfo, interval: float) -> None:
        started = trio.current_time()
        while True:
            await trio.sleep(interval)
            elapsed = trio.current_time() - started
            self.emit(
                "stage_heartbeat",
                node_id=info.node_id,
                attempt_id=info.attempt_id,
                elapsed_s=round(elapsed, 3),
                idle_s=0.0,
            )


async def _call_handler(
    handler: Any, node: Node, context: Context, graph: Graph, info: AttemptInfo
) -> Outcome:
    """Handler exceptions become ``fail`` outcomes (S4.12-03); cancellation propagates."""
    try:
        outcome = await handler.execute(node, context, graph, info.logs_root)
    except Exception as exc:
        return Outcome(
            StageStatus.FAIL,
            failure_reason=f"handler raised {type(exc).__name__}: {exc}",
        )
    if not isinstance(outcome, Outcome):
        return Outcome(
            StageStatus.FAIL,
            failure_reason=f"handler returned {type(outcome).__name__}, expected an Outcome",
            failure_class="structural",
        )
    return outcome


def _write_status(path: Path, outcome: Outcome) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, outcome.to_json())


def _archive_previous_attempt(stage_dir: Path, previous: int) -> None:
    """Move the previous attempt's files into ``attempt-<n>/`` so nothing is overwritten."""
    if previous < 1 or not stage_dir.is_dir():
        return
    files = [p for p in stage_dir.iterdir() if not p.name.startswith("attempt-")]
    if not files:
        return
    archive = stage_dir / f"attempt-{previous}"
    archive.mkdir(exist_ok=True)
    for path in files:
        shutil.move(str(path), archive / path.name)
