from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
PARTS = [
    "scratch",
    "classifier",
    "finetune",
    "fewshot_scratch",
    "fewshot_classifier",
    "fewshot_finetune",
    "augment",
    "augment_study",
]
SWEEPS = ["augment", "augment_study"]  # the parts over augmentation variants
# What differs between two runs of the same params: the timing fields of records and curves.
TIMING = {"seconds", "sec_per_epoch", "ms_per_example", "checkpoint_s"}


def without_timing(tree):
    """A JSON tree (or a list of curve rows) with every timing field dropped, at any depth."""
    if isinstance(tree, dict):
        return {k: without_timing(v) for k, v in tree.items() if k not in TIMING}
    if isinstance(tree, list):
        return [without_timing(v) for v in tree]
    return tree


SHARED_PACS = PROJECT.parent / "shared" / "data" / "pacs_cartoon"


def at_rev(repo: Path, rev: str, path: str) -> dict:
    """A JSON file as an experiment or commit holds it (`git show <rev>:<path>`): how a per-part
    metrics file, which `dvc exp show` does not list, is read at a revision."""
    out = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def pytest_configure(config):
    """Under pytest-xdist (`make test`: a worker per core), each worker and the stages it starts
    get an equal share of the cores: two workers of two threads each on two cores would take turns
    mid-step, and PyTorch's threads wait on each other when they do."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


@pytest.fixture(scope="session")
def study_params() -> dict:
    return yaml.safe_load((PROJECT / "params.yaml").read_text())


@pytest.fixture
def params(study_params) -> dict:
    """The study's params with small, fast settings for unit tests."""
    p = copy.deepcopy(study_params)
    p.update(epochs=2, batch_size=16, lr=[0.01], optimizer=["sgd"], imagenet_weights="random")
    p["data"].update(source="synthetic", image_size=32, synthetic_per_class=12)
    p["fewshot"]["per_class"] = 4
    return p


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run the test with a temporary directory as the working directory (a stage's view)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_report_header(config):
    return f"shared PACS data: {'found' if SHARED_PACS.is_dir() else 'absent'} at {SHARED_PACS}"


@pytest.fixture
def shared():
    """A folder every user may write, sticky as /tmp is (tmp_path is root's alone): where the
    tests of shared lock files let a second user (tests/as_nobody.py) meet root's files."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="tlstudy-shared-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def one_stage_workspace(root: Path, cmd: str) -> Path:
    """A git + DVC repository under root/ws whose one stage runs `cmd` and writes out.txt: the
    smallest thing `dvc exp run --queue` can queue, for tests of the queue rather than the study."""
    from tlstudy import profile

    ws = root / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([*profile.tool_argv("dvc"), "init", "-q"], cwd=ws, check=True)
    (ws / "dvc.yaml").write_text(f"stages:\n  hello:\n    cmd: {cmd}\n    outs: [out.txt]\n")
    (ws / "params.yaml").write_text("x: 1\n")
    subprocess.run(["git", "add", "-A"], cwd=ws, check=True)
    subprocess.run(["git", "commit", "-qm", "a stage"], cwd=ws, check=True)
    return ws
