"""What src/ imports is declared: pyproject.toml names every distribution whose modules the package
imports (none arrives only through another's dependencies, which may drop it), and
requirements.txt pins each within its range."""

import ast
import importlib.metadata
import re
import sys

import pytest
from conftest import PROJECT
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    return {canonical(r.name): r for r in map(Requirement, project["dependencies"])}


def imported() -> dict[str, set[str]]:
    """Each top-level module outside the standard library that src/ imports, with its files."""
    found: dict[str, set[str]] = {}
    for path in (PROJECT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"__future__", "tlstudy"}:
                found.setdefault(top, set()).add(path.relative_to(PROJECT).as_posix())
    return found


def pins() -> dict[str, Version]:
    found = {}
    for line in (PROJECT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            found[canonical(name.strip())] = Version(version.strip())
    return found


def test_every_distribution_src_imports_is_declared_and_pinned_within_its_range():
    dists = importlib.metadata.packages_distributions()
    names, pinned = declared(), pins()
    missing = {
        module: sorted(files)
        for module, files in imported().items()
        if not {canonical(d) for d in dists.get(module, [module])} & set(names)
    }
    assert not missing, f"imported by src/ but not in pyproject.toml's dependencies: {missing}"
    for name, requirement in names.items():
        assert name in pinned, f"{name} is not pinned in requirements.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (name, pinned[name])
