"""`python -m tlstudy compare`: every part's test accuracy side by side across experiments.

`dvc exp show` draws a column per metric; with a dozen parts and two optimizers the columns are
named `metrics/<part>.json:sgd.test_acc` and no terminal is wide enough. This turns the same data
(`dvc exp show --json`: the workspace, the baseline commit and its experiments, or whatever
revisions DVC is asked for) around: a row per part and optimizer (per family of variants for a
sweep), a column per experiment, in percent.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

SKIP = ("metrics/inspect.json", "metrics/stats.json", "metrics/data.json")


def revisions(shown: list[dict]) -> list[tuple[str, dict]]:
    """(name, metrics by file) of every revision in `dvc exp show --json`, experiments after
    their baseline."""
    out = []
    for rev in shown:
        for r in [rev, *(x for e in rev.get("experiments") or [] for x in e.get("revs") or [])]:
            data = r.get("data") or {}
            metrics = {path: f.get("data") or {} for path, f in (data.get("metrics") or {}).items()}
            out.append((r.get("name") or (r["rev"] if r["rev"] == "workspace" else r["rev"][:7]), metrics))
    return out


def rows(revs: list[tuple[str, dict]], metric: str) -> list[tuple[str, list[float | None]]]:
    """A row per (file, group) that holds `metric` in any revision, in first-seen order."""
    keys: dict[tuple[str, str], None] = {}
    for _, metrics in revs:
        for path, groups in metrics.items():
            if path in SKIP or not isinstance(groups, dict):
                continue
            for group, values in groups.items():
                if isinstance(values, dict) and metric in values:
                    keys[(path, group)] = None
    out = []
    for path, group in keys:
        label = f"{Path(path).stem} {group}"
        out.append((label, [((m.get(path) or {}).get(group) or {}).get(metric) for _, m in revs]))
    return out


def table(shown: list[dict], metric: str = "test_acc") -> str:
    revs = revisions(shown)
    body = rows(revs, metric)
    width = max([len(label) for label, _ in body] + [len(metric)])
    names = [name[:12] for name, _ in revs]
    cell = max([8, *(len(n) for n in names)])
    lines = [f"{metric + ' (%)':<{width}}  " + "  ".join(f"{n:>{cell}}" for n in names)]
    for label, values in body:
        shown_values = [f"{100 * v:.2f}" if isinstance(v, (int, float)) else "—" for v in values]
        lines.append(f"{label:<{width}}  " + "  ".join(f"{v:>{cell}}" for v in shown_values))
    return "\n".join(lines)


def run(dvc: list[str], metric: str, extra: list[str]) -> str:
    out = subprocess.run([*dvc, "exp", "show", "--json", *extra], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"dvc exp show failed: {out.stderr.strip() or out.stdout.strip()}")
    return table(json.loads(out.stdout), metric)
