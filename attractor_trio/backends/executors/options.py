"""``--executor``/``--ray-address`` and run config ``executor:`` → one :class:`ExecutorSettings`
(contract.md §10), and the executor's lifetime around a run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ...errors import ConfigError
from .base import DEFAULT_QUEUE_TIMEOUT, DEFAULT_UPLOAD_LIMIT_MB, ExecutorSettings, use_executor

__all__ = ["RAY_SECRET_NAMES", "executor_settings", "running_executor"]

#: Ray credentials are secrets (contract.md §10) whatever their length; the name patterns
#: (``*_TOKEN``, ``*PASSWORD*``) already cover them from 8 characters on.
RAY_SECRET_NAMES = ("RAY_AUTH_TOKEN", "RAY_REDIS_PASSWORD")


def executor_settings(
    kind: str | None, ray_address: str | None, config: object
) -> ExecutorSettings:
    """Resolve the options over the run config; refuse what cannot work before the run exists.

    Address precedence: ``--ray-address`` > ``executor.address`` (> ``RAY_ADDRESS`` > a local
    Ray, decided when connecting). ``--ray-address`` with the local executor is refused: an
    address nobody uses is a mistake the user wants to hear about.
    """
    doc = getattr(config, "executor", None)
    resolved = kind or (doc.kind if doc is not None else "local")
    if resolved == "local":
        if ray_address:
            raise ConfigError("--ray-address needs --executor ray")
        return ExecutorSettings()
    from .ray import missing_ray_message, ray_available

    if not ray_available():
        raise ConfigError(missing_ray_message())
    if doc is None:
        return ExecutorSettings(kind="ray", address=ray_address or "")
    cpus, queue_timeout, limit = doc.num_cpus_per_stage, doc.queue_timeout, doc.upload_limit_mb
    return ExecutorSettings(
        kind="ray",
        address=ray_address or doc.address,
        num_cpus_per_stage=float(cpus) if cpus is not None else 1.0,
        upload_workdir=doc.upload_workdir,
        upload_limit_mb=limit if limit is not None else DEFAULT_UPLOAD_LIMIT_MB,
        upload_excludes=tuple(doc.upload_excludes),
        queue_timeout=queue_timeout if queue_timeout is not None else DEFAULT_QUEUE_TIMEOUT,
    )


@contextlib.contextmanager
def running_executor(settings: ExecutorSettings, *, connect: bool = True) -> Iterator[None]:
    """Install the executor for the run (connecting to Ray first); close it afterwards.

    Entered *before* the logs root is created (an unreachable cluster is exit 2 and no run
    directory, contract.md §10) and before ``trio.run`` (trio copies this context into the
    run's tasks). ``connect=False`` (``--detach``: the detached child connects) only checks
    that the cluster's address answers."""
    if settings.kind == "local":
        yield
        return
    from . import ray

    try:
        executor = ray.connect(settings) if connect else None
        if executor is None:
            ray.probe(settings)
    except Exception as exc:  # Ray's connection errors are many; each is one line for the user
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = ray.cluster_address(settings) or "a local Ray"
        raise ConfigError(f"cannot connect to Ray ({where}): {text}") from None
    if executor is None:
        yield
        return
    try:
        with use_executor(executor):
            yield
    finally:
        executor.close()
