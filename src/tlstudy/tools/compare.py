"""`python -m tlstudy compare`: every part's test accuracy side by side across experiments.

`dvc exp show` shows `headline.json`, one number per part; the per-part files under metrics/
(both optimizers, the sweeps' families) are outputs DVC does not declare as metrics, so that its
table fits a terminal. This is their table: the revisions `dvc exp show` lists (the workspace,
the baseline commit and its experiments, or the ones asked for), read through DVC's documented
API — `dvc.api.exp_show()` for the revisions, `dvc.api.DVCFileSystem` for each one's files under
metrics/ — turned around: a row per part and optimizer (per family of variants for a sweep),
a column per experiment, in percent.
"""

from __future__ import annotations

import json
from pathlib import Path

SKIP = ("metrics/inspect.json", "metrics/stats.json", "metrics/data.json")


def revision_name(row: dict) -> str:
    return row.get("Experiment") or row["rev"]


def rows_of(values: list[dict[str, dict]], metric: str) -> list[tuple[str, str]]:
    """(file, group) for every group of a metrics file holding `metric`, files in path order."""
    out = []
    for files in values:
        for path, tree in files.items():
            for group, value in tree.items():
                if path not in SKIP and isinstance(value, dict) and metric in value and (path, group) not in out:
                    out.append((path, group))
    return sorted(out, key=lambda row: row[0])


def table(names: list[str], values: list[dict[str, dict]], metric: str = "test_acc") -> str:
    """names: a column per revision; values: its metrics files, {path: contents}."""
    rows = rows_of(values, metric)
    labels = [f"{Path(path).stem} {group}" for path, group in rows]
    percent = metric.endswith("acc")  # accuracies are fractions in the files; other metrics as they are
    head = f"{metric} (%)" if percent else metric
    width = max([len(label) for label in labels] + [len(head)])
    names = [n[:12] for n in names]
    cell = max([8, *(len(n) for n in names)])
    lines = [f"{head:<{width}}  " + "  ".join(f"{n:>{cell}}" for n in names)]
    for label, (path, group) in zip(labels, rows):
        text = [_cell((files.get(path, {}).get(group) or {}).get(metric), percent) for files in values]
        lines.append(f"{label:<{width}}  " + "  ".join(f"{v:>{cell}}" for v in text))
    return "\n".join(lines)


def _cell(value, percent: bool) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—"
    return f"{100 * value:.2f}" if percent else f"{value:g}"


def metrics_files(root: Path, rev: str | None) -> dict[str, dict]:
    """Every JSON file under metrics/ at a revision (None: the workspace), by repository path,
    read through DVC's file system — git-tracked at a commit or an experiment's ref."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(root), rev=rev)
    if not fs.isdir("/metrics"):
        return {}
    paths = sorted(p for p in fs.find("/metrics") if p.endswith(".json"))
    return {p.lstrip("/"): json.loads(fs.read_text(p)) for p in paths}


def run(metric: str, revs: list[str] | None = None, num: int = 1, root: Path | None = None) -> str:
    import dvc.api

    root = Path(root or Path.cwd())
    shown = dvc.api.exp_show(repo=str(root), revs=revs or None, num=num)
    values = [metrics_files(root, None if row["rev"] == "workspace" else row["rev"]) for row in shown]
    return table([revision_name(row) for row in shown], values, metric)
