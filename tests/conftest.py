"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from attractor_trio.core import redaction
from attractor_trio.persist import noop_fsync

from .fakes.server import FakeServer, open_fake_server


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """The redactor is process-wide and only grows: a test's secrets must not redact (and
    switch to redacting pipes) the next test's output."""
    redaction.reset()
    yield
    redaction.reset()


@pytest.fixture(autouse=True)
def _fsync_everywhere(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every filesystem is fsynced as a disk (``ATTRACTOR_TRIO_FSYNC_ALWAYS=1``, inherited by
    the tests' child processes too), so that the tests of fsync order and counts mean the same
    on a machine whose ``/tmp`` is a tmpfs, where the engine would otherwise skip its no-op
    fsyncs (contract.md §2). Tests marked ``noop_fsync`` run with the real skipping."""
    if request.node.get_closest_marker("noop_fsync") is None:
        monkeypatch.setenv(noop_fsync.FSYNC_ALWAYS_ENV, "1")
    else:
        monkeypatch.delenv(noop_fsync.FSYNC_ALWAYS_ENV, raising=False)
    noop_fsync.forget()


@pytest.fixture
async def fake_server(nursery: trio.Nursery) -> AsyncIterator[FakeServer]:
    """A real HTTP server on 127.0.0.1 with scripted replies (see tests/fakes/server.py)."""
    yield await open_fake_server(nursery)
