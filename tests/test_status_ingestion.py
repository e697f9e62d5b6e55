"""Status-file ingestion (contract.md §3 steps 1-5): a decision table over the three sources.

Every source is put in one of several states; the expected decision follows from the contract's
rules, spelled out in :func:`_expected` (much simpler than the implementation: precedence, the
canonical file is final, the first valid fallback wins). Hand-written rows pin the exact
messages and files for the cases people will actually read about in a bug report.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from attractor_trio.cli.main import main
from attractor_trio.core.outcome import Outcome, StageStatus, StatusFileError
from attractor_trio.persist import status as status_module
from attractor_trio.persist.status import (
    READ_RETRIES,
    READ_RETRY_PAUSE_S,
    IngestionDecision,
    Rejection,
    StatusOwner,
    StatusSources,
    clear_stale_status,
    ingest,
    read_status_file,
    remove_stale,
)

OWNER = {"run_id": "run-7", "node_id": "build", "attempt_id": "build-2-abc"}
SOURCES = ("canonical", "workdir", "workdir_dot")

# A valid document per source, distinguishable by its outcome; some carry matching ownership.
VALID: dict[str, dict[str, Any]] = {
    "canonical": {"outcome": "success", "notes": "from canonical"},
    "workdir": {"outcome": "fail", "failure_reason": "x", **OWNER},
    "workdir_dot": {"status": "partial_success", "preferred_label": "deploy", "attempt_id": None},
}
BROKEN_JSON = b'{"outcome": "success",\n  oops}'
STATES = (
    "valid",
    "absent",
    "invalid_json",
    "bad_outcome",
    "foreign_run_id",
    "foreign_node_id",
    "foreign_attempt_id",
)


def _sources(tmp: Path) -> StatusSources:
    return StatusSources(
        canonical=tmp / "logs" / "build" / "status.json",
        workdir=tmp / "work" / "status.json",
        workdir_dot=tmp / "work" / ".attractor" / "status.json",
    )


def _paths(sources: StatusSources) -> dict[str, Path]:
    return dict(sources.all())


def _content(source: str, state: str) -> bytes | None:
    if state == "absent":
        return None
    if state == "invalid_json":
        return BROKEN_JSON
    if state == "bad_outcome":
        return b'{"outcome": "great job"}'
    if state.startswith("foreign_"):
        key = state.removeprefix("foreign_")
        return json.dumps({**VALID[source], key: "someone-else"}).encode()
    return json.dumps(VALID[source]).encode()


def _write(sources: StatusSources, states: dict[str, str]) -> dict[str, bytes | None]:
    written: dict[str, bytes | None] = {}
    for name, path in sources.all():
        content = _content(name, states[name])
        written[name] = content
        if content is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return written


def _ingest(sources: StatusSources, **kwargs: Any) -> IngestionDecision:
    kwargs.setdefault("sleep", lambda _s: None)
    return ingest(
        sources,
        run_id=OWNER["run_id"],
        node_id=OWNER["node_id"],
        attempt_id=OWNER["attempt_id"],
        **kwargs,
    )


def _reason_fragment(state: str) -> str:
    """What the rejection reason of a file in ``state`` must say."""
    if state == "invalid_json":
        return ":2:3: invalid JSON (Expecting property name enclosed in double quotes)"
    if state == "bad_outcome":
        return "unknown outcome 'great job'"
    key = state.removeprefix("foreign_")
    return f"belongs to another attempt: {key} is 'someone-else' but this attempt's is "


def _expected(states: dict[str, str]) -> tuple[str, list[str]]:
    """The contract as a rule: (deciding source or ``none``, rejected sources in order)."""
    if states["canonical"] != "absent":
        rejected = [] if states["canonical"] == "valid" else ["canonical"]
        return "canonical", rejected
    rejected = []
    for name in ("workdir", "workdir_dot"):
        if states[name] == "valid":
            return name, rejected
        if states[name] != "absent":
            rejected.append(name)
    return "none", rejected


TABLE = [dict(zip(SOURCES, combo, strict=True)) for combo in itertools.product(STATES, repeat=3)]


@pytest.mark.parametrize("states", TABLE, ids=lambda s: "-".join(s.values()))
def test_decision_table(tmp_path: Path, states: dict[str, str]) -> None:
    sources = _sources(tmp_path)
    written = _write(sources, states)
    decision = _ingest(sources)

    source, rejected = _expected(states)
    assert decision.source == source
    assert [r.source for r in decision.rejected] == rejected
    paths = _paths(sources)
    for rejection in decision.rejected:
        assert rejection.path == paths[rejection.source]
        assert rejection.reason.startswith(str(rejection.path))
        assert _reason_fragment(states[rejection.source]) in rejection.reason

    canonical_failed = source == "canonical" and rejected == ["canonical"]
    assert decision.failed is canonical_failed
    copied = source in ("workdir", "workdir_dot")
    assert decision.copied is copied
    if canonical_failed:
        assert decision.outcome == Outcome(
            StageStatus.FAIL,
            failure_reason=decision.rejected[0].reason,
            failure_class="deterministic",
        )
    elif source == "none":
        assert decision.outcome is None
    else:
        assert decision.outcome == Outcome.from_json(VALID[source], source=str(paths[source]))

    # On disk: a copied fallback is now the canonical file, byte for byte, and is gone from
    # the workdir; every other file is exactly as it was written.
    expected_files = dict(written)
    if copied:
        expected_files["canonical"] = written[source]
        expected_files[source] = None
    for name, path in sources.all():
        assert (path.read_bytes() if path.exists() else None) == expected_files[name], name
    if copied:
        assert list(sources.canonical.parent.glob(".*.tmp")) == []


def test_table_covers_every_state_of_every_source() -> None:
    assert len(TABLE) == len(STATES) ** 3
    for name in SOURCES:
        assert {row[name] for row in TABLE} == set(STATES)


# --- hand-written rows: exact messages ---------------------------------------------------


def test_foreign_canonical_fails_naming_the_key_and_both_values(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    _write(sources, {"canonical": "foreign_attempt_id", "workdir": "valid", "workdir_dot": "valid"})
    decision = _ingest(sources)
    reason = (
        f"{sources.canonical}: belongs to another attempt: attempt_id is 'someone-else' "
        "but this attempt's is 'build-2-abc' (a stale file from an earlier run or attempt, "
        "or a sibling branch's?)"
    )
    assert decision == IngestionDecision(
        node_id="build",
        attempt_id="build-2-abc",
        source="canonical",
        copied=False,
        rejected=(Rejection(sources.canonical, "canonical", reason),),
        outcome=Outcome(StageStatus.FAIL, failure_reason=reason, failure_class="deterministic"),
        failed=True,
    )


def test_every_mismatching_key_is_named(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    sources.workdir.parent.mkdir(parents=True)
    sources.workdir.write_text('{"outcome": "success", "run_id": "old", "node_id": "lint"}')
    decision = _ingest(sources)
    assert decision.source == "none"
    assert decision.rejected[0].reason == (
        f"{sources.workdir}: belongs to another attempt: run_id is 'old' but this attempt's "
        "is 'run-7'; node_id is 'lint' but this attempt's is 'build' (a stale file from an "
        "earlier run or attempt, or a sibling branch's?)"
    )


def test_invalid_json_fallback_is_rejected_with_file_line_col(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    _write(sources, {"canonical": "absent", "workdir": "invalid_json", "workdir_dot": "valid"})
    decision = _ingest(sources)
    assert decision.source == "workdir_dot"
    assert decision.copied
    assert decision.rejected == (
        Rejection(
            sources.workdir,
            "workdir",
            f"{sources.workdir}:2:3: invalid JSON (Expecting property name enclosed in double "
            'quotes); write one object like {"outcome": "success"}',
        ),
    )
    assert decision.outcome == Outcome(StageStatus.PARTIAL_SUCCESS, preferred_label="deploy")


def test_non_object_and_empty_files_say_what_is_wrong(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    sources.workdir.parent.mkdir(parents=True)
    sources.workdir.write_text('["success"]')
    sources.workdir_dot.parent.mkdir(parents=True)
    sources.workdir_dot.write_text("  \n")
    reasons = [r.reason for r in _ingest(sources).rejected]
    assert reasons == [
        f'{sources.workdir}: expected a JSON object like {{"outcome": "success"}}, got an array',
        f'{sources.workdir_dot}: the status file is empty; write one object like {{"outcome": '
        '"success"}',
    ]


def test_event_fields_are_exactly_the_contract_keys(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    _write(sources, {"canonical": "absent", "workdir": "foreign_run_id", "workdir_dot": "valid"})
    fields = _ingest(sources).event_fields()
    assert fields == {
        "node_id": "build",
        "attempt_id": "build-2-abc",
        "source": "workdir_dot",
        "copied": True,
        "rejected": [
            {
                "source": "workdir",
                "path": str(sources.workdir),
                "reason": fields["rejected"][0]["reason"],
            }
        ],
    }
    assert "run_id is 'someone-else'" in fields["rejected"][0]["reason"]
    json.dumps(fields)  # JSON-ready: paths are strings


def test_nothing_anywhere_is_source_none(tmp_path: Path) -> None:
    decision = _ingest(_sources(tmp_path))
    assert decision.event_fields() == {
        "node_id": "build",
        "attempt_id": "build-2-abc",
        "source": "none",
        "copied": False,
        "rejected": [],
    }
    assert decision.outcome is None and not decision.failed


def test_a_directory_at_the_canonical_path_fails_the_stage(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    sources.canonical.mkdir(parents=True)
    decision = _ingest(sources)
    assert decision.failed and decision.source == "canonical"
    assert decision.rejected[0].reason.startswith(f"{sources.canonical}: cannot read")


def test_a_file_named_like_the_dot_directory_counts_as_absent(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    sources.workdir.parent.mkdir(parents=True)
    (sources.workdir.parent / ".attractor").write_text("not a directory")
    assert _ingest(sources).source == "none"
    remove_stale(sources)


# --- copying -------------------------------------------------------------------------------


def test_copy_creates_the_stage_directory(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    _write(sources, {"canonical": "absent", "workdir": "valid", "workdir_dot": "absent"})
    assert not sources.canonical.parent.exists()
    assert _ingest(sources).copied
    assert json.loads(sources.canonical.read_text()) == VALID["workdir"]


def test_failed_copy_keeps_the_fallback_and_leaves_no_partial_canonical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = _sources(tmp_path)
    _write(sources, {"canonical": "absent", "workdir": "valid", "workdir_dot": "absent"})
    sources.canonical.parent.mkdir(parents=True)

    def refuse(_src: object, _dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        _ingest(sources)
    assert not sources.canonical.exists()
    assert os.listdir(sources.canonical.parent) == []
    assert json.loads(sources.workdir.read_text()) == VALID["workdir"]


# --- re-reading a fallback that is still being written -------------------------------------


def test_fallback_completed_during_the_retries_is_used(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    sources.workdir.parent.mkdir(parents=True)
    sources.workdir.write_text('{"outcome": "fa')
    pauses: list[float] = []

    def writer_finishes_on_second_pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            with sources.workdir.open("a") as f:
                f.write('il", "failure_reason": "x"}')

    decision = _ingest(sources, sleep=writer_finishes_on_second_pause)
    assert pauses == [READ_RETRY_PAUSE_S, READ_RETRY_PAUSE_S]
    assert (decision.source, decision.copied, decision.rejected) == ("workdir", True, ())
    assert decision.outcome == Outcome(StageStatus.FAIL, failure_reason="x")
    assert sources.canonical.read_text() == '{"outcome": "fail", "failure_reason": "x"}'
    assert not sources.workdir.exists()


def test_fallback_never_completed_is_rejected_after_the_retries(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    sources.workdir.parent.mkdir(parents=True)
    sources.workdir.write_text('{"outcome": "fa')
    pauses: list[float] = []
    decision = _ingest(sources, sleep=pauses.append)
    assert len(pauses) == READ_RETRIES
    assert decision.source == "none"
    assert decision.rejected[0].reason.startswith(
        f"{sources.workdir}:1:13: invalid JSON (Unterminated string"
    )
    assert sources.workdir.exists()


@pytest.mark.parametrize(
    ("where", "content"),
    [
        ("canonical", b'{"outcome": "fa'),  # the stage process has exited: no one is writing
        ("workdir", b'{"outcome": "success", "run_id": "old"}'),  # complete, just foreign
        ("workdir", b'{"outcome": "great job"}'),  # complete, just wrong
    ],
)
def test_complete_or_canonical_files_are_not_re_read(
    tmp_path: Path, where: str, content: bytes
) -> None:
    sources = _sources(tmp_path)
    path = _paths(sources)[where]
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    pauses: list[float] = []
    decision = _ingest(sources, sleep=pauses.append)
    assert pauses == []
    assert len(decision.rejected) == 1


# --- step 1: stale files -------------------------------------------------------------------


def test_remove_stale_removes_all_three(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    _write(sources, {name: "valid" for name in SOURCES})
    remove_stale(sources)
    assert [path.exists() for _, path in sources.all()] == [False, False, False]
    assert sources.workdir_dot.parent.is_dir()  # only the files go
    remove_stale(sources)  # missing files (and directories) are fine


def test_remove_stale_removes_a_dangling_symlink(tmp_path: Path) -> None:
    """A fallback that is a symlink to nothing is removed (the link, as ``unlink`` does): the
    existence probe in front of the removal does not follow links."""
    sources = _sources(tmp_path)
    sources.workdir.parent.mkdir(parents=True, exist_ok=True)
    sources.workdir.symlink_to(tmp_path / "nowhere.json")
    remove_stale(sources)
    assert not sources.workdir.is_symlink()


def test_absent_status_files_cost_no_failing_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual stage: no status file anywhere. Neither the removal before the attempt nor the
    probe after it asks the OS for something that fails (a failing ``unlink``/``stat`` raises,
    and an exception cost more than the system call: five per stage, issue #22); the existence
    probe answers without one."""
    sources = _sources(tmp_path)
    calls: list[str] = []
    real_unlink, real_stat = os.unlink, os.stat

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(f"unlink {path}")
        real_unlink(path, *args, **kwargs)

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(f"stat {path}")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "stat", stat)
    remove_stale(sources)
    assert not status_module._any_exists([str(path) for _, path in sources.all()])
    assert calls == []
    _write(sources, {"canonical": "absent", "workdir": "absent", "workdir_dot": "valid"})
    assert status_module._any_exists([str(path) for _, path in sources.all()])
    remove_stale(sources)
    assert calls == [f"unlink {sources.workdir_dot}"]


def test_remove_stale_reports_a_directory_in_the_way(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    sources.workdir.mkdir(parents=True)
    with pytest.raises(StatusFileError) as info:
        remove_stale(sources)
    assert str(info.value) == (
        f"{sources.workdir}: is a directory, where the stage's status file goes; "
        "remove or rename it"
    )


def test_a_fresh_stage_dir_keeps_its_canonical_path_and_loses_the_fallbacks(
    tmp_path: Path,
) -> None:
    """``fresh_stage_dir``: the engine's ``mkdir`` made the stage dir for this attempt, so the
    canonical file is not unlinked (it could not exist); the work directory's fallbacks are.
    Planted here to show which paths are touched: a real fresh dir holds no file."""
    sources = _sources(tmp_path)
    _write(sources, {name: "valid" for name in SOURCES})

    class Attempt:
        status_path = sources.canonical
        workdir = sources.workdir.parent
        fresh_stage_dir = True

    clear_stale_status(Attempt(), sources)
    assert [path.exists() for _, path in sources.all()] == [True, False, False]
    Attempt.fresh_stage_dir = False  # any other stage dir: all three go
    clear_stale_status(Attempt(), sources)
    assert [path.exists() for _, path in sources.all()] == [False, False, False]


def test_an_attempt_without_the_fresh_flag_clears_all_three(tmp_path: Path) -> None:
    """A direct caller's attempt object (no ``fresh_stage_dir``) gets the full step 1."""
    sources = _sources(tmp_path)
    _write(sources, {name: "valid" for name in SOURCES})

    class Attempt:
        status_path = sources.canonical
        workdir = sources.workdir.parent

    clear_stale_status(Attempt())
    assert [path.exists() for _, path in sources.all()] == [False, False, False]


def test_sources_for_an_attempt(tmp_path: Path) -> None:
    class Attempt:
        status_path = tmp_path / "logs" / "n" / "status.json"
        workdir = tmp_path / "w"

    assert StatusSources.for_attempt(Attempt()) == StatusSources(
        tmp_path / "logs" / "n" / "status.json",
        tmp_path / "w" / "status.json",
        tmp_path / "w" / ".attractor" / "status.json",
    )


def test_read_status_file_reports_absent_invalid_and_valid(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    assert read_status_file(path) is None
    path.write_text('{"outcome": "retry", "node_id": "other"}')
    assert read_status_file(path) == Outcome(StageStatus.RETRY)  # no owner: not gated
    error = read_status_file(path, owner=StatusOwner(**OWNER))
    assert isinstance(error, StatusFileError) and "node_id is 'other'" in str(error)


# --- property: any bytes in a fallback are adopted or rejected, never raised ---------------


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode)))
def test_any_fallback_content_is_adopted_or_rejected(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sources = _sources(Path(tmp))
        sources.workdir.parent.mkdir(parents=True)
        sources.workdir.write_bytes(content)
        decision = _ingest(sources)
        if decision.source == "workdir":
            assert decision.copied and sources.canonical.read_bytes() == content
            assert not sources.workdir.exists()
        else:
            assert decision.source == "none" and decision.outcome is None
            (rejection,) = decision.rejected
            assert rejection.reason.startswith(f"{sources.workdir}:")
            assert sources.workdir.read_bytes() == content


# --- end to end: the CLI runs a tool that reports through .attractor/status.json -----------
# ``abort`` sorts first, so reaching ``ship`` proves the label came from the status file.

PIPELINE = """digraph routed {
    start [shape=Mdiamond]
    exit [shape=Msquare]
    check [shape=parallelogram, tool_command="bash report.sh"]
    ship [shape=parallelogram, tool_command="echo shipped"]
    abort [shape=parallelogram, tool_command="echo aborted"]
    start -> check
    check -> abort [label="abort"]
    check -> ship [label="ship"]
    ship -> exit
    abort -> exit
}
"""
REPORT_SH = """mkdir -p "$ATTRACTOR_WORKDIR/.attractor"
printf '{"outcome": "success", "preferred_label": "ship", "attempt_id": "%s", "run_id": "%s"}' \\
    "$ATTRACTOR_ATTEMPT_ID" "$ATTRACTOR_RUN_ID" > "$ATTRACTOR_WORKDIR/.attractor/status.json"
"""


def test_cli_run_routes_by_the_label_in_dot_attractor_status(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "report.sh").write_text(REPORT_SH)
    dot = tmp_path / "routed.dot"
    dot.write_text(PIPELINE)
    root = tmp_path / "run"
    args = ["run", str(dot), "--logs-root", str(root), "--workdir", str(workdir), "--quiet"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr

    events = [json.loads(line) for line in (root / "progress.ndjson").read_text().splitlines()]
    decisions = {e["node_id"]: e for e in events if e["event"] == "status_ingestion_decision"}
    assert set(decisions) == {"check", "ship"}
    started = {e["node_id"]: e for e in events if e["event"] == "stage_attempt_started"}
    assert {k: v for k, v in decisions["check"].items() if k not in ("seq", "ts")} == {
        "run_id": started["check"]["run_id"],
        "event": "status_ingestion_decision",
        "branch": "",
        "node_id": "check",
        "attempt_id": started["check"]["attempt_id"],
        "source": "workdir_dot",
        "copied": True,
        "rejected": [],
    }
    assert decisions["ship"]["source"] == "none"
    edges = [
        (e["from_node"], e["to_node"], e["method"]) for e in events if e["event"] == "edge_selected"
    ]
    assert ("check", "ship", "preferred_label") in edges
    completed = json.loads((root / "checkpoint.json").read_text())["completed_nodes"]
    assert "ship" in completed and "abort" not in completed
    status = json.loads((root / "check" / "status.json").read_text())
    assert (status["outcome"], status["preferred_label"]) == ("success", "ship")
    assert not (workdir / ".attractor" / "status.json").exists()
