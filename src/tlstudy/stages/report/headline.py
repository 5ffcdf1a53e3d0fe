"""`headline.json`: the handful of numbers `dvc exp show` shows — a part each, one test accuracy
in %, short names so that the table fits a 120-column terminal.

The parts: the study's (Tables II–VII, in its order, wherever params puts them), then any other
part under `parts` that is not an augmentation sweep, in params order; a part under `transfer`
the study did not run (the same part from another backbone) is left to the report's side-by-side
table, so the headline stays one screen wide. Each value is the part's selected model: of its
optimizers, the one with the higher validation accuracy (a mean over seeds with several), so the
choice never looks at the test set (on a tie, the first in the registry: SGD). Everything else —
every optimizer, intervals, lr and epoch, the sweeps — stays in `metrics/<part>.json` and
`details/<part>.json`, where `dvc metrics diff --targets metrics -R`, `python -m tlstudy compare`
and the report read it."""

from __future__ import annotations

from pathlib import Path

from tlstudy import params as P
from tlstudy.lib.atomic import write_json
from tlstudy.stages.report import study as S
from tlstudy.stages.report.inputs import read_json
from tlstudy.training import optimizers

PATH = Path("headline.json")


def column(part: str) -> str:
    """A part's column: few-shot parts start `fs_`, head-only ones say `head` (fs_head)."""
    short = f"fs_{part.removeprefix('fewshot_')}" if part.startswith("fewshot_") else part
    return short.replace("classifier", "head")


def columns(params: dict) -> dict[str, str]:
    """part -> its column, in the headline's order."""
    parts = P.parts(params)
    study = [p for p in S.numbers()["parts"] if p in parts]
    own = [p for p in params["parts"] if p not in study]
    return {p: column(p) for p in [*study, *own] if not parts[p].sweep}


def selected(metrics: dict) -> dict | None:
    """The optimizer group with the higher validation accuracy (the first in the registry on a
    tie), or None."""
    groups = [metrics[o] for o in optimizers.NAMES if isinstance(metrics.get(o), dict) and "val_acc" in metrics[o]]
    return max(groups, key=lambda g: g["val_acc"]) if groups else None


def selected_group(metrics: dict | None) -> str | None:
    """The name of the group `selected` picks, or None."""
    best = selected(metrics or {})
    return next((g for g, m in (metrics or {}).items() if m is best), None) if best else None


def headline(params: dict, metrics_dir: Path = Path("metrics")) -> dict[str, float]:
    """{column: selected test accuracy in %, one decimal} for each part of the headline that ran."""
    out = {}
    for part, name in columns(params).items():
        best = selected(read_json(metrics_dir / f"{part}.json") or {})
        if best is not None and "test_acc" in best:
            out[name] = round(100 * best["test_acc"], 1)
    return out


def write(params: dict, path: Path = PATH) -> dict[str, float]:
    values = headline(params)
    write_json(path, values)
    return values
