"""The package files each stage runs, derived from the source: DVC hashes them as the stage's
deps (dvc.yaml lists them; a test checks the lists against this) and the resume fingerprint of a
stopped stage hashes the same files, so changing any of them re-runs the stage and never resumes
a run of other code.

A stage runs `python -m tlstudy.stage <command>`, which imports the package, the runner and the
command's module (stage.MODULES); from there every `import` and `from … import` of a tlstudy
module counts, at any depth of a file — many imports here are deferred into functions, and they
run all the same — and so does a module named in a string (importlib.resources.files(
"tlstudy.resources")), together with the `__init__.py` of every package on the way and the
resource files (resources/) those modules name. Tools (cli.py, profile.py, bench.py, …) are in no stage's
closure, since no stage module imports them.

`python -m tlstudy.deps` prints every stage command's list, as dvc.yaml's deps want it.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "tlstudy"
ROOT = Path(__file__).parent  # src/tlstudy
RUNNER = "stage"  # the module every stage's command runs (stage.py)


def _file(module: str) -> Path | None:
    """The source file of a dotted module name under the package, or None if it is not one."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _package_inits(module: str) -> list[str]:
    """The packages importing `module` executes first: tlstudy, then tlstudy.stages.report, …"""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@functools.cache
def imports(module: str) -> frozenset[str]:
    """The package's modules that `module`'s source imports anywhere in the file."""
    path = _file(module)
    if path is None:
        raise ValueError(f"{module}: not a module of {PACKAGE} under {ROOT}")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .sub import y
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            # `from tlstudy.data import images as data` imports a
            # module; `from tlstudy.data.images import Dataset` a name.
            found.update(f"{base}.{a.name}" for a in node.names if _file(f"{base}.{a.name}") is not None)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(f"{PACKAGE}."):
            found.add(node.value)  # a module named to importlib: resources.files("tlstudy.resources")
    return frozenset(m for m in found if _file(m) is not None)


def closure(modules: list[str]) -> list[str]:
    """Every module the given ones import, transitively, with the packages on the way."""
    seen: set[str] = set()
    todo = [*modules]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += [*_package_inits(m), *imports(m)]
    return sorted(seen)


def _resources(module: str) -> set[str]:
    """Files of resources/ that a module names in a string literal (e.g. "study.yaml")."""
    names = {p.name for p in (ROOT / "resources").iterdir() if p.is_file()}
    path = _file(module)
    tree = ast.parse(path.read_text(), str(path))
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in names}


def files(command: str) -> list[str]:
    """The files a stage command runs, as repository paths (src/tlstudy/…), sorted."""
    from tlstudy.stage import MODULES

    if command not in MODULES:
        raise ValueError(f"{command!r} is not a stage command; known: {', '.join(MODULES)}")
    modules = closure([f"{PACKAGE}.{RUNNER}", f"{PACKAGE}.{MODULES[command]}"])
    src = ROOT.parent
    out = {_file(m).relative_to(src.parent).as_posix() for m in modules}
    for m in modules:
        out |= {(ROOT / "resources" / name).relative_to(src.parent).as_posix() for name in _resources(m)}
    return sorted(out)


def code_paths(command: str) -> list[Path]:
    """The same files as absolute paths, for hashing (resume.fingerprint)."""
    src = ROOT.parent.parent
    return [src / f for f in files(command)]


if __name__ == "__main__":
    from tlstudy.stage import MODULES

    for command in MODULES:
        print(f"{command}:")
        for f in files(command):
            print(f"  - {f}")
