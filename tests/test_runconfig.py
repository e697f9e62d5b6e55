"""Run config (contract.md §7): strict cattrs structuring with key paths, durations, env interpolation."""

from __future__ import annotations

from pathlib import Path

import pytest

from attractor_trio.errors import ConfigError
from attractor_trio.runconfig import load_run_config, parse_run_config

GOOD = {
    "backend": "claude",
    "stall_timeout": "15m",
    "kill_grace": 3,
    "max_parallel_default": 8,
    "providers": {
        "claude": {
            "kind": "anthropic",
            "model": "claude-x",
            "api_key_env": "ANTHROPIC_API_KEY",
            "timeout": "90s",
            "failover": ["local"],
            "mode": "one_shot",
        },
        "local": {
            "kind": "openai_compatible",
            "base_url": "${OLLAMA:-http://127.0.0.1:11434}/v1",
            "model": "llama3",
            "mode": "one_shot",
        },
    },
}


def test_good_config() -> None:
    config = parse_run_config(GOOD, env={})
    assert config.stall_timeout == 900 and config.kill_grace == 3
    claude = config.providers["claude"]
    assert (claude.timeout, claude.failover, claude.mode) == (90.0, ("local",), "one_shot")
    assert config.providers["local"].base_url == "http://127.0.0.1:11434/v1"
    assert (
        parse_run_config(GOOD, env={"OLLAMA": "http://gpu:1"}).providers["local"].base_url
        == "http://gpu:1/v1"
    )


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"stall_timout": "5m"}, "extra fields found (stall_timout) @ $"),
        ({"providers": {"a": {"kind": "anthropic", "timeot": 3}}}, "timeot"),
        ({"providers": {"a": {"kind": "anthropic", "timeout": "soon"}}}, "providers['a'].timeout"),
        ({"providers": {"a": {"kind": "bedrock"}}}, "kind: must be one of"),
        (
            {"providers": {"a": {"kind": "anthropic", "failover": ["zz"]}}},
            "'zz' is not a configured",
        ),
        ({"providers": {"a": {"kind": "cli"}}}, "needs the command"),
        ({"providers": {"a": {"kind": "openai", "mode": "agentic"}}}, "mode: must be one of"),
        ({"max_parallel_default": "lots"}, "max_parallel_default"),
        ({"providers": {"a": {"kind": "openai", "base_url": "${NOPE}/v1"}}}, "NOPE is not set"),
        (["not", "a", "mapping"], "mapping at the top level"),
        # A lone string is not a list: it used to become a tuple of its characters.
        ({"env": {"pass": "GITHUB_TOKEN"}}, "list of strings, e.g. [A, B] @ $.env.pass"),
        ({"providers": {"a": {"kind": "openai", "failover": "b"}}}, "providers['a'].failover"),
    ],
)
def test_bad_configs_name_the_key(doc: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config(doc, path="c.yaml", env={})
    assert fragment in str(info.value) and str(info.value).startswith("c.yaml")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_run_config(bad)


@pytest.mark.parametrize(
    "config",
    sorted((Path(__file__).parent.parent / "examples" / "providers").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_example_provider_configs_load(config: Path) -> None:
    parsed = load_run_config(config)
    assert parsed.backend in parsed.providers
