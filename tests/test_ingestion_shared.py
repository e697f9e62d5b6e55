"""One status-ingestion implementation (issue 20, contract.md §3): the tool handler, the codergen
handler and the CLI agents all go through ``persist.status.ingest_status``, so a rule
holds for every kind of stage or for none."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import attractor_trio
from attractor_trio.persist import status as status_module

from .helpers import named, read_json, run_dot

PACKAGE = Path(attractor_trio.__file__).parent
STATUS = '{"outcome": "fail", "failure_reason": "lint: 3 errors"}'

TOOL = """digraph t { start [shape=Mdiamond]; done [shape=Msquare]
    work [shape=parallelogram, tool_command="cp status.src status.json"]
    start -> work -> done }"""
CODERGEN = """digraph c { start [shape=Mdiamond]; done [shape=Msquare]
    work [prompt="do it"]; start -> work -> done }"""


class _WritesWorkdirStatus:
    """A codergen backend that, like a CLI agent, leaves its status in the workdir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    async def run(self, node: Any, prompt: str, context: Any) -> Any:
        (self.workdir / "status.json").write_text(STATUS)
        return "done"


def _run_kwargs(kind: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    if kind == "tool":
        (tmp_path / "status.src").write_text(STATUS)
        return TOOL, {}
    return CODERGEN, {"backend": _WritesWorkdirStatus(tmp_path)}


@pytest.mark.parametrize("kind", ["tool", "codergen"])
async def test_a_workdir_status_decides_the_same_way_for_every_stage_kind(
    tmp_path: Path, kind: str
) -> None:
    root = tmp_path / "run"
    source, kwargs = _run_kwargs(kind, tmp_path)
    result = await run_dot(source, root, **kwargs)
    assert (result.status, result.failure_reason) == ("fail", "lint: 3 errors")
    [decision] = named(root, "status_ingestion_decision")
    assert (decision["source"], decision["copied"], decision["rejected"]) == ("workdir", True, [])
    assert read_json(root / "work" / "status.json")["failure_reason"] == "lint: 3 errors"
    assert not (tmp_path / "status.json").exists()


@pytest.mark.parametrize("kind", ["tool", "codergen"])
async def test_a_failed_copy_fails_the_stage_with_a_reason_for_every_stage_kind(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid fallback that cannot be copied into place is a ``deterministic`` stage failure
    that says why — not an exception out of the handler (the tool and codergen handlers raised
    before the copies were merged; only the CLI agents handled it)."""

    def disk_full(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(status_module, "write_bytes_atomic", disk_full)
    root = tmp_path / "run"
    source, kwargs = _run_kwargs(kind, tmp_path)
    result = await run_dot(source, root, **kwargs)
    assert result.status == "fail"
    assert "cannot copy the status file into place" in result.failure_reason
    assert "No space left on device" in result.failure_reason
    assert result.failure_class == "deterministic"
    assert len(named(root, "status_ingestion_decision")) == 1
    assert (tmp_path / "status.json").exists()  # copy before removal: nothing was lost


def test_only_the_shared_module_applies_the_ingestion_rules() -> None:
    """Guard: no handler or backend calls ``ingest``/``remove_stale`` itself again (they call
    ``clear_stale_status``/``ingest_status``, defined beside the rules)."""
    users = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            names = {alias.name for alias in node.names}
            if (node.module or "").endswith("persist.status") and names & {
                "ingest",
                "remove_stale",
            }:
                users.add(path.relative_to(PACKAGE).as_posix())
    assert users == set()
