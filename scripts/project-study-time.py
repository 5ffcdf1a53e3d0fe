#!/usr/bin/env python3
"""The whole default study's time, projected: on this machine from a short run of it, or on a GPU
from the study's own timing.

On this machine: run the study's own settings (params.yaml: 227 px, every part, pretraining, both
sweeps) for one epoch and one learning rate — an epoch costs the same at every learning rate, so one
rate measures what five would — in a profile workspace, keeping its log, then project:

    python -m tlstudy profile gpu-check --dir work/profiles/cpu227 \\
        --data ../shared/data/pacs_cartoon --sources ../shared/data/pacs_sources \\
        --set epochs=1 --set 'lr=[0.01]' --set pretrain.pacs_sources.epochs=1 | tee work/cpu227.log
    python scripts/project-study-time.py work/profiles/cpu227 work/cpu227.log

Per training stage: its wall time (the workspace's work/timing.json) = its epochs x the mean
seconds of one epoch, training and validation (the stage's last progress line, progress.py) + the
rest, which does not grow with the grid: start-up, data, features of a frozen backbone, the test
logits of each selection. The projection keeps the rest once and scales the epochs to params.yaml's
grid (its rates x its optimizers x its variants x its seeds x its epochs; pretraining's own epochs).
Evaluation, fetch, stats, inspect and report are taken as measured (they do not depend on epochs).

On a GPU, with no measurement of ours (`--gpu`): the study's seconds per epoch of full training on
its GPU (src/tlstudy/resources/study.yaml: SGD 5.57 s, Adam 7.49 s on 1,686 training images at
227 px; head-only about 30 % less) times each training stage's epochs in params.yaml, scaled by its
training images (the few-shot subset's 191, pretraining's 6,891). Our engine trains a frozen
backbone's head on features computed once, so the head-only figures are upper bounds.

    python scripts/project-study-time.py --gpu
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
# Training images at the study's settings (docs/data.md#split): the full subset is the official
# pool less its validation fifth (2,107 - 421); the few-shot one 34 per class less its fifth
# (238 - 47); pretraining the three source domains less the tenth that picks its epoch (7,647 - 756).
TRAIN_IMAGES = {"full": 1686, "fewshot": 191, "pretrain": 6891}


def epochs_of(measured: dict, study: dict, stage: str) -> tuple[int, int]:
    """(epochs the short run trained, epochs the default study trains) in one stage."""
    kind, name = stage.split("@")
    if kind == "pretrain":
        return measured["pretrain"][name]["epochs"], study["pretrain"][name]["epochs"]

    def total(params: dict) -> int:
        part = P.part(params, name)
        return part.runs * len(part.seeds) * part.epochs

    return total(measured), total(study)


def gpu_projection(params: dict, timing: dict) -> dict[str, float]:
    """Each training stage's seconds on the study's GPU, from its timing (study.yaml's `timing`)."""
    per_epoch = {"sgd": timing["sgd_sec_per_epoch"], "adam": timing["adam_sec_per_epoch"]}
    per_epoch["adamw"] = per_epoch["adam"]
    full = TRAIN_IMAGES["full"]
    out = {}
    for name, b in params["pretrain"].items():
        out[f"pretrain@{name}"] = b["epochs"] * per_epoch[b["optimizer"]] * TRAIN_IMAGES["pretrain"] / full
    for group, stage in (("parts", "train"), ("transfer", "transfer")):
        for name in params[group]:
            part = P.part(params, name)
            scale = (
                TRAIN_IMAGES[part.subset]
                / full
                * (1 - timing["head_only_ms_per_example_reduction"] * (part.trainable == "head"))
            )
            epochs = len(part.variants) * len(part.seeds) * part.epochs
            out[f"{stage}@{name}"] = sum(per_epoch[o] * len(lrs) * epochs * scale for o, lrs in part.grid.items())
    return out


def duration(seconds: float) -> str:
    """As the docs write a projection: whole minutes below 90, hours to a tenth above."""
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


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


def main_gpu() -> None:
    from tlstudy.stages.report import study

    rows = gpu_projection(P.load(PROJECT / "params.yaml"), study.numbers()["timing"])
    for stage, seconds in rows.items():
        print(f"{stage:<34} {duration(seconds):>8}")
    print(f"projected default study on the study's GPU: {duration(sum(rows.values()))} ({sum(rows.values()):.0f} s)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--gpu"]:
        main_gpu()
    else:
        main(Path(sys.argv[1]), Path(sys.argv[2]))
