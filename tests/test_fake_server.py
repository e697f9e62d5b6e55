"""The scripted fake HTTP server speaks real HTTP/1.1 that httpx understands."""

import httpx

from tests.fakes.server import FakeServer, Reply


async def test_fake(fake_server: FakeServer) -> None:
    fake_server.script(
        r"^/v1/x$",
        Reply.json({"a": 1}, status=429, **{"retry-after": "2"}),
        Reply.sse([b"data: 1\n\n", b"data: 2\n\n"], delay=0.01),
    )
    async with httpx.AsyncClient(base_url=fake_server.base_url, timeout=5) as c:
        r = await c.post("/v1/x", json={"q": 1})
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        async with c.stream("POST", "/v1/x", json={}) as s:
            chunks = [x async for x in s.aiter_text()]
        assert "".join(chunks) == "data: 1\n\ndata: 2\n\n"
    assert fake_server.requests[0].json() == {"q": 1}
