"""The run config file (``--config``, contract.md §7): YAML, structured strictly with cattrs.

Unknown keys are errors naming their key path (a typo in ``stall_timeout`` must not silently
mean "default"); durations take the DOT forms (``90s``, ``15m``); string values may use
``${VAR}`` or ``${VAR:-default}`` environment interpolation (for ``base_url``, ``command``…).
API keys are never values here: ``api_key_env`` names the variable that holds the key.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cattrs
import yaml
from attrs import field, frozen
from cattrs.gen import make_dict_structure_fn, override

from .dot.inputs import read_config_text
from .dot.values import AttributeValueError, parse_duration
from .errors import ConfigError
from .stage_env import check_pass_pattern

__all__ = ["PROVIDER_KINDS", "ProviderConfig", "RunConfig", "load_run_config", "parse_run_config"]

PROVIDER_KINDS = ("anthropic", "openai", "gemini", "openai_compatible", "cli")
MODES = ("agent_loop", "one_shot")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    return tuple(value)


@frozen
class ProviderConfig:
    name: str
    kind: str
    model: str = ""
    base_url: str = ""
    api_key_env: str = ""
    command: str = ""
    timeout: float | None = None
    failover: tuple[str, ...] = field(default=(), converter=_tuple_of_str)
    mode: str = "agent_loop"


@frozen
class WorkspaceDoc:
    """Run config ``workspace:`` (contract.md §10); present means on (``kind: git``)."""

    kind: str = "git"
    repo: str = ""
    branch_prefix: str = "attractor/"
    keep_worktree: bool = False


@frozen
class ExecutorDoc:
    """Run config ``executor:`` (contract.md §10 "Scale-out on Ray")."""

    kind: str = "local"
    address: str = ""
    num_cpus_per_stage: int | None = None
    upload_workdir: bool = False
    #: With ``upload_workdir``: the largest snapshot (and patch back) of one attempt, in MiB.
    upload_limit_mb: int | None = None
    #: With ``upload_workdir``: gitignore-syntax patterns never shipped (besides ``.gitignore``).
    upload_excludes: tuple[str, ...] = ()
    queue_timeout: float | None = None


@frozen
class RunConfig:
    backend: str = ""
    stall_timeout: float | None = None
    heartbeat_interval: float | None = None
    kill_grace: float | None = None
    max_parallel_default: int | None = None
    providers: dict[str, ProviderConfig] = field(factory=dict)
    path: str = ""
    #: ``retention: {attempts: N}``: archived ``attempt-<n>/`` dirs kept per stage dir.
    retention_attempts: int | None = None
    #: ``env: {pass: [...]}``: variable names or globs stages get besides the allowlist.
    env_pass: tuple[str, ...] = ()
    workspace: WorkspaceDoc | None = None
    executor: ExecutorDoc | None = None


@frozen
class _EnvDoc:
    pass_: tuple[str, ...] = ()


@frozen
class _ProviderDoc:
    kind: str
    model: str = ""
    base_url: str = ""
    api_key_env: str = ""
    command: str = ""
    timeout: float | None = None
    failover: tuple[str, ...] = ()
    mode: str = "agent_loop"


@frozen
class _RetentionDoc:
    attempts: int | None = None


@frozen
class _ConfigDoc:
    backend: str = ""
    stall_timeout: float | None = None
    heartbeat_interval: float | None = None
    kill_grace: float | None = None
    max_parallel_default: int | None = None
    providers: dict[str, _ProviderDoc] = field(factory=dict)
    retention: _RetentionDoc = field(factory=_RetentionDoc)
    env: _EnvDoc = field(factory=_EnvDoc)
    workspace: WorkspaceDoc | None = None
    executor: ExecutorDoc | None = None


def _converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)

    def duration(value: Any, _type: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool):
            raise AttributeValueError(f"invalid duration {value!r}")
        return parse_duration(str(value))

    def strict_str(value: Any, _type: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__} {value!r}")
        return value

    def strict_int(value: Any, _type: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected a whole number, got {value!r}")
        return value

    def str_list(value: Any, _type: Any) -> tuple[str, ...]:
        if not isinstance(value, list):  # a lone string would become a tuple of its characters
            raise TypeError(f"expected a list of strings, got {type(value).__name__} {value!r}")
        return tuple(strict_str(item, str) for item in value)

    converter.register_structure_hook_func(lambda t: t == tuple[str, ...], str_list)

    converter.register_structure_hook(
        _EnvDoc,
        make_dict_structure_fn(
            _EnvDoc, converter, _cattrs_forbid_extra_keys=True, pass_=override(rename="pass")
        ),
    )
    converter.register_structure_hook(float | None, duration)
    converter.register_structure_hook(str, strict_str)
    converter.register_structure_hook(int | None, strict_int)

    def strict_bool(value: Any, _type: Any) -> bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value

    converter.register_structure_hook(bool, strict_bool)
    return converter


_CONVERTER = _converter()


def interpolate(value: Any, env: Mapping[str, str], where: str = "$") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string, recursively."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: environment variable {name} is not set (no default)")

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def parse_run_config(
    doc: Any, *, path: str = "<config>", env: Mapping[str, str] | None = None
) -> RunConfig:
    """Structure a loaded YAML document; every problem names its key path."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        doc = interpolate(doc, os.environ if env is None else env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        parsed = _CONVERTER.structure(doc, _ConfigDoc)
    except Exception as exc:  # cattrs raises exception groups of per-key errors
        if not _is_cattrs(exc):
            raise ConfigError(f"{path}: {exc}") from None
        problems = "; ".join(_with_hint(m) for m in cattrs.transform_error(exc))
        raise ConfigError(f"{path}: {problems}") from None
    providers = {
        name: ProviderConfig(name=name, **{k: getattr(p, k) for k in _PROVIDER_FIELDS})
        for name, p in parsed.providers.items()
    }
    _check(path, providers)
    attempts = parsed.retention.attempts
    if attempts is not None and attempts < 1:
        raise ConfigError(
            f"{path}: $.retention.attempts: must be at least 1 (the newest attempt-<n>/ "
            f"directories kept per stage), got {attempts}"
        )
    for index, pattern in enumerate(parsed.env.pass_):
        problem = check_pass_pattern(pattern)
        if problem:
            raise ConfigError(f"{path}: $.env.pass[{index}]: {problem}")
    if parsed.workspace is not None and parsed.workspace.kind != "git":
        raise ConfigError(f"{path}: $.workspace.kind: must be git")
    _check_executor(path, parsed.executor)
    return RunConfig(
        backend=parsed.backend,
        stall_timeout=parsed.stall_timeout,
        heartbeat_interval=parsed.heartbeat_interval,
        kill_grace=parsed.kill_grace,
        max_parallel_default=parsed.max_parallel_default,
        providers=providers,
        path=path,
        retention_attempts=attempts,
        env_pass=tuple(parsed.env.pass_),
        workspace=parsed.workspace,
        executor=parsed.executor,
    )


def _check_executor(path: str, doc: ExecutorDoc | None) -> None:
    if doc is None:
        return
    if doc.kind not in ("local", "ray"):
        raise ConfigError(f"{path}: $.executor.kind: must be local or ray")
    if doc.num_cpus_per_stage is not None and doc.num_cpus_per_stage < 0:
        raise ConfigError(f"{path}: $.executor.num_cpus_per_stage: must be at least 0")
    if doc.upload_limit_mb is not None and doc.upload_limit_mb < 1:
        raise ConfigError(f"{path}: $.executor.upload_limit_mb: must be at least 1")


_PROVIDER_FIELDS = (
    "kind",
    "model",
    "base_url",
    "api_key_env",
    "command",
    "timeout",
    "failover",
    "mode",
)


_EXTRA = re.compile(r"extra fields found \((.+?)\) @ (\S+)")


def _with_hint(message: str) -> str:
    """Add a did-you-mean to cattrs' "extra fields found (x) @ $.path" messages, and say
    what a list-of-strings key wants instead of cattrs' "expected tuple"."""
    message = message.replace("$.env.pass_", "$.env.pass")  # the key, not the field's name
    if "expected tuple @" in message:  # cattrs' words for the list-of-strings check
        return message.replace("expected tuple", "expected a list of strings, e.g. [A, B]")
    match = _EXTRA.search(message)
    if match is None:
        return message
    where = match.group(2)
    allowed: tuple[str, ...] = _PROVIDER_FIELDS if ".providers[" in where else _TOP_FIELDS
    allowed = ("pass",) if where == "$.env" else allowed
    allowed = _EXECUTOR_FIELDS if where == "$.executor" else allowed
    hints = []
    for key in match.group(1).split(", "):
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            hints.append(f"'{key}' → did you mean '{close[0]}'?")
    return f"{message} ({'; '.join(hints)})" if hints else message


_EXECUTOR_FIELDS = (
    "kind",
    "address",
    "num_cpus_per_stage",
    "upload_workdir",
    "upload_limit_mb",
    "upload_excludes",
    "queue_timeout",
)
_TOP_FIELDS = (
    "backend",
    "stall_timeout",
    "heartbeat_interval",
    "kill_grace",
    "max_parallel_default",
    "providers",
    "retention",
    "env",
    "workspace",
    "executor",
)


def _is_cattrs(exc: BaseException) -> bool:
    return isinstance(exc, cattrs.BaseValidationError | cattrs.ForbiddenExtraKeysError)


def _check(path: str, providers: dict[str, ProviderConfig]) -> None:
    for name, provider in providers.items():
        where = f"{path}: $.providers['{name}']"
        if provider.kind not in PROVIDER_KINDS:
            raise ConfigError(f"{where}.kind: must be one of {', '.join(PROVIDER_KINDS)}")
        if provider.mode not in MODES:
            raise ConfigError(f"{where}.mode: must be one of {', '.join(MODES)}")
        if provider.kind == "cli" and not provider.command:
            raise ConfigError(f"{where}.command: a cli provider needs the command to run")
        for target in provider.failover:
            if target not in providers:
                raise ConfigError(
                    f"{where}.failover: '{target}' is not a configured provider "
                    f"(have: {', '.join(providers)})"
                )


def load_run_config(path: str | Path) -> RunConfig:
    """Read ``--config``; every problem is one :class:`ConfigError` line, positioned
    (``FILE:LINE:COL: error: ...``) when it is in the text (contract.md §10)."""
    path = Path(path)
    try:
        text = read_config_text(path, "the run config")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "malformed YAML"
        raise ConfigError(f"{where}: error: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: error: invalid YAML: {exc}") from None
    return parse_run_config(doc, path=str(path))
