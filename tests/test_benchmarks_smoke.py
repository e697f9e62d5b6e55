"""``benchmarks/engine.py`` still runs: a tiny pipeline end to end, so the script cannot rot.

A subprocess on purpose: the benchmark patches ``os.fsync`` process-wide and calls
``trio.run`` itself, neither of which belongs inside the test process.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "engine.py"


def _run_benchmark(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_engine_benchmark_reports_and_cleans_up(tmp_path: Path) -> None:
    scratch = tmp_path / "bench"
    scratch.mkdir()  # it existed before, so the script must leave it (and only it) behind
    done = _run_benchmark("--stages", "20", "--repeat", "1", "--tmp-dir", str(scratch))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "file creation where the runs go:" in out and "µs per mkdir or create" in out
    assert "per stage: median" in out
    # PASS or FAIL on a disk; on a tmpfs (a machine whose /tmp is one) why it does not apply.
    assert "target ≤ 1.5 ms durable: " in out
    assert "fsyncs per stage" in out and "ms per fsync" in out
    assert "no-fsync run:" in out
    assert "bare-write floor:" in out
    assert "py-attractor" in out  # its ratio, or that it was skipped
    assert list(scratch.iterdir()) == []  # every run directory was removed


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
@pytest.mark.noop_fsync
def test_engine_benchmark_on_tmpfs_judges_the_ratio_with_py_attractor() -> None:
    """``--tmpfs``: where fsync is free the durable target does not apply; the peer ratio does."""
    done = _run_benchmark("--stages", "20", "--repeat", "1", "--tmpfs")
    if "is not a tmpfs here" in done.stderr:
        pytest.skip("/dev/shm is not a tmpfs on this machine")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "run dirs under /dev/shm (tmpfs" in out
    assert "the target is for a real disk" in out
    # No silent 0: the engine skips tmpfs's no-op fsync (contract.md §2), and the line says so.
    assert "0 fsyncs per stage — none issued: the run directories are on tmpfs" in out
    try:
        importlib.import_module("attractor")
    except ImportError:
        assert "py-attractor not installed: skipped" in out
    else:
        assert re.search(r"theirs/ours: \d+\.\d\d .* target ≥ 1\.2: (PASS|FAIL)", out), out


@pytest.mark.slow
def test_engine_benchmark_rejects_a_pipeline_without_stages() -> None:
    done = _run_benchmark("--stages", "0")
    assert done.returncode == 2
    assert "--stages and --repeat must be at least 1" in done.stderr


@pytest.mark.slow
def test_fanout_halves_reports_both_halves_and_cleans_up(tmp_path: Path) -> None:
    """``benchmarks/fanout_halves.py`` (branch iS1's figures) still runs, on this tree."""
    scratch = tmp_path / "bench"
    scratch.mkdir()
    script = SCRIPT.with_name("fanout_halves.py")
    done = subprocess.run(
        [sys.executable, str(script), "--branches", "20", "--tmp-dir", str(scratch)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"20 branches: window \d+\.\d+ s; work starts \+", done.stdout)
    assert re.search(r"start half \d+\.\d+ ms, finish half \d+\.\d+ ms", done.stdout)
    assert list(scratch.iterdir()) == []


def _run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT.with_name(name)), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_stage_floor_reports_both_layouts_and_cleans_up(tmp_path: Path) -> None:
    """``benchmarks/stage_floor.py`` (the system calls of a stage, ours and py-attractor's)."""
    done = _run_script(
        "stage_floor.py", "--stages", "5", "--repeat", "1", "--tmp-dir", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    for layout in ("ours", "peer"):
        assert re.search(rf"^{layout}: median \d+\.\d µs per stage", done.stdout, re.MULTILINE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_ab_alternates_two_trees_and_rejects_a_non_tree(tmp_path: Path) -> None:
    """``benchmarks/ab.py`` on this tree against itself: a figure per tree and the ratio; a
    directory that is not a source tree is refused with exit status 2."""
    repo = str(SCRIPT.parents[1])
    common = ("--stages", "5", "--rounds", "1", "--runs", "1", "--tmp-dir", str(tmp_path))
    done = _run_script("ab.py", repo, repo, *common)
    assert done.returncode == 0, done.stderr
    assert len(re.findall(r": wall min \d+\.\d median .* CPU min \d+\.\d", done.stdout)) == 2
    assert re.search(r"^B/A, CPU min: \d\.\d{3}$", done.stdout, re.MULTILINE)
    refused = _run_script("ab.py", repo, str(tmp_path), *common)
    assert refused.returncode == 2
    assert "not a source tree" in refused.stderr


def test_calls_counts_the_python_calls_of_a_stage(tmp_path: Path) -> None:
    """``benchmarks/calls.py``: the calls per stage of this tree, by file and the most called."""
    done = _run_script("calls.py", "--stages", "5", "--top", "3", "--tmp-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    total = re.search(r": (\d+\.\d) Python calls per stage", done.stdout)
    assert total is not None and float(total.group(1)) > 100, done.stdout
    assert re.search(r"^ +\d+\.\d  attractor_trio/", done.stdout, re.MULTILINE)
    assert "the 3 most called per stage:" in done.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="no valgrind")
def test_instructions_counts_the_instructions_of_a_stage(tmp_path: Path) -> None:
    """``benchmarks/instructions.py``: user-space instructions per stage under callgrind."""
    script = str(SCRIPT.with_name("instructions.py"))
    done = subprocess.run(
        [sys.executable, script, "--stages", "3", "--tmp-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r": \d+\.\d{3} M instructions per stage$", done.stdout, re.MULTILINE)
    assert list(tmp_path.iterdir()) == []
