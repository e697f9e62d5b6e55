"""``attractor_trio.persist`` re-exports exactly the submodules' public names it means to."""

from __future__ import annotations

import importlib

import attractor_trio.persist as persist

SUBMODULES = [
    "artifacts",
    "attempt_marker",
    "atomic",
    "checkpoint",
    "commit",
    "descriptors",
    "exchange",
    "field_text",
    "final",
    "journaled",
    "live",
    "lock",
    "logtext",
    "manifest",
    "noop_fsync",
    "outcome_text",
    "paths",
    "pending",
    "progress",
    "recycling",
    "status",
    "sweep",
    "syncfs",
]


def test_every_exported_name_is_a_public_name_of_a_submodule() -> None:
    public = {}
    for name in SUBMODULES:
        module = importlib.import_module(f"attractor_trio.persist.{name}")
        public.update({symbol: getattr(module, symbol) for symbol in module.__all__})
    exported = {name for name in vars(persist) if not name.startswith("_")}
    exported -= set(SUBMODULES)  # the submodules themselves appear once imported
    assert exported <= set(public), exported - set(public)
    for name in exported:
        assert getattr(persist, name) is public[name]


def test_the_engine_facing_api_is_exported() -> None:
    for name in [
        "write_json_atomic",
        "read_json",
        "cleanup_temp_files",
        "acquire_run_lock",
        "ProgressWriter",
        "next_seq_for_resume",
        "read_progress",
        "save_checkpoint",
        "load_checkpoint",
        "write_manifest",
        "write_final",
        "LiveWriter",
        "ArtifactStore",
    ]:
        assert hasattr(persist, name), name
