"""Which code made a published result, and whether the code now still computes what it computed.

A publication (`results/<name>/dvc.lock`, and each experiment's lock under it) records the md5 of
every source file its stages ran. The commit that made it is the newest commit of the repository
whose files have those md5s (`made_by`): the lock itself is the proof, nothing to pin by hand.

Editing a stage's code then does not stale the publication by itself: `changes` compares the
code of each published stage at that commit with the code the same stage runs now, definition by
definition, on the syntax tree — so comments, docstrings, formatting and moving a definition to
another module (its callers' `module.name` read as `name`) change nothing — and names the
definitions whose computation differs. Such a change fails the check (tests/test_results.py)
until the publication is re-run, unless it is declared in `results/neutral-changes.yaml`: a
definition whose change cannot move a published number (a resume key, a checkpoint's error
handling), with why, pinned to the definition's text now, so editing it again fails the check
again. A republication makes the declarations moot, and the check then lists them as stale.

A publication whose computation did change, and that cannot be re-run yet (hours of CPU), is
declared in `results/stale.yaml` instead: its folder, the commit that made it, the params it
differs in, why, and the command that republishes it. The check then passes only while the
publication is as stale as declared (made by that commit, and still computing differently), and
the docs quote it as the earlier code's, never as today's finding.

`python -m tlstudy.tools.publication` prints the verdict for every publication under results/.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PACKAGE = "tlstudy"
NEUTRAL = Path("results/neutral-changes.yaml")
STALE = Path("results/stale.yaml")


class PublicationError(Exception):
    """A publication whose code cannot be traced to a commit."""


def _git(repo: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], input=data, capture_output=True, check=True).stdout


def _blobs(repo: Path, specs: list[str]) -> dict[str, bytes | None]:
    """`rev:path` -> the file's bytes there (None where it does not exist), through one git process."""
    out = _git(repo, "cat-file", "--batch", data="".join(f"{s}\n" for s in specs).encode())
    found, pos = {}, 0
    for spec in specs:
        end = out.index(b"\n", pos)
        header = out[pos:end].decode()
        pos = end + 1
        if header.endswith(" missing"):
            found[spec] = None
            continue
        size = int(header.rsplit(" ", 1)[1])
        found[spec] = out[pos : pos + size]
        pos += size + 1
    return found


def src_deps(lock: dict) -> dict[str, dict[str, str]]:
    """stage -> {source path: md5} of the files under src/ each stage of a lock ran."""
    return {
        stage: {d["path"]: d["md5"] for d in entry.get("deps", []) if d["path"].startswith("src/")}
        for stage, entry in lock.items()
    }


def made_by(repo: Path, lock: dict) -> str:
    """The newest commit (from HEAD back) whose source files are the ones the lock ran."""
    wanted = {p: md5 for deps in src_deps(lock).values() for p, md5 in deps.items()}
    if not wanted:
        raise PublicationError("its lock names no file under src/")
    history = _git(repo, "rev-list", "HEAD", "--", *sorted(wanted)).decode().split()
    # The files at a commit are the files at the newest commit at or before it that touched them.
    for commit in history[:200]:
        blobs = _blobs(repo, [f"{commit}:{p}" for p in wanted])
        if all(b is not None and hashlib.md5(b).hexdigest() == wanted[p] for p, b in zip(wanted, blobs.values())):
            return commit
    shallow = _git(repo, "rev-parse", "--is-shallow-repository").decode().strip() == "true"
    hint = " (this clone is shallow: `git fetch --unshallow`)" if shallow else ""
    raise PublicationError(f"no commit of this repository holds the source files its lock ran{hint}")


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return tree


def _modules(paths) -> frozenset[str]:
    """The dotted names of the package's modules and packages at their repository paths
    (src/tlstudy/training/engine.py -> tlstudy.training.engine, and tlstudy.training)."""
    out = set()
    for path in paths:
        parts = Path(path).with_suffix("").parts
        if len(parts) > 1 and parts[0] == "src" and Path(path).suffix == ".py":
            dotted = list(parts[1:-1]) if parts[-1] == "__init__" else list(parts[1:])
            out.update(".".join(dotted[:i]) for i in range(1, len(dotted) + 1))
    return frozenset(out)


def _dotted(node: ast.AST) -> str | None:
    """`a.b.c` as written, for a chain of names; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


class _Unqualify(ast.NodeTransformer):
    """`engine.fit` -> `fit` where `engine` is a module of the project: a definition that moved
    to another module is called by the same name. Where the module itself sits is layout, not
    computation, so the project's imports inside a definition (`from tlstudy.training import engine`,
    later `from tlstudy.training import engine`) are dropped as the top-level ones are, and a
    string naming a module of the package (importlib's "tlstudy.stages.fetch", the stage
    runner's table) is read as the module's own name."""

    def __init__(self, names: set[str], packages: frozenset[str] = frozenset(), modules: frozenset[str] = frozenset()):
        self.names, self.packages, self.modules = names, packages, modules

    def _project(self, module: str) -> bool:
        return module.split(".")[0] in self.packages

    def visit_Import(self, node: ast.Import) -> ast.AST | None:
        return None if all(self._project(a.name) for a in node.names) else node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | None:
        return None if node.level or self._project(node.module or "") else node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        value = node.value
        if isinstance(value, str) and "." in value and value.isascii():
            if value in self.modules or any(f"{p}.{value}" in self.modules for p in self.packages):
                return ast.copy_location(ast.Constant(value=value.rpartition(".")[2]), node)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if _dotted(node.value) in self.modules:  # tlstudy.training.engine.fit, after `import tlstudy.training.engine`
            return ast.copy_location(ast.Name(id=node.attr, ctx=node.ctx), node)
        self.generic_visit(node)
        if isinstance(node.value, ast.Name) and node.value.id in self.names:
            return ast.copy_location(ast.Name(id=node.attr, ctx=node.ctx), node)
        return node


def _package_aliases(tree: ast.Module, packages: frozenset[str]) -> set[str]:
    """The names a module binds to the project's own modules and definitions."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in packages):
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.asname for a in node.names if a.asname and a.name.split(".")[0] in packages)
    return names


@functools.cache
def definitions(
    source: bytes, filename: str, packages: frozenset[str] = frozenset({PACKAGE}), modules: frozenset[str] = frozenset()
) -> dict[str, list[str]]:
    """A module's top-level definitions, name -> their syntax trees as text, without docstrings,
    comments, layout, imports or the package's module prefixes (`modules`: the package's modules
    where the source comes from, as _modules gives them)."""
    if not filename.endswith(".py"):  # a resource file (CSV, YAML): its bytes are what counts
        return {Path(filename).name: [hashlib.sha256(source).hexdigest()]}
    tree = _strip_docstrings(ast.parse(source, filename))
    tree = _Unqualify(_package_aliases(tree, packages), packages, modules).visit(tree)
    out: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom | ast.Pass):
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = node.name
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            name = ",".join(ast.unparse(t) for t in targets)
        else:  # a module's own statements (`if __name__ == ...`) stay with their module
            name = f"<code of {Path(filename).stem}>"
        out.setdefault(name, []).append(ast.dump(node))
    return out


def _packages(repo: Path) -> frozenset[str]:
    return frozenset(p.name for p in (repo / "src").iterdir() if p.is_dir()) if (repo / "src").is_dir() else frozenset()


def _merged(files: dict[str, bytes], packages: frozenset[str], modules: frozenset[str]) -> dict[str, str]:
    """name -> a digest of all its definitions across a stage's files (names shared by several
    modules, `run` say, are compared as a group)."""
    merged: dict[str, list[str]] = {}
    for path, data in files.items():
        for name, dumps in definitions(data, path, packages, modules).items():
            merged.setdefault(name, []).extend(dumps)
    return {name: hashlib.sha256(json.dumps(sorted(d)).encode()).hexdigest()[:16] for name, d in merged.items()}


def stage_files_now(repo: Path, stage: str) -> list[str]:
    """The source files dvc.yaml lists for a stage now (`train@scratch` -> the `train` stage)."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].get(stage.split("@")[0])
    if spec is None:
        return []
    deps = (spec.get("do") or spec).get("deps", [])
    return [d for d in deps if isinstance(d, str) and d.startswith("src/")]


@dataclass
class Verdict:
    lock: Path
    commit: str
    changed: dict[str, list[str]] = field(default_factory=dict)  # stage -> undeclared changed definitions
    declared: set[str] = field(default_factory=set)  # declared neutral changes this publication relies on


def neutral(repo: Path) -> dict[str, dict]:
    path = repo / NEUTRAL
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def stale_declared(repo: Path) -> dict[str, dict]:
    """results/<folder> -> its declaration: made_by, params, why, rerun."""
    path = repo / STALE
    entries = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    for folder, entry in entries.items():
        missing = [k for k in ("made_by", "params", "why", "rerun") if not (isinstance(entry, dict) and k in entry)]
        if missing:
            raise PublicationError(
                f"{STALE}: {folder}: missing {', '.join(missing)} (each entry needs made_by, params, why, rerun)"
            )
    return entries


def package_now(repo: Path) -> dict[str, str]:
    """name -> its digest over the whole package now: what a declaration pins."""
    files = sorted(p for p in (repo / "src").rglob("*") if p.is_file() and p.suffix in {".py", ".csv", ".yaml"})
    paths = [p.relative_to(repo).as_posix() for p in files]
    return _merged({path: p.read_bytes() for path, p in zip(paths, files)}, _packages(repo), _modules(paths))


def check(repo: Path, lock_path: Path) -> Verdict:
    """Which commit made the publication, and the definitions of each of its stages whose
    computation differs now, less the declared neutral ones whose text is still the declared one."""
    lock = yaml.safe_load(lock_path.read_text())["stages"]
    commit = made_by(repo, lock)
    declared, pinned, packages = neutral(repo), package_now(repo), _packages(repo)
    verdict = Verdict(lock_path, commit)
    then_blobs = _blobs(repo, sorted({f"{commit}:{p}" for deps in src_deps(lock).values() for p in deps}))
    then_modules = _modules(_git(repo, "ls-tree", "-r", "--name-only", commit, "--", "src").decode().split())
    now_modules = _modules(p.relative_to(repo).as_posix() for p in (repo / "src").rglob("*.py"))
    for stage, deps in src_deps(lock).items():
        then = _merged({p: then_blobs[f"{commit}:{p}"] for p in deps}, packages, then_modules)
        now = _merged(
            {p: (repo / p).read_bytes() for p in stage_files_now(repo, stage) if (repo / p).exists()},
            packages,
            now_modules,
        )
        for name in sorted(set(then) | set(now)):
            if then.get(name) == now.get(name):
                continue
            entry = declared.get(name)
            if isinstance(entry, dict) and entry.get("now") == pinned.get(name, "removed") and entry.get("why"):
                verdict.declared.add(name)
            else:
                verdict.changed.setdefault(stage, []).append(name)
    return verdict


def locks(repo: Path) -> list[Path]:
    return sorted((repo / "results").rglob("dvc.lock"))


def summary(v: Verdict) -> str:
    """One line: the commit, and each changed definition with the stages it changes."""
    line = f"made by {v.commit[:10]}"
    if not v.changed:
        extra = f" (declared neutral: {', '.join(sorted(v.declared))})" if v.declared else ""
        return f"{line}; computes the same now{extra}"
    stages: dict[str, list[str]] = {}
    for stage, names in v.changed.items():
        for name in names:
            stages.setdefault(name, []).append(stage)
    what = "; ".join(
        f"{name} ({len(s)} stage{'s' * (len(s) > 1)}: {', '.join(s[:3])}{', …' * (len(s) > 3)})"
        for name, s in sorted(stages.items())
    )
    return f"{line}; computes differently now: {what}"


MISSING = "<absent>"


def params_changes(published: dict, now: dict, prefix: str = "") -> dict[str, object]:
    """Dotted key -> its value now, for every key whose value differs between a publication's
    params and its profile's now (a section one side lacks counts as one key)."""
    out: dict[str, object] = {}
    for key in sorted(set(published) | set(now), key=str):
        name, then, here = f"{prefix}{key}", published.get(key, MISSING), now.get(key, MISSING)
        if isinstance(then, dict) and isinstance(here, dict):
            out.update(params_changes(then, here, f"{name}."))
        elif then != here:
            out[name] = here
    return out


def _value_digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def undeclared_params(repo: Path, published: dict, now: dict) -> list[str]:
    """The params keys a publication differs in from its profile now, less those declared neutral
    (`params.<key>`, pinned to the value now): a key added with the value the publication's code
    had built in (`data.domain: cartoon`) or a setting no published part reads (`adamw`)."""
    declared = neutral(repo)
    return [
        key
        for key, value in params_changes(published, now).items()
        if not (
            isinstance(entry := declared.get(f"params.{key}"), dict)
            and entry.get("why")
            and entry.get("now") == _value_digest(value)
        )
    ]


def _params_value(repo: Path, dotted: str) -> object:
    value: object = yaml.safe_load((repo / "params.yaml").read_text())
    for part in dotted.split("."):
        value = value.get(part, MISSING) if isinstance(value, dict) else MISSING
    return value


def declare(repo: Path, name: str, why: str) -> None:
    """Record a definition's change as one that cannot move a published number, pinned to its text now."""
    if name.startswith("params."):  # a params key, pinned to its value in params.yaml now
        digest = _value_digest(_params_value(repo, name.removeprefix("params.")))
    else:
        digest = package_now(repo).get(name, "removed")
    entries = neutral(repo)
    entries[name] = {"why": why, "now": digest}
    path = repo / NEUTRAL
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Changes to stage code declared unable to move a published number (tlstudy.tools.publication).\n"
    path.write_text(header + yaml.safe_dump(entries, sort_keys=True, allow_unicode=True, width=100))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tlstudy.tools.publication", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    d = sub.add_parser(
        "declare", help="declare a changed definition (or `params.<dotted key>`) unable to move a published number"
    )
    d.add_argument("name")
    d.add_argument("--why", required=True)
    args = parser.parse_args(argv)
    repo = Path.cwd()
    if args.command == "declare":
        declare(repo, args.name, args.why)
        return 0
    bad, stale = 0, stale_declared(repo)
    for path in locks(repo):
        name = path.parent.relative_to(repo)
        try:
            verdict = check(repo, path)
        except PublicationError as exc:
            print(f"{name}: {exc}")
            bad += 1
            continue
        folders = (name, *name.parents)
        declared = next((e for f, e in stale.items() if Path("results", f) in folders), None)
        if declared and verdict.changed and verdict.commit.startswith(str(declared["made_by"])):
            print(f"{name}: {summary(verdict)}; declared stale in {STALE}: {declared['rerun']}")
            continue
        print(f"{name}: {summary(verdict)}")
        bad += bool(verdict.changed)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
