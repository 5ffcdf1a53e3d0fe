"""A full disk mid-stage: a real ENOSPC from the kernel (a small tmpfs in a private mount
namespace as the stage's working directory), during a real train stage. One `error:` line that
names the file, nothing torn left behind, and after freeing space the same command finishes with
the outputs of an uninterrupted run, resuming the runs it had finished."""

import collections
import csv
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SHARED_PACS, TIMING

from tlstudy.lib import atomic
from tlstudy.stages import fetch, stats

DRIVER = Path(__file__).with_name("disk_full_driver.py")


def prepare(folder, params):
    """A train stage's inputs in folder (fetch, stats), which becomes the working directory."""
    folder.mkdir()
    os.chdir(folder)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    fetch.run(params)
    stats.run(params)


def train(folder, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "tlstudy", "train", "--part", "scratch"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw,
    )  # fmt: skip


def without_timing(folder):
    runs = json.loads((folder / "models/scratch/runs.json").read_text())
    for r in runs["runs"]:
        for k in TIMING:
            r.pop(k, None)
    with open(folder / "plots/train/scratch.csv") as f:
        curves = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]
    root = folder / "models/scratch"
    models = {
        p.relative_to(root).as_posix(): torch.load(p, weights_only=True)["state"] for p in sorted(root.rglob("*.pt"))
    }
    return runs, curves, models


def private_tmpfs_works(where: Path) -> str | None:
    """Why a tmpfs cannot be mounted in a user and mount namespace here, or None if it can."""
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    where.mkdir(exist_ok=True)
    r = subprocess.run(
        ["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    return None if r.returncode == 0 else f"`unshare -rm mount -t tmpfs` is not permitted here: {r.stderr.strip()}"


def in_namespace(scenario: str, tmp_path: Path, **env) -> dict:
    """The driver's report of `scenario`, run with tmp_path/ws on a small tmpfs."""
    (tmp_path / "ws").mkdir()
    (tmp_path / "out").mkdir()
    r = subprocess.run(
        ["unshare", "-rm", sys.executable, str(DRIVER), scenario]
        + [str(tmp_path / p) for p in ("ws", "params.yaml", "out")],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env),
    )
    assert r.returncode == 0, r.stderr
    return json.loads((tmp_path / "out/report.json").read_text())


def torn(files: dict[str, int]) -> list[str]:
    """Temp files of atomic.replacing and half-unpacked folders."""
    return [f for f in files if re.search(r"(^|/)\.[^/]*\.tmp$|\.unpacking/", f)]


@pytest.mark.slow
def test_a_full_disk_ends_the_train_stage_with_one_line_and_the_rerun_finishes(tmp_path, params, monkeypatch):
    why = private_tmpfs_works(tmp_path / "probe")
    if why:
        pytest.skip(f"no real ENOSPC to be had: {why}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same arithmetic in both runs, so equal weights
    params.update(lr=[0.01, 0.003], optimizer=["sgd"], epochs=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    prepare(tmp_path / "straight", params)
    straight = train(tmp_path / "straight")
    out, _ = straight.communicate(timeout=600)  # read, not wait: a full pipe would block the child
    assert straight.returncode == 0, out

    report = in_namespace("train", tmp_path)
    assert [s["rc"] for s in report["prepare"]] == [0, 0], report["prepare"]

    full = report["full"]
    assert full["rc"] == 2, full
    # Progress lines before it (stderr, when not on a terminal), then the one error line.
    lines = [line for line in full["err"].strip().splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and full["err"].strip().endswith(lines[0]), full["err"]
    assert "Traceback" not in full["err"] and lines[0].startswith("error: ")
    wrote = r"(work/runs/scratch/seed0/\w+\.pt|models/scratch/seed0/sgd\.pt)"
    assert re.fullmatch(
        rf"error: no space left on device while writing {wrote} \([\d.]+ MiB free of [\d.]+ MiB on the filesystem "
        rf"of {re.escape(str(tmp_path / 'ws'))}/\S+\); nothing half-written was left behind\. "
        r"Free space there .* run the same command again: a training stage resumes from the runs it had finished "
        r"\(work/runs/\)",
        lines[0],
    ), lines[0]
    # Nothing torn: no temp file, and every weights or JSON file there loads.
    assert torn(report["files_after_full"]) == []
    assert report["unreadable_after_full"] == []
    finished = [
        f for f in report["files_after_full"] if f.startswith("work/runs/scratch/seed0/") and f.endswith(".json")
    ]
    assert finished, "the disk filled before any run had finished: nothing to resume"

    again = report["again"]
    assert again["rc"] == 0, again
    assert (again["out"] + again["err"]).count("finished before the stage was interrupted; kept") == len(finished)
    assert not [f for f in report["files_after_again"] if f.startswith("work/runs/")]

    straight, resumed = without_timing(tmp_path / "straight"), without_timing(tmp_path / "out")
    assert resumed[0] == straight[0] and resumed[1] == straight[1]
    assert resumed[2].keys() == straight[2].keys() == {"seed0/sgd.pt"}
    state, other = straight[2]["seed0/sgd.pt"], resumed[2]["seed0/sgd.pt"]
    assert all(torch.equal(state[k], other[k]) for k in state)


def test_the_space_error_behind_torchs_runtimeerror_is_found_and_the_temp_file_removed(tmp_path):
    """torch.save reports a failed write as RuntimeError("… unexpected pos …") with the OSError as
    its context (as the test above meets it for real); a quota is named as such."""
    target = tmp_path / "deep" / "weights.pt"
    with pytest.raises(atomic.DiskFullError) as err:
        with atomic.replacing(target, "wb") as f:
            f.write(b"half of it")
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    assert str(err.value).startswith(f"no space left on device while writing {target} (")
    assert list((tmp_path / "deep").iterdir()) == []
    quota = atomic.disk_full(target, OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
    assert str(quota).startswith(f"disk quota exceeded while writing {target}")


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_PACS.is_dir(), reason=f"real PACS data not at {SHARED_PACS}")
def test_a_full_disk_while_unpacking_pacs_removes_the_half_unpacked_folder(tmp_path, params):
    why = private_tmpfs_works(tmp_path / "probe")
    if why:
        pytest.skip(f"no real ENOSPC to be had: {why}")
    # The archive (46 MB of real images) is already downloaded, to the real disk; the data folder
    # is on a 24 MB tmpfs.
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with zipfile.ZipFile(downloads / "PACS.zip", "w", zipfile.ZIP_STORED) as z:
        for p in sorted(SHARED_PACS.glob("*/*.jpg")):
            z.write(p, f"kfold/cartoon/{p.parent.name}/{p.name}")
    params["data"].update(
        source="pacs",
        url="http://127.0.0.1:9/PACS.zip",  # never asked: the download is there
        sha256=hashlib.sha256((downloads / "PACS.zip").read_bytes()).hexdigest(),
        path="data/pacs_cartoon",
        image_size=32,
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    report = in_namespace("fetch", tmp_path, TLSTUDY_DOWNLOADS=str(downloads))
    ws = tmp_path / "ws"

    full = report["full"]
    assert full["rc"] == 2 and "Traceback" not in full["err"], full
    assert re.fullmatch(
        r"error: no space left on device while writing data/pacs_cartoon\.unpacking/\w+/pic_\d+\.jpg, unpacking the "
        r"archive into data/pacs_cartoon \([\d.]+ MiB free of 24\.0 MiB on the filesystem of "
        rf"{re.escape(str(ws))}/data\); "
        r"the half-unpacked folder was removed\. Free space there \(or move the project to a larger disk\) and run "
        rf"the same command again \(the download is kept in {re.escape(str(downloads))}\)",
        full["err"].strip(),
    ), full["err"]
    assert report["files_after_full"].keys() == {"params.yaml"}

    again = report["again"]
    assert again["rc"] == 0, again
    assert torn(report["files_after_again"]) == []
    assert json.loads((tmp_path / "out/metrics/data.json").read_text()) == {"split": "official lists"}
    rows = list(csv.DictReader(open(tmp_path / "out/manifest.csv")))
    assert collections.Counter(r["full"] for r in rows) == {"train": 1686, "val": 421, "test": 237}


def test_a_checkpoint_save_into_a_full_disk_is_said_once_and_the_run_ends_as_uninterrupted(tmp_path):
    """A real ENOSPC at the third of a run's checkpoints: one warning naming the folder, the
    partial file removed, the two states before it intact, no further save tried, and the run's
    history, selected weights and final weights those of a run without checkpoints. A state whose
    record finds no room is removed with it."""
    why = private_tmpfs_works(tmp_path / "probe")
    if why:
        pytest.skip(f"no real ENOSPC to be had: {why}")
    (tmp_path / "params.yaml").write_text("{}\n")
    report = in_namespace("checkpoint", tmp_path)
    assert "full_error" not in report, report["full_error"]
    runs = f"{tmp_path / 'ws'}/runs"
    assert len(report["lines"]) == 1, report["lines"]
    assert re.fullmatch(
        rf"test: warning: checkpoints stopped: could not write run\.e3\.pt in {re.escape(runs)} "
        r"\(No space left on device, [\d.]+ MiB free\); nothing half-written is left, and training goes on without "
        r"checkpoints until the stage ends \(a kill now loses the epochs since the last one saved\)",
        report["lines"][0],
    ), report["lines"][0]
    left = sorted(f for f in report["files_after_full"] if f.startswith("runs/"))
    assert left == ["runs/run.e1.json", "runs/run.e1.pt", "runs/run.e2.json", "runs/run.e2.pt"]
    assert torn(report["files_after_full"]) == [] and report["unreadable_after_full"] == []

    straight, full = (torch.load(tmp_path / "out" / f"{n}.pt", weights_only=True) for n in ("straight", "full"))
    assert full["checkpoints"] == 2 and straight["checkpoints"] == 0
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(full["history"]) == strip(straight["history"]) and len(straight["history"]) == 5
    for k in ("best_epoch", "best_val_acc", "diverged_epoch"):
        assert full[k] == straight[k], k
    for name in ("best_state", "model"):
        assert full[name].keys() == straight[name].keys()
        assert all(torch.equal(full[name][k], straight[name][k]) for k in straight[name]), name

    assert "record_error" not in report, report["record_error"]
    assert report["record_save"] is None and len(report["record_lines"]) == 1
    assert report["record_lines"][0].startswith(
        f"rec: warning: checkpoints stopped: could not write run.e1.json in {tmp_path / 'ws'}/record "
        "(No space left on device"
    ), report["record_lines"]
    assert not [f for f in report["files_after_record"] if f.startswith("record/")]  # no orphan state, no temp


@pytest.mark.slow
def test_a_train_stage_whose_checkpoint_finds_the_disk_full_finishes_as_an_uninterrupted_one(
    tmp_path, params, monkeypatch
):
    """The stage as a user runs it: room for its runs' weights, not for a checkpoint (saved after
    every epoch). It says so once, finishes, and its outputs are an uninterrupted run's."""
    why = private_tmpfs_works(tmp_path / "probe")
    if why:
        pytest.skip(f"no real ENOSPC to be had: {why}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same arithmetic in both runs, so equal weights
    monkeypatch.setenv("TLSTUDY_CHECKPOINT_SHARE", "1")
    # Adam: a checkpoint is the weights, the best epoch's and the two moments (~180 MB).
    params.update(lr=[0.01, 0.003], optimizer=["adam"], epochs=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    prepare(tmp_path / "straight", params)
    straight = train(tmp_path / "straight")
    out, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, out

    report = in_namespace("train_checkpoint", tmp_path)
    full = report["full"]
    assert full["rc"] == 0, full
    said = (full["out"] + full["err"]).count("warning: checkpoints stopped")
    assert said == 1 and "No space left on device" in full["err"] + full["out"], full
    assert not [f for f in report["files_after_full"] if f.startswith("work/runs/")]
    assert torn(report["files_after_full"]) == [] and report["unreadable_after_full"] == []
    straight, resumed = without_timing(tmp_path / "straight"), without_timing(tmp_path / "out")
    assert resumed[0] == straight[0] and resumed[1] == straight[1]
    assert resumed[2].keys() == straight[2].keys() == {"seed0/adam.pt"}
    state, other = straight[2]["seed0/adam.pt"], resumed[2]["seed0/adam.pt"]
    assert all(torch.equal(state[k], other[k]) for k in state)
