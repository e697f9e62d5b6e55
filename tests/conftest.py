"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from .fakes.server import FakeServer, open_fake_server


@pytest.fixture
async def fake_server(nursery: trio.Nursery) -> AsyncIterator[FakeServer]:
    """A real HTTP server on 127.0.0.1 with scripted replies (see tests/fakes/server.py)."""
    yield await open_fake_server(nursery)
