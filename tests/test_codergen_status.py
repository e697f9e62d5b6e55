"""Codergen stages ingest status files too (contract.md §3): an agent may report via status.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from attractor_trio.handlers.base import current_attempt
from attractor_trio.persist import status as status_module

from .helpers import attempt_info, named, read_json, run_dot

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


# --- step 1 in a stage dir the attempt made (contract.md §3; persist/status.py) ---------------


def _recording_unlinks(monkeypatch: Any) -> list[str]:
    """Every path the engine sets out to remove from now on: each removal asks first whether
    the file is there (``persist/status.py``, ``access(2)`` without following a final link),
    and unlinks it if so (the calls still happen)."""
    unlinked: list[str] = []
    real_access = status_module._access

    def recording_access(path: Any, mode: int, **kwargs: Any) -> bool:
        if kwargs.get("follow_symlinks") is False:  # the removal's probe
            unlinked.append(os.fspath(path))
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(status_module, "_access", recording_access)
    return unlinked


async def test_a_stage_dir_the_attempt_made_is_not_cleared_but_the_workdir_is(
    tmp_path: Path, autojump_clock: Any, monkeypatch: Any
) -> None:
    """The attempt's own ``mkdir`` made ``agent/``: nothing can be stale in it, so its
    ``status.json`` is not unlinked before the stage; the two fallbacks in the shared work
    directory are, every attempt."""
    root = tmp_path / "run"
    unlinked = _recording_unlinks(monkeypatch)
    result = await run_dot(DOT.replace('[label="fix"]', '[label="fix", weight=-1]'), root)
    assert result.status == "success"
    assert str(root / "agent" / "status.json") not in unlinked
    assert unlinked.count(str(tmp_path / "status.json")) == 1  # one codergen stage ran
    assert str(tmp_path / ".attractor" / "status.json") in unlinked


async def test_a_stale_status_file_in_an_existing_stage_dir_is_still_removed(
    tmp_path: Path, autojump_clock: Any, monkeypatch: Any
) -> None:
    """A stage dir that exists before the attempt (a resume into it, a reused logs root) may
    hold an old ``status.json`` that no marker accounts for: it is removed, not adopted."""
    root = tmp_path / "run"
    (root / "agent").mkdir(parents=True)
    stale = root / "agent" / "status.json"
    stale.write_text('{"outcome": "fail", "failure_reason": "stale, from an earlier run"}')
    unlinked = _recording_unlinks(monkeypatch)
    result = await run_dot(DOT.replace('[label="fix"]', '[label="fix", weight=-1]'), root)
    assert result.status == "success", result.failure_reason
    assert str(stale) in unlinked
    [decision] = [e for e in named(root, "status_ingestion_decision") if e["node_id"] == "agent"]
    assert decision["source"] == "none"


class FailsFirstWithStatus:
    """Attempt 1 reports ``fail`` (retryable) through the canonical status file; later
    attempts write nothing, so only a stale file could make them fail."""

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, node: Any, prompt: str, context: Any) -> str:
        attempt = current_attempt()
        assert attempt is not None
        if node.id == "agent":
            self.calls += 1
            if self.calls == 1:
                doc = {"outcome": "retry", "failure_reason": "try again"}
                attempt.status_path.write_text(json.dumps(doc))
        return "done"


async def test_a_retry_clears_the_status_file_of_the_attempt_before(
    tmp_path: Path, autojump_clock: Any, monkeypatch: Any
) -> None:
    """Attempt 2 finds the stage dir attempt 1 made and wrote into: not fresh, so its canonical
    path is cleared again, and attempt 1's file cannot decide attempt 2."""
    root = tmp_path / "run"
    dot = DOT.replace('agent [prompt="work"]', 'agent [prompt="work", max_retries=2]')
    unlinked = _recording_unlinks(monkeypatch)
    backend = FailsFirstWithStatus()
    result = await run_dot(
        dot.replace('[label="fix"]', '[label="fix", weight=-1]'), root, backend=backend
    )
    assert result.status == "success", result.failure_reason
    assert backend.calls == 2
    assert unlinked.count(str(root / "agent" / "status.json")) == 1  # attempt 2's, not 1's
    decisions = [e for e in named(root, "status_ingestion_decision") if e["node_id"] == "agent"]
    assert [d["source"] for d in decisions] == ["canonical", "none"]


def test_only_the_attempts_own_mkdir_counts_as_a_fresh_stage_dir(tmp_path: Path) -> None:
    """``None`` (fresh) only when this call's ``mkdir`` made the dir; an existing dir gives its
    listing, and one remade with its parents (the stage root went away) an empty listing:
    ``exist_ok`` cannot say who made it."""
    from attractor_trio.scopes.attempt import _listing_or_making

    assert _listing_or_making(tmp_path / "new") is None
    (tmp_path / "new" / "status.json").write_text("{}")
    assert _listing_or_making(tmp_path / "new") == ["status.json"]
    assert _listing_or_making(tmp_path / "gone" / "stage") == []
    assert (tmp_path / "gone" / "stage").is_dir()


def test_the_status_path_the_engine_made_is_handed_out_for_its_stage_dir_only(
    tmp_path: Path,
) -> None:
    """``AttemptInfo.status_path`` gives the engine's own object (made once per node) while the
    stage dir is the one it was made for, and joins a fresh one for any other stage dir."""
    import attrs

    stage_dir = tmp_path / "n"
    known = stage_dir / "status.json"
    info = attempt_info(tmp_path, stage_dir=stage_dir, known_status_path=(stage_dir, known))
    assert info.status_path is known
    moved = attrs.evolve(info, stage_dir=tmp_path / "elsewhere")
    assert moved.status_path == tmp_path / "elsewhere" / "status.json"
    assert attrs.evolve(info, known_status_path=None).status_path == known
