"""``persist/paths.child``: the same ``Path`` as ``/``, whatever the name."""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

import pytest

from attractor_trio.persist.paths import child

NAMES = ["b0", "status.json", "b#2", ".attempt.json", "..", ".", "", "a/b", "/abs", "x y"]


@pytest.mark.parametrize("parent", [Path("/tmp/run/parallel/par"), Path("rel/dir"), Path("/")])
@pytest.mark.parametrize("name", NAMES)
def test_child_is_the_path_slash_gives(parent: Path, name: str) -> None:
    joined = child(parent, name)
    expected = parent / name
    assert joined == expected and str(joined) == str(expected)
    assert type(joined) is type(expected)
    assert joined.parent == expected.parent and joined.name == expected.name
    assert hash(joined) == hash(expected) and joined.parts == expected.parts
    assert child(joined, "more") == expected / "more"


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the fast join is 3.11's")
def test_a_plain_name_is_joined_without_parsing_it() -> None:
    """What the helper is for: cheaper than ``/`` for a single component (issue #22)."""
    parent = Path("/dev/shm/run/parallel/par")
    fast = min(timeit.repeat(lambda: child(parent, "b123"), number=2000, repeat=5))
    slash = min(timeit.repeat(lambda: parent / "b123", number=2000, repeat=5))
    assert fast < slash / 2
