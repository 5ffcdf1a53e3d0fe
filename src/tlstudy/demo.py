"""`make demo`: the real dvc.yaml on synthetic data, in a workspace of its own.

The workspace (default `demo/`, git-ignored) is a fresh git + DVC repo holding a copy of the
code, dvc.yaml, the plot templates and params.yaml with the demo overlay applied, so the study's
tracked results are never touched and `dvc exp run -S lr=0.01`, `dvc exp show`,
`dvc metrics diff` and `dvc plots show` work in it as they do in the project. It is rebuilt
from scratch on every run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

COPIED = ["dvc.yaml", "src", "pyproject.toml", "assets"]
NOTE = """# Demo workspace (synthetic data)

Built by `make demo` from the project beside it. The images are the procedurally generated
7-class set (`data.source: synthetic`), small and few epochs, on the CPU. Parts that ask for
ImageNet weights use a seeded random backbone instead (`imagenet_weights: random`): no network.
These numbers say the pipeline works, not what transfer learning achieves.

Try: `dvc exp run -S lr=0.01`, `dvc exp show`, `dvc metrics diff`, `dvc plots show`.
"""


def merge(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def tool(name: str) -> str:
    """The venv's own dvc beside this Python, whichever PATH the caller has."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def sh(cwd: Path, *cmd: str) -> None:
    subprocess.run(cmd, cwd=cwd, check=True)


def prepare(dest: Path, project: Path, params: dict) -> None:
    from tlstudy.atomic import write_text

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in COPIED:
        src = project / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    write_text(dest / "params.yaml", yaml.safe_dump(params, sort_keys=False, width=120))
    write_text(dest / "README.md", NOTE)
    write_text(dest / ".gitignore", "__pycache__/\n*.egg-info/\n/work/\n")
    sh(dest, "git", "init", "-q")
    if subprocess.run(["git", "config", "user.email"], cwd=dest, capture_output=True).returncode:
        sh(dest, "git", "config", "user.email", "demo@tlstudy.invalid")
        sh(dest, "git", "config", "user.name", "tlstudy demo")
    sh(dest, tool("dvc"), "init", "-q")
    sh(dest, tool("dvc"), "config", "core.analytics", "false")
    shutil.copytree(project / ".dvc" / "plots", dest / ".dvc" / "plots", dirs_exist_ok=True)
    sh(dest, "git", "add", "-A")
    sh(dest, "git", "commit", "-q", "-m", "demo workspace: the study's pipeline on synthetic data")


def summary(metrics_dir: Path) -> str:
    """Test accuracy of each part's selected models, one line per part."""
    import json

    lines = ["part                 selected model: test accuracy (lr, epoch)"]
    for path in sorted(metrics_dir.glob("*.json")):
        if path.stem in ("stats", "inspect"):
            continue
        groups = json.loads(path.read_text())
        cells = [
            f"{g} {m['test_acc']:.2f} ({m['lr']:g}, {m['epoch']})" if "test_acc" in m else f"{g} diverged"
            for g, m in groups.items()
        ]
        if len(cells) > 3:
            tested = {g: m for g, m in groups.items() if "test_acc" in m}
            top = max(tested, key=lambda g: tested[g]["test_acc"]) if tested else None
            cells = [f"{len(groups)} variants, best {top} {tested[top]['test_acc']:.2f}" if top else "all diverged"]
        lines.append(f"{path.stem:<20} " + ", ".join(cells))
    return "\n".join(lines)


def run(dest: str, overlay: str, params_path: str = "params.yaml", project: Path | None = None) -> Path:
    from tlstudy import params as P

    project = Path(project or Path.cwd())
    base = yaml.safe_load((project / params_path).read_text())
    params = merge(base, yaml.safe_load((project / overlay).read_text()))
    P.validate(params, source=f"{params_path} + {overlay}")
    dest_path = (project / dest).resolve()
    start = time.perf_counter()
    prepare(dest_path, project, params)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    subprocess.run([tool("dvc"), "repro"], cwd=dest_path, check=True, env=env)
    sh(dest_path, "git", "add", "-A")
    sh(dest_path, "git", "commit", "-q", "-m", "demo results")
    print(summary(dest_path / "metrics"))
    print(
        f"demo: done in {time.perf_counter() - start:.0f} s on synthetic data; parts that ask for "
        "ImageNet weights used a seeded random backbone (offline). Workspace:"
    )
    print(dest_path)
    return dest_path
