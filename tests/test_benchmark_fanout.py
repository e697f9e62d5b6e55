"""``benchmarks/fanout.py`` still runs, reports the issue's figures, and fits its memory line.

The scenarios run in subprocesses (the script patches ``os.fsync`` and calls ``trio.run``);
the straight-line fit is a pure function, checked in-process.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def fanout(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("fanout")
    yield module
    sys.modules.pop("fanout", None)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / "fanout.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_reports_the_fanout_window_and_the_memory_line_and_cleans_up(tmp_path: Path) -> None:
    scratch = tmp_path / "bench"
    scratch.mkdir()
    done = _run(
        "--scenario", "all", "--branches-a", "4", "--branches-b", "4", "--sweep", "3,6",
        "--tmp-dir", str(scratch),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "parallel_started → parallel_completed" in out
    assert "fan-out s" in out and "≤1.5" in out  # scenario a's target is the fan-out window
    assert "4 of 4 branches completed" in out
    assert "memory against width" in out
    assert "KB per branch +" in out and "largest deviation from the line" in out
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
def test_a_sweep_width_must_be_a_positive_number() -> None:
    done = _run("--sweep", "10,0")
    assert done.returncode == 2
    assert "widths must be at least 1" in done.stderr


def test_a_straight_line_is_fitted_exactly(fanout: ModuleType) -> None:
    fit = fanout.fit_line([(1000, 12.0), (2000, 22.0), (4000, 42.0)])
    assert fit.slope_mb == pytest.approx(0.01)
    assert fit.intercept_mb == pytest.approx(2.0)
    assert max(abs(d) for d in fit.deviations) == pytest.approx(0.0, abs=1e-12)


def test_a_bent_line_shows_its_deviation(fanout: ModuleType) -> None:
    fit = fanout.fit_line([(1000, 10.0), (2000, 10.0), (3000, 40.0)])
    assert fit.slope_mb == pytest.approx(0.015)
    assert fit.deviations[1] == pytest.approx((10.0 - 20.0) / 10.0)
