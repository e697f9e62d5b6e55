"""Bad paths and files never print a traceback (contract.md §10).

Every case: exit 2, exactly one line on stderr (``attractor-trio: error: ...``, or
``FILE:LINE:COL: error: ...`` for a position in a file), and no run directory created.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PIPELINE = """digraph p {
    start [shape=Mdiamond]
    done [shape=Msquare]
    t [shape=parallelogram, tool_command="true"]
    start -> t -> done
}
"""


@pytest.fixture
def place(tmp_path: Path) -> Path:
    (tmp_path / "p.dot").write_text(PIPELINE)
    (tmp_path / "afile").write_text("x\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "unclosed.yaml").write_text("stall_timeout: 5s\nproviders: [\n  x: 1\n")
    (tmp_path / "binary.yaml").write_bytes(b"stall_timeout: 5s\n\xff\xfe\n")
    (tmp_path / "notrun").mkdir()
    (tmp_path / "notrun" / "manifest.json").write_text("{")
    return tmp_path


# (arguments, what the one line says); paths are relative to the fixture's directory.
CASES = [
    (["run", "p.dot", "--logs-root", "afile/run"], "afile is a file, not a directory"),
    (["run", "p.dot", "--logs-root", "afile"], "'afile' is a file"),
    (["run", "p.dot", "--logs-root", "/proc/attractor/run"], "--logs-root /proc/attractor/run"),
    (["run", "p.dot", "--config", "unclosed.yaml"], "unclosed.yaml:4:1: error: invalid YAML"),
    (["run", "p.dot", "--config", "binary.yaml"], "binary.yaml:2:1: error: binary input"),
    (["run", "p.dot", "--config", "adir"], "'adir' is a directory"),
    (["run", "p.dot", "--config", "missing.yaml"], "missing.yaml: config file not found"),
    (["run", "missing.dot"], "'missing.dot' does not exist"),
    (["run", "p.dot", "--workdir", "afile"], "'afile' is a file"),
    (["resume", "afile"], "'afile' is a file"),
    (["resume", "adir"], "not a run directory"),
    (["resume", "notrun"], "notrun/manifest.json:1:2: error: invalid JSON"),
    (["status", "missing"], "'missing' does not exist"),
    (["status", "notrun"], "notrun/manifest.json:1:2: error: invalid JSON"),
    (["runs", "afile"], "'afile' is a file"),
    (["runs", "missing"], "missing: no such directory"),
    (["graph", "p.dot", "-o", "missing/out.dot"], "missing does not exist"),
    (["graph", "p.dot", "-o", "afile/out.dot"], "afile is not a directory"),
    (["graph", "p.dot", "-o", "adir"], "'adir' is a directory"),
    (["stop", "afile"], "'afile' is a file"),
    (["stop", "adir"], "no run to stop"),
    (["validate", "missing.dot"], "'missing.dot' does not exist"),
    (["fuzz", "adir"], "'adir' is a directory"),
    (["serve", "--runs-dir", "afile/runs", "--port", "0"], "cannot create it: Not a directory"),
]


@pytest.mark.parametrize(("args", "says"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_bad_path_is_one_line_and_exit_2(place: Path, args: list[str], says: str) -> None:
    before = sorted(p.relative_to(place) for p in place.rglob("*"))
    done = subprocess.run(
        [sys.executable, "-m", "attractor_trio", *args],
        cwd=place,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("attractor-trio") or ": error: " in lines[0], lines[0]
    assert says in lines[0]
    assert sorted(p.relative_to(place) for p in place.rglob("*")) == before
