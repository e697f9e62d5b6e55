"""``manifest.json`` + ``graph.dot`` (contract.md §2, §9 ``manifest.name``/``label``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from attractor_trio import __version__
from attractor_trio.persist import manifest as manifest_module
from attractor_trio.persist.atomic import CorruptFileError, write_json_atomic
from attractor_trio.persist.manifest import Manifest, dot_sha256, read_manifest, write_manifest

SOURCE = 'digraph Ship { graph [goal="ship ✓", label="Ship it"]; start -> done }\n'


def _write(root: Path, **overrides: object) -> Manifest:
    arguments: dict[str, object] = {
        "run_id": "run-1",
        "name": "Ship",
        "label": "Ship it",
        "goal": "ship ✓",
        "dot_path": "pipeline.dot",
        "dot_source": SOURCE,
        "argv": ["attractor-trio", "run", "pipeline.dot", "--simulate"],
        **overrides,
    }
    return write_manifest(root, **arguments)  # type: ignore[arg-type]


def test_writes_graph_and_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = _write(tmp_path, start_time="2025-01-31T12:00:00.000Z")
    assert (tmp_path / "graph.dot").read_text(encoding="utf-8") == SOURCE
    doc = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert doc == {
        "run_id": "run-1",
        "name": "Ship",
        "label": "Ship it",
        "goal": "ship ✓",
        "dot_path": str(tmp_path / "pipeline.dot"),
        "dot_sha256": hashlib.sha256(SOURCE.encode()).hexdigest(),
        "start_time": "2025-01-31T12:00:00.000Z",
        "engine_version": __version__,
        "argv": ["attractor-trio", "run", "pipeline.dot", "--simulate"],
        "context": {},
        "options": None,
    }
    assert manifest.to_json() == doc
    assert dot_sha256(SOURCE) == doc["dot_sha256"]


def test_records_the_starting_context(tmp_path: Path) -> None:
    _write(tmp_path, context={"ticket": "T-9", "n": 3})
    assert read_manifest(tmp_path).context == {"ticket": "T-9", "n": 3}  # type: ignore[union-attr]


def test_a_manifest_from_before_the_context_key_still_reads(tmp_path: Path) -> None:
    doc = _write(tmp_path).to_json()
    del doc["context"]
    write_json_atomic(tmp_path / "manifest.json", doc)
    assert read_manifest(tmp_path).context is None  # type: ignore[union-attr]


def test_start_time_defaults_to_now(tmp_path: Path) -> None:
    manifest = _write(tmp_path)
    assert manifest.start_time.endswith("Z") and len(manifest.start_time) == 24


def test_api_built_graph_has_no_dot_path(tmp_path: Path) -> None:
    assert _write(tmp_path, dot_path=None).dot_path is None
    assert read_manifest(tmp_path).dot_path is None  # type: ignore[union-attr]


def test_graph_is_on_disk_before_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    real_write = write_json_atomic

    def spying_write(path: Path, obj: object) -> None:
        seen.append((tmp_path / "graph.dot").exists())
        real_write(path, obj)

    monkeypatch.setattr(manifest_module, "write_json_atomic", spying_write)
    _write(tmp_path)
    assert seen == [True]


def test_round_trip_and_absent(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None
    written = _write(tmp_path)
    assert read_manifest(tmp_path) == written


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"argv": "run x"}, "key 'argv' must be a list of strings, got a string"),
        ({"dot_path": 3}, "key 'dot_path' must be a string or null, got a number"),
        ({"run_id": None}, "key 'run_id' must be a string, got null"),
    ],
)
def test_damaged_manifest_names_the_key(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    _write(tmp_path)
    doc = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**doc, **change}))
    with pytest.raises(CorruptFileError) as info:
        read_manifest(tmp_path)
    assert str(info.value) == f"{tmp_path / 'manifest.json'}: error: invalid manifest: {message}"


def test_missing_key_and_non_object(tmp_path: Path) -> None:
    _write(tmp_path)
    doc = json.loads((tmp_path / "manifest.json").read_text())
    del doc["goal"]
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(CorruptFileError, match=r"missing key 'goal' \(expected a string\)"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("42")
    with pytest.raises(CorruptFileError, match="manifest must be a JSON object, got a number"):
        read_manifest(tmp_path)
