"""Server mode (spec §9.5, contract.md §8/§9): a real listening server, a real HTTP client.

Every test runs ``serve`` on 127.0.0.1 with port 0 inside the test's own nursery and talks to
it with ``httpx.AsyncClient`` on the real clock, under ``trio.fail_after`` bounds. Waiting is
always for something observable (an SSE event, a file), never for a fixed time.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from attrs import define
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.api import open_run as real_open_run
from attractor_trio.cli.serve import serve_command
from attractor_trio.interviewers import Option, Question, QuestionType
from attractor_trio.server import create_app, open_run_manager, serve
from attractor_trio.server import manager as manager_module
from attractor_trio.server.auth import presented_tokens, token_matches
from attractor_trio.server.http_interviewer import HttpInterviewer, InvalidAnswer, answer_for
from attractor_trio.server.manager import OptionsError, ServedRun, ServerClosing, parse_options
from attractor_trio.server.submission import BadSubmission, decode_submission

from .helpers import graph_of

LINEAR = """digraph p { start [shape=Mdiamond]; done [shape=Msquare]
    a [prompt="a"]; b [prompt="b"]; start -> a -> b -> done }"""
GATE = """digraph g { start [shape=Mdiamond]; done [shape=Msquare]
    gate [shape=hexagon, label="Ship it?"%s]
    ship [prompt="ship"]; fix [prompt="fix"]
    start -> gate; gate -> ship [label="[S] Ship"]; gate -> fix [label="[F] Fix"]
    ship -> done; fix -> done }"""
STALL_A = {"nodes": {"a": [{"stall": "forever"}]}}
STATUS_KEYS = {"run_id", "state", "current_node", "active_attempts", "failure_reason"}
STATUS_KEYS |= {"failure_class", "logs_root"}
BOUND = 10  # seconds any single test may take


@define
class Served:
    client: httpx.AsyncClient
    runs_dir: Path
    shutdown: trio.Event
    port: int


@asynccontextmanager
async def served(
    tmp_path: Path, token: str | None = None, bound: float = BOUND, **settings: Any
) -> AsyncIterator[Served]:
    """A running server (``settings``: more ``serve`` arguments) for at most ``bound``
    seconds; leaving the block shuts it down and waits until it has stopped."""
    shutdown = trio.Event()
    runs_dir = tmp_path / "runs"
    with trio.fail_after(bound):
        async with trio.open_nursery() as nursery:
            start = functools.partial(
                serve,
                host="127.0.0.1",
                port=0,
                runs_dir=runs_dir,
                token=token,
                shutdown_trigger=shutdown,
                shutdown_grace=5,
                **settings,
            )
            port: int = await nursery.start(start)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                yield Served(client, runs_dir, shutdown, port)
            shutdown.set()


async def submit(client: httpx.AsyncClient, dot: str, **options: Any) -> str:
    response = await client.post("/pipelines", json={"dot": dot, "options": options})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["state"] in ("starting", "running")
    return str(body["id"])


class SseReader:
    """Parses an SSE response into ``{"event", "data", "id"}`` dicts, one per event."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self) -> dict[str, Any] | None:
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if "event" in fields:
                    return {**fields, "data": json.loads(fields["data"])}
                fields = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                fields[key] = value.removeprefix(" ")
        return None

    async def until(self, name: str, **match: Any) -> dict[str, Any]:
        while (event := await self.next()) is not None:
            data = event["data"]
            if event["event"] == name and all(data.get(k) == v for k, v in match.items()):
                return event
        raise AssertionError(f"stream ended before {name} {match}")

    async def rest(self) -> list[dict[str, Any]]:
        events = []
        while (event := await self.next()) is not None:
            events.append(event)
        return events


@asynccontextmanager
async def sse(client: httpx.AsyncClient, run_id: str, **kwargs: Any) -> AsyncIterator[SseReader]:
    async with client.stream("GET", f"/pipelines/{run_id}/events", **kwargs) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseReader(response)


def final_of(runs_dir: Path, run_id: str) -> dict[str, Any]:
    return dict(json.loads((runs_dir / run_id / "final.json").read_text()))


# --- submitting and following ----------------------------------------------------------------


async def test_submit_then_follow_sse_to_the_terminal_event(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = await submit(s.client, LINEAR)
        async with sse(s.client, run_id) as stream:
            events = await stream.rest()
        names = [e["event"] for e in events]
        assert names[0] == "pipeline_started" and names[-1] == "pipeline_completed"
        assert [e["data"]["seq"] for e in events] == list(range(1, len(events) + 1))
        assert all(e["id"] == str(e["data"]["seq"]) for e in events)
        assert all(e["data"]["event"] == e["event"] for e in events)
        assert {e["data"]["run_id"] for e in events} == {run_id}
        status = (await s.client.get(f"/pipelines/{run_id}")).json()
        assert status.keys() >= STATUS_KEYS
        assert status["id"] == status["run_id"] == run_id
        assert status["state"] == "success"
        assert Path(status["logs_root"]) == s.runs_dir / run_id
        assert final_of(s.runs_dir, run_id)["status"] == "success"
        listed = (await s.client.get("/pipelines")).json()
        assert [r["id"] for r in listed] == [run_id]


async def test_last_event_id_resumes_after_that_event(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = await submit(s.client, LINEAR)
        async with sse(s.client, run_id) as stream:
            everything = await stream.rest()
        async with sse(s.client, run_id, headers={"Last-Event-ID": "3"}) as stream:
            resumed = await stream.rest()
        assert [e["data"] for e in resumed] == [e["data"] for e in everything[3:]]
        async with sse(s.client, run_id, params={"last_event_id": "5"}) as stream:
            assert (await stream.next() or {})["id"] == "6"
        bad = await s.client.get(f"/pipelines/{run_id}/events", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400


async def test_raw_dot_body_is_accepted(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        response = await s.client.post(
            "/pipelines", content=LINEAR, headers={"content-type": "text/vnd.graphviz"}
        )
        assert response.status_code == 201
        run_id = response.json()["id"]
        assert response.headers["location"] == f"/pipelines/{run_id}"
        async with sse(s.client, run_id) as stream:
            await stream.until("pipeline_completed")


# --- cancel, concurrency, shutdown -----------------------------------------------------------


async def test_cancel_a_stalling_run(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = await submit(s.client, LINEAR, sim_script=STALL_A)
        async with sse(s.client, run_id) as stream:
            await stream.until("stage_attempt_started", node_id="a")
            status = (await s.client.get(f"/pipelines/{run_id}")).json()
            assert status["state"] in ("starting", "running")
            response = await s.client.post(f"/pipelines/{run_id}/cancel")
            assert response.status_code == 202
            assert response.json()["id"] == run_id
            rest = await stream.rest()
        assert rest[-1]["event"] == "pipeline_failed"
        assert rest[-1]["data"]["status"] == "canceled"
        final = final_of(s.runs_dir, run_id)
        assert (final["status"], final["exit_path"]) == ("canceled", "canceled")
        assert "HTTP" in final["failure_reason"]
        again = await s.client.post(f"/pipelines/{run_id}/cancel")
        assert again.status_code == 200 and again.json()["state"] == "canceled"


async def test_concurrent_runs_each_in_its_own_scope(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        stalled = [await submit(s.client, LINEAR, sim_script=STALL_A) for _ in range(2)]
        quick = await submit(s.client, LINEAR)
        for run_id in stalled:  # both are stalled at the same time
            async with sse(s.client, run_id) as stream:
                await stream.until("stage_attempt_started", node_id="a")
        async with sse(s.client, quick) as stream:  # and neither holds up a third run
            await stream.until("pipeline_completed")
        listed = {r["id"]: r["state"] for r in (await s.client.get("/pipelines")).json()}
        assert listed[quick] == "success"
        assert all(listed[run_id] in ("starting", "running") for run_id in stalled)
        await s.client.post(f"/pipelines/{stalled[0]}/cancel")
        async with sse(s.client, stalled[0]) as stream:
            await stream.until("pipeline_failed")
        assert (await s.client.get(f"/pipelines/{stalled[1]}")).json()["state"] == "running"
        await s.client.post(f"/pipelines/{stalled[1]}/cancel")
        async with sse(s.client, stalled[1]) as stream:
            await stream.until("pipeline_failed")
        assert {final_of(s.runs_dir, r)["status"] for r in stalled} == {"canceled"}


async def test_shutdown_cancels_in_flight_runs_and_finalizes_them(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = await submit(s.client, LINEAR, sim_script=STALL_A)
        async with sse(s.client, run_id) as stream:
            await stream.until("stage_attempt_started", node_id="a")
            s.shutdown.set()
            rest = await stream.rest()  # the stream gets the terminal event, then ends
        assert rest[-1]["event"] == "pipeline_failed"
    final = final_of(s.runs_dir, run_id)
    assert final["status"] == "canceled"
    assert "server shutting down" in final["failure_reason"]


async def test_a_closing_manager_starts_no_new_runs(tmp_path: Path) -> None:
    async with open_run_manager(tmp_path / "runs") as manager:
        await manager.shutdown(grace=1)
        with pytest.raises(ServerClosing):
            await manager.submit(graph_of(LINEAR), parse_options(None))
    assert not (tmp_path / "runs").exists()


# --- human gates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "chosen", "skipped"),
    [({"value": "F"}, "fix", "ship"), ({"text": "ship"}, "ship", "fix")],
)
async def test_a_human_gate_answered_over_http_routes_the_run(
    tmp_path: Path, payload: dict[str, str], chosen: str, skipped: str
) -> None:
    async with served(tmp_path) as s:
        run_id = await submit(s.client, GATE % "")
        base = f"/pipelines/{run_id}/questions"
        async with sse(s.client, run_id) as stream:
            await stream.until("interview_started", node_id="gate")
            questions = (await s.client.get(base)).json()
            assert questions == [
                {
                    "id": questions[0]["id"],
                    "node_id": "gate",
                    "text": "Ship it?",
                    "type": "multiple_choice",
                    "options": [
                        {"key": "S", "label": "[S] Ship"},
                        {"key": "F", "label": "[F] Fix"},
                    ],
                }
            ]
            qid = questions[0]["id"]
            wrong = await s.client.post(f"{base}/{qid}/answer", json={"value": "X"})
            assert wrong.status_code == 400
            assert "S, F" in wrong.json()["error"]
            unknown = await s.client.post(f"{base}/nope/answer", json={"value": "S"})
            assert unknown.status_code == 404
            answered = await s.client.post(f"{base}/{qid}/answer", json=payload)
            assert answered.status_code == 200, answered.text
            done = await stream.until("interview_completed", node_id="gate")
            assert done["data"]["answer"] == chosen[0].upper()
            await stream.until("pipeline_completed")
        assert (await s.client.get(base)).json() == []
        again = await s.client.post(f"{base}/{qid}/answer", json=payload)
        assert again.status_code == 404
        completed = final_of(s.runs_dir, run_id)["completed_nodes"]
        assert chosen in completed and skipped not in completed


async def test_a_human_gate_times_out_to_its_default(tmp_path: Path) -> None:
    gate = GATE % ', human.timeout="300ms", human.default_choice="fix"'
    async with served(tmp_path) as s:
        run_id = await submit(s.client, gate)
        async with sse(s.client, run_id) as stream:
            await stream.until("interview_started", node_id="gate")
            assert len((await s.client.get(f"/pipelines/{run_id}/questions")).json()) == 1
            await stream.until("interview_timeout", node_id="gate")
            await stream.until("pipeline_completed")
        assert (await s.client.get(f"/pipelines/{run_id}/questions")).json() == []
        assert "fix" in final_of(s.runs_dir, run_id)["completed_nodes"]


# --- auth ------------------------------------------------------------------------------------


async def test_every_route_needs_the_token_when_one_is_set(tmp_path: Path) -> None:
    async with served(tmp_path, token="s3cret") as s:
        good = {"authorization": "Bearer s3cret"}
        for path in ("/pipelines", "/", "/pipelines/nope/events"):
            missing = await s.client.get(path)
            assert missing.status_code == 401, path
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert "token" in missing.json()["error"]
            wrong = await s.client.get(path, headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401, path
        assert (await s.client.get("/pipelines", headers=good)).status_code == 200
        assert (await s.client.get("/", headers=good)).status_code == 200
        assert (await s.client.get("/pipelines", params={"token": "s3cret"})).status_code == 200
        denied = await s.client.post("/pipelines", json={"dot": LINEAR})
        assert denied.status_code == 401
        assert not s.runs_dir.exists()
        created = await s.client.post("/pipelines", json={"dot": LINEAR}, headers=good)
        run_id = created.json()["id"]
        assert (await s.client.get(f"/pipelines/{run_id}/events")).status_code == 401
        async with sse(s.client, run_id, params={"token": "s3cret"}) as stream:
            await stream.until("pipeline_completed")


def test_tokens_are_read_from_the_header_and_the_query() -> None:
    headers = [(b"authorization", b"Bearer abc"), (b"host", b"x")]
    assert presented_tokens(headers, b"token=def&x=1") == ["abc", "def"]
    assert presented_tokens([(b"Authorization", b"Basic abc")], b"") == []
    assert token_matches("abc", ["zzz", "abc"])
    assert not token_matches("abc", ["ab", "abcd", ""])


# --- bad input -------------------------------------------------------------------------------


async def test_malformed_dot_is_400_with_positioned_diagnostics(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        response = await s.client.post("/pipelines", json={"dot": "digraph p {\n  a -> ;\n}"})
        assert response.status_code == 400
        body = response.json()
        assert body["error"]
        [diagnostic] = body["diagnostics"]
        assert diagnostic["rule"] == "syntax" and diagnostic["severity"] == "error"
        assert diagnostic["line"] == 2 and diagnostic["col"] > 0
        invalid = await s.client.post("/pipelines", json={"dot": "digraph g { a -> b }"})
        assert invalid.status_code == 400
        rules = {d["rule"] for d in invalid.json()["diagnostics"]}
        assert {"start_node", "terminal_node"} <= rules
        assert not s.runs_dir.exists()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"dot": LINEAR, "options": {"simulat": True}}, "simulat"),
        ({"dot": LINEAR, "options": {"simulate": False}}, "simulate=true"),
        ({"dot": LINEAR, "options": {"sim_script": {"nodes": {"a": [{"oops": 1}]}}}}, "oops"),
        ({"dot": LINEAR, "options": {"stall_timeout": "soon"}}, "stall_timeout"),
        ({"dot": LINEAR, "extra": 1}, "extra"),
        ({"options": {}}, "dot"),
    ],
)
async def test_bad_submissions_are_400_naming_the_problem(
    tmp_path: Path, body: dict[str, Any], needle: str
) -> None:
    async with served(tmp_path) as s:
        response = await s.client.post("/pipelines", json=body)
        assert response.status_code == 400
        assert needle in response.json()["error"]
        assert not s.runs_dir.exists()


async def test_unknown_ids_are_404_json(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        for method, path in [
            ("GET", "/pipelines/nope"),
            ("GET", "/pipelines/nope/events"),
            ("GET", "/pipelines/nope/graph"),
            ("GET", "/pipelines/nope/questions"),
            ("GET", "/pipelines/nope/checkpoint"),
            ("GET", "/pipelines/nope/context"),
            ("POST", "/pipelines/nope/cancel"),
            ("POST", "/pipelines/nope/questions/q1/answer"),
        ]:
            response = await s.client.request(method, path, json={"value": "x"})
            assert response.status_code == 404, path
            assert "nope" in response.json()["error"]


async def test_wrong_methods_are_405_json(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        response = await s.client.delete("/pipelines")
        assert response.status_code == 405
        assert "error" in response.json()
        assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


async def test_a_run_task_that_blows_up_does_not_take_the_server_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = {"once": True}

    @asynccontextmanager
    async def open_run_then_crash(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with real_open_run(*args, **kwargs) as controller:
            yield controller
            if broken.pop("once", False):
                raise RuntimeError("a bug in the run task")

    monkeypatch.setattr(manager_module, "open_run", open_run_then_crash)
    async with served(tmp_path) as s:
        first = await submit(s.client, LINEAR, sim_script=STALL_A)
        async with sse(s.client, first) as stream:
            await stream.until("pipeline_failed")
        second = await submit(s.client, LINEAR)
        async with sse(s.client, second) as stream:
            await stream.until("pipeline_completed")
        states = {r["id"]: r["state"] for r in (await s.client.get("/pipelines")).json()}
        assert states == {first: "canceled", second: "success"}


# --- state and graph -------------------------------------------------------------------------


async def test_checkpoint_and_context_endpoints(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = await submit(s.client, LINEAR, context={"who": "tester"}, stall_timeout="1m")
        async with sse(s.client, run_id) as stream:
            await stream.until("pipeline_completed")
        checkpoint = (await s.client.get(f"/pipelines/{run_id}/checkpoint")).json()
        on_disk = json.loads((s.runs_dir / run_id / "checkpoint.json").read_text())
        assert checkpoint == on_disk
        assert checkpoint["current_node"] == "done"
        assert checkpoint["completed_nodes"][:3] == ["start", "a", "b"]
        context = (await s.client.get(f"/pipelines/{run_id}/context")).json()
        assert context == on_disk["context"] and context["who"] == "tester"


async def test_checkpoint_before_the_first_stage_is_404(tmp_path: Path) -> None:
    """White-box: a run registered before its first checkpoint (the window is too short to
    hit through a real run), served through the ASGI app directly."""
    async with open_run_manager(tmp_path / "runs") as manager:
        fresh = ServedRun("r1", tmp_path / "runs" / "r1", graph_of(LINEAR))
        manager._runs[fresh.id] = fresh
        transport = httpx.ASGITransport(app=create_app(manager))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            response = await client.get("/pipelines/r1/checkpoint")
            assert response.status_code == 404
            assert "no checkpoint yet" in response.json()["error"]
            assert (await client.get("/pipelines/r1/context")).json() == {}
            assert (await client.get("/pipelines/r1")).json()["state"] == "starting"
        fresh.finished.set()


async def test_graph_is_svg_with_graphviz_else_dot_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no Graphviz
    async with served(tmp_path) as s:
        run_id = await submit(s.client, LINEAR)
        plain = await s.client.get(f"/pipelines/{run_id}/graph")
        assert plain.status_code == 200
        assert plain.headers["content-type"].startswith("text/vnd.graphviz")
        assert plain.text == LINEAR
        fake_dot = bin_dir / "dot"  # a stand-in for Graphviz that proves it was used
        fake_dot.write_text("#!/bin/sh\n/bin/cat >/dev/null\necho '<svg>rendered</svg>'\n")
        fake_dot.chmod(0o755)
        svg = await s.client.get(f"/pipelines/{run_id}/graph")
        assert svg.headers["content-type"].startswith("image/svg+xml")
        assert svg.text.strip() == "<svg>rendered</svg>"
        forced = await s.client.get(f"/pipelines/{run_id}/graph", params={"format": "dot"})
        assert forced.text == LINEAR


async def test_the_viewer_is_served_at_the_root(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        response = await s.client.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        missing = await s.client.get("/no-such-file.js")
        assert missing.status_code == 404 and "error" in missing.json()


# --- pure pieces -----------------------------------------------------------------------------

CHOICE = Question(
    "Ship it?",
    QuestionType.MULTIPLE_CHOICE,
    [Option("S", "[S] Ship"), Option("F", "[F] Fix")],
    metadata={"targets": ["ship", "fix"]},
)


def test_answers_name_an_option_by_key_label_or_target() -> None:
    assert answer_for(CHOICE, {"value": "s"}).selected_option == Option("S", "[S] Ship")
    assert answer_for(CHOICE, {"text": "Fix"}).selected_option == Option("F", "[F] Fix")
    assert answer_for(CHOICE, {"value": "fix"}).value == "F"
    yes_no = Question("Sure?", QuestionType.YES_NO)
    assert answer_for(yes_no, {"value": "yes"}).value == "yes"
    free = answer_for(Question("Why?", QuestionType.FREEFORM), {"text": "because"})
    assert (free.value, free.text) == ("because", "because")
    for bad in [{"value": 1}, {}, {"value": "S", "other": 1}, ["S"]]:
        with pytest.raises(InvalidAnswer):
            answer_for(CHOICE, bad)
    with pytest.raises(InvalidAnswer, match="yes or no"):
        answer_for(yes_no, {"value": "maybe"})


@given(st.text(max_size=12))
def test_a_choice_answer_is_an_option_or_refused(raw: str) -> None:
    try:
        answer = answer_for(CHOICE, {"value": raw})
    except InvalidAnswer as exc:
        assert "valid keys: S, F" in str(exc)
    else:
        assert answer.selected_option in CHOICE.options
        assert answer.value == answer.selected_option.key


async def test_an_unanswered_question_times_out_and_leaves_the_table(
    autojump_clock: Any,
) -> None:
    interviewer = HttpInterviewer()
    question = Question("Ship it?", options=[Option("S", "Ship")], timeout_seconds=5)
    answer = await interviewer.ask(question)
    assert answer.timed_out
    assert interviewer.pending() == []


def test_options_and_bodies_decode_strictly() -> None:
    options = parse_options({"stall_timeout": "0", "context": {"k": 1}})
    assert options.run_settings()["stall_timeout"] is None
    assert parse_options(None).simulate is True
    with pytest.raises(OptionsError, match="context"):
        parse_options({"context": []})
    assert decode_submission("text/vnd.graphviz", b"digraph p {}").dot == "digraph p {}"
    for sniffable in ("", "text/plain", "application/x-www-form-urlencoded"):
        with pytest.raises(BadSubmission, match="unsupported Content-Type") as caught:
            decode_submission(sniffable, b'{"dot": "x"}')
        assert caught.value.status == 415
    with pytest.raises(BadSubmission, match="line 1"):
        decode_submission("application/json", b"{nope")


# --- the command -----------------------------------------------------------------------------


def test_serve_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            serve_command, ["--port", str(port), "--runs-dir", str(tmp_path / "runs")]
        )
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


async def _serve_command(runs_dir: Path, **popen: Any) -> tuple[trio.Process, str]:
    """`serve --port 0` as a real process, once it has printed the URL it listens on."""
    code = "import sys; from attractor_trio.cli.serve import serve_command; serve_command()"
    argv = [sys.executable, "-c", code, "--port", "0", "--runs-dir", str(runs_dir)]
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, **popen)
    assert process.stdout is not None
    buffered = b""
    while b"\n" not in buffered:
        chunk = await process.stdout.receive_some()
        assert chunk, "serve exited before printing its URL"
        buffered += chunk
    url = buffered.decode().splitlines()[0]
    assert url.startswith("http://127.0.0.1:")
    return process, url


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_the_command_shuts_down_gracefully_on_a_signal(
    tmp_path: Path, signum: signal.Signals, exit_code: int
) -> None:
    """contract.md §10: the in-flight run is canceled and gets its final.json, then the command
    exits 128 + the signal number, like `run`."""
    runs_dir = tmp_path / "runs"
    env = {**os.environ, "ATTRACTOR_TOKEN": "t0k"}
    with trio.fail_after(BOUND):
        process, url = await _serve_command(runs_dir, env=env)
        headers = {"authorization": "Bearer t0k"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5) as client:
            run_id = await submit(client, LINEAR, sim_script=STALL_A)
            async with sse(client, run_id) as stream:
                await stream.until("stage_attempt_started", node_id="a")
                process.send_signal(signum)
                assert (await stream.rest())[-1]["event"] == "pipeline_failed"
        assert await process.wait() == exit_code
    assert final_of(runs_dir, run_id)["status"] == "canceled"


@pytest.mark.slow
async def test_the_command_raises_the_descriptor_soft_limit_like_run(tmp_path: Path) -> None:
    """A server runs many fan-outs at once: under a soft limit of 1,024 a wide tool fan-out would
    fail with EMFILE while the hard limit allows it (issue #22), so `serve` raises it as `run`
    does."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard descriptor limit leaves nothing to raise")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    with trio.fail_after(BOUND):
        process, _url = await _serve_command(tmp_path / "runs", preexec_fn=low_soft_limit)
        soft = resource.prlimit(process.pid, resource.RLIMIT_NOFILE)[0]
        process.send_signal(signal.SIGINT)
        assert await process.wait() == 130
    assert soft == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
