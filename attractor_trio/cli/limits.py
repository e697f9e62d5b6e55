"""Process settings the long-running commands (``run``, ``resume``, ``serve``) make at start.

The commands own their process, so they may tune it for a run that lasts hours; the library
(``attractor_trio.run``) never does, because there the process is the embedding application's.
"""

from __future__ import annotations

import contextlib
import gc

__all__ = [
    "claim_the_process",
    "freeze_startup_heap",
    "prepare_long_running_process",
    "raise_descriptor_limit",
    "space_out_young_collections",
]

#: Where the soft limit goes when the hard one is unlimited (Linux's default ``nr_open``).
_DESCRIPTOR_CEILING = 1 << 20

#: The collector's thresholds for the command's own process: a young collection every 10,000
#: net allocations instead of 700; the older generations' ratios as CPython's (see
#: :func:`space_out_young_collections`).
YOUNG_COLLECTION_THRESHOLDS = (10_000, 10, 10)

#: Whether the command line started this process (see :func:`claim_the_process`).
_process_is_ours = False


def claim_the_process() -> None:
    """Mark the process as the command's own: it was started as ``attractor-trio`` or
    ``python -m attractor_trio``, not by an application (or a test) calling the command group
    in-process, whose heap is not ours to freeze."""
    global _process_is_ours
    _process_is_ours = True


def prepare_long_running_process() -> None:
    """Everything a command does to its process just before it starts the run's event loop:
    the descriptor limit always, the collector only when the process is the command's own."""
    raise_descriptor_limit()
    if _process_is_ours:
        freeze_startup_heap()
        space_out_young_collections()


def raise_descriptor_limit() -> None:
    """Raise the soft limit on open descriptors to the hard one, as Go programs do at start.

    A fan-out's running stages hold a few descriptors each (the leader's pidfds), so under the
    usual soft limit of 1,024 a 1,000-branch tool fan-out failed with EMFILE while the hard
    limit would have allowed it. Stage processes inherit the raised soft limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _DESCRIPTOR_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):  # a platform that caps it lower
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def freeze_startup_heap() -> None:
    """Take everything alive now out of every later cyclic garbage collection (``gc.freeze``).

    Why: by the time the event loop starts, the process holds ~45,000 tracked objects — the
    imported modules, click, rich, httpx, the loaded pipeline — that live until exit. CPython's
    full collections walk all of them each time the heap has grown by a quarter, which a wide
    fan-out does several times while its branches start: 64-80 ms per collection, about a fifth
    of a 1,000-branch fan-out's overhead (issue #22, ``benchmarks/README.md``). Frozen, they are
    never walked again; objects made afterwards are collected as before. The garbage already
    there is collected first (≈ 8 ms), so no dead cycle is frozen with them.
    """
    gc.collect()
    gc.freeze()


def space_out_young_collections() -> None:
    """Collect the young generation every 10,000 net allocations instead of every 700.

    Why: the engine allocates in bursts that mostly die young (an event's fields, a stage's
    plan, a branch's scaffolding), and a 1,000-branch fan-out ran ~190 young collections while
    its branches started and finished — 80-140 ms of its window, on the trio thread, each one
    walking everything allocated since the last (issue #22, ``benchmarks/README.md``). At 10,000
    there are ~12-25, costing 35-50 ms together. The heap between collections grows by at most
    10,000 small objects (about a megabyte), and garbage cycles still go at the next young
    collection. The older generations keep CPython's ratios (10 young per middle, 10 middle
    per full, full ones still only when the long-lived heap has grown by a quarter).
    """
    gc.set_threshold(*YOUNG_COLLECTION_THRESHOLDS)
