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

__all__ = [
    "ATTEMPT_MARKER",
    "encode_attempt_marker",
    "encode_marker",
    "marker_json_chunks",
    "marker_record",
    "read_attempt_marker",
]

ATTEMPT_MARKER: Final = ".attempt.json"
_REQUIRED_KEYS: Final = ("number", "attempt", "attempt_id")
#: ``json.dumps``'s defaults (ASCII escapes, NaN allowed), built once.
_encode: Final = json_chunk_encoder(separators=(", ", ": "), ensure_ascii=True, allow_nan=True)


#: The marker's encoder, as chunks of text (``json.dumps`` of a list or dict is their join).
marker_json_chunks: Final = _encode
_encode_ascii: Final = json.encoder.encode_basestring_ascii
#: The marker's text from ``finished`` on, by (finished, interrupted).
_STATES: Final = {
    (finished, interrupted): (
        f', "finished": {json.dumps(finished)}, "interrupted": {json.dumps(interrupted)}'
    )
    for finished in (False, True)
    for interrupted in (False, True)
}


def encode_attempt_marker(record: dict[str, Any]) -> bytes:
    """The marker's bytes: ``json.dumps(record).encode()``, byte for byte (the format markers
    have always had), without ``json.dumps`` building a new C encoder at every call — which
    cost more than encoding the marker, written once per attempt."""
    return "".join(_encode(record, 0)).encode("utf-8")


def marker_record(
    node_id: str,
    number: int,
    attempt: int,
    attempt_id: str,
    epoch: str,
    finished: bool,
    interrupted: bool,
) -> dict[str, Any]:
    """The marker's record without its outcome, keys in the order the file has them."""
    return {
        "node_id": node_id,
        "number": number,
        "attempt": attempt,
        "attempt_id": attempt_id,
        "epoch": epoch,
        "finished": finished,
        "interrupted": interrupted,
    }


def encode_marker(
    node_id: str,
    number: int,
    attempt: int,
    attempt_id: str,
    epoch: str,
    finished: bool,
    interrupted: bool,
    outcome: str | None = None,
) -> bytes:
    """``encode_attempt_marker`` of the record the attempt scope writes (these keys in this
    order, then ``"outcome"`` when ``outcome``, that value's JSON text, is given), spelled
    out: the C encoder took a few hundred instructions per key and string, and a marker has
    about thirty of them (with its outcome), all but a few the same at every stage.
    Anything but exact ``str``/``int``/``bool`` takes :func:`encode_attempt_marker`."""
    if not (
        type(node_id) is str
        and type(number) is int
        and type(attempt) is int
        and type(attempt_id) is str
        and type(epoch) is str
        and type(finished) is bool
        and type(interrupted) is bool
    ):
        record = marker_record(node_id, number, attempt, attempt_id, epoch, finished, interrupted)
        text = "".join(_encode(record, 0))[:-1]
    else:
        epoch_text = _encode_ascii(epoch) if epoch else '""'
        text = (
            f'{{"node_id": {_encode_ascii(node_id)}, "number": {number}, "attempt": {attempt}, '
            f'"attempt_id": {_encode_ascii(attempt_id)}, "epoch": {epoch_text}'
            f"{_STATES[finished, interrupted]}"
        )
    if outcome is not None:
        text = f'{text}, "outcome": {outcome}'
    return f"{text}}}".encode()


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
