"""The coding agent's tools on a local working directory (coding-agent-loop spec §3.3-§5).

Real files and real processes on the real clock; every process test is bounded with
``trio.fail_after``. Process liveness is checked with ``ps`` (independent of the code under
test); a zombie counts as dead (in this sandbox PID 1 may not reap orphans).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.backends.agent_loop import (
    TOOL_NAMES,
    LocalEnvironment,
    ToolBox,
    ToolResult,
    filter_env,
    truncate_lines,
    truncate_output,
)
from attractor_trio.core import redaction
from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.persist.status import StatusSources, ingest
from attractor_trio.providers.model import ToolCall

BOUND = 20
OWNER = {"run_id": "run-1", "node_id": "build", "attempt_id": "build-1-abc"}


def _live(pid: int) -> bool:
    out = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False
    ).stdout.strip()
    return bool(out) and not out.startswith("Z")


def _real(path: Path) -> str:
    return str(path.resolve())


def _has_content(path: Path) -> bool:
    return path.exists() and bool(path.read_text().strip())


def _remove_dir(path: Path) -> None:
    path.rmdir()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def stage_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "build" / "attempt-1"


Make = Callable[..., ToolBox]


@pytest.fixture
def make_box(workdir: Path, stage_dir: Path) -> Make:
    def make(**kwargs: Any) -> ToolBox:
        env = kwargs.pop("env", dict(os.environ))
        environment = LocalEnvironment(
            workdir,
            stage_dir=stage_dir,
            env=env,
            kill_grace=kwargs.pop("kill_grace", 2.0),
            status_path=kwargs.pop("status_path", stage_dir / "status.json"),
            owner=kwargs.pop("owner", OWNER),
            **kwargs,
        )
        return ToolBox(environment)

    return make


@pytest.fixture
def box(make_box: Make) -> ToolBox:
    return make_box()


async def call(box: ToolBox, name: str, **arguments: Any) -> ToolResult:
    return await box.execute(ToolCall("call-1", name, arguments))


# -- specs and the pipeline ------------------------------------------------------------------


def test_specs_are_the_seven_tools_with_object_schemas(box: ToolBox) -> None:
    specs = box.specs()
    assert [s.name for s in specs] == list(TOOL_NAMES)
    assert set(TOOL_NAMES) == {
        "read_file",
        "write_file",
        "edit_file",
        "shell",
        "grep",
        "glob",
        "report_status",
    }
    for spec in specs:
        params = spec.parameters
        assert params["type"] == "object"
        assert params["additionalProperties"] is False
        assert set(params["required"]) <= set(params["properties"])
        assert len(spec.description) > 40
        for prop in params["properties"].values():
            assert prop["description"]
    props = {s.name: s.parameters["properties"] for s in specs}
    assert list(props["read_file"]) == ["file_path", "offset", "limit"]
    assert list(props["edit_file"]) == ["file_path", "old_string", "new_string", "replace_all"]
    assert list(props["grep"]) == [
        "pattern",
        "path",
        "glob_filter",
        "case_insensitive",
        "max_results",
    ]
    assert props["shell"]["timeout_ms"]["default"] == 10_000
    assert set(props["report_status"]) == {
        "outcome",
        "preferred_label",
        "failure_reason",
        "failure_class",
        "context_updates",
        "notes",
    }


def test_specs_are_copies(box: ToolBox) -> None:
    box.specs()[0].parameters["properties"].clear()
    assert box.specs()[0].parameters["properties"]


async def test_unknown_tool_is_an_error_listing_the_tools(box: ToolBox) -> None:
    result = await call(box, "delete_everything")
    assert result.is_error
    assert "unknown tool 'delete_everything'" in result.content
    assert "read_file" in result.content and "report_status" in result.content


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("read_file", {}, "missing required argument 'file_path'"),
        ("read_file", {"file_path": "a", "limit": "ten"}, "'limit' must be an integer"),
        ("read_file", {"file_path": "a", "limit": True}, "'limit' must be an integer"),
        ("read_file", {"file_path": "a", "offset": 0}, "'offset' must be at least 1"),
        ("read_file", {"path": "a"}, "unknown argument(s) 'path'; accepted arguments: file_path"),
        ("edit_file", {"file_path": "a", "old_string": "x", "new_string": 3}, "a string"),
        ("grep", {"pattern": "x", "case_insensitive": "yes"}, "must be true or false"),
        ("report_status", {"outcome": "success", "context_updates": []}, "a JSON object"),
        ("shell", {"_raw_arguments": '{"command": "ec'}, "not a valid JSON object"),
    ],
)
async def test_invalid_arguments_are_errors(
    box: ToolBox, name: str, arguments: dict[str, Any], expected: str
) -> None:
    result = await call(box, name, **arguments)
    assert result.is_error
    assert expected in result.content
    assert result.content.startswith(name)


async def test_null_optional_arguments_take_defaults_and_integral_floats_count(
    box: ToolBox, workdir: Path
) -> None:
    (workdir / "a.txt").write_text("one\ntwo\nthree\n")
    result = await call(box, "read_file", file_path="a.txt", offset=None, limit=2.0)
    assert not result.is_error
    assert result.content.startswith("1 | one\n2 | two\n")


async def test_an_unexpected_exception_becomes_an_error_result(
    box: ToolBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr("attractor_trio.backends.agent_loop.files.glob", broken)
    result = await call(box, "glob", pattern="*")
    assert result.is_error
    assert result.content.startswith("glob: internal error (RuntimeError: boom)")


async def test_every_call_signals_output(make_box: Make, workdir: Path) -> None:
    seen: list[int] = []
    box = make_box(on_output=lambda: seen.append(1))
    await call(box, "glob", pattern="*")
    await call(box, "read_file", file_path="missing")
    assert len(seen) == 2


# -- read_file -------------------------------------------------------------------------------


async def test_read_file_numbers_lines_and_honours_offset_and_limit(
    box: ToolBox, workdir: Path
) -> None:
    (workdir / "f.txt").write_text("".join(f"line {i}\n" for i in range(1, 13)))
    whole = await call(box, "read_file", file_path="f.txt")
    assert not whole.is_error
    assert whole.content.splitlines()[0] == " 1 | line 1"
    assert whole.content.splitlines()[-1] == "12 | line 12"
    part = await call(box, "read_file", file_path="f.txt", offset=3, limit=2)
    assert part.content == (
        "3 | line 3\n4 | line 4\n"
        "[Showing lines 3-4 of 12. To read more, call read_file with offset=5.]"
    )


async def test_read_file_keeps_crlf_out_of_the_text_and_reads_an_absolute_inside_path(
    box: ToolBox, workdir: Path
) -> None:
    (workdir / "dos.txt").write_bytes(b"a\r\nb\r\n")
    result = await call(box, "read_file", file_path=str(workdir / "dos.txt"))
    assert result.content == "1 | a\n2 | b"


@pytest.mark.parametrize(
    ("setup", "file_path", "expected"),
    [
        (lambda w: None, "nope.txt", "file not found: nope.txt"),
        (lambda w: (w / "d").mkdir(), "d", "is a directory"),
        (lambda w: (w / "b.bin").write_bytes(b"\x7fELF\0\0"), "b.bin", "binary file"),
        (lambda w: (w / "s.txt").write_text("x\n"), "s.txt:5", "file not found"),
    ],
)
async def test_read_file_errors(
    box: ToolBox, workdir: Path, setup: Callable[[Path], object], file_path: str, expected: str
) -> None:
    setup(workdir)
    result = await call(box, "read_file", file_path=file_path)
    assert result.is_error
    assert expected in result.content


async def test_read_file_offset_past_end_and_empty_file(box: ToolBox, workdir: Path) -> None:
    (workdir / "three.txt").write_text("a\nb\nc\n")
    (workdir / "empty.txt").write_text("")
    past = await call(box, "read_file", file_path="three.txt", offset=9)
    assert past.is_error
    assert "offset 9 is past the end of three.txt, which has 3 lines" in past.content
    empty = await call(box, "read_file", file_path="empty.txt")
    assert not empty.is_error
    assert "empty" in empty.content


async def test_read_file_truncates_at_50000_chars_head_and_tail(
    box: ToolBox, workdir: Path
) -> None:
    (workdir / "big.txt").write_text("".join(f"{i:04d} " + "x" * 95 + "\n" for i in range(2000)))
    result = await call(box, "read_file", file_path="big.txt")
    assert not result.is_error
    assert "[WARNING: Tool output was truncated." in result.content
    assert "characters were removed from the middle" in result.content
    assert result.content.startswith("   1 | 0000 ")
    assert result.content.rstrip().endswith("2000 | 1999 " + "x" * 95)
    assert len(result.content) < 50_000 + 400


# -- write_file and edit_file ----------------------------------------------------------------


async def test_write_file_creates_parents_and_confirms(box: ToolBox, workdir: Path) -> None:
    result = await call(box, "write_file", file_path="a/b/c.txt", content="héllo\n")
    assert not result.is_error
    assert result.content == "Created a/b/c.txt (7 bytes)."
    assert (workdir / "a/b/c.txt").read_text() == "héllo\n"
    again = await call(box, "write_file", file_path="a/b/c.txt", content="")
    assert again.content == "Overwrote a/b/c.txt (0 bytes)."


async def test_write_file_keeps_the_mode_of_an_existing_file(box: ToolBox, workdir: Path) -> None:
    script = workdir / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    await call(box, "write_file", file_path="run.sh", content="#!/bin/sh\necho hi\n")
    assert script.stat().st_mode & 0o777 == 0o755


async def test_write_file_errors(box: ToolBox, workdir: Path) -> None:
    (workdir / "dir").mkdir()
    (workdir / "plain").write_text("")
    into_dir = await call(box, "write_file", file_path="dir", content="x")
    assert into_dir.is_error and "is a directory" in into_dir.content
    under_file = await call(box, "write_file", file_path="plain/x.txt", content="x")
    assert under_file.is_error
    assert under_file.content.startswith("write_file: plain/x.txt: ")


async def test_edit_file_replaces_a_unique_string(box: ToolBox, workdir: Path) -> None:
    (workdir / "m.py").write_text("def f():\n    return 1\n")
    result = await call(box, "edit_file", file_path="m.py", old_string="1", new_string="2")
    assert not result.is_error
    assert result.content == "Edited m.py: replaced 1 occurrence."
    assert (workdir / "m.py").read_text() == "def f():\n    return 2\n"


async def test_edit_file_ambiguity_and_replace_all(box: ToolBox, workdir: Path) -> None:
    target = workdir / "m.py"
    target.write_text("x = 1\ny = 1\n")
    ambiguous = await call(box, "edit_file", file_path="m.py", old_string="1", new_string="2")
    assert ambiguous.is_error
    assert "occurs 2 times in m.py" in ambiguous.content
    assert "replace_all=true" in ambiguous.content
    assert target.read_text() == "x = 1\ny = 1\n"
    result = await call(
        box, "edit_file", file_path="m.py", old_string="1", new_string="2", replace_all=True
    )
    assert result.content == "Edited m.py: replaced 2 occurrences."
    assert target.read_text() == "x = 2\ny = 2\n"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("absent", "x", "old_string was not found in m.py"),
        ("", "x", "old_string is empty"),
        ("same", "same", "identical"),
    ],
)
async def test_edit_file_errors(
    box: ToolBox, workdir: Path, old: str, new: str, expected: str
) -> None:
    (workdir / "m.py").write_text("same\n")
    result = await call(box, "edit_file", file_path="m.py", old_string=old, new_string=new)
    assert result.is_error
    assert expected in result.content
    assert (workdir / "m.py").read_text() == "same\n"


async def test_edit_file_missing_and_non_utf8(box: ToolBox, workdir: Path) -> None:
    (workdir / "latin1.txt").write_bytes("café".encode("latin-1"))
    missing = await call(box, "edit_file", file_path="no.py", old_string="a", new_string="b")
    assert missing.is_error and "file not found: no.py" in missing.content
    latin = await call(box, "edit_file", file_path="latin1.txt", old_string="caf", new_string="x")
    assert latin.is_error and "not UTF-8" in latin.content


async def test_edit_file_matches_lf_text_in_a_crlf_file(box: ToolBox, workdir: Path) -> None:
    (workdir / "dos.txt").write_bytes(b"a\r\nb\r\nc\r\n")
    result = await call(box, "edit_file", file_path="dos.txt", old_string="a\nb", new_string="A\nB")
    assert not result.is_error
    assert (workdir / "dos.txt").read_bytes() == b"A\r\nB\r\nc\r\n"


# -- path safety -----------------------------------------------------------------------------


@pytest.mark.parametrize("file_path", ["../outside.txt", "sub/../../outside.txt"])
async def test_dotdot_escapes_are_rejected(
    box: ToolBox, workdir: Path, tmp_path: Path, file_path: str
) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    read = await call(box, "read_file", file_path=file_path)
    assert read.is_error
    assert "outside the working directory" in read.content
    write = await call(box, "write_file", file_path=file_path, content="pwned")
    assert write.is_error
    assert (tmp_path / "outside.txt").read_text() == "secret"


async def test_absolute_path_outside_is_rejected(box: ToolBox) -> None:
    result = await call(box, "read_file", file_path="/etc/passwd")
    assert result.is_error
    assert "'/etc/passwd' is outside the working directory" in result.content
    assert "root:" not in result.content


async def test_symlink_escapes_are_rejected(box: ToolBox, workdir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (workdir / "link.txt").symlink_to(outside / "secret.txt")
    (workdir / "linkdir").symlink_to(outside)
    read = await call(box, "read_file", file_path="link.txt")
    assert read.is_error and "resolves to" in read.content
    write = await call(box, "write_file", file_path="linkdir/new.txt", content="x")
    assert write.is_error
    assert not (outside / "new.txt").exists()
    edit = await call(box, "edit_file", file_path="link.txt", old_string="s", new_string="S")
    assert edit.is_error
    assert (outside / "secret.txt").read_text() == "secret"
    grep = await call(box, "grep", pattern="secret")
    assert "No matches" in grep.content


async def test_allow_outside_workdir_permits_outside_paths(make_box: Make, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("hello\n")
    box = make_box(allow_outside_workdir=True)
    result = await call(box, "read_file", file_path="../outside.txt")
    assert not result.is_error
    assert result.content == "1 | hello"


# -- shell -----------------------------------------------------------------------------------


async def test_shell_runs_in_the_workdir_and_reports_the_exit_code(
    box: ToolBox, workdir: Path, stage_dir: Path
) -> None:
    with trio.fail_after(BOUND):
        result = await call(box, "shell", command="pwd; echo oops >&2")
    assert not result.is_error
    lines = result.content.splitlines()
    assert lines[0] == _real(workdir)
    assert lines[1:3] == ["[stderr]", "oops"]
    assert lines[-1].startswith("Exit code: 0 (duration ")
    assert (stage_dir / "tools" / "shell-1.stdout").read_text() == _real(workdir) + "\n"
    assert (stage_dir / "tools" / "shell-1.stderr").read_text() == "oops\n"
    with trio.fail_after(BOUND):
        await call(box, "shell", command="echo second")
    assert (stage_dir / "tools" / "shell-2.stdout").read_text() == "second\n"


async def test_shell_non_zero_exit_is_an_error(box: ToolBox) -> None:
    with trio.fail_after(BOUND):
        result = await call(box, "shell", command="echo partial; exit 3")
    assert result.is_error
    assert result.content.startswith("partial\nExit code: 3 (")


async def test_shell_with_no_output_says_so(box: ToolBox) -> None:
    with trio.fail_after(BOUND):
        result = await call(box, "shell", command="true")
    assert result.content.startswith("(no output)\nExit code: 0")


async def test_shell_log_numbering_skips_existing_logs(make_box: Make, stage_dir: Path) -> None:
    (stage_dir / "tools").mkdir(parents=True)
    (stage_dir / "tools" / "shell-1.stdout").write_text("earlier\n")
    with trio.fail_after(BOUND):
        await call(make_box(), "shell", command="echo new")
    assert (stage_dir / "tools" / "shell-1.stdout").read_text() == "earlier\n"
    assert (stage_dir / "tools" / "shell-2.stdout").read_text() == "new\n"


async def test_shell_environment_is_filtered_of_secrets(make_box: Make) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "FOO_API_KEY": "k1",
        "github_token": "k2",
        "DB_PASSWORD": "k3",
        "AWS_SECRET": "k4",
        "GCP_CREDENTIAL": "k5",
        "KEEP_ME": "visible",
        "ATTRACTOR_NODE_ID": "build",
    }
    box = make_box(env=env)
    with trio.fail_after(BOUND):
        result = await call(box, "shell", command="env")
    assert "KEEP_ME=visible" in result.content
    assert "ATTRACTOR_NODE_ID=build" in result.content
    for secret in ("k1", "k2", "k3", "k4", "k5"):
        assert f"={secret}" not in result.content


def test_filter_env_is_a_case_insensitive_suffix_match() -> None:
    env = {
        "OPENAI_API_KEY": "x",
        "openai_api_key": "x",
        "TOKEN": "x",
        "MY_Secret": "x",
        "TOKENIZER": "keep",
        "API_KEY_FILE": "keep",
        "PATH": "keep",
    }
    assert filter_env(env) == {"TOKENIZER": "keep", "API_KEY_FILE": "keep", "PATH": "keep"}


@pytest.mark.parametrize(
    "name", ["DB_PASSWORD_FILE", "GCP_CREDENTIALS", "AWS_CREDENTIAL", "MY_PASSWORD", "github_token"]
)
def test_the_shell_never_sees_a_name_the_redactor_treats_as_secret(name: str) -> None:
    """One classifier: a value the engine would redact in its files never reaches the shell."""
    assert redaction.is_secret_env_name(name) or name.upper().endswith("_CREDENTIAL")
    assert filter_env({name: "value-long-enough", "PATH": "/bin"}) == {"PATH": "/bin"}


async def test_shell_timeout_kills_the_process_group(box: ToolBox, workdir: Path) -> None:
    command = "echo started; sleep 30 & echo $! > bg.pid; sleep 30"
    started = time.monotonic()
    with trio.fail_after(BOUND):
        result = await call(box, "shell", command=command, timeout_ms=500)
    assert time.monotonic() - started < 10
    assert result.is_error
    assert result.content.startswith("started\n")
    assert result.content.endswith(
        "[ERROR: Command timed out after 500ms. Partial output is shown above.\n"
        "You can retry with a longer timeout by setting the timeout_ms parameter.]"
    )
    assert not _live(int((workdir / "bg.pid").read_text()))


async def test_shell_background_process_does_not_outlive_the_command(
    box: ToolBox, workdir: Path
) -> None:
    with trio.fail_after(BOUND):
        result = await call(box, "shell", command="sleep 30 & echo $! > bg.pid")
    assert not result.is_error
    assert not _live(int((workdir / "bg.pid").read_text()))


async def test_shell_timeout_above_the_maximum_is_capped(make_box: Make) -> None:
    box = ToolBox(make_box().environment, max_timeout_ms=300)
    with trio.fail_after(BOUND):
        result = await call(box, "shell", command="sleep 30", timeout_ms=10_000_000)
    assert "Command timed out after 300ms" in result.content
    assert "timeout_ms 10000000 is above the maximum; 300 was used" in result.content


async def test_shell_default_timeout_comes_from_the_tool_box(make_box: Make) -> None:
    box = ToolBox(make_box().environment, default_timeout_ms=300)
    assert box.specs()[3].parameters["properties"]["timeout_ms"]["default"] == 300
    with trio.fail_after(BOUND):
        result = await call(box, "shell", command="sleep 30")
    assert "Command timed out after 300ms" in result.content


async def test_cancelling_a_shell_call_propagates_and_leaves_no_process(
    box: ToolBox, workdir: Path
) -> None:
    command = "echo $$ > leader.pid; sleep 30 & echo $! > bg.pid; wait"
    reached_after_execute = False

    async def wait_then_cancel(scope: trio.CancelScope) -> None:
        while True:
            if _has_content(workdir / "bg.pid"):
                scope.cancel()
                return
            await trio.sleep(0.01)

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(wait_then_cancel, scope)
                await call(box, "shell", command=command, timeout_ms=60_000)
                reached_after_execute = True
    assert scope.cancelled_caught
    assert not reached_after_execute
    for name in ("leader.pid", "bg.pid"):
        assert not _live(int((workdir / name).read_text()))


async def test_shell_output_is_truncated_by_chars_then_lines(box: ToolBox) -> None:
    with trio.fail_after(BOUND):
        many_chars = await call(box, "shell", command="printf '%*s' 100000 '' | tr ' ' x")
        many_lines = await call(box, "shell", command="seq 1 1000")
    assert "[WARNING: Tool output was truncated." in many_chars.content
    assert "characters were removed from the middle" in many_chars.content
    assert many_chars.content.startswith("x" * 15_000 + "\n\n[WARNING")
    assert many_chars.content.splitlines()[-1].startswith("Exit code: 0")
    lines = many_lines.content.split("\n")
    assert len(lines) == 257
    assert lines[:2] == ["1", "2"]
    assert lines[128] == "[... 745 lines omitted ...]"
    assert lines[-2] == "1000"
    assert lines[-1].startswith("Exit code: 0")


async def test_shell_in_a_missing_workdir_is_an_error(make_box: Make, workdir: Path) -> None:
    box = make_box()
    _remove_dir(workdir)
    result = await call(box, "shell", command="true")
    assert result.is_error
    assert "does not exist" in result.content


# -- grep and glob ---------------------------------------------------------------------------


@pytest.fixture
def tree(workdir: Path) -> Path:
    (workdir / "sub").mkdir()
    (workdir / ".git").mkdir()
    (workdir / "b.txt").write_text("needle in text\n")
    (workdir / "a.py").write_text("x = 1\nneedle = 2\nNEEDLE = 3\n")
    (workdir / "sub" / "c.py").write_text("needle()\n")
    (workdir / ".git" / "config").write_text("needle\n")
    (workdir / "blob.bin").write_bytes(b"needle\0\x01\x02")
    return workdir


async def test_grep_lists_matches_in_path_order_skipping_git_and_binaries(
    box: ToolBox, tree: Path
) -> None:
    result = await call(box, "grep", pattern="needle")
    assert not result.is_error
    assert result.content.splitlines() == [
        "a.py:2:needle = 2",
        "b.txt:1:needle in text",
        "sub/c.py:1:needle()",
    ]


async def test_grep_filters_case_and_path(box: ToolBox, tree: Path) -> None:
    only_py = await call(box, "grep", pattern="needle", glob_filter="*.py", case_insensitive=True)
    assert only_py.content.splitlines() == [
        "a.py:2:needle = 2",
        "a.py:3:NEEDLE = 3",
        "sub/c.py:1:needle()",
    ]
    nested = await call(box, "grep", pattern="needle", glob_filter="sub/*.py")
    assert nested.content == "sub/c.py:1:needle()"
    in_sub = await call(box, "grep", pattern="needle", path="sub")
    assert in_sub.content == "sub/c.py:1:needle()"
    one_file = await call(box, "grep", pattern="=", path="a.py")
    assert one_file.content.splitlines() == [
        "a.py:1:x = 1",
        "a.py:2:needle = 2",
        "a.py:3:NEEDLE = 3",
    ]


async def test_grep_stops_at_max_results(box: ToolBox, workdir: Path) -> None:
    (workdir / "many.txt").write_text("hit\n" * 5)
    limited = await call(box, "grep", pattern="hit", max_results=2)
    assert limited.content.splitlines() == [
        "many.txt:1:hit",
        "many.txt:2:hit",
        "[Stopped after 2 matches; there are more. Narrow the pattern, path or glob_filter, "
        "or raise max_results.]",
    ]
    exact = await call(box, "grep", pattern="hit", max_results=5)
    assert "Stopped" not in exact.content
    assert len(exact.content.splitlines()) == 5


async def test_grep_default_limit_is_100(box: ToolBox, workdir: Path) -> None:
    (workdir / "many.txt").write_text("hit\n" * 150)
    result = await call(box, "grep", pattern="hit")
    assert len(result.content.splitlines()) == 101


async def test_grep_output_keeps_the_tail_beyond_20000_chars(box: ToolBox, workdir: Path) -> None:
    (workdir / "wide.txt").write_text(
        "".join(f"hit {i:03d} " + "y" * 200 + "\n" for i in range(150))
    )
    result = await call(box, "grep", pattern="hit", max_results=150)
    assert result.content.startswith("[WARNING: Tool output was truncated. First ")
    assert "characters were removed. The full output is available in the event stream.]" in (
        result.content
    )
    assert result.content.endswith("wide.txt:150:hit 149 " + "y" * 200)


async def test_grep_clips_very_long_lines(box: ToolBox, workdir: Path) -> None:
    (workdir / "min.js").write_text("needle" + "z" * 5000 + "\n")
    result = await call(box, "grep", pattern="needle")
    assert result.content.endswith("[... 4506 more characters]")
    assert len(result.content) < 600


@pytest.mark.parametrize(
    ("arguments", "expected", "is_error"),
    [
        ({"pattern": "("}, "invalid regular expression '('", True),
        ({"pattern": "x", "path": "nowhere"}, "path 'nowhere' does not exist", True),
        ({"pattern": "x", "path": "../"}, "outside the working directory", True),
        ({"pattern": "zebra"}, "No matches for 'zebra' in .", False),
    ],
)
async def test_grep_errors_and_no_matches(
    box: ToolBox, tree: Path, arguments: dict[str, Any], expected: str, is_error: bool
) -> None:
    result = await call(box, "grep", **arguments)
    assert result.is_error is is_error
    assert expected in result.content


async def test_glob_sorts_newest_first_and_skips_git(box: ToolBox, tree: Path) -> None:
    now = time.time()
    for age, name in enumerate(["sub/c.py", "a.py", "b.txt", "blob.bin"]):
        os.utime(tree / name, (now - 100 * age, now - 100 * age))
    py = await call(box, "glob", pattern="**/*.py")
    assert py.content.splitlines() == ["sub/c.py", "a.py"]
    everything = await call(box, "glob", pattern="**/*")
    listed = everything.content.splitlines()
    assert "sub/" in listed
    assert not any(".git" in line for line in listed)
    files_only = [line for line in listed if not line.endswith("/")]
    assert files_only == ["sub/c.py", "a.py", "b.txt", "blob.bin"]
    in_sub = await call(box, "glob", pattern="*.py", path="sub")
    assert in_sub.content == "sub/c.py"


async def test_glob_ties_are_broken_by_path(box: ToolBox, workdir: Path) -> None:
    for name in ("b.txt", "a.txt", "c.txt"):
        (workdir / name).write_text("")
        os.utime(workdir / name, (1_000_000, 1_000_000))
    result = await call(box, "glob", pattern="*.txt")
    assert result.content.splitlines() == ["a.txt", "b.txt", "c.txt"]


async def test_glob_tail_truncation_beyond_20000_chars(box: ToolBox, workdir: Path) -> None:
    for i in range(400):
        (workdir / (f"{i:03d}_" + "n" * 60 + ".txt")).write_text("")
    result = await call(box, "glob", pattern="*.txt")
    assert result.content.startswith("[WARNING: Tool output was truncated. First ")


@pytest.mark.parametrize(
    ("arguments", "expected", "is_error"),
    [
        ({"pattern": "/etc/*"}, "is absolute", True),
        ({"pattern": "*", "path": "missing"}, "path 'missing' does not exist", True),
        ({"pattern": "*", "path": "a.py"}, "is a file, not a directory", True),
        ({"pattern": "../*"}, "No files match '../*'", False),
        ({"pattern": "*.rs"}, "No files match '*.rs' under .", False),
    ],
)
async def test_glob_errors_and_no_matches(
    box: ToolBox, tree: Path, arguments: dict[str, Any], expected: str, is_error: bool
) -> None:
    result = await call(box, "glob", **arguments)
    assert result.is_error is is_error
    assert expected in result.content


# -- report_status ---------------------------------------------------------------------------


async def test_report_status_writes_an_owned_status_file_that_ingestion_accepts(
    box: ToolBox, workdir: Path, stage_dir: Path
) -> None:
    result = await call(
        box,
        "report_status",
        outcome="success",
        preferred_label="Approve",
        context_updates={"tests": "green"},
        notes="all done",
    )
    assert not result.is_error
    assert "outcome=success" in result.content
    document = json.loads((stage_dir / "status.json").read_text())
    assert {key: document[key] for key in OWNER} == OWNER
    sources = StatusSources(
        stage_dir / "status.json", workdir / "status.json", workdir / ".attractor/status.json"
    )
    decision = ingest(sources, run_id="run-1", node_id="build", attempt_id="build-1-abc")
    assert decision.source == "canonical"
    assert not decision.failed
    expected = Outcome(
        StageStatus.SUCCESS,
        preferred_label="Approve",
        context_updates={"tests": "green"},
        notes="all done",
    )
    assert decision.outcome == expected
    assert box.reported == expected


async def test_report_status_without_owner_or_status_path_writes_to_the_stage_dir(
    make_box: Make, stage_dir: Path
) -> None:
    box = make_box(owner=None, status_path=None)
    await call(box, "report_status", outcome="ok")
    document = json.loads((stage_dir / "status.json").read_text())
    assert document["outcome"] == "success"
    assert not {"run_id", "node_id", "attempt_id"} & set(document)


async def test_report_status_fail_carries_reason_and_class(box: ToolBox, stage_dir: Path) -> None:
    await call(
        box,
        "report_status",
        outcome="failure",
        failure_reason="tests fail",
        failure_class="deterministic",
    )
    document = json.loads((stage_dir / "status.json").read_text())
    assert (document["outcome"], document["failure_reason"], document["failure_class"]) == (
        "fail",
        "tests fail",
        "deterministic",
    )
    assert box.reported is not None and box.reported.status is StageStatus.FAIL


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"outcome": "great job"}, "unknown outcome 'great job'"),
        ({"outcome": "fail"}, "needs a failure_reason"),
        ({"outcome": "retry", "failure_reason": ""}, "needs a failure_reason"),
    ],
)
async def test_report_status_rejects_bad_outcomes_without_writing(
    box: ToolBox, stage_dir: Path, arguments: dict[str, Any], expected: str
) -> None:
    result = await call(box, "report_status", **arguments)
    assert result.is_error
    assert expected in result.content
    assert not (stage_dir / "status.json").exists()
    assert box.reported is None


# -- truncation (pure) -----------------------------------------------------------------------


def test_truncate_output_modes() -> None:
    assert truncate_output("short", 10, "head_tail") == "short"
    text = "a" * 50 + "b" * 50
    head_tail = truncate_output(text, 20, "head_tail")
    assert head_tail.startswith("a" * 10 + "\n\n[WARNING: Tool output was truncated. 80 characters")
    assert head_tail.endswith("]\n\n" + "b" * 10)
    tail = truncate_output(text, 20, "tail")
    assert tail == (
        "[WARNING: Tool output was truncated. First 80 characters were removed. "
        "The full output is available in the event stream.]\n\n" + "b" * 20
    )


def test_truncate_lines_keeps_head_and_tail() -> None:
    text = "\n".join(str(i) for i in range(10))
    assert truncate_lines(text, 10) == text
    assert truncate_lines(text, 4) == "0\n1\n[... 6 lines omitted ...]\n8\n9"
    assert truncate_lines(text, 5) == "0\n1\n[... 5 lines omitted ...]\n7\n8\n9"


@given(st.text(max_size=300), st.integers(min_value=2, max_value=200))
def test_truncate_output_keeps_both_ends_and_bounds_the_size(text: str, limit: int) -> None:
    for mode in ("head_tail", "tail"):
        result = truncate_output(text, limit, mode)
        if len(text) <= limit:
            assert result == text
            continue
        assert "[WARNING: Tool output was truncated." in result
        assert len(result) <= limit + 300
        assert result.endswith(text[len(text) - limit // 2 :])
        if mode == "head_tail":
            assert result.startswith(text[: limit // 2])


@given(st.lists(st.text(alphabet="ab", max_size=3), max_size=40), st.integers(2, 30))
def test_truncate_lines_bounds_the_line_count(lines: list[str], limit: int) -> None:
    text = "\n".join(lines)
    result = truncate_lines(text, limit).split("\n")
    original = text.split("\n")
    if len(original) <= limit:
        assert result == original
    else:
        assert len(result) == limit + 1
        assert result[: limit // 2] == original[: limit // 2]
        assert result[limit // 2 + 1 :] == original[len(original) - (limit - limit // 2) :]
