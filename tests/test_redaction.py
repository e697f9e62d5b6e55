"""The redaction layer (contract.md §10): which values are secrets, and that every form of
output — text, bytes, JSON documents, JSON lines, chunked streams — loses them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.core import redaction
from attractor_trio.core.redaction import REDACTED, Redactor, StreamRedactor

SECRET = "sk-live-0123456789abcdef"


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY",
        "openai_api_key",
        "GITHUB_TOKEN",
        "TOKEN",
        "AWS_SECRET",
        "DB_PASSWORD",
        "PASSWORD_FILE_CONTENTS",
        "GCP_CREDENTIALS",
    ],
)
def test_credential_names_are_secret(name: str) -> None:
    assert redaction.is_secret_env_name(name)


@pytest.mark.parametrize("name", ["PATH", "TOKENIZER", "API_KEY_FILE", "MY_SECRETS_DIR", "HOME"])
def test_ordinary_names_are_not(name: str) -> None:
    assert not redaction.is_secret_env_name(name)


def test_register_environment_applies_the_length_floors() -> None:
    env = {
        "MY_API_KEY": "12345678",  # 8: a secret
        "SHORT_TOKEN": "1234567",  # 7: too short to be one by its name alone
        "PROVIDER_KEY_VAR": "abcd",  # named as an api_key_env: 4 is enough
        "ATTRACTOR_TOKEN": "tok1",  # always named
        "PATH": "/usr/bin:/bin",
    }
    redactor = redaction.register_environment(env, ["PROVIDER_KEY_VAR"])
    assert redactor.values == {"12345678", "abcd", "tok1"}
    assert redaction.current() is redactor


def test_registered_secrets_accumulate_and_reset_forgets_them() -> None:
    redaction.register_values(["first-secret"])
    redaction.register_values(["second-secret"])
    assert redaction.current().text("first-secret second-secret") == f"{REDACTED} {REDACTED}"
    redaction.reset()
    assert not redaction.current()
    assert redaction.current().text("first-secret") == "first-secret"


def test_active_is_the_redactor_only_while_it_holds_a_secret() -> None:
    """The per-event paths read ``redaction.active``: ``None`` means nothing to redact."""
    redaction.reset()
    assert redaction.active is None
    redaction.register_values([""])  # no secret at all: still nothing to do
    assert redaction.active is None
    redactor = redaction.register_values(["first-secret"])
    assert redaction.active is redactor is redaction.current()
    redaction.reset()
    assert redaction.active is None


def test_without_secrets_everything_is_returned_as_is() -> None:
    empty = Redactor()
    data = b'{"a": "b"}'
    text = "plain"
    assert empty.data(data) is data
    assert empty.json_bytes(data) is data
    assert empty.text(text) is text


def test_text_bytes_and_values_are_redacted() -> None:
    r = Redactor([SECRET])
    assert r.text(f"key={SECRET}!") == f"key={REDACTED}!"
    assert r.data(f"{SECRET}{SECRET}".encode()) == f"{REDACTED}{REDACTED}".encode()
    value = {"k": [SECRET, 1, {SECRET: f"x{SECRET}"}], "n": None}
    assert r.value(value) == {"k": [REDACTED, 1, {REDACTED: f"x{REDACTED}"}], "n": None}


def test_the_longest_of_overlapping_secrets_wins() -> None:
    r = Redactor(["abcdefgh", "abcdefgh-and-more"])
    assert r.text("abcdefgh-and-more") == REDACTED


def test_a_secret_with_json_special_characters_is_found_inside_json() -> None:
    secret = 'pa"ss\\word\n1'
    r = Redactor([secret])
    for ensure_ascii in (True, False):
        doc = json.dumps({"v": f"<{secret}>"}, ensure_ascii=ensure_ascii).encode()
        assert json.loads(r.json_bytes(doc)) == {"v": f"<{REDACTED}>"}


def test_a_numeric_secret_equal_to_a_number_keeps_the_document_valid() -> None:
    r = Redactor(["12345678"])
    doc = json.dumps({"pid": 12345678, "note": "pin 12345678"}, indent=2).encode() + b"\n"
    out = r.json_bytes(doc)
    assert json.loads(out) == {"pid": 12345678, "note": f"pin {REDACTED}"}
    assert out.endswith(b"\n")


def test_json_lines_are_redacted_line_by_line() -> None:
    r = Redactor(["12345678"])
    lines = b'{"n": 12345678}\n{"s": "12345678"}\n'
    out = r.json_bytes(lines, lines=True)
    assert [json.loads(x) for x in out.splitlines()] == [{"n": 12345678}, {"s": REDACTED}]


def test_file_bytes_picks_the_format_from_the_name() -> None:
    redaction.register_values(["12345678"])
    assert redaction.file_bytes("x/status.json", b'{"n": 12345678}') == b'{"n": 12345678}'
    assert redaction.file_bytes("x/stdout.log", b"n 12345678") == f"n {REDACTED}".encode()
    assert redaction.file_bytes("r.ndjson", b'{"s": "12345678"}\n') == b'{"s": "[REDACTED]"}\n'


def _stream(redactor: Redactor, chunks: list[bytes]) -> bytes:
    stream = StreamRedactor(redactor)
    return b"".join(stream.feed(c) for c in chunks) + stream.flush()


def test_a_secret_split_at_every_possible_chunk_boundary_is_redacted() -> None:
    r = Redactor([SECRET, "other-secret"])
    data = f"before {SECRET} middle other-secret{SECRET} after".encode()
    expected = r.data(data)
    for cut in range(len(data) + 1):
        assert _stream(r, [data[:cut], data[cut:]]) == expected, cut
    assert _stream(r, [bytes([b]) for b in data]) == expected


@given(
    st.lists(st.sampled_from([b"sk-", b"live-", SECRET.encode(), b"-and-more", b"x", b"\n"])),
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_streamed_redaction_equals_redacting_the_whole(parts: list[bytes], cuts: list[int]) -> None:
    r = Redactor([SECRET, f"{SECRET}-and-more", "sk-live-"])
    data = b"".join(parts)
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert _stream(r, chunks) == r.data(data)
