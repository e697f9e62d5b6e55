"""The public surface (trio's test_exports style): explicit, importable, documented."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import attractor_trio

PUBLIC = sorted(name for name in dir(attractor_trio) if not name.startswith("_"))
# Submodules appear as attributes once imported; they are namespaces, not re-exports.
SUBMODULES = {name for name in PUBLIC if inspect.ismodule(getattr(attractor_trio, name))}


def test_every_public_name_is_an_explicit_reexport() -> None:
    source = Path(attractor_trio.__file__).read_text()
    tree = ast.parse(source)
    reexported = {
        alias.asname
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname == alias.name
    }
    leaked = [n for n in PUBLIC if n not in reexported and n not in SUBMODULES]
    assert leaked == [], f"public names not re-exported explicitly: {leaked}"


def test_public_objects_have_docstrings_or_are_data() -> None:
    undocumented = [
        name
        for name in PUBLIC
        if name not in SUBMODULES
        and (
            inspect.isclass(getattr(attractor_trio, name))
            or inspect.isfunction(getattr(attractor_trio, name))
        )
        and not inspect.getdoc(getattr(attractor_trio, name))
    ]
    assert undocumented == []


def test_contract_api_names_exist() -> None:
    for name in (
        "load",
        "validate",
        "run",
        "resume",
        "register_handler",
        "register_transform",
        "RunResult",
        "Graph",
        "Node",
        "Edge",
        "Diagnostic",
        "Outcome",
        "Context",
    ):
        assert hasattr(attractor_trio, name), name


def test_import_is_light() -> None:
    """Importing the package or its CLI must not import the HTTP server stack, nor pytest
    (which ``trio.testing`` imports: a third of the CLI's start-up time)."""
    code = (
        "import sys, attractor_trio, attractor_trio.cli.main; "
        "print(*(name in sys.modules for name in ('starlette', 'hypercorn', '_pytest')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False False"
