"""Packaging for a library others embed: ranges in pyproject.toml, exact tested pins in
constraints.txt, and every installer (CI, nox, the README) pinned to them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    lines = [*project["dependencies"], *(r for reqs in extras.values() for r in reqs)]
    return [Requirement(r) for r in lines]


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exactly: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


@pytest.mark.parametrize("req", _declared(), ids=str)
def test_every_dependency_is_a_range_with_a_floor(req: Requirement) -> None:
    operators = {spec.operator for spec in req.specifier}
    assert "==" not in operators and "===" not in operators, "an exact pin collides with hosts"
    assert ">=" in operators, "a floor names the oldest release with what we use"


@pytest.mark.parametrize("req", _declared(), ids=str)
def test_constraints_pin_every_dependency_inside_its_range(req: Requirement) -> None:
    pinned = _pins().get(canonicalize_name(req.name))
    assert pinned is not None, f"{req.name} is not in constraints.txt"
    assert req.specifier.contains(pinned, prereleases=True), f"{req.name}=={pinned} vs {req}"


def test_ci_nox_and_the_readme_install_the_tested_versions() -> None:
    noxfile = (ROOT / "noxfile.py").read_text()
    # One pip call in the noxfile, the helper every session installs through, with -c.
    assert noxfile.count('"pip", "install"') == 1
    assert '"pip", "install", "--quiet", "-c", CONSTRAINTS' in noxfile
    assert "pip install --quiet -c constraints.txt nox" in (ROOT / ".ci" / "run").read_text()
    first, second = (ROOT / "README.md").read_text().split("```sh\n", 1)[1].splitlines()[:2]
    assert "-c constraints.txt" in first and "-c constraints.txt" in second
