"""Process limits the long-running commands (``run``, ``resume``, ``serve``) adjust at start."""

from __future__ import annotations

import contextlib

__all__ = ["raise_descriptor_limit"]

#: Where the soft limit goes when the hard one is unlimited (Linux's default ``nr_open``).
_DESCRIPTOR_CEILING = 1 << 20


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
