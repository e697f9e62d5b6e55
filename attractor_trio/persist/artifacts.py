"""The artifact store (spec §5.5): large stage outputs kept out of the context.

An artifact is any JSON-serializable value. Its size is the size of its JSON encoding (UTF-8),
i.e. the size of the file it would become. Values larger than ``threshold`` bytes go to
``<base_dir>/artifacts/<id>.json`` (atomically) when a ``base_dir`` is set; the rest stay in
memory. In-memory artifacts are kept *as their JSON text* as well, so both kinds behave the
same: :meth:`ArtifactStore.retrieve` returns a fresh decoded copy (tuples come back as lists,
later mutations of the stored value do not leak in).

Artifact ids become file names, so they must be plain names: no path separators, no leading
dot (which also keeps them apart from the atomic writer's ``.<name>.<token>.tmp`` files).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Final, final

import attrs

from ..errors import AttractorError
from .atomic import StrPath, read_json, utc_timestamp, write_bytes_atomic

__all__ = [
    "FILE_BACKING_THRESHOLD",
    "ArtifactInfo",
    "ArtifactNotFoundError",
    "ArtifactStore",
]

FILE_BACKING_THRESHOLD: Final = 100 * 1024


class ArtifactNotFoundError(AttractorError, KeyError):
    """No artifact with this id (a ``KeyError``, so mapping-style callers can catch that)."""

    def __init__(self, artifact_id: str, detail: str = "") -> None:
        self.artifact_id = artifact_id
        self.message = f"Artifact not found: {artifact_id}{detail}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would show the repr in quotes
        return self.message


@final
@attrs.frozen(kw_only=True)
class ArtifactInfo:
    """Metadata of a stored artifact (S5.5-05)."""

    id: str
    name: str
    size_bytes: int
    stored_at: str
    is_file_backed: bool


@final
class ArtifactStore:
    """Thread-safe id → value store, file-backed above ``threshold`` bytes (S5.5-01..04)."""

    def __init__(self, base_dir: StrPath | None, threshold: int = FILE_BACKING_THRESHOLD) -> None:
        self.base_dir = None if base_dir is None else Path(base_dir)
        self.threshold = threshold
        self._lock = threading.Lock()
        self._infos: dict[str, ArtifactInfo] = {}
        self._in_memory: dict[str, str] = {}

    def store(self, artifact_id: str, name: str, data: Any) -> ArtifactInfo:
        """Store (or replace) an artifact. Raises ``TypeError``/``ValueError`` for a value that
        is not JSON-serializable, before anything changes."""
        _check_id(artifact_id)
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
        encoded = text.encode("utf-8")
        file_backed = self.base_dir is not None and len(encoded) > self.threshold
        info = ArtifactInfo(
            id=artifact_id,
            name=name,
            size_bytes=len(encoded),
            stored_at=utc_timestamp(),
            is_file_backed=file_backed,
        )
        with self._lock:
            if file_backed:
                directory = self._directory()
                directory.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(directory / f"{artifact_id}.json", encoded + b"\n")
                self._in_memory.pop(artifact_id, None)
            else:
                self._drop_file(artifact_id)
                self._in_memory[artifact_id] = text
            self._infos[artifact_id] = info
        return info

    def retrieve(self, artifact_id: str) -> Any:
        """A fresh decoded copy of the artifact's value (S5.5-03)."""
        with self._lock:
            info = self._require(artifact_id)
            if not info.is_file_backed:
                return json.loads(self._in_memory[artifact_id])
            path = self._directory() / f"{artifact_id}.json"
            try:
                return read_json(path)
            except FileNotFoundError:
                raise ArtifactNotFoundError(
                    artifact_id, f" (its file {path} was removed)"
                ) from None

    def has(self, artifact_id: str) -> bool:
        with self._lock:
            return artifact_id in self._infos

    def list(self) -> list[ArtifactInfo]:
        """All artifacts in the order they were first stored."""
        with self._lock:
            return list(self._infos.values())

    def remove(self, artifact_id: str) -> None:
        with self._lock:
            self._require(artifact_id)
            self._drop_file(artifact_id)
            self._in_memory.pop(artifact_id, None)
            del self._infos[artifact_id]

    def clear(self) -> None:
        with self._lock:
            for artifact_id in list(self._infos):
                self._drop_file(artifact_id)
            self._infos.clear()
            self._in_memory.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._infos)

    def _require(self, artifact_id: str) -> ArtifactInfo:
        info = self._infos.get(artifact_id)
        if info is None:
            raise ArtifactNotFoundError(artifact_id)
        return info

    def _directory(self) -> Path:
        assert self.base_dir is not None, "only file-backed artifacts reach here"
        return self.base_dir / "artifacts"

    def _drop_file(self, artifact_id: str) -> None:
        info = self._infos.get(artifact_id)
        if info is not None and info.is_file_backed:
            try:
                os.unlink(self._directory() / f"{artifact_id}.json")
            except FileNotFoundError:
                pass


def _check_id(artifact_id: str) -> None:
    """Ids become file names: refuse anything that could escape ``artifacts/``."""
    bad = (
        not artifact_id
        or artifact_id.startswith(".")
        or any(sep in artifact_id for sep in ("/", "\\", "\0"))
    )
    if bad:
        raise ValueError(
            f"invalid artifact id {artifact_id!r}: use a plain file name without path "
            "separators or a leading dot"
        )
