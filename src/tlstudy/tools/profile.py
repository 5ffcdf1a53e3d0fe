"""Profiles: the real dvc.yaml run in a workspace of its own, on params.yaml plus an overlay.

A profile is `profiles/<name>.yaml`, an overlay on params.yaml (a mapping merges key by key; a
null removes the key), and then any `--set KEY=VALUE` (a dotted key, a YAML value, as `dvc exp
run -S`), so one profile also runs in a short mode (`--set epochs=2`). `demo` is the offline
demo on synthetic data (`make demo`); `offline` is the study on the real PACS images sized for a
CPU, with every part that asks for ImageNet starting from the PACS-sources backbone instead
(`make offline`); `gpu-check` is the study's own settings on a GPU machine with no network
(scripts/gpu-check.sh).

The workspace (default `work/profiles/<name>`, `demo/` for the demo) is a git + DVC repo with a
copy of the code, dvc.yaml, the plot templates and the merged params.yaml, so the project's own
files are never touched and `dvc exp run`, `dvc exp show`, `dvc metrics diff` and `dvc plots
show` work in it. Data folders given on the command line are linked in where params expect
them, so the params stay the same on every machine. An existing workspace is refreshed, not
rebuilt (unless `fresh`): `dvc repro` skips finished stages and a train stage resumes after its
last finished run, so an interrupted profile continues where it stopped. `publish` copies the
results (params, dvc.lock, metrics, curves, predictions, report, timing) to `results/<name>/`.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tlstudy.lib import yamlio

COPIED = ["dvc.yaml", "src", "pyproject.toml", "assets"]
PUBLISHED = [
    "params.yaml",
    "headline.json",
    "dvc.lock",
    "metrics",
    "details",
    "plots/train",
    "plots/pretrain",
    "plots/predictions",
    "report",
]
SET_FORMAT = (
    "KEY=VALUE with KEY a dotted path into params (e.g. epochs=2, pretrain.pacs_sources.epochs=1, 'lr=[0.01,0.001]')"
)
NOTE = """# Workspace of the `{name}` profile

Built by `python -m tlstudy profile {name}` from the project beside it: this project's dvc.yaml
and code with params.yaml = the project's params plus `profiles/{name}.yaml`. Re-running the
command refreshes it and continues where it stopped.

Try: `dvc exp run -S lr=0.01`, `dvc exp show`, `dvc metrics diff`, `dvc plots show`.
"""


def merge(base: dict, overlay: dict) -> dict:
    """`overlay` on `base`: mappings merge key by key, a null removes the key, anything else replaces."""
    out = dict(base)
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = merge(base[key], value)
        else:
            out[key] = value
    return out


def profile_params(
    project: Path, name_or_path: str, params_path: str = "params.yaml", sets: list[str] | tuple[str, ...] = ()
) -> dict:
    """params.yaml with a profile's overlay applied, then each `--set KEY=VALUE`, validated."""
    from tlstudy import params as P

    overlay_path = overlay_file(project, name_or_path)
    base = yamlio.load((project / params_path).read_text())
    params = apply_sets(merge(base, yamlio.load(overlay_path.read_text()) or {}), sets)
    try:
        P.validate(params, source=f"{params_path} + {overlay_path.name}")
    except P.ParamsError as exc:
        if not sets:
            raise
        # The key path alone would not say that a --set, not a file, put the value there.
        raise P.ParamsError(f"{exc} (after {' '.join(f'--set {s}' for s in sets)})") from exc
    return params


def parse_set(text: str) -> tuple[list[str], object]:
    """`a.b.c=VALUE` as (["a", "b", "c"], VALUE parsed as YAML), like `dvc exp run -S`."""
    from tlstudy.lib.errors import ParamsError

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep:
        raise ParamsError(f"--set {text!r}: no '=' after the key; expected {SET_FORMAT}")
    if not key:
        raise ParamsError(f"--set {text!r}: the key is empty; expected {SET_FORMAT}")
    parts = key.split(".")
    if not all(p.strip() for p in parts):
        raise ParamsError(f"--set {text!r}: the key {key!r} has an empty part between dots; expected {SET_FORMAT}")
    if not raw.strip():
        raise ParamsError(f"--set {key}=: no value; give one (YAML), or null to remove the key")
    try:
        value = yamlio.load(raw)
    except yamlio.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParamsError(f"--set {key}: the value {raw!r} is not valid YAML ({problem})") from exc
    return [p.strip() for p in parts], value


def apply_sets(params: dict, sets: list[str] | tuple[str, ...]) -> dict:
    """Each KEY=VALUE replaces the value at its dotted key, in order (a missing mapping on the way
    is created, so validation can name an unknown key); a null removes the key, as in an overlay."""
    import copy

    from tlstudy.lib.errors import ParamsError

    out = copy.deepcopy(params)
    for text in sets:
        path, value = parse_set(text)
        node = out
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ParamsError(
                    f"--set {'.'.join(path)}: '{where}' is {child!r}, not a mapping, so it has no key "
                    f"'{path[depth + 1]}'; set '{where}' itself instead"
                )
            node = child
        if value is None:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return out


def overlay_file(project: Path, name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path if path.is_absolute() else project / path
    path = project / "profiles" / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (project / "profiles").glob("*.yaml")))
        raise FileNotFoundError(f"{path}: no such profile; known: {known}")
    return path


def tool(name: str) -> str:
    """The venv's own dvc beside this Python, whichever PATH the caller has."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def tool_argv(name: str) -> list[str]:
    """How to run a Python tool: its executable beside this Python or on PATH, else `python -m`,
    for a tool installed with no script on PATH (the GPU check's `pip install --target`)."""
    found = tool(name)
    if Path(found).is_absolute() or shutil.which(found):
        return [found]
    return [sys.executable, "-m", name]


def _python_on_path(dest: Path) -> str:
    """A folder whose `python` is this Python, for the stages' `python -m tlstudy`: the
    interpreter's own folder, or a shim where it has no `python` (only python3, say)."""
    here = Path(sys.executable).parent
    if (here / "python").exists():
        return str(here)
    shim = dest / "work" / "bin" / "python"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    return str(shim.parent)


def sh(cwd: Path, *cmd: str) -> None:
    subprocess.run(cmd, cwd=cwd, check=True)


def _copy_code(dest: Path, project: Path) -> None:
    for name in COPIED:
        src, target = project / name, dest / name
        if target.is_dir():
            shutil.rmtree(target)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, target)
    shutil.copytree(project / ".dvc" / "plots", dest / ".dvc" / "plots", dirs_exist_ok=True)
    # The project's published results are not in a workspace: drop their declaration there.
    pipeline = (dest / "dvc.yaml").read_text()
    (dest / "dvc.yaml").write_text(re.sub(r"(?m)^metrics:\n(?:  - .*\n)+\n?", "", pipeline))


def _link(dest: Path, where: str, folder: Path) -> None:
    """Put a data folder where params expect it, as a link (the params stay machine-independent)."""
    link = dest / where
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(folder.resolve(), target_is_directory=True)


def prepare(dest: Path, project: Path, params: dict, name: str, fresh: bool, links: dict[str, Path]) -> None:
    from tlstudy.lib.atomic import write_text

    if fresh and dest.exists():
        shutil.rmtree(dest)
    new = not (dest / ".dvc").is_dir()
    dest.mkdir(parents=True, exist_ok=True)
    if new:
        # On branch main whatever init.defaultBranch says, so `dvc exp show` and `compare` name
        # the baseline alike on every machine.
        sh(dest, "git", "init", "-q", "--initial-branch=main")
        if subprocess.run(["git", "config", "user.email"], cwd=dest, capture_output=True).returncode:
            sh(dest, "git", "config", "user.email", "profile@tlstudy.invalid")
            sh(dest, "git", "config", "user.name", "tlstudy profile")
        sh(dest, *tool_argv("dvc"), "init", "-q")
        sh(dest, *tool_argv("dvc"), "config", "core.analytics", "false")
    _copy_code(dest, project)
    # The page template that draws `dvc plots show` with no network (.dvc/plots/page.html, copied
    # with the templates above); DVC resolves the path against .dvc/. Set on every refresh, so a
    # workspace made before the template existed gets it too.
    sh(dest, *tool_argv("dvc"), "config", "plots.html_template", "plots/page.html")
    write_text(dest / "params.yaml", yamlio.dump(params))
    write_text(dest / "README.md", NOTE.format(name=name))
    write_text(dest / ".gitignore", "__pycache__/\n*.egg-info/\n/work/\n/data/\n")
    for where, folder in links.items():
        _link(dest, where, folder)
    # What this function wrote, not `git add -A`: a stage whose command finished but whose DVC was
    # killed before it recorded the stage leaves outputs that are in no .gitignore yet; committed,
    # they make DVC refuse the stage on the next run ("already tracked by SCM").
    sh(dest, "git", "add", "--", *COPIED, ".dvc", ".dvcignore", "params.yaml", "README.md", ".gitignore")
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=dest).returncode:
        sh(dest, "git", "commit", "-q", "-m", f"{name} profile: the study's pipeline and params")


def repro(dest: Path) -> dict[str, float]:
    """`dvc repro`, its output passed through; returns the seconds each stage that ran took, and
    records each one as soon as it ends (an interrupted profile keeps the times of its stages)."""
    # The stages run the workspace's copy of the code, the one DVC hashed as their dependency.
    env = dict(
        os.environ,
        PATH=f"{_python_on_path(dest)}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(dest / "src"), os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.Popen(
        [*tool_argv("dvc"), "repro"], cwd=dest, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seconds: dict[str, float] = {}
    stage, started = None, time.perf_counter()

    def finish(now: float) -> None:
        if stage is not None:
            seconds[stage] = round(now - started, 1)
            record_stages(dest, {stage: seconds[stage]})

    for line in proc.stdout:
        print(line, end="", flush=True)
        m = re.match(r"Running stage '([^']+)'", line)
        if m:
            now = time.perf_counter()
            finish(now)
            stage, started = m.group(1), now
    if proc.wait():
        raise subprocess.CalledProcessError(proc.returncode, "dvc repro")
    finish(time.perf_counter())
    return seconds


def _timing_file(dest: Path) -> Path:
    return dest / "work" / "timing.json"


def _read_timing(dest: Path) -> dict:
    path = _timing_file(dest)
    return json.loads(path.read_text()) if path.exists() else {"invocations": [], "stages": {}}


def _write_timing(dest: Path, timing: dict) -> None:
    from tlstudy.lib.atomic import write_json

    timing["stage_total_s"] = round(sum(timing["stages"].values()), 1)
    write_json(_timing_file(dest), timing)


def record_stages(dest: Path, seconds: dict[str, float]) -> None:
    timing = _read_timing(dest)
    timing["stages"].update(seconds)
    _write_timing(dest, timing)


def record_timing(dest: Path, seconds: dict[str, float], wall: float) -> dict:
    """Stage times over every invocation that ran them (an interrupted profile resumes)."""
    timing = _read_timing(dest)
    timing["stages"].update(seconds)
    timing["invocations"].append({"wall_s": round(wall, 1), "stages_run": len(seconds)})
    _write_timing(dest, timing)
    return timing


def publish(dest: Path, project: Path, name: str, timing: dict, command: str) -> Path:
    """Copy the workspace's results to results/<name>/, replacing the previous ones whole."""
    out = project / "results" / name
    staging = out.with_name(f".{name}.publishing")
    shutil.rmtree(staging, ignore_errors=True)
    for rel in PUBLISHED:
        src = dest / rel
        if src.is_dir():
            shutil.copytree(src, staging / rel)
        elif src.exists():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, staging / rel)
    from tlstudy.tools.machine import machine, summary

    details = machine()
    info = {
        "command": command,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": summary(details),
        "device": details["gpu"]["name"] if details["gpu"] else "cpu",
        "machine_details": details,
        **timing,
    }
    (staging / "timing.json").write_text(json.dumps(info, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def _cell(group: str, m: dict) -> str:
    if "test_acc" not in m:
        return f"{group} diverged"
    interval = f" [{m['test_acc_lo']:.2f}, {m['test_acc_hi']:.2f}]" if "test_acc_lo" in m else ""
    if "lr" in m:
        which = f"({m['lr']:g}, {m['epoch']})"
    else:
        which = f"({len(m['seeds'])} seeds)" if "seeds" in m else ""
    return f"{group} {m['test_acc']:.2f}{interval} {which}".rstrip()


def summary(metrics_dir: Path) -> str:
    """Test accuracy of each part's selected models, one line per part: from details/<part>.json,
    the full record, where the workspace has one (metrics/ then holds the headline numbers only)."""
    from tlstudy.stages.report.inputs import target_test

    workspace = metrics_dir.parent
    parts = None
    if (workspace / "params.yaml").exists():
        params = yamlio.load((workspace / "params.yaml").read_text())
        parts = {*(params.get("parts") or {}), *(params.get("transfer") or {})}
    lines = ["part                   selected model: test accuracy [95 % CI] (lr, epoch or seeds)"]
    for path in sorted(metrics_dir.glob("*.json")):
        if path.stem in ("stats", "inspect") or (parts is not None and path.stem not in parts):
            continue
        full = workspace / "details" / path.name
        groups = {
            g: m for g, m in json.loads((full if full.exists() else path).read_text()).items() if isinstance(m, dict)
        }
        cells = [_cell(g, m) for g, m in groups.items()]
        if len(cells) > 3:
            tested = {g: m for g, m in groups.items() if "test_acc" in m}
            top = max(tested, key=lambda g: tested[g]["test_acc"]) if tested else None
            cells = [f"{len(groups)} variants, best {top} {tested[top]['test_acc']:.2f}" if top else "all diverged"]
        lines.append(f"{path.stem:<22} " + ", ".join(cells))
    for path in sorted((metrics_dir / "pretrain").glob("*.json")):
        m = json.loads(path.read_text())
        t = target_test(m)  # metrics from before data.domain read as cartoon's
        lines.append(
            f"{'pretrain@' + path.stem:<22} val {m['val_acc']:.2f} (epoch {m['epoch']}), "
            f"{t['domain']} test with no {t['domain']} training {t['acc']:.2f}"
        )
    return "\n".join(lines)


def linked(params: dict, data: Path | None, sources: Path | None) -> dict[str, Path]:
    """Where in the workspace `--data` and `--sources` are linked in: data.path and each backbone's path."""
    links = {}
    if data is not None:
        from tlstudy.params import data_path

        links[str(data_path(params))] = data
    if sources is not None:
        for spec in params["pretrain"].values():
            links[spec["path"]] = sources
    return links


def run(
    name: str,
    dest: str | None = None,
    params_path: str = "params.yaml",
    project: Path | None = None,
    fresh: bool = False,
    data: Path | None = None,
    sources: Path | None = None,
    publish_results: bool = False,
    command: str = "",
    sets: list[str] | tuple[str, ...] = (),
) -> Path:
    project = Path(project or Path.cwd())
    params = profile_params(project, name, params_path, sets)
    label = Path(name).stem
    dest_path = (project / (dest or f"work/profiles/{label}")).resolve()
    links = linked(params, data, sources)
    start = time.perf_counter()
    prepare(dest_path, project, params, label, fresh, links)
    seconds = repro(dest_path)
    sh(dest_path, "git", "add", "-A")
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=dest_path).returncode:
        sh(dest_path, "git", "commit", "-q", "-m", f"{label} profile: results")
    wall = time.perf_counter() - start
    timing = record_timing(dest_path, seconds, wall)
    print(summary(dest_path / "metrics"))
    if publish_results:
        out = publish(dest_path, project, label, timing, command)
        print(f"profile {label}: results published to {out}")
    print(f"profile {label}: done in {wall:.0f} s (stages run this time: {len(seconds)}). Workspace:")
    print(dest_path)
    return dest_path
