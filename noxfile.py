"""Developer sessions: tests, lint (ruff incl. ASYNC rules), typecheck (mypy strict), bench."""

from __future__ import annotations

import os
import sys

import nox

# Tests last, so the pytest summary is what CI output ends with.
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"
# Sessions run in the interpreter that runs nox (the README's .venv), so one venv serves all.
PY = sys.executable
# The exact versions CI tests with; pyproject.toml declares only compatible ranges.
CONSTRAINTS = "constraints.txt"


def _install(session: nox.Session, *args: str) -> None:
    """Install into the session's interpreter, pinned to the tested versions."""
    session.run(PY, "-m", "pip", "install", "--quiet", "-c", CONSTRAINTS, *args)


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The CI test command: installs the package with its test extra, then runs pytest."""
    # The Ray extra too: the scale-out tests (contract.md §10) skip without it, and CI runs them.
    _install(session, "-e", ".[test,server,ray]")
    session.run(PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    _install(session, "-e", ".[dev]")
    session.run(PY, "-m", "ruff", "check", "attractor_trio", "tests", "benchmarks", "noxfile.py")
    session.run(
        PY, "-m", "ruff", "format", "--check", "attractor_trio", "tests", "benchmarks", "noxfile.py"
    )


@nox.session(python=False)
def typecheck(session: nox.Session) -> None:
    _install(session, "-e", ".[dev,test,server]")
    session.run(PY, "-m", "mypy")


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Speed targets live here, not in unit tests; each script prints ratios vs a baseline."""
    _install(session, "-e", ".[test]")
    # The Python peer the engine benchmark compares against (issue: "if installed"); bench
    # only, never a dependency of the package.
    _install(session, "py-attractor==0.3.0")
    for script in ("benchmarks/parse.py", "benchmarks/engine.py"):
        session.run(PY, script, *session.posargs)
    session.run(PY, "benchmarks/fanout.py")


@nox.session(python=False)
def fuzz(session: nox.Session) -> None:
    """Nightly-style fuzzing: thousands of generated pipelines and fault/cancel schedules.

    CI runs the same tests with a small bounded profile; set ATTRACTOR_FUZZ_EXAMPLES to change.
    """
    _install(session, "-e", ".[test]")
    examples = os.environ.get("ATTRACTOR_FUZZ_EXAMPLES", "3000")
    session.run(
        PY,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        "fuzz",
        env={"ATTRACTOR_FUZZ_EXAMPLES": examples},
    )


@nox.session(python=False)
def crash(session: nox.Session) -> None:
    """Process-level crash consistency: SIGKILL real runs at many random instants, then resume."""
    _install(session, "-e", ".[test]")
    kills = os.environ.get("ATTRACTOR_CRASH_KILLS", "40")
    for seed in ("1", "2", "3"):
        session.run(
            PY,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_crash_consistency.py",
            env={"ATTRACTOR_CRASH_KILLS": kills, "ATTRACTOR_CRASH_SEED": seed},
        )
