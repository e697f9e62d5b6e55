"""The artifact store (spec §5.5)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from attractor_trio.errors import AttractorError
from attractor_trio.persist.artifacts import (
    FILE_BACKING_THRESHOLD,
    ArtifactNotFoundError,
    ArtifactStore,
)


def _json_size(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def test_small_artifacts_stay_in_memory(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    info = store.store("plan", "Plan", {"steps": ["a", "b"], "note": "é"})
    assert info.id == "plan" and info.name == "Plan"
    assert info.size_bytes == _json_size({"steps": ["a", "b"], "note": "é"})
    assert info.is_file_backed is False
    assert info.stored_at.endswith("Z")
    assert not (tmp_path / "artifacts").exists()
    assert store.retrieve("plan") == {"steps": ["a", "b"], "note": "é"}


def test_large_artifacts_are_file_backed_as_json(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    big = "x" * (FILE_BACKING_THRESHOLD + 1)
    info = store.store("log", "Build log", big)
    assert info.is_file_backed
    path = tmp_path / "artifacts" / "log.json"
    assert json.loads(path.read_text()) == big
    assert store.retrieve("log") == big


def test_threshold_is_exclusive_and_needs_a_base_dir(tmp_path: Path) -> None:
    value = "y" * 8  # JSON size 10 with the quotes
    assert ArtifactStore(tmp_path, threshold=10).store("a", "a", value).is_file_backed is False
    assert ArtifactStore(tmp_path, threshold=9).store("b", "b", value).is_file_backed is True
    memory_only = ArtifactStore(None, threshold=1)
    assert memory_only.store("c", "c", value).is_file_backed is False
    assert memory_only.retrieve("c") == value


def test_retrieve_returns_a_fresh_copy(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    value = {"items": [1, 2]}
    store.store("a", "a", value)
    value["items"].append(3)
    first = store.retrieve("a")
    first["items"].append(4)
    assert store.retrieve("a") == {"items": [1, 2]}


def test_unknown_id_is_a_key_error_with_the_spec_message(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    for operation in (store.retrieve, store.remove):
        with pytest.raises(ArtifactNotFoundError) as info:
            operation("nope")
        assert isinstance(info.value, KeyError) and isinstance(info.value, AttractorError)
        assert str(info.value) == "Artifact not found: nope"


def test_has_list_remove_clear(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, threshold=5)
    store.store("small", "s", 1)
    store.store("big", "b", "z" * 50)
    assert store.has("small") and store.has("big") and not store.has("other")
    assert [info.id for info in store.list()] == ["small", "big"]
    assert len(store) == 2
    store.remove("big")
    assert not (tmp_path / "artifacts" / "big.json").exists()
    assert not store.has("big")
    store.store("big2", "b", "z" * 50)
    store.clear()
    assert store.list() == []
    assert list((tmp_path / "artifacts").iterdir()) == []


def test_replacing_a_file_backed_artifact_with_a_small_one_removes_the_file(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(tmp_path, threshold=5)
    store.store("a", "a", "z" * 50)
    store.store("a", "a", 1)
    assert not (tmp_path / "artifacts" / "a.json").exists()
    assert store.retrieve("a") == 1
    assert len(store.list()) == 1


def test_file_removed_behind_our_back(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, threshold=5)
    store.store("a", "a", "z" * 50)
    (tmp_path / "artifacts" / "a.json").unlink()
    with pytest.raises(ArtifactNotFoundError, match=r"Artifact not found: a \(its file .* removed"):
        store.retrieve("a")


@pytest.mark.parametrize("bad_id", ["", ".hidden", "../escape", "a/b", "a\\b", "nul\0"])
def test_ids_must_be_plain_file_names(tmp_path: Path, bad_id: str) -> None:
    with pytest.raises(ValueError, match="invalid artifact id"):
        ArtifactStore(tmp_path).store(bad_id, "x", 1)


def test_unserializable_value_changes_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.store("a", "a", 1)
    with pytest.raises(TypeError):
        store.store("a", "a", {1, 2})
    assert store.retrieve("a") == 1


def test_concurrent_stores_are_all_kept(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, threshold=20)

    def worker(prefix: str) -> None:
        for i in range(50):
            store.store(f"{prefix}{i}", "n", "v" * (i % 40))

    threads = [threading.Thread(target=worker, args=(p,)) for p in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.list()) == 200
    assert store.retrieve("c39") == "v" * 39
