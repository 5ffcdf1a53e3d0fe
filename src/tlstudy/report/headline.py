"""`headline.json`: the handful of numbers `dvc exp show` shows — the study's six parts, each one
test accuracy in %, short names so that the table fits a 120-column terminal.

Each value is the part's selected model: of its two optimizers, the one with the higher
validation accuracy (a mean over seeds with several), so the choice never looks at the test set
(on a tie, SGD). Everything else — both optimizers, intervals, lr and epoch, the sweeps — stays
in `metrics/<part>.json` and `details/<part>.json`, where `dvc metrics diff --targets metrics -R`,
`python -m tlstudy compare` and the report read it."""

from __future__ import annotations

from pathlib import Path

from tlstudy.atomic import write_json
from tlstudy.report.inputs import read_json

PATH = Path("headline.json")
# The study's part -> its column: full subset, then few-shot (`fs_`); `head` is head-only.
COLUMNS = {
    "scratch": "scratch",
    "classifier": "head",
    "finetune": "finetune",
    "fewshot_scratch": "fs_scratch",
    "fewshot_classifier": "fs_head",
    "fewshot_finetune": "fs_finetune",
}
OPTIMIZERS = ("sgd", "adam")


def selected(metrics: dict) -> dict | None:
    """The optimizer group with the higher validation accuracy (SGD on a tie), or None."""
    groups = [metrics[o] for o in OPTIMIZERS if isinstance(metrics.get(o), dict) and "val_acc" in metrics[o]]
    return max(groups, key=lambda g: g["val_acc"]) if groups else None


def headline(metrics_dir: Path = Path("metrics")) -> dict[str, float]:
    """{column: selected test accuracy in %, one decimal} for each of the study's parts that ran."""
    out = {}
    for part, column in COLUMNS.items():
        best = selected(read_json(metrics_dir / f"{part}.json") or {})
        if best is not None and "test_acc" in best:
            out[column] = round(100 * best["test_acc"], 1)
    return out


def write(path: Path = PATH) -> dict[str, float]:
    values = headline()
    write_json(path, values)
    return values
