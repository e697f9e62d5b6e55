"""Reading a stage directory's ``.attempt.json`` marker (contract.md §2, §10).

The attempt scope writes the marker (which attempt the stage dir's files belong to, and how it
ended); after a crash both the attempt scope (adoption, numbering) and the git workspace's
resume (where the interrupted attempt's patch goes) read it back. One reader, so the two
never disagree about what a torn or partial marker means.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from .atomic import json_chunk_encoder

__all__ = ["ATTEMPT_MARKER", "encode_attempt_marker", "read_attempt_marker"]

ATTEMPT_MARKER: Final = ".attempt.json"
_REQUIRED_KEYS: Final = ("number", "attempt", "attempt_id")
#: ``json.dumps``'s defaults (ASCII escapes, NaN allowed), built once.
_encode: Final = json_chunk_encoder(separators=(", ", ": "), ensure_ascii=True, allow_nan=True)


def encode_attempt_marker(record: dict[str, Any]) -> bytes:
    """The marker's bytes: ``json.dumps(record).encode()``, byte for byte (the format markers
    have always had), without ``json.dumps`` building a new C encoder at every call — which
    cost more than encoding the marker, written once per attempt."""
    return "".join(_encode(record, 0)).encode("utf-8")


def read_attempt_marker(stage_dir: Path) -> dict[str, Any] | None:
    """The last attempt's marker, or ``None``: absent, empty or torn reads as absent.

    The first marker of an attempt in a stage dir it created is written in place
    (contract.md §2), so a SIGKILL may leave it empty or cut short. Every proper prefix of
    the one-line JSON object the marker is fails to parse (its closing brace is its last
    byte), so such a file gives ``None`` here — exactly what the file's absence gives, and
    what was on disk an instant before it was created. The attempt scope (adoption,
    numbering) and the git workspace's resume read markers only through this function."""
    try:
        marker = json.loads((stage_dir / ATTEMPT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not all(k in marker for k in _REQUIRED_KEYS):
        return None
    return marker
