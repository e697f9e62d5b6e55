"""Shared test helpers: run DOT text through the public API and read the run directory back."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio.backends.provider import ApiBackend
from attractor_trio.backends.simulate import SimulationBackend, parse_sim_script
from attractor_trio.core.attempt import AttemptInfo
from attractor_trio.dot import parse_dot
from attractor_trio.dot.graph import Graph
from attractor_trio.dot.transforms import apply_transforms
from attractor_trio.events import EventSink
from attractor_trio.runconfig import ProviderConfig, RunConfig
from attractor_trio.scopes import engine


def graph_of(source: str) -> Graph:
    return apply_transforms(parse_dot(source))


def sim(steps: dict[str, Any] | None = None) -> SimulationBackend:
    """A simulation backend scripted with ``{node_id: [step, ...]}``."""
    return SimulationBackend(parse_sim_script({"nodes": steps or {}}) if steps else None)


async def run_dot(
    source: str, logs_root: Path, *, steps: dict[str, Any] | None = None, **kwargs: Any
) -> engine.RunResult:
    kwargs.setdefault("backend", sim(steps))
    kwargs.setdefault("heartbeat_interval", None)
    kwargs.setdefault("workdir", logs_root.parent)
    return await engine.run(graph_of(source), logs_root=logs_root, **kwargs)


#: Two codergen stages in a chain: the least run with a stage boundary between stages.
TWO_STAGE_CHAIN = """digraph G {
    start [shape=Mdiamond]
    exit  [shape=Msquare]
    a [shape=box, prompt="A"]
    b [shape=box, prompt="B"]
    start -> a -> b -> exit
}"""


def fan_out_dot(branches: int) -> str:
    """``start -> par`` fanning out to ``branches`` codergen nodes ``b0…`` (all at once), then
    ``join -> done``."""
    lines = [
        "digraph F {",
        "  start [shape=Mdiamond]; done [shape=Msquare]",
        f"  par [shape=component, max_parallel={branches}]; join [shape=tripleoctagon]",
        "  start -> par; join -> done",
    ]
    lines += [f'  b{i} [shape=box, prompt="p"]; par -> b{i} -> join' for i in range(branches)]
    return "\n".join([*lines, "}"])


def when_every_branch_started(branches: int, action: Callable[[], None]) -> EventSink:
    """An event sink that calls ``action`` once, when the ``branches``-th branch attempt has
    started (every branch of a fan-out is then in its stage)."""
    started = 0

    def sink(event: dict[str, Any]) -> None:
        nonlocal started
        if event["event"] == "stage_attempt_started" and event["branch"]:
            started += 1
            if started == branches:
                action()

    return sink


async def run_fan_out_cancelled_once_all_run(root: Path, branches: int) -> engine.RunResult:
    """A ``branches``-wide fan-out of 60 s simulated stages, cancelled once every branch's
    attempt has started; asserts it ended ``canceled`` with a ``canceled`` status per branch."""
    handle = engine.RunHandle()
    cancel = when_every_branch_started(branches, lambda: handle.cancel("stop requested"))
    steps = {f"b{i}": [{"delay": "60s"}] for i in range(branches)}
    with trio.fail_after(30):
        result = await run_dot(
            fan_out_dot(branches), root, steps=steps, handle=handle, sinks=[cancel]
        )
    assert result.status == "canceled"
    for index in range(branches):
        status = read_json(root / "parallel" / "par" / f"b{index}" / f"b{index}" / "status.json")
        assert status["failure_class"] == "canceled"
    return result


def assert_in_no_file(root: Path, secret: str) -> None:
    """No file under ``root`` contains ``secret`` (read as text, undecodable bytes replaced)."""
    for path in root.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


def anthropic_backend_keyed_in_its_env(base_url: str, key: str, timeout: float) -> ApiBackend:
    """An Anthropic-kind backend against ``base_url`` whose key (``A_KEY``) is only in the
    backend's own environment, never in the process's."""
    provider = ProviderConfig(
        name="a",
        kind="anthropic",
        model="claude-test",
        base_url=base_url,
        api_key_env="A_KEY",
        timeout=timeout,
    )
    return ApiBackend(RunConfig(backend="a", providers={"a": provider}), "a", env={"A_KEY": key})


def attempt_info(root: Path, node_id: str = "n", **changes: Any) -> AttemptInfo:
    """A first attempt (of one) at ``node_id`` of run ``r``: logs root ``root``, stage dir
    ``root/node_id``, work directory ``root``; ``changes`` override any field."""
    fields: dict[str, Any] = {
        "run_id": "r",
        "node_id": node_id,
        "attempt": 1,
        "max_attempts": 1,
        "attempt_id": f"{node_id}-1",
        "logs_root": root,
        "stage_dir": root / node_id,
        "workdir": root,
    }
    return AttemptInfo(**{**fields, **changes})


def events(logs_root: Path) -> list[dict[str, Any]]:
    lines = (logs_root / "progress.ndjson").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def named(logs_root: Path, name: str) -> list[dict[str, Any]]:
    return [e for e in events(logs_root) if e["event"] == name]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def assert_envelope_invariants(logs_root: Path) -> None:
    """contract.md §4 invariants that hold for every run."""
    evs = events(logs_root)
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)), "seq must have no gaps"
    from attractor_trio.recovery import segments

    for segment in segments(evs):  # a resumed run: one terminal event per segment
        terminal = [e for e in segment if e["event"] in ("pipeline_completed", "pipeline_failed")]
        assert len(terminal) == 1 and segment[-1] is terminal[0], "one terminal event, last"
    assert (logs_root / "final.json").exists()
    finished: set[str] = set()
    for event in evs:
        if event["event"] == "stage_attempt_finished":
            finished.add(event["attempt_id"])
        if event["event"] == "stage_heartbeat":
            assert event["attempt_id"] not in finished, "heartbeat after its attempt finished"


def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Patch ``os.fsync`` to note ``"file"`` or ``"dir"`` for each call (and still sync)."""
    kinds: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        kinds.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return kinds


def fail_fsyncs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patch ``os.fsync`` to fail as a dying disk does (``EIO``)."""

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error (simulated)")

    monkeypatch.setattr(os, "fsync", failing_fsync)
