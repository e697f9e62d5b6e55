"""Work-directory snapshots and patches for ``executor.upload_workdir`` (contract.md §10), without
Ray: the driver's snapshot, the node's copy, the diff after the stage, the driver's apply."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attractor_trio.backends.executors import _workdir
from attractor_trio.backends.executors._staging import SCRATCH
from attractor_trio.backends.executors._workdir import (
    Entry,
    Rules,
    Snapshot,
    apply_patch,
    diff,
    materialize,
    rebase_argv,
    rebase_env,
    take_snapshot,
)
from attractor_trio.backends.executors.base import WorkdirRefused

MB = 2**20


def snap(root: Path, rules: Rules | None = None, limit: int = 64 * MB) -> Snapshot:
    return take_snapshot(root, rules or Rules(), limit=limit)


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)


def shipped(root: Path, rules: Rules | None = None) -> set[str]:
    return {p for p, e in snap(root, rules).tree.items() if e.kind != "dir"}


def remote_copy(snapshot: Snapshot, tmp_path: Path) -> Path:
    node = tmp_path / "node"
    materialize(snapshot, node)
    return node


# --- what travels -------------------------------------------------------------------------------


def test_gitignore_files_at_every_level_are_honoured(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".gitignore": "*.log\n/build/\nsecret*\n!secret.pub\n",
            "a.py": "x",
            "run.log": "noise",
            "build/out.o": "obj",
            "src/build/keep.txt": "not the root build dir",
            "secret.key": "k",
            "secret.pub": "p",
            "src/.gitignore": "gen/\n*.tmp\n",
            "src/gen/x.py": "generated",
            "src/m.tmp": "t",
            "src/m.py": "m",
            "other/m.tmp": "only src ignores *.tmp",
        },
    )
    assert shipped(tmp_path) == {
        ".gitignore",
        "a.py",
        "src/build/keep.txt",
        "secret.pub",
        "src/.gitignore",
        "src/m.py",
        "other/m.tmp",
    }


def test_git_metadata_and_the_runs_logs_root_never_travel(tmp_path: Path) -> None:
    write(tmp_path, {".git/HEAD": "ref", "sub/.git": "gitdir: x", "runs/r1/a.json": "{}", "f": ""})
    assert shipped(tmp_path, Rules(skip=("runs/r1",))) == {"f"}


def test_upload_excludes_are_final_a_gitignore_negation_cannot_bring_a_secret_back(
    tmp_path: Path,
) -> None:
    write(tmp_path, {".gitignore": "!.env\n", ".env": "TOKEN=x", "deep/.env": "y", "ok": ""})
    assert shipped(tmp_path, Rules(excludes=(".env",))) == {".gitignore", "ok"}


@pytest.mark.parametrize(
    ("pattern", "path", "ignored"),
    [
        ("**/cache", "a/b/cache", True),
        ("a/**/z", "a/z", True),
        ("a/**/z", "a/b/c/z", True),
        ("logs/**", "logs/x/y", True),
        ("*.py[co]", "m.pyc", True),
        ("*.py[!co]", "m.pyc", False),
        ("doc/*.txt", "doc/sub/a.txt", False),
        ("\\#hash", "#hash", True),
        ("# comment", "# comment", False),
        ("f?le", "file", True),
        ("f?le", "f/le", False),
    ],
)
def test_gitignore_glob_syntax(tmp_path: Path, pattern: str, path: str, ignored: bool) -> None:
    write(tmp_path, {".gitignore": pattern + "\n", path: "x"})
    assert (path not in shipped(tmp_path)) is ignored


def test_over_the_limit_is_refused_naming_the_size_and_the_biggest_files(tmp_path: Path) -> None:
    write(tmp_path, {"big.bin": b"\0" * (3 * MB), "small": "x"})
    with pytest.raises(WorkdirRefused) as caught:
        snap(tmp_path, limit=2 * MB)
    message = str(caught.value)
    assert "3.0 MiB" in message and "big.bin (3.0 MiB)" in message
    assert "executor.upload_limit_mb" in message and "\n" not in message
    assert caught.value.failure_class == "deterministic"


def test_the_same_content_has_the_same_key_and_a_change_a_new_one(tmp_path: Path) -> None:
    write(tmp_path, {"a": "1"})
    first, again = snap(tmp_path), snap(tmp_path)
    assert first.key == again.key
    (tmp_path / "a").write_text("2")
    assert snap(tmp_path).key != first.key


def test_a_file_removed_while_the_snapshot_is_taken_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, {"a": "1", "b": "2"})
    walk = _workdir._walk

    def walk_then_remove(root: Path, rules: Rules, *, learn: bool) -> Any:
        found = walk(root, rules, learn=learn)
        (root / "b").unlink()  # e.g. an agent-loop file tool on the driver
        return found

    monkeypatch.setattr(_workdir, "_walk", walk_then_remove)
    assert set(snap(tmp_path).tree) == {"a"}


# --- the round trip -----------------------------------------------------------------------------


def test_a_stage_s_changes_come_back_binary_safe_with_modes_and_symlinks(tmp_path: Path) -> None:
    driver = tmp_path / "driver"
    write(driver, {"keep": "same", "edit": "old", "gone": "bye", "dir/x": "x", "tool.sh": "#!"})
    snapshot = snap(driver)
    node = remote_copy(snapshot, tmp_path)
    (node / "edit").write_bytes(b"\0\xff new")
    (node / "gone").unlink()
    shutil.rmtree(node / "dir")
    (node / "tool.sh").chmod(0o755)
    write(node, {"new/deep/file.bin": bytes(range(256))})
    os.symlink("new/deep/file.bin", node / "link")
    patch = diff(snapshot, node, limit=64 * MB)
    assert sorted(c.path for c in patch.changes) == [
        "dir",
        "dir/x",
        "edit",
        "gone",
        "link",
        "new",
        "new/deep",
        "new/deep/file.bin",
        "tool.sh",
    ]
    applied = apply_patch(patch, driver)
    assert len(applied) == 9
    assert (driver / "edit").read_bytes() == b"\0\xff new"
    assert not (driver / "gone").exists() and not (driver / "dir").exists()
    assert stat.S_IMODE((driver / "tool.sh").stat().st_mode) == 0o755
    assert os.readlink(driver / "link") == "new/deep/file.bin"
    assert (driver / "link").read_bytes() == bytes(range(256))
    assert snap(driver).tree == snap(node).tree


def test_ignored_files_made_by_the_stage_do_not_come_back(tmp_path: Path) -> None:
    driver = tmp_path / "driver"
    write(driver, {".gitignore": "*.o\n", "a.c": "int"})
    snapshot = snap(driver)
    node = remote_copy(snapshot, tmp_path)
    write(node, {"a.o": "obj", "b.c": "new", ".gitignore": ""})  # a new .gitignore changes nothing
    patch = diff(snapshot, node, limit=MB)
    assert sorted(c.path for c in patch.changes) == [".gitignore", "b.c"]


def test_a_driver_side_edit_since_the_snapshot_fails_the_apply_and_changes_nothing(
    tmp_path: Path,
) -> None:
    driver = tmp_path / "driver"
    write(driver, {"shared.txt": "v1", "mine.txt": "m"})
    snapshot = snap(driver)
    node = remote_copy(snapshot, tmp_path)
    write(node, {"shared.txt": "stage", "mine.txt": "stage too", "added": "a"})
    (driver / "shared.txt").write_text("driver")  # e.g. another fan-out branch's patch
    with pytest.raises(WorkdirRefused) as caught:
        apply_patch(diff(snapshot, node, limit=MB), driver)
    assert "conflicting: shared.txt" in str(caught.value)
    assert caught.value.failure_class == "deterministic"
    assert (driver / "mine.txt").read_text() == "m" and not (driver / "added").exists()


def test_the_same_change_on_both_sides_is_no_conflict(tmp_path: Path) -> None:
    driver = tmp_path / "driver"
    write(driver, {"f": "v1"})
    snapshot = snap(driver)
    node = remote_copy(snapshot, tmp_path)
    (node / "f").write_text("v2")
    (driver / "f").write_text("v2")
    assert apply_patch(diff(snapshot, node, limit=MB), driver) == []


def test_two_branches_patches_apply_in_order_and_the_second_conflicts_on_a_shared_file(
    tmp_path: Path,
) -> None:
    driver = tmp_path / "driver"
    write(driver, {"a": "0", "b": "0", "both": "0"})
    snapshot = snap(driver)
    one, two = tmp_path / "one", tmp_path / "two"
    materialize(snapshot, one)
    materialize(snapshot, two)
    write(one, {"a": "1", "both": "1"})
    write(two, {"b": "2", "both": "2"})
    apply_patch(diff(snapshot, one, limit=MB), driver)
    with pytest.raises(WorkdirRefused, match="conflicting: both"):
        apply_patch(diff(snapshot, two, limit=MB), driver)
    assert {p: (driver / p).read_text() for p in ("a", "b", "both")} == {
        "a": "1",
        "b": "0",
        "both": "1",
    }


def test_a_patch_never_writes_through_a_symlinked_directory(tmp_path: Path) -> None:
    driver, outside = tmp_path / "driver", tmp_path / "outside"
    write(driver, {"d/x": "x"})
    outside.mkdir()
    snapshot = snap(driver)
    node = remote_copy(snapshot, tmp_path)
    write(node, {"d/y": "y"})
    shutil.rmtree(driver / "d")
    os.symlink(outside, driver / "d")
    with pytest.raises(WorkdirRefused, match="parent d is not a directory"):
        apply_patch(diff(snapshot, node, limit=MB), driver)
    assert not (outside / "y").exists()


def test_a_stage_s_changes_over_the_limit_are_refused(tmp_path: Path) -> None:
    driver = tmp_path / "driver"
    write(driver, {"f": ""})
    snapshot = snap(driver)
    node = remote_copy(snapshot, tmp_path)
    write(node, {"big": b"\0" * (2 * MB)})
    with pytest.raises(WorkdirRefused, match=r"exceed executor\.upload_limit_mb"):
        diff(snapshot, node, limit=MB)


def test_files_the_snapshot_never_carried_stay_with_their_directory(tmp_path: Path) -> None:
    driver = tmp_path / "driver"
    write(driver, {".gitignore": "*.pyc\n", "pkg/m.py": "m", "pkg/m.pyc": "bytecode"})
    snapshot = snap(driver)
    node = remote_copy(snapshot, tmp_path)
    shutil.rmtree(node / "pkg")
    apply_patch(diff(snapshot, node, limit=MB), driver)
    assert sorted(p.name for p in (driver / "pkg").iterdir()) == ["m.pyc"]


def test_env_paths_move_to_the_node_s_copy() -> None:
    env = {
        "ATTRACTOR_WORKDIR": "/w",
        "KILROY_STAGE_STATUS_FALLBACK_PATH": "/w/status.json",
        "ATTRACTOR_STAGE_DIR": f"{SCRATCH}/t0",  # an inner logs root arrives as the placeholder
        "OTHER": "/wx",
        "HOME": "/home/u",
    }
    assert rebase_env(env, "/w", "/n/copy") == {
        "ATTRACTOR_WORKDIR": "/n/copy",
        "KILROY_STAGE_STATUS_FALLBACK_PATH": "/n/copy/status.json",
        "ATTRACTOR_STAGE_DIR": f"{SCRATCH}/t0",
        "OTHER": "/wx",
        "HOME": "/home/u",
    }


def test_argv_words_in_the_work_directory_move_too() -> None:
    """A CLI agent's ``{workdir}`` word: whole words only."""
    argv = ["agent", "/w", "-C", "/w/src", f"{SCRATCH}/t0/prompt.md", "--dir=/w", "/wx"]
    assert rebase_argv(argv, "/w", "/n/copy") == [
        "agent",
        "/n/copy",
        "-C",
        "/n/copy/src",
        f"{SCRATCH}/t0/prompt.md",
        "--dir=/w",
        "/wx",
    ]


# --- apply(diff(a, b), a) == b for random trees --------------------------------------------------

_NAMES = st.sampled_from(["a", "b", "c", ".d", "é", "sp ace"])
_LEAF = st.one_of(
    st.tuples(st.just("file"), st.binary(max_size=40), st.sampled_from([0o644, 0o755, 0o600])),
    st.tuples(st.just("link"), st.sampled_from(["a", "../x", "/abs/t", "b/c"]), st.just(0)),
    st.tuples(st.just("dir"), st.just(b""), st.sampled_from([0o755, 0o700])),
)
_TREES = st.dictionaries(st.lists(_NAMES, min_size=1, max_size=3).map("/".join), _LEAF, max_size=8)


def build(root: Path, spec: dict[str, tuple[str, object, int]]) -> None:
    """Create ``spec`` under ``root``; a path below a non-directory leaf is dropped."""
    root.mkdir()
    for path in sorted(spec, key=lambda p: p.count("/")):
        kind, content, mode = spec[path]
        target = root / path
        blocked = [a for a in _parents(path) if os.path.lexists(root / a)]
        if any((root / a).is_symlink() or not (root / a).is_dir() for a in blocked):
            continue
        if os.path.lexists(target):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "file":
            assert isinstance(content, bytes)
            target.write_bytes(content)
            target.chmod(mode)
        elif kind == "link":
            os.symlink(str(content), target)
        else:
            target.mkdir()
            target.chmod(mode)


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def tree_of(root: Path) -> dict[str, Entry]:
    return dict(snap(root).tree)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=_TREES, after=_TREES)
def test_apply_of_the_diff_turns_a_into_b(
    before: dict[str, tuple[str, object, int]], after: dict[str, tuple[str, object, int]]
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        a, b = Path(scratch) / "a", Path(scratch) / "b"
        build(a, before)
        build(b, after)
        patch = diff(snap(a), b, limit=MB)
        apply_patch(patch, a)
        assert tree_of(a) == tree_of(b)
        assert diff(snap(a), b, limit=MB).changes == ()
