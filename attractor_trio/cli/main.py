"""The ``attractor-trio`` command (contract.md §1).

Thin: parse options, call the API, map exit codes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .._version import __version__
from ..core.exit_codes import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from ..dot.graph import Diagnostic, Severity
from ..errors import AttractorError, DotSyntaxError
from .limits import claim_the_process
from .run import max_input_size_option

__all__ = ["main"]


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


class _OneLineError(click.ClickException):
    """A bad option or argument value: one line, exit 2 (contract.md §10)."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"attractor-trio: error: {self.format_message()}", err=True)


class _Main(click.Group):
    """The command group; a bad path or value (click's ``BadParameter``: a missing file, a
    directory where a file belongs, a bad duration) is reported on one line."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Called without arguments: started as the program (the console script, ``python -m``)
        # on the process's own argv, so the process is ours to tune
        # (``limits.claim_the_process``). Click's test runner calls ``main(args=...)``, and an
        # embedding application passes its arguments.
        if not args and "args" not in kwargs:
            claim_the_process()
        return super().__call__(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.BadParameter as exc:
            raise _OneLineError(exc.format_message()) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="attractor-trio")
def main() -> None:
    """Run Attractor pipelines (DOT graphs of LLM, tool, human and parallel stages) on Trio.

    Exit codes: 0 success, 1 pipeline failed (or invalid for `validate`), 2 usage, parse,
    validation or config error, 129 SIGHUP, 130 SIGINT, 143 SIGTERM/stop, 70 internal
    error.
    """


# --- validate ------------------------------------------------------------------------------


def _diagnose(path: Path, max_size: int) -> list[Diagnostic]:
    """Every diagnostic; a file over ``max_size`` is not a diagnostic but a usage error (exit
    2, raised), while a binary one is a syntax error at its first bad byte (exit 1)."""
    from ..dot.inputs import InputTooLarge
    from ..dot.pipeline import load
    from ..dot.validate import validate

    try:
        graph = load(path, max_size=max_size)
    except InputTooLarge:
        raise
    except DotSyntaxError as exc:
        return [Diagnostic("syntax", Severity.ERROR, exc.message, line=exc.line, col=exc.col)]
    except AttractorError as exc:
        return [Diagnostic("transform", Severity.ERROR, str(exc))]
    return validate(graph)


@main.command("validate")
@click.argument("pipeline", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1).")
@max_input_size_option
def validate_command(pipeline: Path, as_json: bool, strict: bool, max_input_size: int) -> None:
    """Check PIPELINE.dot: syntax, structure, conditions, stylesheet, attribute values."""
    from ..dot.inputs import InputTooLarge

    try:
        diagnostics = _diagnose(pipeline, max_input_size)
    except InputTooLarge as exc:
        _echo_err(f"attractor-trio: error: {exc}")
        sys.exit(EXIT_USAGE)
    errors = sum(d.severity is Severity.ERROR for d in diagnostics)
    warnings = sum(d.severity is Severity.WARNING for d in diagnostics)
    valid = errors == 0 and not (strict and warnings)
    if as_json:
        report = {
            "file": str(pipeline),
            "valid": valid,
            "errors": errors,
            "warnings": warnings,
            "diagnostics": [d.to_json() for d in diagnostics],
        }
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for diagnostic in diagnostics:
            _echo_err(diagnostic.format(str(pipeline)))
        verdict = "valid" if valid else "invalid"
        _echo_err(f"{pipeline}: {verdict} ({errors} error(s), {warnings} warning(s))")
    sys.exit(EXIT_OK if valid else EXIT_FAIL)


# --- the other commands live in their own modules ---------------------------------------------


def _register_run_commands() -> None:
    from .fuzz import register as register_fuzz
    from .observe import register as register_observe
    from .run import register
    from .serve import register as register_serve
    from .stop import register as register_stop

    register(main)
    register_stop(main)
    register_observe(main)
    register_serve(main)
    register_fuzz(main)


_register_run_commands()
