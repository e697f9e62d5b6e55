"""Replays every kept fuzz case in ``cases/`` (issue 10): each must satisfy every invariant
and end as its ``expect`` says.

To keep a counterexample: the failing fuzz property prints a ``regression case`` JSON
(``dot``, ``schedule``, ``options``); save it here as ``cases/<what_broke>.json`` with a
``title``, ``origin`` (the finding, e.g. the issue it was filed under) and, once fixed, the
``expect``-ed ``status``/``exit_path``. A case whose engine bug is not fixed yet names it in
``known_bug`` and is a strict xfail: it starts failing the suite the moment the fix lands, as
a reminder to drop the key. Cases seeded by hand pin tricky paths the fuzzer reaches rarely.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from attractor_trio.dot import parse_dot
from attractor_trio.dot.transforms import apply_transforms
from attractor_trio.testing import Schedule, ScheduledBackend, check_invariants, run_schedule

CASES = sorted((Path(__file__).parent / "cases").glob("*.json"))
OPTION_KEYS = ("heartbeat_interval", "stall_timeout", "backend", "time_limit", "max_events")


def load_case(path: Path) -> dict[str, Any]:
    case = json.loads(path.read_text())
    unknown = set(case.get("options", {})) - set(OPTION_KEYS)
    assert not unknown, f"{path.name}: unknown options {sorted(unknown)}"
    return dict(case)


def test_there_are_cases_to_replay() -> None:
    assert len(CASES) >= 5


def _param(path: Path) -> Any:
    bug = json.loads(path.read_text()).get("known_bug")
    marks = [pytest.mark.xfail(reason=f"known engine bug: {bug}", strict=True)] if bug else []
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("path", [_param(p) for p in CASES])
def test_kept_case_replays_cleanly(path: Path, tmp_path: Path) -> None:
    case = load_case(path)
    graph = apply_transforms(parse_dot(case["dot"], str(path)))
    schedule = Schedule.from_json(case["schedule"])
    options = dict(case.get("options", {}))
    if options.pop("backend", None) == "scheduled":
        options["backend"] = ScheduledBackend(schedule)
    obs = run_schedule(graph, schedule, tmp_path / "run", **options)
    assert check_invariants(obs) == [], schedule.describe()
    expect = case.get("expect")
    if expect:
        assert obs.result is not None
        assert (obs.result.status, obs.result.exit_path) == (expect["status"], expect["exit_path"])
