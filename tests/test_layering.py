"""The package's import layering (ARCHITECTURE.md "Layers"): one-way, no circles.

A top-level unit is a module at the package root or a subpackage. Every ``import`` counts —
at module level, inside ``if TYPE_CHECKING:`` and inside function bodies — because a deferred
import still ties the two units together. A unit may import only units of strictly lower
layers; units of one layer are independent siblings. The order below is the one
ARCHITECTURE.md documents: change both together, and place every new unit in it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import attrs

import attractor_trio

#: Bottom to top. A unit imports only from layers below its own.
LAYERS: list[list[str]] = [
    ["_version", "errors", "jsontext"],
    ["dot"],
    ["context", "core"],
    ["persist", "stage_env"],
    ["aio", "events", "interviewers", "providers", "runconfig"],
    ["backends", "observe", "recovery", "workspace"],
    ["handlers"],
    ["scopes"],
    ["api", "testing"],
    ["server"],
    ["cli"],
    ["__init__", "__main__"],
]

#: Modules a reader finds at the package root, besides the subpackages (about a dozen at most).
MAX_ROOT_MODULES = 12

PACKAGE_DIR = Path(attractor_trio.__file__).parent


@attrs.frozen
class Import:
    """One import between two top-level units, and where it is written."""

    source: str
    target: str
    where: str  # path:line, relative to the package's parent


def _module_name(path: Path, root: Path) -> tuple[list[str], bool]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return (parts[:-1] if is_package else parts), is_package


def _unit(module: list[str], package: str) -> str | None:
    """The top-level unit of a dotted module path inside ``package`` (``None`` outside it)."""
    if not module or module[0] != package:
        return None
    return module[1] if len(module) > 1 else "__init__"


def _imported_modules(node: ast.AST, module: list[str], is_package: bool) -> Iterator[list[str]]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name.split(".")
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module if is_package else module[:-1]
            base = base[: len(base) - (node.level - 1)]
        else:
            base = []
        target = base + (node.module.split(".") if node.module else [])
        if len(target) == 1:  # ``from package import name``: name is the unit (module or not)
            for alias in node.names:
                yield [*target, alias.name]
        else:
            yield target


def unit_imports(root: Path) -> list[Import]:
    """Every import from one top-level unit of the package at ``root`` into another."""
    found: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        module, is_package = _module_name(path, root)
        source = _unit(module, root.name) if len(module) > 1 else module[-1]
        if path.parent == root and path.stem == "__init__":
            source = "__init__"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target_module in _imported_modules(node, module, is_package):
                target = _unit(target_module, root.name)
                if target is not None and target != source:
                    where = f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}"
                    found.append(Import(str(source), target, where))
    return found


def circles(imports: Sequence[Import]) -> list[list[str]]:
    """The strongly connected groups of more than one unit (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for other in sorted(graph[unit]):
            if other not in index:
                visit(other)
                low[unit] = min(low[unit], low[other])
            elif other in stack:
                low[unit] = min(low[unit], index[other])
        if low[unit] == index[unit]:
            group: list[str] = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == unit:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return groups


def layer_violations(
    imports: Sequence[Import], layers: Sequence[Sequence[str]]
) -> tuple[list[str], list[str]]:
    """``(imports that do not go strictly down, units missing from the layer order)``."""
    level: Mapping[str, int] = {unit: i for i, layer in enumerate(layers) for unit in layer}
    undeclared = sorted({u for imp in imports for u in (imp.source, imp.target) if u not in level})
    upward = [
        f"{imp.where}: {imp.source} (layer {level[imp.source]}) imports "
        f"{imp.target} (layer {level[imp.target]})"
        for imp in imports
        if imp.source in level and imp.target in level and level[imp.target] >= level[imp.source]
    ]
    return upward, undeclared


def _units_on_disk(root: Path) -> set[str]:
    units = {p.stem for p in root.glob("*.py")}
    units |= {p.parent.name for p in root.glob("*/__init__.py")}
    return units


# ------------------------------------------------------------------------------ the package


def test_no_import_circle_between_top_level_units() -> None:
    imports = unit_imports(PACKAGE_DIR)
    groups = circles(imports)
    details = [
        f"  {imp.where}: {imp.source} -> {imp.target}"
        for group in groups
        for imp in imports
        if imp.source in group and imp.target in group
    ]
    assert groups == [], "import circles:\n" + "\n".join(details)


def test_every_import_goes_down_the_layer_order() -> None:
    upward, undeclared = layer_violations(unit_imports(PACKAGE_DIR), LAYERS)
    assert upward == [], "imports against the layer order:\n" + "\n".join(upward)
    assert undeclared == [], f"units missing from LAYERS: {undeclared}"


def test_every_unit_has_a_layer_and_the_root_stays_small() -> None:
    declared = {unit for layer in LAYERS for unit in layer}
    on_disk = _units_on_disk(PACKAGE_DIR)
    assert on_disk - declared == set(), f"place these units in LAYERS: {on_disk - declared}"
    assert declared - on_disk == set(), f"LAYERS names units that are gone: {declared - on_disk}"
    root_modules = sorted(p.name for p in PACKAGE_DIR.glob("*.py"))
    assert len(root_modules) <= MAX_ROOT_MODULES, root_modules


# --------------------------------------------------------------------- the checker itself


def _fake_package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_checker_sees_deferred_and_type_checking_imports_and_names_the_line(
    tmp_path: Path,
) -> None:
    root = _fake_package(
        tmp_path,
        {
            "low/__init__.py": "",
            "low/a.py": "def f():\n    from ..high import b\n",
            "high/__init__.py": "",
            "high/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.low import a\n",
        },
    )
    imports = unit_imports(root)
    assert circles(imports) == [["high", "low"]]
    upward, undeclared = layer_violations(imports, [["low"], ["high"]])
    assert upward == ["pkg/low/a.py:2: low (layer 0) imports high (layer 1)"]
    assert undeclared == []


def test_checker_resolves_package_relative_names_and_flags_same_layer_imports(
    tmp_path: Path,
) -> None:
    root = _fake_package(tmp_path, {"a.py": "from . import b\n", "b.py": "x = 1\n"})
    imports = unit_imports(root)
    assert [(i.source, i.target, i.where) for i in imports] == [("a", "b", "pkg/a.py:1")]
    upward, _ = layer_violations(imports, [["a", "b"]])
    assert upward == ["pkg/a.py:1: a (layer 0) imports b (layer 0)"]
    assert layer_violations(imports, [["c"]])[1] == ["a", "b"]
