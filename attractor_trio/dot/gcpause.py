"""Pause the cyclic garbage collector while a big, acyclic structure is built.

CPython starts a collection every 700 container allocations, whether or not the new objects
could ever form a cycle, and each older-generation pass walks every live container. Parsing,
transforming and validating a 10,000-node pipeline allocates a few hundred thousand dicts,
tuples and attrs objects, none of them in a cycle, so those passes are pure overhead: 30-40 %
of the time, and more the bigger the heap already is (measured with ``benchmarks/parse.py``).
Mercurial pauses its collector around its index parsers for the same reason.

The pause is process-wide, so it is kept to one bounded computation, is re-entrant (only the
outermost pause re-enables) and never enables a collector that was already disabled.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run the block with the cyclic collector off; restore it afterwards, even on error."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
