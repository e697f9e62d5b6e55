"""The run config file (``--config``, CONTRACT §7): YAML, strictly checked.

Unknown keys are errors (a typo in ``stall_timeout`` must not silently mean "default").
Provider entries are read and checked here; which kinds can actually run is the providers
package's business.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from attrs import field, frozen

from .errors import ConfigError
from .values import AttributeValueError, parse_duration, parse_int

__all__ = ["ProviderConfig", "RunConfig", "load_run_config"]

_TOP_KEYS = (
    "backend",
    "stall_timeout",
    "heartbeat_interval",
    "kill_grace",
    "max_parallel_default",
    "providers",
)
_PROVIDER_KEYS = (
    "kind",
    "model",
    "base_url",
    "api_key_env",
    "command",
    "timeout",
    "failover",
    "mode",
)
_PROVIDER_KINDS = ("anthropic", "openai", "gemini", "openai_compatible", "cli")


@frozen
class ProviderConfig:
    name: str
    kind: str
    model: str = ""
    base_url: str = ""
    api_key_env: str = ""
    command: str = ""
    timeout: float | None = None
    failover: tuple[str, ...] = ()
    mode: str = "agent_loop"


@frozen
class RunConfig:
    backend: str = ""
    stall_timeout: float | None = None
    heartbeat_interval: float | None = None
    kill_grace: float | None = None
    max_parallel_default: int | None = None
    providers: dict[str, ProviderConfig] = field(factory=dict)
    path: str = ""


def _unknown(path: Path, where: str, key: str, allowed: tuple[str, ...]) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(
        f"{path}: unknown key '{key}' in {where}{hint}; allowed: {', '.join(allowed)}"
    )


def _duration(path: Path, key: str, value: Any) -> float:
    try:
        return parse_duration(str(value))
    except AttributeValueError as exc:
        raise ConfigError(f"{path}: {key}: {exc}") from None


def load_run_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for key in doc:
        if key not in _TOP_KEYS:
            raise _unknown(path, "the config", str(key), _TOP_KEYS)
    max_parallel = doc.get("max_parallel_default")
    if max_parallel is not None:
        try:
            max_parallel = parse_int(str(max_parallel))
        except AttributeValueError as exc:
            raise ConfigError(f"{path}: max_parallel_default: {exc}") from None
    durations = {
        key: _duration(path, key, doc[key])
        for key in ("stall_timeout", "heartbeat_interval", "kill_grace")
        if doc.get(key) is not None
    }
    return RunConfig(
        backend=str(doc.get("backend") or ""),
        max_parallel_default=max_parallel,
        providers=_providers(path, doc.get("providers") or {}),
        path=str(path),
        **durations,
    )


def _providers(path: Path, raw: Any) -> dict[str, ProviderConfig]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: providers must be a mapping of name → settings")
    result = {}
    for name, settings in raw.items():
        if not isinstance(settings, dict):
            raise ConfigError(f"{path}: providers.{name} must be a mapping")
        for key in settings:
            if key not in _PROVIDER_KEYS:
                raise _unknown(path, f"providers.{name}", str(key), _PROVIDER_KEYS)
        kind = settings.get("kind")
        if kind not in _PROVIDER_KINDS:
            raise ConfigError(
                f"{path}: providers.{name}.kind must be one of {', '.join(_PROVIDER_KINDS)}"
            )
        failover = settings.get("failover") or []
        if not isinstance(failover, list) or not all(isinstance(f, str) for f in failover):
            raise ConfigError(f"{path}: providers.{name}.failover must be a list of names")
        timeout = settings.get("timeout")
        result[str(name)] = ProviderConfig(
            name=str(name),
            kind=kind,
            model=str(settings.get("model") or ""),
            base_url=str(settings.get("base_url") or ""),
            api_key_env=str(settings.get("api_key_env") or ""),
            command=str(settings.get("command") or ""),
            timeout=None
            if timeout is None
            else _duration(path, f"providers.{name}.timeout", timeout),
            failover=tuple(failover),
            mode=str(settings.get("mode") or "agent_loop"),
        )
    for name, provider in result.items():
        for target in provider.failover:
            if target not in result:
                raise ConfigError(
                    f"{path}: providers.{name}.failover names '{target}', which is not a "
                    "configured provider"
                )
    return result
