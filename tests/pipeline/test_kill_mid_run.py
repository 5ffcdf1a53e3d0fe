"""A `dvc repro` SIGKILLed inside a run — of `pretrain`, then of `train`, each at an epoch that is
not a run boundary — and run again ends with every output an uninterrupted `dvc repro` writes,
bit for bit, timing fields aside: the real dvc.yaml in a temporary git repo, the real DVC."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_overlay, tiny_workspace, without_timing

from tlstudy.tools import profile
from tlstudy.training import resume

pytestmark = pytest.mark.slow
OVERLAY = tiny_overlay(
    keep=("scratch", "pacs_sources", "finetune_pacs"),
    lr=[0.01],
    optimizer=["sgd", "adam"],
    epochs=6,
    data={"synthetic_per_class": 10},
    pretrain={"pacs_sources": {"source": "synthetic", "epochs": 6, "batch_size": 16, "lr": 0.01}},
    transfer={"finetune_pacs": {"epochs": 2}},
)


def env() -> dict:
    # As a user with the virtual environment activated; a checkpoint after every epoch, so that a
    # kill lands inside a run even at epochs this short.
    return dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **{resume.SHARE_ENV: "1"},
    )


def repro(ws) -> str:
    r = subprocess.run([profile.tool("dvc"), "repro"], cwd=ws, env=env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def kill_when(ws, target, ready, what: str) -> None:
    """`dvc repro target` until ready() sees what it waits for on disk, then SIGKILL to DVC and its stage."""
    proc = subprocess.Popen(
        [profile.tool("dvc"), "repro", target], cwd=ws, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"dvc repro ended before {what}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def checkpoint_epochs(folder: Path) -> dict[str, list[int]]:
    """Per run key, the epochs with a complete checkpoint record; finished runs under `done`."""
    out: dict[str, list[int]] = {"done": []}
    for p in folder.rglob("*.json") if folder.is_dir() else []:
        key, *rest = p.name.split(".")
        if rest == ["json"]:
            out["done"].append(key)
        elif len(rest) == 2 and rest[0].startswith("e"):
            out.setdefault(key, []).append(int(rest[0][1:]))
    return out


def outputs(ws) -> dict:
    """Every file the stages wrote that a person reads or DVC tracks, timing fields dropped;
    weights as tensors."""
    found = {}
    for folder in ("metrics", "details", "plots"):
        for p in sorted((ws / folder).rglob("*")):
            rel = p.relative_to(ws).as_posix()
            if p.suffix == ".json":
                found[rel] = without_timing(json.loads(p.read_text()))
            elif p.suffix == ".csv":
                with open(p) as f:
                    found[rel] = [without_timing(row) for row in csv.DictReader(f)]
    for folder in ("models", "backbones"):
        for p in sorted((ws / folder).rglob("*")):
            rel = p.relative_to(ws).as_posix()
            if p.suffix == ".pt":
                found[rel] = torch.load(p, weights_only=True)
            elif p.suffix == ".json":
                found[rel] = without_timing(json.loads(p.read_text()))
    return found


def same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def workspace(tmp, name) -> Path:
    return tiny_workspace(tmp / name, OVERLAY, run=False)


def test_repro_killed_inside_a_pretrain_run_and_a_train_run_ends_bit_for_bit_as_uninterrupted(tmp_path):
    straight = workspace(tmp_path, "straight")
    log = repro(straight)
    assert "continuing after epoch" not in log

    killed = workspace(tmp_path, "killed")
    pre = killed / "work/runs/pretrain_pacs_sources"
    # Pretraining is one run: killed once its epoch-3 checkpoint is complete, before its last epoch.
    kill_when(
        killed, "pretrain@pacs_sources",
        lambda: any(3 in e for k, e in checkpoint_epochs(pre).items() if k != "done"), "pretrain epoch 3",
    )  # fmt: skip
    assert not (killed / "backbones/pacs_sources.pt").exists()
    pre_saved = max(max(v) for k, v in checkpoint_epochs(pre).items() if k != "done")
    assert 3 <= pre_saved < 6
    runs = killed / "work/runs/scratch"
    # train@scratch: after its first run has finished, inside the second one (epoch 2 saved).
    kill_when(
        killed,
        "train@scratch",
        lambda: (e := checkpoint_epochs(runs))["done"] and any(2 in v for k, v in e.items() if k != "done"),
        "train@scratch's second run at epoch 2",
    )
    assert not (killed / "models/scratch/runs.json").exists()
    saved = {k: max(v) for k, v in checkpoint_epochs(runs).items() if k != "done"}
    assert len(saved) == 1 and 2 <= next(iter(saved.values())) < 6
    finished = len(checkpoint_epochs(runs)["done"])

    log = repro(killed)
    assert f"pretrain@pacs_sources: continuing after epoch {pre_saved}, from its checkpoint" in log
    assert f"continuing after epoch {next(iter(saved.values()))}, from its checkpoint" in log
    assert log.count("finished before the stage was interrupted; kept") == finished >= 1  # each kept, none rerun
    assert not (killed / "work/runs").exists() or not any((killed / "work/runs").iterdir())  # checkpoints gone
    a, b = outputs(straight), outputs(killed)
    assert a.keys() == b.keys() and any(k.startswith("backbones/") for k in a) and "models/scratch/runs.json" in a
    same(a, b)
