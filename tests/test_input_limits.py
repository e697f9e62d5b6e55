"""Input limits (contract.md §10): size caps checked before reading, binary input by position.

Black-box through the CLI in-process (``CliRunner``), so ``tracemalloc`` sees every byte the
command allocates: a refused 17 MiB pipeline must cost neither time nor memory.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from attractor_trio.cli.main import main
from attractor_trio.dot.inputs import (
    BinaryInput,
    InputTooLarge,
    decode_text,
    first_bad_char,
    parse_size,
    read_bounded,
)

MIB = 1024 * 1024
LINEAR = b"digraph p { start [shape=Mdiamond]; done [shape=Msquare]; start -> done }\n"
PIPELINE_COMMANDS = [
    ["validate"],
    ["run", "--simulate"],
    ["graph", "-o", "out.dot"],
    ["fuzz", "--examples", "1"],
]


def cli(*args: str, cwd: Path) -> tuple[int, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.stderr


def sparse_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


@pytest.mark.parametrize("command", PIPELINE_COMMANDS, ids=lambda c: c[0])
def test_a_17_mib_pipeline_is_refused_at_once_without_reading_it(
    tmp_path: Path, command: list[str]
) -> None:
    big = sparse_file(tmp_path / "big.dot", 17 * MIB)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        code, err = cli(command[0], str(big), *command[1:], cwd=tmp_path)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 2
    assert "the pipeline is too large (17825792 bytes, over 16 MiB)" in err
    assert "--max-input-size" in err
    assert elapsed < 0.5
    assert peak < 2 * MIB  # nothing of the file was read
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "out.dot").exists()


def test_dev_zero_is_refused_after_reading_just_past_the_limit(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        code, err = cli("validate", "/dev/zero", "--max-input-size", "1MiB", cwd=tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 2
    assert "/dev/zero: the pipeline is too large (read past the limit, over 1 MiB)" in err
    assert peak < 4 * MIB


def test_max_input_size_raises_the_limit(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.dot"
    pipeline.write_bytes(LINEAR + b" " * 2000)
    code, err = cli("validate", str(pipeline), "--max-input-size", "1k", cwd=tmp_path)
    assert code == 2 and "over 1000 bytes" in err
    code, err = cli("validate", str(pipeline), "--max-input-size", "4KiB", cwd=tmp_path)
    assert code == 0, err
    code, err = cli("validate", str(pipeline), "--max-input-size", "lots", cwd=tmp_path)
    assert code == 2 and "is not a size" in err


@pytest.mark.parametrize(
    ("content", "where", "what"),
    [
        (b'digraph p {\n  a [label="x"]\n  b\x00 -> a\n}\n', "3:4", "a NUL byte"),
        (b'digraph p {\n  a [label="\xc3\xa9\xff"]\n}\n', "2:14", "invalid UTF-8 (byte 0xff)"),
        # A surrogate encoded in UTF-8 (CESU) is invalid UTF-8 too.
        (b'digraph p {\n  a [label="\xed\xa0\x80"]\n}\n', "2:13", "invalid UTF-8 (byte 0xed)"),
    ],
)
def test_binary_pipelines_are_a_parse_error_at_the_first_bad_byte(
    tmp_path: Path, content: bytes, where: str, what: str
) -> None:
    pipeline = tmp_path / "p.dot"
    pipeline.write_bytes(content)
    code, err = cli("validate", str(pipeline), cwd=tmp_path)
    assert code == 1
    assert f"{pipeline}:{where}: error: binary input: {what}" in err
    code, err = cli("run", str(pipeline), "--simulate", cwd=tmp_path)
    assert code == 2
    assert err.startswith(f"{pipeline}:{where}: error: binary input: {what}")
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_oversize_config_and_sim_script_are_refused(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.dot"
    pipeline.write_bytes(LINEAR)
    big = sparse_file(tmp_path / "big.yaml", MIB + 1)
    code, err = cli("run", str(pipeline), "--config", str(big), cwd=tmp_path)
    assert code == 2 and "the run config is too large (1048577 bytes, over 1 MiB)" in err
    code, err = cli("run", str(pipeline), "--simulate", "--sim-script", str(big), cwd=tmp_path)
    assert code == 2 and "the sim script is too large (1048577 bytes, over 1 MiB)" in err
    assert not (tmp_path / "runs").exists()


def test_binary_config_files_are_positioned_config_errors(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.dot"
    pipeline.write_bytes(LINEAR)
    config = tmp_path / "c.yaml"
    config.write_bytes(b"backend: simulate\nstall_timeout: 1\xfe\n")
    code, err = cli("run", str(pipeline), "--config", str(config), cwd=tmp_path)
    assert code == 2
    assert f"{config}:2:17: error: binary input: invalid UTF-8 (byte 0xfe)" in err
    script = tmp_path / "s.json"
    script.write_bytes(b'{"nodes": {}}\x00')
    code, err = cli("run", str(pipeline), "--simulate", "--sim-script", str(script), cwd=tmp_path)
    assert code == 2
    assert f"{script}:1:14: error: binary input: a NUL byte" in err


# --- the mechanism ---------------------------------------------------------------------------


def test_read_bounded_stops_one_byte_past_the_limit_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer_fd = os.open(fifo, os.O_RDWR)  # keeps the FIFO open so the reader never sees EOF
    try:
        os.write(writer_fd, b"x" * 100)
        with pytest.raises(InputTooLarge, match="read past the limit"):
            read_bounded(fifo, 10, "the pipeline")
    finally:
        os.close(writer_fd)


def test_decoding_and_size_parsing() -> None:
    assert decode_text(b"\xef\xbb\xbfdigraph") == "digraph"
    with pytest.raises(BinaryInput) as caught:
        decode_text(b"ok\n\xe2\x82\xacx\x00")
    assert (caught.value.line, caught.value.col) == (2, 3)
    problem = first_bad_char('digraph {\n a [label="\ud800"]\n}')
    assert problem is not None and (problem.line, problem.col) == (2, 12)
    assert problem.what == "a lone surrogate U+D800"
    assert first_bad_char("digraph { é }") is None
    assert parse_size("16MiB") == 16 * MIB
    assert parse_size("500k") == 500_000
    assert parse_size("123") == 123
    with pytest.raises(ValueError, match="not a size"):
        parse_size("12 parsecs")
