"""`tlstudy compare`: dvc.api.exp_show() turned around, a row per part and optimizer — on a real
DVC repo in a temporary folder whose experiments are saved with `dvc exp save`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tlstudy.tools import compare
from tlstudy.tools.profile import tool

pytestmark = pytest.mark.slow


def sh(cwd, *cmd):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def write(root: Path, scratch: tuple[float, float], augment: float, lr: float, finetune: float | None = None) -> None:
    files = {
        "metrics/stats.json": {"images": 10},
        "metrics/scratch.json": {"sgd": {"test_acc": scratch[0], "lr": lr}, "adam": {"test_acc": scratch[1]}},
        "metrics/pretrain/pacs_sources.json": {"val_acc": 0.6, "cartoon_test_acc": 0.3},
        # A sweep: its families and its best variant's name.
        "metrics/augment.json": {"colour jitter": {"test_acc": augment}, "best_variant": "hflip"},
    }
    if finetune is not None:
        files["metrics/finetune.json"] = {"sgd": {"test_acc": finetune}}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(data))
    (root / "params.yaml").write_text(f"lr: {lr}\n")


@pytest.fixture
def repo(tmp_path):
    sh(tmp_path, "git", "init", "-q", "--initial-branch=main")
    sh(tmp_path, "git", "config", "user.email", "t@t.invalid")
    sh(tmp_path, "git", "config", "user.name", "t")
    sh(tmp_path, tool("dvc"), "init", "-q")
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics\n")
    write(tmp_path, (0.5, 0.625), augment=0.25, lr=0.01)
    sh(tmp_path, "git", "add", "-A")
    sh(tmp_path, "git", "commit", "-qm", "baseline")
    return tmp_path


def test_a_row_per_part_and_group_a_column_per_experiment(repo):
    write(repo, (0.75, 0.125), augment=0.5, lr=0.001, finetune=0.875)
    sh(repo, tool("dvc"), "exp", "save", "-q", "-n", "lr-001")
    write(repo, (0.375, 0.125), augment=0.5, lr=0.003, finetune=0.25)  # the workspace, not saved
    lines = compare.run("test_acc", root=repo).splitlines()
    assert lines[0].split()[:2] == ["test_acc", "(%)"] and lines[0].split()[2:] == ["workspace", "main", "lr-001"]
    rows = {" ".join(line.split()[:-3]): line.split()[-3:] for line in lines[1:]}
    assert rows["scratch sgd"] == ["37.50", "50.00", "75.00"]
    assert rows["scratch adam"] == ["12.50", "62.50", "12.50"]
    assert rows["finetune sgd"] == ["25.00", "—", "87.50"]  # a revision without the file: a dash
    # A sweep's family, which DVC names without its file (no other file has it).
    assert rows["augment colour jitter"] == ["50.00", "25.00", "50.00"]
    assert len(rows) == 4  # stats, pretraining's flat figures and the best variant's name are no rows
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_another_metric_is_shown_as_it_is_and_every_commit_with_all(repo):
    write(repo, (0.75, 0.125), augment=0.5, lr=0.001)
    sh(repo, "git", "commit", "-qam", "second")
    out = subprocess.run(
        [sys.executable, "-m", "tlstudy", "compare", "--metric", "lr", "-A"], cwd=repo, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[0] == "lr" and len(lines[0].split()) == 1 + 3  # workspace, main and its parent
    assert lines[1].split() == ["scratch", "sgd", "0.001", "0.001", "0.01"]
