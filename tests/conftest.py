from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import signal
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


def git(repo: Path, *args: str) -> str:
    """A git command in `repo` (an identity given, for commits), its output."""
    argv = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args]
    return subprocess.run(argv, cwd=repo, capture_output=True, text=True, check=True).stdout


def show(repo: Path, rev: str, path: str) -> str:
    """A file's text as an experiment or commit holds it (`git show <rev>:<path>`)."""
    return git(repo, "show", f"{rev}:{path}")


def at_rev(repo: Path, rev: str, path: str) -> dict:
    """A JSON file as an experiment or commit holds it: how a per-part metrics file, which `dvc exp
    show` does not list, is read at a revision."""
    return json.loads(show(repo, rev, path))


@functools.cache
def load_script(name: str):
    """scripts/<name>.py as a module, loaded once per session (a script is no package module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), PROJECT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def killed_once(argv: list[str], begun: str, kill_at: str) -> str:
    """A script run as a user starts it, killed (its whole process group, as a session's end
    does) at the first line starting with `kill_at` after one starting with `begun`; what it
    printed."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen, started = [], False
    for line in proc.stdout:
        seen.append(line)
        started = started or line.startswith(begun)
        if started and line.startswith(kill_at):
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert started, "".join(seen)
    return "".join(seen)


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
    tmp = config._tmp_path_factory.getbasetemp()
    free = shutil.disk_usage(tmp).free / 2**30
    return [
        f"shared PACS data: {'found' if SHARED_PACS.is_dir() else 'absent'} at {SHARED_PACS}",
        f"temporary files: {tmp}, {free:.1f} GiB free (docs/development.md#disk)",
    ]


@pytest.fixture(autouse=True)
def keeps_the_working_directory():
    """A test that changes the working directory must change it back (monkeypatch.chdir): its
    tmp_path goes when it passes, and every later test of that worker would start in a folder that
    is gone (os.getcwd() fails, and so does `python -m` in a subprocess)."""
    before = os.getcwd()
    yield
    try:
        after = os.getcwd()
    except FileNotFoundError:
        after = "a folder since removed"
    if after != before:
        os.chdir(before)
        pytest.fail(f"the test left the working directory in {after}; use monkeypatch.chdir", pytrace=False)


@pytest.fixture(scope="module")
def module_tmp(request, tmp_path_factory) -> Path:
    """A directory for a test module's shared workspaces, removed when the module ends unless one
    of its tests failed. A tiny workspace holds its ResNet-18 checkpoints twice (outputs and DVC's
    cache), about 0.4-0.8 GB: kept to the session's end, as pytest keeps what tmp_path_factory
    makes, a suite's worth filled a CI disk."""
    failed_before = request.session.testsfailed
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shared():
    """A folder every user may write, sticky as /tmp is (tmp_path is root's alone): where the
    tests of shared lock files let a second user (tests/as_nobody.py) meet root's files."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="tlstudy-shared-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def one_stage_workspace(root: Path, cmd: str) -> Path:
    """A git + DVC repository under root/ws whose one stage runs `cmd` and writes out.txt: the
    smallest thing `dvc exp run --queue` can queue, for tests of the queue rather than the study."""
    from tlstudy.tools import profile

    ws = root / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([*profile.tool_argv("dvc"), "init", "-q"], cwd=ws, check=True)
    (ws / "dvc.yaml").write_text(f"stages:\n  hello:\n    cmd: {cmd}\n    outs: [out.txt]\n")
    (ws / "params.yaml").write_text("x: 1\n")
    subprocess.run(["git", "add", "-A"], cwd=ws, check=True)
    subprocess.run(["git", "commit", "-qm", "a stage"], cwd=ws, check=True)
    return ws


# The tiny pipeline: the real params.yaml and dvc.yaml at sizes that run in seconds (synthetic
# 32 px images, one epoch, one learning rate, SGD, random weights). tiny_overlay() adds what a
# test needs on top; tiny_workspace() makes the profile workspace (a git + DVC repo) from it.
TINY = {
    "lr": [0.03],
    "optimizer": ["sgd"],
    "epochs": 1,
    "batch_size": 16,
    "imagenet_weights": "random",
    "inspect": {"weights": "random"},
    "data": {"source": "synthetic", "image_size": 32, "synthetic_per_class": 8},
    "fewshot": {"per_class": 4},
}


def _on(base: dict, changes: dict) -> dict:
    """`changes` on `base`, nested mappings merged; a None stays (it removes the key from params)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _on(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_overlay(keep=("scratch",), **changes) -> dict:
    """The tiny pipeline's overlay on params.yaml: of the study's parts, transfer parts and
    pretrained backbones, those named in `keep` stay (None: all of them) and the others are
    removed; then `changes` on top (nested mappings merge: `data={"synthetic_per_class": 10}`)."""
    study = yaml.safe_load((PROJECT / "params.yaml").read_text())
    overlay = copy.deepcopy(TINY)
    for section in ("parts", "transfer", "pretrain"):
        gone = {name: None for name in study.get(section) or {} if keep is not None and name not in keep}
        if gone:
            overlay[section] = gone
    return _on(overlay, changes)


def tiny_workspace(dest: Path, overlay: dict | None = None, run: bool = True) -> Path:
    """A profile workspace of the tiny pipeline at `dest`, its overlay beside it as
    <dest>.overlay.yaml: run through `dvc repro` (profile.run), or with `run=False` prepared and
    committed with nothing run yet."""
    from tlstudy.tools import profile

    file = dest.parent / f"{dest.name}.overlay.yaml"
    file.write_text(yaml.safe_dump(tiny_overlay() if overlay is None else overlay))
    if run:
        return profile.run(str(file), str(dest), project=PROJECT, fresh=True)
    profile.prepare(dest, PROJECT, profile.profile_params(PROJECT, str(file)), "tiny", fresh=True, links={})
    return dest


# The longest test files, longest first (seconds alone on 2 shared cores, one thread, 2026-12-05;
# "N loaded": N runnable processes shared them, so too high). `make test` gives its workers whole
# files in collection order (--dist loadfile --no-loadscope-reorder), so these start first and
# the short files fill in behind them, instead of one long file starting last and running alone
# at the end. A file not listed runs after these, in its usual place.
LONGEST_FIRST = [
    "test_dvc_pipeline.py",  # 767 s
    "test_sweeps_end_to_end.py",  # the two sweep scripts' tests, 291 + 289 s apart on 2026-12-07
    "test_kill_mid_run.py",  # 727 s, 5 loaded
    "test_gpu_check.py",  # 634 s, 6 loaded
    "test_slurm.py",  # 364 s
    "test_packaging.py",  # installs torch into a fresh venv
    "test_slurm_faults.py",  # 231 s
    "test_queue.py",
    "test_bench.py",  # 231 s, 7 loaded
    "test_share.py",  # 59 s
    "test_disk_full.py",  # 58 s
    "test_plots_page.py",
    "test_fetch_routes.py",
    "test_compare.py",
    "test_slurm_concurrency.py",  # 26 s
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order kept
