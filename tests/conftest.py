"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from attractor_trio.core import redaction

from .fakes.server import FakeServer, open_fake_server


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """The redactor is process-wide and only grows: a test's secrets must not redact (and
    switch to redacting pipes) the next test's output."""
    redaction.reset()
    yield
    redaction.reset()


@pytest.fixture
async def fake_server(nursery: trio.Nursery) -> AsyncIterator[FakeServer]:
    """A real HTTP server on 127.0.0.1 with scripted replies (see tests/fakes/server.py)."""
    yield await open_fake_server(nursery)
