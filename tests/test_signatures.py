"""Failure signatures (contract.md §5/§9): normalization is idempotent and collapses ids/numbers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.core.failures import failure_signature, normalize_reason


def test_contract_examples() -> None:
    assert normalize_reason("Build  FAILED at commit a1b2c3d4e5 (exit 2)") == (
        "build failed at commit <hex> (exit <n>)"
    )
    assert normalize_reason("deadbeefcafe") == "deadbeefcafe"  # no digit: not an id
    assert normalize_reason("x" * 500) == "x" * 240
    assert failure_signature("t", "permanent", "E 42") == "t|deterministic|e <n>"


@given(st.text(max_size=300))
def test_normalization_is_idempotent(reason: str) -> None:
    once = normalize_reason(reason)
    assert normalize_reason(once) == once
    assert len(once) <= 240


# Counts below 7 digits: a 7+ digit number is an id by the contract's rule (hex runs first).
@given(
    st.integers(min_value=0, max_value=999_999),
    st.integers(min_value=0, max_value=999_999),
    st.binary(min_size=4, max_size=10),
)
def test_reasons_differing_only_in_numbers_and_hex_collapse(a: int, b: int, raw: bytes) -> None:
    commit = raw.hex() + "1"
    first = normalize_reason(f"test_{'x'} failed: {a} errors in commit {commit}")
    second = normalize_reason(f"test_{'x'} failed: {b} errors in commit {'9' + raw.hex()}")
    assert first == second
