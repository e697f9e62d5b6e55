"""Every join policy x error policy, end to end with real tool processes (issue 5, contract.md §5/§9).

Each row is a fan-out of ``tool`` branches (``bash -c``) and what it must produce: the
``parallel_completed`` status and counts, ``parallel.results`` (``ignore`` drops failed
branches), every branch's status, the run's status and raw failure reason, and — where the
join is decided early — that the losers' processes (``sleep 30``, some with the sleep in a
child process) are gone when the run returns.

No sleep-and-hope: a branch that must finish *after* another one waits, in its shell, until
the engine has logged that branch's ``parallel_branch_completed`` (so it has been recorded);
a branch that decides the join waits until every loser has written its pid, so each loser is
really running when it is cancelled.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from attrs import frozen

from attractor_trio.core.join import ERROR_POLICIES, JOIN_POLICIES

from .helpers import assert_envelope_invariants, named, read_json, run_dot

RUN_DIR = "run"  # the logs root, inside the workdir the commands run in
POLL = "sleep 0.02"


@frozen
class Cmd:
    """A branch's shell command, built per branch key, and the status it must end with."""

    template: str  # ``{key}`` is replaced by the branch key
    status: str
    loser: bool = False

    def command(self, key: str) -> str:
        return self.template.format(key=key)


def _waits(after: tuple[str, ...], pids: tuple[str, ...]) -> str:
    logged = [
        f"until grep -q 'parallel_branch_completed.*branch_key.: .{key}.,' "
        f"{RUN_DIR}/progress.ndjson; do {POLL}; done; "
        for key in after
    ]
    written = [f"until [ -s {key}.pid ]; do {POLL}; done; " for key in pids]
    return "".join(logged + written)


def ok(after: tuple[str, ...] = (), pids: tuple[str, ...] = ()) -> Cmd:
    """Succeeds — once ``after`` have been recorded and ``pids`` are running."""
    return Cmd(_waits(after, pids) + "true", "success")


def bad(after: tuple[str, ...] = (), pids: tuple[str, ...] = ()) -> Cmd:
    """Fails with ``<key> broke`` on stderr (the raw cause a failed run must carry)."""
    return Cmd(_waits(after, pids) + "echo '{key} broke' >&2; exit 1", "fail")


HANG = Cmd("echo $$ > {key}.pid; exec sleep 30", "canceled", loser=True)
HANG_IN_CHILD = Cmd("sleep 30 & echo $! > {key}.pid; wait", "canceled", loser=True)


@frozen
class Row:
    join: str
    error: str
    branches: tuple[tuple[str, Cmd], ...]
    status: str  # of parallel_completed
    counts: tuple[int, int, int]  # success, failure, canceled
    results: tuple[str, ...]  # parallel.results ids
    attrs: str = ""
    failure_reason: str = ""  # the run's, when the join fails

    @property
    def id(self) -> str:
        shape = "-".join(f"{k}:{c.status[:4]}" for k, c in self.branches)
        return f"{self.join}/{self.error}/{shape}"

    def dot(self) -> str:
        attrs = f'shape=component, join_policy="{self.join}", error_policy="{self.error}"'
        attrs += f", {self.attrs}" if self.attrs else ""
        nodes = "\n".join(
            f'{key} [shape=parallelogram, tool_command="{cmd.command(key)}"]'
            for key, cmd in self.branches
        )
        edges = "\n".join(f"par -> {key} -> join" for key, _ in self.branches)
        return (
            "digraph policies { start [shape=Mdiamond]; done [shape=Msquare]\n"
            f"par [{attrs}]\n join [shape=tripleoctagon]\n{nodes}\n"
            f"start -> par\n{edges}\n join -> done }}"
        )


def _row(join: str, error: str, *branches: tuple[str, Cmd], **kw: Any) -> Row:
    return Row(join, error, branches, **kw)


K2 = "k=2"
HALF = "quorum_fraction=0.5"
# a succeeds; b fails after a; c succeeds after b, once d (a loser) runs: 2 of 4 by then.
TWO_OF_FOUR = (
    ("a", ok()),
    ("b", bad(after=("a",))),
    ("c", ok(after=("b",), pids=("d",))),
    ("d", HANG),
)

ROWS = (
    # wait_all: nothing decides early except fail_fast.
    _row("wait_all", "continue", ("a", ok()), ("b", ok()), ("c", bad()),
         status="partial_success", counts=(2, 1, 0), results=("a", "b", "c")),
    _row("wait_all", "ignore", ("a", ok()), ("b", bad()),
         status="success", counts=(1, 1, 0), results=("a",)),
    _row("wait_all", "ignore", ("a", bad()), ("b", bad()),
         status="fail", counts=(0, 2, 0), results=(), failure_reason="a broke"),
    _row("wait_all", "fail_fast", ("a", HANG), ("b", ok()), ("c", bad(after=("b",), pids=("a",))),
         status="fail", counts=(1, 1, 1), results=("b", "c"), failure_reason="c broke"),
    # first_success
    _row("first_success", "continue", ("a", bad()), ("b", ok(after=("a",), pids=("c",))), ("c", HANG),
         status="success", counts=(1, 1, 1), results=("a", "b")),
    _row("first_success", "ignore", ("a", bad()), ("b", ok(after=("a",), pids=("c",))), ("c", HANG),
         status="success", counts=(1, 1, 1), results=("b",)),
    _row("first_success", "fail_fast", ("a", HANG), ("b", bad(pids=("a", "c"))), ("c", HANG_IN_CHILD),
         status="fail", counts=(0, 1, 2), results=("b",), failure_reason="b broke"),
    _row("first_success", "fail_fast", ("a", ok(pids=("b",))), ("b", HANG),
         status="success", counts=(1, 0, 1), results=("a",)),
    # k_of_n, k=2
    _row("k_of_n", "continue", *TWO_OF_FOUR,
         status="success", counts=(2, 1, 1), results=("a", "b", "c"), attrs=K2),
    _row("k_of_n", "continue", ("a", bad()), ("b", bad(after=("a",), pids=("c",))), ("c", HANG),
         status="fail", counts=(0, 2, 1), results=("a", "b"), attrs=K2, failure_reason="a broke"),
    _row("k_of_n", "ignore", *TWO_OF_FOUR,
         status="success", counts=(2, 1, 1), results=("a", "c"), attrs=K2),
    _row("k_of_n", "fail_fast", ("a", ok()), ("b", bad(after=("a",), pids=("c",))), ("c", HANG),
         status="fail", counts=(1, 1, 1), results=("a", "b"), attrs=K2, failure_reason="b broke"),
    # quorum, half of 4 = 2
    _row("quorum", "continue", *TWO_OF_FOUR,
         status="success", counts=(2, 1, 1), results=("a", "b", "c"), attrs=HALF),
    _row("quorum", "ignore", *TWO_OF_FOUR,
         status="success", counts=(2, 1, 1), results=("a", "c"), attrs=HALF),
    _row("quorum", "fail_fast", ("a", ok()), ("b", bad(after=("a",), pids=("c", "d"))),
         ("c", HANG), ("d", HANG_IN_CHILD),
         status="fail", counts=(1, 1, 2), results=("a", "b"), attrs=HALF, failure_reason="b broke"),
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.id)
async def test_policy_combination(row: Row, tmp_path: Path) -> None:
    logs_root = tmp_path / RUN_DIR
    began = time.monotonic()
    with trio.fail_after(20):
        result = await run_dot(row.dot(), logs_root, workdir=tmp_path, kill_grace=1.0)
    assert time.monotonic() - began < 15, "losers were awaited, not cancelled"

    [done] = named(logs_root, "parallel_completed")
    counts = (done["success_count"], done["failure_count"], done["canceled_count"])
    assert (done["status"], counts) == (row.status, row.counts)
    context = read_json(logs_root / "checkpoint.json")["context"]
    assert tuple(r["id"] for r in context["parallel.results"]) == row.results
    assert (context["parallel.success_count"], context["parallel.fail_count"]) == counts[:2]
    for key, cmd in row.branches:
        assert context[f"parallel.branch.{key}.status"] == cmd.status, key

    completed = {
        e["branch_key"]: e["status"] for e in named(logs_root, "parallel_branch_completed")
    }
    assert completed == {key: cmd.status for key, cmd in row.branches}
    losers = [key for key, cmd in row.branches if cmd.loser]
    exits = named(logs_root, "cancellation_exit")
    assert sorted(e["node_id"] for e in exits) == losers
    assert {e["scope"] for e in exits} <= {"branch"}
    for key in losers:
        pid = int((tmp_path / f"{key}.pid").read_text())
        assert not _alive(pid), f"loser {key}'s process {pid} survived the fan-out"

    if row.status == "fail":
        assert (result.status, result.exit_path) == ("fail", "stage_failed")
        assert row.failure_reason and row.failure_reason in result.failure_reason
    else:
        assert result.status == "success"
        assert context["parallel.fan_in.best_id"] in row.results
    assert_envelope_invariants(logs_root)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.id)
def test_each_row_is_consistent(row: Row) -> None:
    """The table itself: counts add up, losers are counted canceled, ignore drops failures."""
    statuses = [cmd.status for _, cmd in row.branches]
    assert sum(row.counts) == len(row.branches)
    assert row.counts[2] == statuses.count("canceled")
    failed = {key for key, cmd in row.branches if cmd.status == "fail"}
    if row.error == "ignore":
        assert not failed & set(row.results)
    assert (row.status == "fail") == bool(row.failure_reason)


def test_the_table_covers_every_combination() -> None:
    covered = {(row.join, row.error) for row in ROWS}
    assert covered == set(itertools.product(JOIN_POLICIES, ERROR_POLICIES))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (nobody reaps orphans in some sandboxes) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
