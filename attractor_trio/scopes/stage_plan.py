"""A node's stage plan: what every attempt of one node needs and cannot change during the run.

Decided once per node instead of per attempt (handler lookups, attribute parsing, path joins
were several microseconds each, a few times per attempt), and kept by the node's
``StageExecutor``. The paths come as text too: the attempt's system calls (``mkdir``, the
marker, the artifacts, the status files) take strings, where a ``Path`` costs two Python
calls (``__fspath__``, ``__str__``) each time, about ten times per attempt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from ..core.attempt import KnownPaths
from ..core.retry import RetryPolicy
from ..dot.graph import Node
from ..handlers.base import HandlerRegistry
from ..persist.paths import child
from ..persist.status import known_sources

__all__ = ["StagePlan"]

#: Handlers without side effects that only pass routing on: re-running one after a crash is
#: harmless, so they skip the finished marker (a file operation per stage).
PURE_TYPES = frozenset({"start", "exit", "conditional"})


class StagePlan(NamedTuple):
    """One node's plan. A named tuple: built once per node of the run, where an attrs
    class's ``__init__`` alone cost a few microseconds."""

    node: Node
    handler_type: str
    #: ``None`` when no handler is registered: :meth:`resolved` then raises as the registry does.
    handler: Any
    policy: RetryPolicy
    stage_dir: Path
    #: ``os.fspath`` of ``stage_dir`` and ``status_path`` (for the system calls).
    stage_dir_text: str
    status_text: str
    status_path: Path
    #: For ``AttemptInfo.known_status_path`` (with the attempt's status sources).
    known_status_path: KnownPaths
    #: The handler can adopt a running orphan: the attempt's start is marked too.
    marked: bool
    #: Not a pure handler: the attempt's end is marked (its commit point).
    committed: bool
    human: bool
    timeout: float | None
    allow_partial: bool
    resources: str

    @classmethod
    def of(
        cls,
        node: Node,
        registry: HandlerRegistry,
        policy: RetryPolicy,
        stage_root: Path,
        workdir: Path,
    ) -> StagePlan:
        handler_type = registry.resolve_type(node)
        handler = registry.resolve_type_handler(handler_type)
        name = node.id
        stage_dir = child(stage_root, name)
        status_path = child(stage_dir, "status.json")
        text = _joined_text(stage_root, stage_dir, name)
        status_text = f"{text}/status.json"
        # A node's typed attributes are parsed only when it sets them (two calls each, and
        # a chain builds one plan per stage); unset, they are ``None``, ``False`` and ``""``.
        attrs = node.attrs
        plan: StagePlan = _new_tuple(
            cls,
            (
                node,
                handler_type,
                handler,
                policy,
                stage_dir,
                text,
                status_text,
                status_path,
                _new_tuple(
                    KnownPaths,
                    (
                        stage_dir,
                        status_path,
                        text,
                        workdir,
                        known_sources(status_path, status_text, workdir),
                    ),
                ),
                handler is not None and hasattr(handler, "adopt"),
                handler_type not in PURE_TYPES,
                handler_type == "wait.human",
                node.timeout if "timeout" in attrs else None,
                "allow_partial" in attrs and node.allow_partial,
                attrs.get("executor.resources", ""),
            ),
        )
        return plan

    def resolved(self, registry: HandlerRegistry) -> Any:
        """The handler (a missing one raises the registry's ``LookupError``, where it did)."""
        return self.handler if self.handler is not None else registry.resolve(self.node)


def _joined_text(parent: Path, joined: Path, name: str) -> str:
    """``os.fspath(joined)`` for ``joined = parent / name``: the parent's text (kept while
    it is the same object: one stage root per executor) and the name, when that is what
    ``pathlib`` would print — a plain component, and a parent that does not print as ``.``
    (dropped by the join) or end in ``/`` (the root)."""
    global _last_parent
    last, parent_text = _last_parent
    if last is not parent:
        parent_text = os.fspath(parent)
        _last_parent = (parent, parent_text)
    if (
        name
        and name != "."
        and "/" not in name
        and parent_text != "."
        and not parent_text.endswith("/")
    ):
        return f"{parent_text}/{name}"
    return os.fspath(joined)


_last_parent: tuple[Path | None, str] = (None, "")
#: ``tuple.__new__`` with all of a named tuple's fields: its generated ``__new__`` is a
#: Python call around just that (two per plan).
_new_tuple: Any = tuple.__new__
