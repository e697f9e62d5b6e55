"""Codergen stages ingest status files too (contract.md §3): an agent may report via status.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attractor_trio.handlers.base import current_attempt

from .helpers import named, read_json, run_dot

DOT = """digraph s { start [shape=Mdiamond]; done [shape=Msquare]; fixit [prompt="x"]
    agent [prompt="work"]
    start -> agent
    agent -> done [label="ship"]
    agent -> fixit [label="fix"]
    fixit -> done }"""


class WritesStatus:
    """A backend that, like an agent's report_status tool, writes a status file."""

    def __init__(self, where: str, doc: dict[str, Any]) -> None:
        self.where = where
        self.doc = doc

    async def run(self, node: Any, prompt: str, context: Any) -> str:
        attempt = current_attempt()
        assert attempt is not None
        if node.id == "agent":
            target = {
                "canonical": attempt.status_path,
                "workdir": attempt.workdir / "status.json",
                "workdir_dot": attempt.workdir / ".attractor" / "status.json",
            }[self.where]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(self.doc))
        return "done"


async def test_canonical_status_file_decides_routing(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    backend = WritesStatus("canonical", {"outcome": "success", "preferred_label": "fix"})
    result = await run_dot(DOT, root, backend=backend)
    assert result.completed_nodes == ("start", "agent", "fixit", "done")
    [decision] = [e for e in named(root, "status_ingestion_decision") if e["node_id"] == "agent"]
    assert (decision["source"], decision["copied"]) == ("canonical", False)


async def test_workdir_fallback_is_copied_and_removed(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    backend = WritesStatus("workdir_dot", {"outcome": "fail", "failure_reason": "agent gave up"})
    result = await run_dot(DOT, root, backend=backend, workdir=tmp_path)
    assert result.status == "fail" and result.failure_reason == "agent gave up"
    assert not (tmp_path / ".attractor" / "status.json").exists()
    assert read_json(root / "agent" / "status.json")["failure_reason"] == "agent gave up"
    [decision] = [e for e in named(root, "status_ingestion_decision") if e["node_id"] == "agent"]
    assert (decision["source"], decision["copied"]) == ("workdir_dot", True)


async def test_foreign_status_file_is_rejected(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    backend = WritesStatus("canonical", {"outcome": "success", "run_id": "someone-else"})
    result = await run_dot(DOT, root, backend=backend)
    assert result.status == "fail"
    assert "run_id" in result.failure_reason and "someone-else" in result.failure_reason


async def test_no_status_file_means_success(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    (tmp_path / "status.json").write_text('{"outcome": "fail"}')  # stale, from an earlier run
    result = await run_dot(
        DOT.replace('[label="fix"]', '[label="fix", weight=-1]'), root, workdir=tmp_path
    )
    assert result.status == "success"
    assert not (tmp_path / "status.json").exists()  # stale removal (contract.md §3 step 1)
    sources = {e["source"] for e in named(root, "status_ingestion_decision")}
    assert sources == {"none"}
