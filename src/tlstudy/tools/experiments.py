"""Experiments of a workspace run one after another, resumably, and timed per sitting: what the
sweeps over the offline workspace share (scripts/pretraining-budget.py, scripts/domains.py).

Each experiment is one `dvc exp run -n <name>` with its `-S` overrides on the baseline's
params.yaml. A finished experiment (its ref under refs/exps/ for the workspace's HEAD) is kept;
an unfinished one runs again, first (`unfinished_first`), so that the stages it finished are still
the workspace's and DVC skips them. Each sitting's
wall and CPU seconds, and each stage's wall seconds, are saved as they go into a timing file, so
a sitting that a session's end kills keeps its time.

A finished experiment can be carried out of the workspace into a folder of results/ (`carry`):
its files, its -S overrides and its sittings, which is all its publication needs once the
workspace is gone (a session that ends, a fresh checkout). `prepared` makes a missing workspace
as `make offline` does, without running its baseline, so that the next sitting can go on.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from tlstudy.lib.atomic import write_json
from tlstudy.tools import profile


def parser(doc: str, workspace: Path, out: Path, out_help: str):
    """The command line the sweeps share: `run` or `publish`, the workspace and the output folder."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("command", nargs="?", default="run", choices=["run", "publish"])
    ap.add_argument("--workspace", type=Path, default=workspace, help="the offline workspace (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=out, help=f"{out_help} (default: %(default)s)")
    return ap


# In a carried experiment's folder, beside its files: {"experiment": its name, "sittings": [...]}.
SITTINGS = "sittings.json"


def sh(ws: Path, *cmd: str) -> str:
    return subprocess.run(cmd, cwd=ws, check=True, capture_output=True, text=True).stdout


def experiments(ws: Path) -> dict[str, str]:
    """Finished experiments of the workspace's baseline, by name: their git refs."""
    refs = sh(ws, "git", "for-each-ref", "--format=%(refname)", "refs/exps/")
    head = sh(ws, "git", "rev-parse", "HEAD").strip()
    out = {}
    for ref in refs.split():
        # refs/exps/<2 chars>/<38 chars of the baseline sha>/<name>
        parts = ref.split("/")
        if len(parts) == 5 and parts[2] + parts[3] == head:
            out[parts[4]] = ref
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a running process tree, from /proc: the process, the children it has waited
    for (each stage that DVC ran and reaped), and every descendant still running with what it has
    reaped (the stage running now), so that a sitting killed mid-stage keeps that stage's CPU up to
    its last measure; 0 where there is no /proc."""
    ticks, children = {}, {}
    for entry in Path("/proc").iterdir() if Path("/proc/self").exists() else []:
        if not entry.name.isdigit():
            continue
        try:
            # After the command's ")": state, ppid, …; utime, stime, cutime, cstime at 11:15.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile: its time is in its parent's cutime once reaped
        ticks[int(entry.name)] = sum(int(f) for f in fields[11:15])
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [pid] if pid in ticks else []
    while todo:
        p = todo.pop()
        total += ticks.get(p, 0)
        todo += children.get(p, [])
    return round(total / os.sysconf("SC_CLK_TCK"), 1)


def totals(entry: dict) -> dict:
    """An experiment's time over its sittings: wall and CPU seconds, each stage's wall seconds."""
    stages: dict[str, float] = {}
    for s in entry["sittings"]:
        for stage, sec in s["stages_run_s"].items():
            stages[stage] = round(stages.get(stage, 0) + sec, 1)
    return {
        "sittings": len(entry["sittings"]),
        "wall_s": round(sum(s["wall_s"] for s in entry["sittings"]), 1),
        "cpu_s": round(sum(s["cpu_s"] for s in entry["sittings"]), 1),
        "stages_run_s": stages,
    }


def without_sweeps(ws: Path) -> list[str]:
    """The -S removals of the baseline's augmentation sweeps: its transfer parts with an `augment` list."""
    import yaml

    transfer = yaml.safe_load(sh(ws, "git", "show", "HEAD:params.yaml")).get("transfer") or {}
    return [f"~transfer.{name}" for name, part in transfer.items() if part and part.get("augment")]


def exp_run(argv: list[str], ws: Path, env: dict, sitting: dict, save) -> int:
    """Runs one `dvc exp run`, its output passed through, measuring into `sitting` (and calling
    `save`) at each stage's start and every half minute; its exit status."""
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stage, started, saved = None, wall0, 0.0

    def measure(now: float) -> float:
        if stage:
            sitting["stages_run_s"][stage] = round(now - started, 1)
        sitting["wall_s"], sitting["cpu_s"] = round(now - wall0, 1), tree_cpu_s(proc.pid)
        save()
        return now

    for line in proc.stdout:
        print(line, end="", flush=True)
        m, now = re.match(r"Running stage '([^']+)'", line), time.perf_counter()
        if m:
            saved = measure(now)
            stage, started = m.group(1), now
        elif now - saved > 30:
            saved = measure(now)
    code = proc.wait()
    measure(time.perf_counter())
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sitting["cpu_s"] = round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1)
    sitting["finished"] = code == 0
    save()
    return code


def run_all(
    ws: Path, plan: dict[str, list[str]], timing_path: Path, who: str, folder=None, carry=None, shown=str
) -> None:
    """Runs each experiment of `plan` (name -> its -S overrides) not yet finished, a stopped one
    first (`unfinished_first`), then the plan's order; `who` names the sweep in what it prints.
    Where the sweep carries (`folder`: name -> the folder it is carried to, `carry`: name ->
    carries it), one carried before is skipped and each is carried as soon as it is done, before
    the next one runs."""
    timing = recorded(timing_path)
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(ws / "src"),
    )
    done, dvc = experiments(ws), profile.tool_argv("dvc")
    for name in unfinished_first(list(plan), timing):
        if folder is not None and carried(folder(name)):
            print(f"{who}: {name}: carried before, in {shown(folder(name))}; kept (remove it to run it again)")
            continue
        if name in done:
            print(f"{who}: {name}: done before; kept")
        else:
            run_one(ws, name, plan[name], timing, timing_path, who, env, dvc)
        if carry is not None:
            carry(name)
    sh(ws, "git", "checkout", "HEAD", "--", "params.yaml")


def run_one(ws: Path, name: str, overrides: list[str], timing: dict, timing_path: Path, who: str, env: dict,
            dvc: list[str]) -> None:  # fmt: skip
    # Every experiment starts from the baseline's params, not from the last experiment's.
    sh(ws, "git", "checkout", "HEAD", "--", "params.yaml")
    argv = [*dvc, "exp", "run", "-n", name]
    for o in overrides:
        argv += ["-S", o]
    print(f"{who}: {name}: {' '.join(argv[len(dvc) :])}", flush=True)
    # One entry per sitting, written at every stage's start and, while it prints, every half
    # minute: a sitting the session's end kills keeps its wall and CPU time up to then (the
    # running stage's too: tree_cpu_s), and the next sitting adds its own.
    sitting = {"wall_s": 0.0, "cpu_s": 0.0, "stages_run_s": {}, "finished": False}
    entry = timing.setdefault(name, {"sittings": []})
    entry["overrides"] = list(overrides)
    entry["sittings"].append(sitting)
    code = exp_run(argv, ws, env, sitting, lambda: write_json(timing_path, timing))
    if code:
        raise SystemExit(f"{who}: {name}: dvc exp run failed ({code}); run again to continue")


def prepared(ws: Path, project: Path, data: Path | None, sources: Path | None, who: str) -> None:
    """The offline workspace, made where there is none (a fresh checkout) as `make offline` makes
    it, its baseline not run: an experiment runs every stage its params change, and a stage whose
    params it leaves alone runs once, in the first experiment, and is skipped after as unchanged."""
    if (ws / "dvc.yaml").exists():
        return
    params = profile.profile_params(project, "offline")
    links = {where: folder.resolve() for where, folder in profile.linked(params, data, sources).items()}
    print(f"{who}: no workspace at {ws}; preparing the offline profile's there, its baseline not run")
    profile.prepare(ws, project, params, "offline", False, links)


def folder_text(root: Path):
    """rel -> the text of root/rel, None where there is no such file."""

    def text(rel: str) -> str | None:
        path = root / rel
        return path.read_text(encoding="utf-8") if path.is_file() else None

    return text


def ref_text(ws: Path, ref: str):
    """rel -> the text of rel as committed with the experiment `ref`, None where it is not."""

    def text(rel: str) -> str | None:
        r = subprocess.run(["git", "show", f"{ref}:{rel}"], cwd=ws, capture_output=True, encoding="utf-8")
        return r.stdout if r.returncode == 0 else None

    return text


def unfinished_first(names: list[str], timing: dict[str, dict]) -> list[str]:
    """`names`, those whose last sitting stopped before the end first, the others after, each in
    their order. The stages a stopped experiment finished are kept only as the workspace's own
    (dvc.lock): DVC saves no run-cache entry for a stage with an uncached output that is not a
    metric or plot, which every stage here has (details/*.json), so an experiment run before it
    would replace them and it would run them again. `timing`: what `recorded` reads."""
    stopped = [n for n in names if (timing.get(n, {}).get("sittings") or [{}])[-1].get("finished") is False]
    return stopped + [n for n in names if n not in stopped]


def recorded(timing_path: Path) -> dict[str, dict]:
    """experiment -> what `run_all` recorded of it in a timing file: its -S overrides and sittings."""
    return json.loads(timing_path.read_text()) if timing_path.exists() else {}


def record(entry: dict, default) -> tuple[list[str], list[dict]]:
    """An experiment's -S overrides and sittings from what `run_all` recorded of it (`entry`); one
    run elsewhere (Slurm) has no record and had `default()`, called only then: it may read git."""
    return entry.get("overrides") or default(), entry.get("sittings", [])


def write_record(folder: Path, name: str, overrides: list[str], sittings: list[dict]) -> None:
    """An experiment's overrides.json and sittings.json in `folder`."""
    write_json(folder / "overrides.json", list(overrides))
    write_json(folder / SITTINGS, {"experiment": name, "sittings": sittings})


def carry(folder: Path, files: dict[str, str], name: str, overrides: list[str], sittings: list[dict]) -> None:
    """An experiment's files (rel -> text, as committed with it) and its record into `folder`,
    replacing it at once: a kill leaves the folder as it was or whole, never half-written."""
    import shutil

    from tlstudy.lib.atomic import write_text

    staging = folder.with_name(f".{folder.name}.carrying")
    shutil.rmtree(staging, ignore_errors=True)
    for rel, text in files.items():
        write_text(staging / rel, text)
    write_record(staging, name, overrides, sittings)
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)


def carried(folder: Path) -> dict | None:
    """A carried experiment's record ({experiment, sittings, overrides}), None where `folder`
    holds none."""
    if not (folder / SITTINGS).is_file():
        return None
    return {
        **json.loads((folder / SITTINGS).read_text()),
        "overrides": json.loads((folder / "overrides.json").read_text()),
    }
