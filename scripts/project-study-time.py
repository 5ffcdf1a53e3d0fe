#!/usr/bin/env python3
"""The whole default study's time on this machine, projected from a short run of it.

Run the study's own settings (params.yaml: 227 px, every part, pretraining, both sweeps) for one
epoch and one learning rate — an epoch costs the same at every learning rate, so one rate measures
what five would — in a profile workspace, keeping its log, then project:

    python -m tlstudy profile gpu-check --dir work/profiles/cpu227 \\
        --data ../shared/data/pacs_cartoon --sources ../shared/data/pacs_sources \\
        --set epochs=1 --set 'lr=[0.01]' --set pretrain.pacs_sources.epochs=1 | tee work/cpu227.log
    python scripts/project-study-time.py work/profiles/cpu227 work/cpu227.log

Per training stage: its wall time (the workspace's work/timing.json) = its epochs x the mean
seconds of one epoch, training and validation (the stage's last progress line, progress.py) + the
rest, which does not grow with the grid: start-up, data, features of a frozen backbone, the test
logits of each selection. The projection keeps the rest once and scales the epochs to params.yaml's
grid (5 rates x its optimizers x its variants x its seeds x 50 epochs; 30 for pretraining).
Evaluation, fetch, stats, inspect and report are taken as measured (they do not depend on epochs).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))
from tlstudy import params as P  # noqa: E402

LAST_LINE = re.compile(r"\| ((?:train|pretrain)@\S+) 100 %, ([\d.]+) s/epoch")


def epochs_of(measured: dict, study: dict, stage: str) -> tuple[int, int]:
    """(epochs the short run trained, epochs the default study trains) in one stage."""
    kind, name = stage.split("@")
    if kind == "pretrain":
        return measured["pretrain"][name]["epochs"], study["pretrain"][name]["epochs"]

    def total(params: dict) -> int:
        opts, lrs, variants = P.part_grid(params, name)
        return len(opts) * len(lrs) * len(variants) * len(P.part_seeds(params, name)) * P.part_epochs(params, name)

    return total(measured), total(study)


def main(ws: Path, log: Path) -> None:
    timing = json.loads((ws / "work/timing.json").read_text())["stages"]
    measured = yaml.safe_load((ws / "params.yaml").read_text())
    study = yaml.safe_load((PROJECT / "params.yaml").read_text())
    per_epoch = {m[1]: float(m[2]) for m in LAST_LINE.finditer(log.read_text())}
    rows, total = [], 0.0
    for stage, wall in timing.items():
        key = stage.replace("transfer@", "train@")  # progress names every part's stage train@<part>
        if key not in per_epoch:
            total += wall
            continue
        short, full = epochs_of(measured, study, key)
        rest = max(0.0, wall - short * per_epoch[key])
        projected = rest + full * per_epoch[key]
        total += projected
        rows.append((stage, per_epoch[key], full, projected))
    print(f"{'stage':<34} {'s/epoch':>8} {'epochs':>7} {'projected':>10}")
    for stage, secs, full, projected in rows:
        print(f"{stage:<34} {secs:>8.1f} {full:>7} {projected / 3600:>9.1f} h")
    print(f"projected default study: {total / 3600:.1f} h ({total:.0f} s)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
