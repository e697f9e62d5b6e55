"""Everything a run is started with, as one value: :class:`RunOptions`.

The CLI (flags and run config), the server (a submission's ``options``) and the Python API
(``open_run``/``run`` keywords) each *build* a :class:`RunOptions`; the engine consumes only
that value (:func:`~attractor_trio.engine.start_run`). One definition of the knobs and their
defaults, so a front end cannot forget one or default it differently, and a test can check
that two front ends asked the engine for the same run by comparing two values.

Frozen: the engine cannot change what the caller asked for halfway through a run.

:class:`Registries` is the part of the options that extends the engine — custom handlers,
lint rules, transforms — passed per run, so two runs in one process can use different
extensions without touching each other. The process-wide ``register_*`` functions remain as a
convenience: they seed :meth:`Registries.default`, which is what a run gets when it names no
registries of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
from attrs import field, frozen

from ..core.vocabulary import DEFAULT_KILL_GRACE
from .retention import DEFAULT_ATTEMPT_RETENTION

if TYPE_CHECKING:
    from ..dot.attributes import AttributeSpec, Scope
    from ..dot.transforms import Transform
    from ..dot.validate import LintRule
    from ..events import EventSink
    from ..handlers.base import Handler
    from ..interviewers import Interviewer
    from ..providers.base import CodergenBackend
    from ..workspace import WorkspaceConfig
    from .run import RunHandle

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_PARALLEL",
    "Registries",
    "RunOptions",
    "forget_default_handlers",
    "seed_default_handler",
]

#: Seconds between ``stage_heartbeat`` events of a running attempt.
DEFAULT_HEARTBEAT_INTERVAL: Final = 30.0
#: Branches a ``parallel`` node runs at once when it sets no ``max_parallel``.
DEFAULT_MAX_PARALLEL: Final = 4


def _path(value: str | os.PathLike[str]) -> Path:
    return Path(value)


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


def _strings(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(values)


def _sinks(values: Sequence[EventSink]) -> tuple[EventSink, ...]:
    return tuple(values)


def _mapping(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


def _handlers(value: Mapping[str, Handler] | None) -> dict[str, Handler]:
    return dict(value or {})


def _optional_mapping(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


def _rules(values: Sequence[LintRule]) -> tuple[LintRule, ...]:
    return tuple(values)


def _transforms(values: Sequence[Transform]) -> tuple[Transform, ...]:
    return tuple(values)


def _types(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


def _attributes(
    value: Mapping[Scope, Mapping[str, AttributeSpec]] | None,
) -> dict[Scope, dict[str, AttributeSpec]]:
    """A private copy by scope, refused like ``register_attribute`` refuses a built-in name."""
    from ..dot.attributes import check_custom_attributes

    custom = {scope: dict(specs) for scope, specs in (value or {}).items()}
    check_custom_attributes(custom)
    return custom


#: Handlers registered process-wide (:func:`attractor_trio.register_handler`): the seed of
#: :meth:`Registries.default`, never read by a run directly.
_DEFAULT_HANDLERS: dict[str, Handler] = {}


def seed_default_handler(type_name: str, handler: Handler) -> None:
    """Make ``handler`` part of every later :meth:`Registries.default`."""
    _DEFAULT_HANDLERS[type_name] = handler


def forget_default_handlers() -> tuple[str, ...]:
    """Drop every process-wide handler; returns the type names that were registered."""
    names = tuple(_DEFAULT_HANDLERS)
    _DEFAULT_HANDLERS.clear()
    return names


@frozen(kw_only=True, eq=True, hash=False)
class Registries:
    """A run's extensions: custom ``handlers`` by type (over the built-in ones), lint
    ``rules`` run after the built-in rules, ``transforms`` run after the built-in ones when
    the run loads a pipeline (a manager's child), custom ``attributes`` by scope
    (``{"node": {"name": AttributeSpec(...)}}``: known to validation and checked by it) and
    ``known_types``, handler types validation accepts besides those of ``handlers``.
    ``Registries()`` is none at all."""

    handlers: dict[str, Handler] = field(factory=dict, converter=_handlers)
    rules: tuple[LintRule, ...] = field(default=(), converter=_rules)
    transforms: tuple[Transform, ...] = field(default=(), converter=_transforms)
    attributes: dict[Scope, dict[str, AttributeSpec]] = field(factory=dict, converter=_attributes)
    known_types: frozenset[str] = field(default=frozenset(), converter=_types)

    @classmethod
    def default(cls) -> Registries:
        """A snapshot of the process-wide registrations, as of now."""
        from ..dot.attributes import registered_attributes
        from ..dot.transforms import registered_transforms
        from ..dot.validate import registered_known_types, registered_rules

        return cls(
            handlers=_DEFAULT_HANDLERS,
            rules=registered_rules(),
            transforms=registered_transforms(),
            attributes=registered_attributes(),
            known_types=registered_known_types(),
        )

    def with_handlers(self, handlers: Mapping[str, Handler]) -> Registries:
        """These registries with ``handlers`` over their own (a run's ``handlers=``)."""
        return attrs.evolve(self, handlers={**self.handlers, **handlers}) if handlers else self

    def handler_types(self) -> frozenset[str]:
        """The custom types validation accepts: the handlers' plus ``known_types``."""
        return self.known_types | frozenset(self.handlers)


def _registries(value: Registries | None) -> Registries:
    return Registries.default() if value is None else value


@frozen(kw_only=True, eq=True, hash=False)
class RunOptions:
    """How to run a pipeline: where, with what, and how patiently.

    ``run_id=None`` lets the engine pick one. ``context`` is the starting context (``--set``);
    ``handlers`` are this run's own handlers, over the process-wide ones
    (:func:`~attractor_trio.register_handler`). ``manifest_options`` (JSON values) are recorded
    in ``manifest.json`` for ``resume`` to reuse (the CLI records its flags there).
    ``require_backend=False`` lets a graph with codergen stages start without a backend (the
    fuzz harness and tests pass their own handlers).
    """

    logs_root: Path = field(converter=_path)
    run_id: str | None = None
    backend: CodergenBackend | None = None
    interviewer: Interviewer | None = None
    handlers: dict[str, Handler] = field(factory=dict, converter=_handlers)
    context: dict[str, Any] = field(factory=dict, converter=_mapping)
    workdir: Path | None = field(default=None, converter=_optional_path)
    heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL
    stall_timeout: float | None = None
    kill_grace: float = DEFAULT_KILL_GRACE
    max_parallel_default: int = DEFAULT_MAX_PARALLEL
    attempt_retention: int = DEFAULT_ATTEMPT_RETENTION
    pass_env: tuple[str, ...] = field(default=(), converter=_strings)
    seed: int | None = None
    workspace: WorkspaceConfig | None = None
    sinks: tuple[EventSink, ...] = field(default=(), converter=_sinks)
    handle: RunHandle | None = None
    argv: tuple[str, ...] = field(default=(), converter=_strings)
    require_backend: bool = True
    manifest_options: dict[str, Any] | None = field(default=None, converter=_optional_mapping)
    #: ``None`` (the default) is a snapshot of the process-wide registrations.
    registries: Registries = field(default=None, converter=_registries)

    def run_registries(self) -> Registries:
        """The run's registries with its own ``handlers`` over theirs: everything that
        extends this run (and a manager's child runs)."""
        return self.registries.with_handlers(self.handlers)

    def evolve(self, **changes: Any) -> RunOptions:
        """A copy with ``changes`` (the front ends add their sinks and handle this way)."""
        return attrs.evolve(self, **changes)

    def settings(self) -> dict[str, Any]:
        """The run's behaviour, without the per-invocation plumbing (where it logs, its id,
        sinks, handle, argv): what two front ends must agree on to start the same run."""
        plumbing = {"logs_root", "run_id", "sinks", "handle", "argv"}
        return {
            a.name: getattr(self, a.name)
            for a in attrs.fields(RunOptions)
            if a.name not in plumbing
        }
