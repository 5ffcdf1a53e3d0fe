"""Training curves as `dvc plots` draws them: a long-format CSV, one row per (run, epoch), written
by the part stages (train.py) and by pretraining alike."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tlstudy.lib.atomic import write_text
from tlstudy.training import engine

PLOT_COLUMNS = [
    "run",
    "seed",
    "optimizer",
    "lr",
    "variant",
    "family",  # the variant's (augment.family): the sweep's plots draw a panel per family
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "seconds",
]


def plot_rows(result: engine.Result, name: str, seed: int, family: str) -> list[list]:
    r = result.run
    return [
        [name, seed, r.optimizer, f"{r.lr:g}", r.variant, family, h["epoch"]]
        + [f"{h[k]:.6g}" for k in ("train_loss", "train_acc", "val_loss", "val_acc", "seconds")]
        for h in result.history
    ]


def write_curves(path: Path, rows: list[list]) -> None:
    """The long-format curves file `dvc plots` draws: a header, then a row per (run, epoch)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PLOT_COLUMNS)
    w.writerows(rows)
    write_text(path, buf.getvalue())
