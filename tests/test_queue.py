"""Parallel experiments as a user queues them: `dvc exp run --queue` twice, `dvc queue start -j 2`,
then `dvc exp show` — in a temporary repo on the demo data, with the real DVC and two workers."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT

from tlstudy import profile

pytestmark = pytest.mark.slow
OVERLAY = {
    "lr": [0.03],
    "optimizer": ["sgd"],
    "epochs": 1,
    "batch_size": 16,
    "imagenet_weights": "random",
    "inspect": {"weights": "random"},
    "data": {"source": "synthetic", "image_size": 32, "synthetic_per_class": 8},
    "fewshot": {"per_class": 4},
    "parts": {
        p: None
        for p in ("classifier", "finetune", "fewshot_classifier", "fewshot_finetune", "augment", "augment_study")
    },
    "pretrain": {"pacs_sources": None},
    "transfer": {"finetune_pacs": None, "fewshot_finetune_pacs": None},
}


def dvc(ws, *args) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run([profile.tool("dvc"), *args], cwd=ws, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, f"dvc {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def test_two_queued_experiments_run_on_two_workers_and_show_side_by_side(tmp_path):
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(OVERLAY))
    ws = profile.run(str(tmp_path / "overlay.yaml"), str(tmp_path / "ws"), project=PROJECT, fresh=True)
    for lr in ("0.01", "0.003"):
        assert "Queued experiment" in dvc(ws, "exp", "run", "--queue", "-S", f"lr={lr}")
    assert "Started '2' new experiments task queue workers" in dvc(ws, "queue", "start", "-j", "2")
    deadline = time.monotonic() + 900
    while True:
        status = dvc(ws, "queue", "status")
        if "Queued" not in status and "Running" not in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert status.count("Success") == 2, status

    shown = json.loads(dvc(ws, "exp", "show", "--json"))
    exps = [r for rev in shown for e in (rev.get("experiments") or []) for r in e["revs"]]
    results = {
        r["data"]["params"]["params.yaml"]["data"]["lr"]: r["data"]["metrics"]["metrics/scratch.json"]["data"]["sgd"]
        for r in exps
    }
    assert set(results) == {0.01, 0.003}
    assert all(m["lr"] == lr and 0 <= m["test_acc"] <= 1 for lr, m in results.items())
    # Each ran in a workspace of its own: the main one is untouched.
    assert yaml.safe_load((ws / "params.yaml").read_text())["lr"] == [0.03]
    assert json.loads((ws / "metrics/scratch.json").read_text())["sgd"]["lr"] == 0.03
