"""Exactly once across crashes (contract.md §10): a SIGKILL at every file-system commit point.

The engine process kills itself right after its Nth commit (``os.replace``/``os.rename``, the
checkpoint's ``exchange.rename_exchange``, or the ``os.link`` that creates ``final.json`` and
the lock) — the instants at which what is on
disk changes. For every N a fresh run is killed there and resumed until it finishes; each tool
stage appends its node id to a ledger, which must list every stage exactly once. The kill
between a stage's finished marker and the checkpoint rename is among them (it used to run the
stage a second time). The randomized variant kills the resumes too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from attractor_trio.persist.attempt_marker import ATTEMPT_MARKER, read_attempt_marker

STAGES = ("t1", "t2", "t3")

# argv[1]: N (die right after the Nth commit) or -N (right before it); 0 never dies.
_KILL_AT_NTH_COMMIT = """
import os, signal, sys
target, before = abs(int(sys.argv[1])), sys.argv[1].startswith("-")
count = [0]
def wrap(real):
    def commit(*args, **kwargs):
        count[0] += 1
        if count[0] == target and before:
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if count[0] == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return commit
os.replace, os.rename, os.link = wrap(os.replace), wrap(os.rename), wrap(os.link)
from attractor_trio.persist import exchange  # the checkpoint's names swapped in one call
exchange.rename_exchange = wrap(exchange.rename_exchange)
from attractor_trio.cli.main import main
main(sys.argv[2:], prog_name="attractor-trio")
"""


def _pipeline(tmp_path: Path) -> None:
    nodes = "\n".join(
        f'    {n} [tool_command="echo $ATTRACTOR_NODE_ID >> ledger.txt"]' for n in STAGES
    )
    (tmp_path / "p.dot").write_text(
        "digraph once {\n    node [shape=parallelogram]\n"
        "    start [shape=Mdiamond]\n    done [shape=Msquare]\n"
        f"{nodes}\n    start -> {' -> '.join(STAGES)} -> done\n}}\n"
    )


def _cli(tmp_path: Path, kill_at: int, script: str = _KILL_AT_NTH_COMMIT) -> list[str]:
    """``run`` while the run has no manifest yet (``run`` refuses one that has), else ``resume``;
    ``kill_at=0`` never kills."""
    root = tmp_path / "run"
    common = ["--quiet", "--stall-timeout", "0", "--workdir", str(tmp_path), "--simulate"]
    if (root / "manifest.json").exists():
        args = ["resume", str(root), *common]
    else:
        args = ["run", str(tmp_path / "p.dot"), "--logs-root", str(root), *common]
    return [sys.executable, "-c", script, str(kill_at), *args]


def _attempt(tmp_path: Path, kill_at: int, script: str = _KILL_AT_NTH_COMMIT) -> int:
    done = subprocess.run(
        _cli(tmp_path, kill_at, script), capture_output=True, text=True, timeout=60
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode


def _finish_and_check(tmp_path: Path, stages: list[str] | None = None) -> None:
    root = tmp_path / "run"
    if not (root / "final.json").exists():
        assert _attempt(tmp_path, 0) == 0
    final = json.loads((root / "final.json").read_text())
    assert final["status"] == "success", final
    ledger = (tmp_path / "ledger.txt").read_text().split()
    assert ledger == (list(STAGES) if stages is None else stages), ledger


@pytest.mark.slow
def test_a_kill_after_every_commit_point_then_resume_runs_every_stage_once(
    tmp_path: Path,
) -> None:
    """Exhaustive: N = 1, 2, … until a run gets through without reaching its Nth commit."""
    _kill_after_every_commit_point(tmp_path)


@pytest.mark.slow
@pytest.mark.noop_fsync
@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_on_tmpfs_a_kill_after_every_commit_point_then_resume_runs_every_stage_once() -> None:
    """The same on tmpfs, where the engine issues no fsync (contract.md §2): the renames and
    their order are what a kill observes, and they are unchanged."""
    shm = Path(tempfile.mkdtemp(prefix="attractor-trio-test-", dir="/dev/shm"))
    try:
        _kill_after_every_commit_point(shm)
    finally:
        shutil.rmtree(shm, ignore_errors=True)


def _kill_after_every_commit_point(tmp_path: Path) -> None:
    killed_at = []
    for n in range(1, 200):
        case = tmp_path / f"kill-{n}"
        case.mkdir()
        _pipeline(case)
        if _attempt(case, n) == 0:
            break
        killed_at.append(n)
        _finish_and_check(case)
    assert len(killed_at) >= 15, f"only {len(killed_at)} commit points: {killed_at}"
    assert killed_at == list(range(1, len(killed_at) + 1))


@pytest.mark.slow
def test_random_kills_of_the_run_and_its_resumes_run_every_stage_once(tmp_path: Path) -> None:
    """Randomized: each process (the run, then every resume) dies right before or right after
    a random commit."""
    rng = random.Random(int(os.environ.get("ATTRACTOR_CRASH_SEED", "20261206")))
    _pipeline(tmp_path)
    kills = 0
    for _ in range(4):
        if _attempt(tmp_path, rng.choice((1, -1)) * rng.randint(1, 12)) == 0:
            break
        kills += 1
    assert kills >= 2, "the run finished before the kills landed"
    _finish_and_check(tmp_path)


# argv[1]: N (die right after the Nth file created in place, still empty) or -N (die halfway
# through its write: a torn file); 0 never dies. The files a stage writes in place are those
# of a stage dir its attempt made (contract.md §2).
_KILL_AT_NTH_CREATE = """
import os, signal, sys
target, torn = abs(int(sys.argv[1])), sys.argv[1].startswith("-")
IN_PLACE = ("prompt.md", "response.md", ".attempt.json")
count, doomed = [0], set()
real_open, real_write = os.open, os.write
def open_(path, flags, *args, **kwargs):
    fd = real_open(path, flags, *args, **kwargs)
    if flags & os.O_EXCL and os.path.basename(os.fspath(path)) in IN_PLACE:
        count[0] += 1
        if count[0] == target:
            if not torn:
                os.kill(os.getpid(), signal.SIGKILL)
            doomed.add(fd)
    return fd
def write(fd, data):
    if fd in doomed:
        real_write(fd, bytes(data)[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(fd, data)
os.open, os.write = open_, write
from attractor_trio.cli.main import main
main(sys.argv[2:], prog_name="attractor-trio")
"""


def _mixed_pipeline(tmp_path: Path) -> None:
    """Tool stages (their start marker is created in place) around a simulated codergen stage
    (``prompt.md``, ``response.md`` and its finished marker)."""
    (tmp_path / "p.dot").write_text(
        "digraph inplace {\n"
        "    start [shape=Mdiamond]\n    done [shape=Msquare]\n"
        '    t1 [shape=parallelogram, tool_command="echo t1 >> ledger.txt"]\n'
        '    c1 [shape=box, prompt="plan the work of c1"]\n'
        '    t2 [shape=parallelogram, tool_command="echo t2 >> ledger.txt"]\n'
        "    start -> t1 -> c1 -> t2 -> done\n}\n"
    )


def _no_torn_json_but_in_place_markers(root: Path) -> list[Path]:
    """Every JSON document of the run parses, except ``.attempt.json`` files that read as
    absent (contract.md §2); returns those."""
    absent = []
    for path in root.rglob("*.json"):
        if path.name == ATTEMPT_MARKER and read_attempt_marker(path.parent) is None:
            absent.append(path)
            continue
        json.loads(path.read_text())
    return absent


@pytest.mark.slow
def test_a_kill_while_writing_each_in_place_file_then_resume_runs_every_stage_once(
    tmp_path: Path,
) -> None:
    """Exhaustive over the files created in place: for N = 1, 2, … a run dies right after
    creating its Nth such file (empty), and another halfway through writing it (torn); each
    is resumed to the end. An empty or torn marker reads as absent, so its stage runs again
    as a new attempt (nothing had committed it), every tool stage runs exactly once, and in
    the end every file is whole."""
    killed_at, absent_markers = [], 0
    for n in range(1, 50):
        outcomes = []
        for kill_at in (n, -n):
            case = tmp_path / f"kill{kill_at}"
            case.mkdir()
            _mixed_pipeline(case)
            outcomes.append(_attempt(case, kill_at, _KILL_AT_NTH_CREATE))
            absent_markers += len(_no_torn_json_but_in_place_markers(case / "run"))
            if outcomes[-1] == 0:
                continue
            _finish_and_check(case, ["t1", "t2"])
            run = case / "run"
            assert _no_torn_json_but_in_place_markers(run) == []
            assert (run / "c1" / "response.md").read_text() == "[Simulated] Response for stage: c1"
            assert (run / "c1" / "prompt.md").read_text().endswith("plan the work of c1")
        if outcomes == [0, 0]:
            break
        assert outcomes == [-signal.SIGKILL] * 2, (n, outcomes)
        killed_at.append(n)
    assert killed_at == [1, 2, 3, 4, 5], killed_at  # t1's marker, c1's three files, t2's marker
    assert absent_markers >= 6, "the kills did not leave the empty and torn markers expected"
