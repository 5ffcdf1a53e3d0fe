"""`python -m tlstudy compare`: every part's test accuracy side by side across experiments.

`dvc exp show` shows `headline.json`, one number per part; the per-part files under metrics/
(both optimizers, the sweeps' families) are outputs DVC does not declare as metrics, so that its
table fits a terminal. This is their table: the revisions `dvc exp show` lists (the workspace,
the baseline commit and its experiments, or the ones asked for), read through DVC's documented
API — `dvc.api.exp_show()` for the revisions, `dvc.api.metrics_show("metrics", rev=…)` for each
one's files — turned around: a row per part and optimizer (per family of variants for a sweep),
a column per experiment, in percent.
"""

from __future__ import annotations

from pathlib import Path

SKIP = ("metrics/inspect.json", "metrics/stats.json", "metrics/data.json")


def revision_name(row: dict) -> str:
    return row.get("Experiment") or row["rev"]


def rows_of(values: list[dict], metric: str) -> list[tuple[str, str]]:
    """(file, group) for every `<file>:<group>` holding `metric`, in file order, first seen first."""
    out = []
    for flat in values:
        for key, value in flat.items():
            path, _, group = key.rpartition(":")
            if path in SKIP or not isinstance(value, dict) or metric not in value:
                continue
            if (path, group) not in out:
                out.append((path, group))
    return out


def table(names: list[str], values: list[dict], metric: str = "test_acc") -> str:
    """names: a column per revision; values: its metrics as dvc.api.metrics_show gives them."""
    rows = rows_of(values, metric)
    labels = [f"{Path(path).stem} {group}" for path, group in rows]
    percent = metric.endswith("acc")  # accuracies are fractions in the files; other metrics as they are
    head = f"{metric} (%)" if percent else metric
    width = max([len(label) for label in labels] + [len(head)])
    names = [n[:12] for n in names]
    cell = max([8, *(len(n) for n in names)])
    lines = [f"{head:<{width}}  " + "  ".join(f"{n:>{cell}}" for n in names)]
    for label, (path, group) in zip(labels, rows):
        text = [_cell((flat.get(f"{path}:{group}") or {}).get(metric), percent) for flat in values]
        lines.append(f"{label:<{width}}  " + "  ".join(f"{v:>{cell}}" for v in text))
    return "\n".join(lines)


def _cell(value, percent: bool) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—"
    return f"{100 * value:.2f}" if percent else f"{value:g}"


def run(metric: str, revs: list[str] | None = None, num: int = 1, root: Path | None = None) -> str:
    import dvc.api

    root = Path(root or Path.cwd())
    shown = dvc.api.exp_show(repo=str(root), revs=revs or None, num=num)
    values = []
    for row in shown:
        rev = None if row["rev"] == "workspace" else row["rev"]
        try:
            values.append(dvc.api.metrics_show("metrics", repo=str(root), rev=rev))
        except Exception:  # a revision with no metrics/ folder: dashes
            values.append({})
    return table([revision_name(row) for row in shown], values, metric)
