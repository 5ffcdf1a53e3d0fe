"""`python -m tlstudy compare`: every part's test accuracy side by side across experiments.

`dvc exp show` draws a column per metric; with a dozen parts and two optimizers the columns are
named `metrics/<part>.json:sgd.test_acc` and no terminal is wide enough. This turns the same
table — read through DVC's documented API, `dvc.api.exp_show()`: the workspace, the baseline
commit and its experiments, or the revisions asked for — around: a row per part and optimizer
(per family of variants for a sweep), a column per experiment, in percent.

DVC names a column `<file>:<name>` only when the name is in more than one file; a name found in
one file alone comes bare, and its file is the workspace's metrics file under metrics/ that
holds it (a bare name that no workspace file holds has no part to name, and is left out).
"""

from __future__ import annotations

import json
from pathlib import Path

SKIP = ("metrics/inspect.json", "metrics/stats.json", "metrics/data.json")
# The columns of dvc.api.exp_show() that describe a revision rather than hold a metric.
META = ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")


def _holds(tree: dict, keys: list[str]) -> bool:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def metric_files(root: Path) -> dict[str, dict]:
    """The workspace's metrics files under metrics/, by repository path: where a bare column's
    name is looked up."""
    out = {}
    for path in sorted((root / "metrics").rglob("*.json")):
        rel = path.relative_to(root).as_posix()
        if rel not in SKIP:
            out[rel] = json.loads(path.read_text())
    return out


def columns(shown: list[dict], metric: str, files: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(column, file, group) for every `<group>.<metric>` metric column, in DVC's column order."""
    out = []
    names = [c for row in shown for c in row if c not in META]
    for column in dict.fromkeys(names):
        path, sep, name = column.rpartition(":")
        keys = name.split(".")
        if len(keys) != 2 or keys[1] != metric:
            continue
        if not sep:  # bare: the one metrics file that holds it (none: a param, or only elsewhere)
            holders = [p for p, tree in files.items() if _holds(tree, keys)]
            path = holders[0] if len(holders) == 1 else ""
        if path and path.startswith("metrics/") and path not in SKIP:
            out.append((column, path, keys[0]))
    return out


def revision_name(row: dict) -> str:
    return row.get("Experiment") or row["rev"]


def table(shown: list[dict], files: dict[str, dict], metric: str = "test_acc") -> str:
    cols = columns(shown, metric, files)
    labels = [f"{Path(path).stem} {group}" for _, path, group in cols]
    percent = metric.endswith("acc")  # accuracies are fractions in the files; other metrics as they are
    head = f"{metric} (%)" if percent else metric
    width = max([len(label) for label in labels] + [len(head)])
    names = [revision_name(row)[:12] for row in shown]
    cell = max([8, *(len(n) for n in names)])
    lines = [f"{head:<{width}}  " + "  ".join(f"{n:>{cell}}" for n in names)]
    for label, (column, _, _) in zip(labels, cols):
        values = [row.get(column) for row in shown]
        text = [_cell(v, percent) for v in values]
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
    return table(shown, metric_files(root), metric)
