"""What the long-running commands do to their own process before the run's event loop starts
(``cli/limits.py``): raise the descriptor limit, freeze the startup heap and space out the young
collections — the last two only
when the process is the command's own, never when an application (or a test) calls the command
group in-process (issue #22)."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from attractor_trio.cli import limits
from tests.test_cli import EXAMPLES, cli

#: Prints the freeze count and the collector's thresholds each time ``trio.run`` starts a loop, then runs the command line.
_SPY = """
import gc, sys, trio
real_run = trio.run
def spying_run(*args, **kwargs):
    print("frozen at loop start:", gc.get_freeze_count(), file=sys.stderr, flush=True)
    print("thresholds at loop start:", *gc.get_threshold(), file=sys.stderr, flush=True)
    return real_run(*args, **kwargs)
trio.run = spying_run
from attractor_trio.cli.main import main
sys.argv = ["attractor-trio", *sys.argv[1:]]
main()
"""


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process's heap as the test found it: unfrozen, its thresholds, not claimed."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    limits._process_is_ours = False


class _Node:
    def __init__(self) -> None:
        self.partner: _Node | None = None


def test_freezing_collects_dead_cycles_first_and_freezes_the_living(unfrozen: None) -> None:
    a, b = _Node(), _Node()
    a.partner, b.partner = b, a
    dead = weakref.ref(a)
    del a, b
    alive = _Node()
    gc.disable()  # no collection may happen on its own between here and the freeze
    try:
        limits.freeze_startup_heap()
    finally:
        gc.enable()
    assert dead() is None, "a dead cycle was frozen instead of collected"
    assert gc.get_freeze_count() > 1000
    assert not any(obj is alive for obj in gc.get_objects()), "a living object is still walked"


def test_a_command_run_in_process_leaves_the_callers_heap_alone(
    unfrozen: None, tmp_path: Path
) -> None:
    """An application or a test calling the command group keeps its own collector as it was."""
    root = tmp_path / "run"
    thresholds = gc.get_threshold()
    code, _, err = cli("run", str(EXAMPLES / "simple.dot"), "--simulate", "--logs-root", str(root))
    assert code == 0, err
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds


@pytest.mark.slow
@pytest.mark.parametrize("how", ["run", "resume"])
def test_the_program_freezes_its_startup_heap_before_the_run_loop(tmp_path: Path, how: str) -> None:
    """Started as the program, `run` and `resume` start the run's loop with the startup heap
    (modules, the loaded pipeline) frozen out of every later full collection, and young
    collections spaced out."""
    root = tmp_path / "run"
    first = [str(EXAMPLES / "simple.dot"), "--simulate", "--logs-root", str(root), "--quiet"]
    args = ["run", *first] if how == "run" else ["resume", str(root), "--from", "report", "--quiet"]
    if how == "resume":
        assert cli("run", *first)[0] == 0
    done = subprocess.run(
        [sys.executable, "-c", _SPY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    counts = [int(line.rsplit(":", 1)[1]) for line in done.stderr.splitlines() if "frozen" in line]
    assert counts and counts[-1] > 10_000, done.stderr
    thresholds = [
        line.split(":", 1)[1].split() for line in done.stderr.splitlines() if "thresh" in line
    ]
    assert thresholds[-1] == [str(n) for n in limits.YOUNG_COLLECTION_THRESHOLDS], done.stderr


def test_spacing_out_young_collections_collects_less_often(unfrozen: None) -> None:
    """Allocations that survive: CPython's 700 would collect the young generation 14 times
    while 10,000 containers are made; the command's own process collects it once at most."""
    young: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 0:
            young.append(1)

    limits.space_out_young_collections()
    gc.collect()
    gc.callbacks.append(count)
    try:
        kept: list[list[int]] = [[] for _ in range(10_000)]
    finally:
        gc.callbacks.remove(count)
    assert len(kept) == 10_000
    assert len(young) <= 1
