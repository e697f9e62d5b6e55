"""The logs-root mirror of a remote attempt (``backends/executors/_staging.py``, contract.md §10):
what the driver sends carries no logs-root path, the worker's mirror gets the stage dir's inputs,
and what the stage wrote there comes back to the same place. No Ray needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from attractor_trio.backends.executors._staging import (
    SCRATCH,
    FileSink,
    Outbound,
    changed_files,
    place_inputs,
    substitute_all,
    substitute_env,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    logs = tmp_path / "run"
    (logs / "t0").mkdir(parents=True)
    (logs / ".tool-claims").mkdir()
    return logs


def test_logs_root_paths_become_the_placeholder_and_note_their_dirs(root: Path) -> None:
    out = Outbound(root, root.parent, root / "t0")
    assert out.rewrite(str(root)) == SCRATCH
    assert out.rewrite(f"{root}/t0/status.json") == f"{SCRATCH}/t0/status.json"
    assert out.rewrite(f"--out={root}/t0/r.md") == f"--out={SCRATCH}/t0/r.md"
    assert out.rewrite(f"{root}/.tool-claims/t0-1-abc") == f"{SCRATCH}/.tool-claims/t0-1-abc"
    # The workdir (here the logs root's parent) and look-alike paths are not the logs root's.
    assert out.rewrite(str(root.parent)) == str(root.parent)
    assert out.rewrite(f"{root.parent}/status.json") == f"{root.parent}/status.json"
    assert out.rewrite(f"{root}2/x") == f"{root}2/x"
    assert out.dirs == {".", "t0", ".tool-claims"}


def test_a_workdir_inside_the_logs_root_stays_shared(root: Path) -> None:
    """A git workspace's worktree lives in the logs root; it is the work directory, not logs."""
    worktree = root / "worktree"
    out = Outbound(root, worktree, root / "t0")
    assert out.rewrite(str(worktree)) == str(worktree)
    assert out.rewrite(f"{worktree}/status.json") == f"{worktree}/status.json"
    assert out.rewrite(f"{root}/t0") == f"{SCRATCH}/t0"


def test_a_relative_logs_root_is_rewritten_in_both_spellings(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(root.parent)
    out = Outbound(Path("run"), Path("."), Path("run/t0"))
    assert out.rewrite("run/t0/status.json") == f"{SCRATCH}/t0/status.json"
    assert out.rewrite(f"{root}/t0") == f"{SCRATCH}/t0"
    assert out.rewrite("rerun/t0") == "rerun/t0"


def test_inputs_are_the_stage_dirs_own_files_but_not_the_logs(root: Path) -> None:
    stage = root / "t0"
    (stage / "prompt.md").write_text("do it")
    (stage / "stdout.log").write_text("old output")
    (stage / "sub").mkdir()
    (stage / "sub" / "deep.txt").write_text("not an input")
    out = Outbound(root, root.parent, stage)
    inputs = out.inputs(exclude=[stage / "stdout.log", stage / "stderr.log"])
    assert inputs == [("t0/prompt.md", b"do it")]


def test_the_round_trip_ships_back_only_new_or_changed_files(root: Path, tmp_path: Path) -> None:
    """Worker side: the mirror holds the inputs; the stage's writes (also in new subdirs) come
    back; the driver writes them under the logs root; untouched inputs do not travel."""
    out = Outbound(root, root.parent, root / "t0")
    env = {"ATTRACTOR_STATUS_PATH": out.rewrite(f"{root}/t0/status.json")}
    argv = ["bash", "-c", "x", out.rewrite(f"{root}/t0/.tool-exit")]
    mirror = tmp_path / "node" / "logs"
    before = place_inputs(mirror, sorted(out.dirs), [("t0/prompt.md", b"do it")])
    assert substitute_env(env, mirror)["ATTRACTOR_STATUS_PATH"] == f"{mirror}/t0/status.json"
    assert substitute_all(argv, mirror)[3] == f"{mirror}/t0/.tool-exit"
    assert (mirror / "t0" / "prompt.md").read_text() == "do it"
    (mirror / "t0" / "status.json").write_text('{"outcome": "success"}')
    (mirror / "t0" / "out").mkdir()
    (mirror / "t0" / "out" / "big.bin").write_bytes(b"x" * (3 * 1024 * 1024 + 5))
    sink = FileSink(root)
    items = list(changed_files(mirror, before))
    assert len([i for i in items if i["path"] == "t0/out/big.bin"]) == 4  # 1 MiB chunks
    for item in items:
        sink.receive(item)
    assert sorted(sink.written) == ["t0/out/big.bin", "t0/status.json"]
    assert (root / "t0" / "status.json").read_text() == '{"outcome": "success"}'
    assert (root / "t0" / "out" / "big.bin").stat().st_size == 3 * 1024 * 1024 + 5
    assert not (root / "t0" / "prompt.md").exists()  # an unchanged input is not written back


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "t0/../../x"])
def test_a_path_leaving_the_logs_root_is_refused(root: Path, path: str) -> None:
    with pytest.raises(ValueError, match="outside the stage mirror"):
        FileSink(root).receive({"path": path, "data": b"x", "last": True})
