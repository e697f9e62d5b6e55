"""A web page can never drive the server; bad requests are refused cleanly (contract.md §10).

Same setup as ``test_server.py``: a real ``serve`` on 127.0.0.1:0 and a real HTTP client.
Every refusal is checked for what matters to the user: a 4xx JSON error and no run directory.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from attractor_trio.cli.serve import _url, serve_command
from attractor_trio.server.auth import token_matches
from attractor_trio.server.guard import RequestGuard, host_name
from attractor_trio.server.submission import decode_json

from .test_server import LINEAR, STALL_A, final_of, served, sse, submit

BODY = json.dumps({"dot": LINEAR}).encode()


def nothing_created(runs_dir: Path) -> bool:
    return not runs_dir.exists() or not any(runs_dir.iterdir())


def nested(depth: int) -> str:
    """A JSON value of ``depth`` nested arrays."""
    return "[" * depth + "]" * depth


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    """Every task of this trio run: a finished run must not leave one behind."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, nurseries = 0, list(root.child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            count += 1
            nurseries.extend(task.child_nurseries)
    return count


# --- Host and Origin -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "http://127.0.0.1:1"},  # another local port is another origin
        {"host": "evil.example"},
        {"host": "127.0.0.1.nip.io:8400"},
        {"host": "localhost.evil.example"},
    ],
    ids=lambda h: "-".join(f"{k}={v}" for k, v in h.items()),
)
@pytest.mark.parametrize("media", ["application/json", "text/vnd.graphviz"])
async def test_a_hostile_origin_or_host_creates_no_run_and_no_file(
    tmp_path: Path, headers: dict[str, str], media: str
) -> None:
    body = BODY if media == "application/json" else LINEAR.encode()
    async with served(tmp_path, token="t0k") as s:
        auth = {"authorization": "Bearer t0k", "content-type": media}
        response = await s.client.post("/pipelines", content=body, headers={**auth, **headers})
        assert response.status_code in (403, 421)
        assert "error" in response.json()
        listed = await s.client.get("/pipelines", headers={**auth, **headers})
        assert listed.status_code in (403, 421)  # a rebound page cannot read either
    assert nothing_created(s.runs_dir)


async def test_the_servers_own_names_and_origin_are_accepted(tmp_path: Path) -> None:
    async with served(tmp_path, allowed_hosts=["attractor.internal"]) as s:
        port = s.port
        for host, origin in [
            (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"),
            (f"localhost:{port}", f"http://localhost:{port}"),
            ("localhost", None),
            (f"[::1]:{port}", None),
            ("attractor.internal:443", "https://attractor.internal:443"),
        ]:
            headers = {"host": host, **({"origin": origin} if origin else {})}
            response = await s.client.post("/pipelines", json={"dot": LINEAR}, headers=headers)
            assert response.status_code == 201, (host, response.text)


def test_host_names_and_allow_host_entries() -> None:
    assert host_name("[::1]:8400") == "[::1]"
    assert host_name("LocalHost:1") == "localhost"
    assert host_name("localhost:1@evil.example") == "localhost:1@evil.example"
    guard = RequestGuard(app=None, allowed_hosts=["box.lan:8400"], bind_host="10.1.2.3")  # type: ignore[arg-type]
    scope = {"type": "http", "method": "GET"}
    for host, allowed in [
        ("10.1.2.3:8400", True),  # the address it is bound to
        ("box.lan:8400", True),
        ("box.lan:8401", False),  # an entry with a port allows just that port
        ("box.lan", False),
    ]:
        refusal = guard.refusal({**scope, "headers": [(b"host", host.encode())]})
        assert (refusal is None) is allowed, host
    wildcard = RequestGuard(app=None, bind_host="0.0.0.0")  # type: ignore[arg-type]
    assert wildcard.refusal({**scope, "headers": [(b"host", b"0.0.0.0:1")]}) is not None


# --- content types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/plain",
        "text/plain; charset=utf-8",
        None,
    ],
)
async def test_bodies_a_browser_can_send_cross_site_are_415(
    tmp_path: Path, content_type: str | None
) -> None:
    async with served(tmp_path) as s:
        # httpx adds no Content-Type for raw content, so None really sends none.
        headers = {"content-type": content_type} if content_type else {}
        for body in (BODY, LINEAR.encode()):
            response = await s.client.post("/pipelines", content=body, headers=headers)
            assert response.status_code == 415
            assert "application/json or text/vnd.graphviz" in response.json()["error"]
        run_id = await submit(s.client, LINEAR, sim_script=STALL_A)
        answer = await s.client.post(
            f"/pipelines/{run_id}/questions/q/answer", content=b'{"value": "S"}', headers=headers
        )
        assert answer.status_code == 415
        assert (await s.client.post(f"/pipelines/{run_id}/cancel")).status_code == 202
    assert [p.name for p in s.runs_dir.iterdir()] == [run_id]


# --- malformed bodies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (nested(10_000), "nested deeper than 64"),
        (json.dumps({"dot": LINEAR, "options": {"context": {"k": json.loads(nested(62))}}}), "64"),
        ('{"dot": "digraph p { a [label=\\"\\ud800\\"] }"}', "lone UTF-16 surrogate U+D800"),
        ('{"dot": "digraph p {}", "options": {"context": {"k": "\\udc00"}}}', "surrogate"),
        ('{"dot": "digraph p {}", "options": {"context": {"\\ud83d": 1}}}', "surrogate"),
        ('{"dot": "digraph p {}", "options": {"context": {"k": NaN}}}', "NaN"),
        ('{"dot": "digraph p {}", "options": {"context": {"k": 1e400}}}', "1e400 is out of range"),
        ('{"dot": "digraph p {}", "options": {"context": {"k": 1%s}}}' % ("0" * 5000), "digits"),
        ('{"dot": "digraph p {}", "options": {}, "extra": 1}', "unknown key(s) extra"),
        ('{"dot": "digraph p {}",', "invalid JSON body at line 1"),
        (
            b'{"dot": "digraph p { a [label=\\"\xff\\"] }"}',
            "not UTF-8 text: line 1 column 33: invalid UTF-8 (byte 0xff)",
        ),
    ],
    ids=[
        "10000-deep",
        "65-deep",
        "surrogate-in-dot",
        "surrogate-in-context",
        "surrogate-in-key",
        "nan",
        "infinite-float",
        "5000-digit-int",
        "unknown-field",
        "truncated",
        "invalid-utf8",
    ],
)
async def test_malformed_json_bodies_are_400_and_create_nothing(
    tmp_path: Path, body: str | bytes, needle: str
) -> None:
    async with served(tmp_path) as s:
        response = await s.client.post(
            "/pipelines", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert needle in response.json()["error"]
    assert nothing_created(s.runs_dir)


def test_a_surrogate_pair_is_one_valid_character() -> None:
    assert decode_json(b'{"k": "\\ud83d\\ude00"}') == {"k": "\U0001f600"}


async def test_nesting_up_to_64_is_accepted(tmp_path: Path) -> None:
    context = {"k": json.loads(nested(61))}  # body, options, context + 61 arrays = 64
    async with served(tmp_path) as s:
        run_id = await submit(s.client, LINEAR, context=context)
        async with sse(s.client, run_id) as stream:
            await stream.until("pipeline_completed")


async def test_bad_dot_text_is_a_positioned_400(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        raw = b'digraph p {\n  a [label="\xff"]\n}'
        response = await s.client.post(
            "/pipelines", content=raw, headers={"content-type": "text/vnd.graphviz"}
        )
        assert response.status_code == 400
        assert "line 2 column 13" in response.json()["error"]
        nul = await s.client.post("/pipelines", json={"dot": 'digraph p {\n a [label="\x00"] }'})
        assert nul.status_code == 400
        [diagnostic] = nul.json()["diagnostics"]
        assert (diagnostic["line"], diagnostic["col"]) == (2, 12)
        assert "NUL" in diagnostic["message"]
    assert nothing_created(s.runs_dir)


async def test_oversize_bodies_are_413_before_or_while_reading(tmp_path: Path) -> None:
    async with served(tmp_path, max_body=4096) as s:
        big = json.dumps({"dot": LINEAR + " " * 5000}).encode()
        declared = await s.client.post(
            "/pipelines", content=big, headers={"content-type": "application/json"}
        )
        assert declared.status_code == 413
        assert "larger than 4 KiB" in declared.json()["error"]

        async def chunks() -> Any:
            for _ in range(10):
                yield b" " * 1000

        streamed = await s.client.post(
            "/pipelines", content=chunks(), headers={"content-type": "text/vnd.graphviz"}
        )
        assert streamed.status_code == 413
    assert nothing_created(s.runs_dir)


# --- resources and restarts ------------------------------------------------------------------


@pytest.mark.slow
async def test_200_sequential_runs_hold_no_descriptor_or_task(tmp_path: Path) -> None:
    async with served(tmp_path, bound=120) as s:

        async def one_run() -> None:
            run_id = await submit(s.client, LINEAR)
            async with sse(s.client, run_id) as stream:
                await stream.until("pipeline_completed")

        for _ in range(3):  # warm up: connection pool, lazy imports
            await one_run()
        descriptors, tasks = open_descriptors(), task_count()
        for _ in range(200):
            await one_run()
        assert open_descriptors() <= descriptors
        assert task_count() <= tasks
        listed = (await s.client.get("/pipelines")).json()
        assert len(listed) == 203
        assert {run["state"] for run in listed} == {"success"}


async def test_runs_from_before_a_restart_are_listed_from_disk(tmp_path: Path) -> None:
    async with served(tmp_path) as first:
        old = await submit(first.client, LINEAR)
        async with sse(first.client, old) as stream:
            await stream.until("pipeline_completed")
    (tmp_path / "runs" / "not-a-run").mkdir()  # no manifest.json: not listed
    async with served(tmp_path) as second:
        new = await submit(second.client, LINEAR, sim_script=STALL_A)
        listed = {run["id"]: run for run in (await second.client.get("/pipelines")).json()}
        assert set(listed) == {old, new}
        assert listed[old]["state"] == "success"
        status = await second.client.get(f"/pipelines/{old}")
        assert status.status_code == 200 and status.json()["state"] == "success"
        assert (await second.client.get(f"/pipelines/{old}/checkpoint")).status_code == 200
        assert (await second.client.get(f"/pipelines/{old}/context")).status_code == 200
        for sneaky in ("not-a-run", "%2e%2e", ".hidden", "%2e"):
            assert (await second.client.get(f"/pipelines/{sneaky}")).status_code == 404
    assert final_of(second.runs_dir, new)["status"] == "canceled"


# --- the command -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
def test_a_non_loopback_host_without_a_token_is_refused(tmp_path: Path, host: str) -> None:
    result = CliRunner().invoke(
        serve_command,
        ["--host", host, "--port", "0", "--runs-dir", str(tmp_path / "runs")],
        env={"ATTRACTOR_TOKEN": ""},
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert f"refusing to listen on {host} without a token" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_the_printed_url_names_a_host_the_server_answers() -> None:
    assert _url("0.0.0.0", 8400) == "http://127.0.0.1:8400/"
    assert _url("::", 1) == "http://[::1]:1/"
    assert _url("10.1.2.3", 2) == "http://10.1.2.3:2/"
    assert _url("fe80::1", 3) == "http://[fe80::1]:3/"


async def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """White-box: every comparison goes through ``secrets.compare_digest``."""
    compared: list[tuple[bytes, bytes]] = []
    real = secrets.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(secrets, "compare_digest", recording)
    assert not token_matches("s3cret", ["s3cre", "nope"])
    assert token_matches("s3cret", ["s3cret"])
    assert compared == [(b"s3cret", b"s3cre"), (b"s3cret", b"nope"), (b"s3cret", b"s3cret")]
