"""``persist/sweep.py``: one removal of the work directory's status fallbacks serving the
attempts whose set-ups asked before it began (contract.md §3 rule 1)."""

from __future__ import annotations

from pathlib import Path

from attractor_trio.persist.sweep import FallbackSweep


def _plant(workdir: Path) -> tuple[Path, Path]:
    plain, dot = workdir / "status.json", workdir / ".attractor" / "status.json"
    dot.parent.mkdir(exist_ok=True)
    plain.write_text("{}")
    dot.write_text("{}")
    return plain, dot


def test_a_removal_serves_the_tickets_drawn_before_it_began(tmp_path: Path) -> None:
    sweep = FallbackSweep(tmp_path)
    plain, dot = _plant(tmp_path)
    first, second = sweep.ticket(), sweep.ticket()
    assert sweep.sweep(first) and not plain.exists() and not dot.exists()
    _plant(tmp_path)  # written after that removal: a branch asking earlier need not see it gone
    assert sweep.sweep(second)
    assert sweep.removals == 1 and plain.exists()


def test_a_ticket_drawn_after_a_removal_began_gets_its_own(tmp_path: Path) -> None:
    """A branch that asks once a removal is under way or done cannot count on it: a file
    written before the branch asked may have landed after that removal's ``unlink``."""
    sweep = FallbackSweep(tmp_path)
    assert sweep.sweep(sweep.ticket())
    plain, dot = _plant(tmp_path)
    assert sweep.sweep(sweep.ticket())
    assert sweep.removals == 2 and not plain.exists() and not dot.exists()


def test_a_removal_that_fails_serves_no_one(tmp_path: Path) -> None:
    """A directory in the way: the attempt must remove (and fail) on its own, as rule 1 says."""
    sweep = FallbackSweep(tmp_path)
    (tmp_path / "status.json").mkdir()
    first, second = sweep.ticket(), sweep.ticket()
    assert not sweep.sweep(first)
    assert not sweep.sweep(second)
    assert sweep.removals == 2
