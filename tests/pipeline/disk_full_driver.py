"""Run inside a private mount namespace (`unshare -rm python disk_full_driver.py SCENARIO WS PARAMS
OUT`): mounts a small tmpfs on WS and runs a stage there into the full disk, records what it left,
frees space and runs the same command again. Everything it learns goes to OUT (on the real disk)
as report.json, with the final outputs copied beside it; the test reads them after the namespace
is gone.

train: prepares the workspace (fetch, stats), fills the disk but for FREE_MB and trains.
fetch: unpacks the PACS archive that TLSTUDY_DOWNLOADS (on the real disk) already holds into a
tmpfs smaller than the images, then remounts it larger.
train_checkpoint: as train, with room for a run's weights but not for its checkpoint, once.
checkpoint: a small run (test_resume.fit_tiny) saving after every epoch into a tmpfs with room
for two of its states but not a third, beside the same run without checkpoints; then a state
whose bytes fit, page for page, and whose record does not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SIZE_MB = 320
FREE_MB = 70  # room for one stored run's weights (about 45 MB for ResNet-18), not for two
# Room for two stored runs' weights (the stage's peak), not for a checkpoint of ResNet-18 with
# Adam's moments and the best epoch's weights (about 180 MB).
CHECKPOINT_FREE_MB = 110
PAGE = 4096


def stage(ws: Path, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "tlstudy", *args], cwd=ws, capture_output=True, text=True)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}


def files(ws: Path) -> dict[str, int]:
    return {p.relative_to(ws).as_posix(): p.stat().st_size for p in sorted(ws.rglob("*")) if p.is_file()}


def unreadable(ws: Path) -> list[str]:
    """Written files that do not load: a torn write would be one."""
    import torch

    bad = []
    for p in sorted(ws.rglob("*")):
        try:
            if p.suffix == ".pt":
                torch.load(p, weights_only=True)
            elif p.suffix == ".json":
                json.loads(p.read_text())
        except Exception as exc:
            bad.append(f"{p.relative_to(ws)}: {exc}")
    return bad


def fill(ws: Path, free: int, name: str = "ballast") -> None:
    """A file that leaves `free` bytes (a multiple of the page) of the filesystem free."""
    st = os.statvfs(ws)
    ballast = st.f_bavail * st.f_frsize - free
    with open(ws / name, "wb") as f:
        for size in (2**20, PAGE):
            block = b"\0" * size
            for _ in range(ballast // size):
                f.write(block)
            ballast %= size


def train(ws: Path, out: Path, free_mb: int = FREE_MB) -> dict:
    report: dict = {"prepare": [stage(ws, "fetch"), stage(ws, "stats")]}
    fill(ws, free_mb * 2**20)
    report["full"] = stage(ws, "train", "--part", "scratch")
    report["files_after_full"] = files(ws)
    report["unreadable_after_full"] = unreadable(ws)
    (ws / "ballast").unlink()
    if free_mb != FREE_MB:  # the stage is expected to have finished
        for name in ("models", "plots"):
            if (ws / name).exists():
                shutil.copytree(ws / name, out / name)
        return report
    report["again"] = stage(ws, "train", "--part", "scratch")
    report["files_after_again"] = files(ws)
    for name in ("models", "plots"):
        if (ws / name).exists():
            shutil.copytree(ws / name, out / name)
    return report


def fetch(ws: Path, out: Path) -> dict:
    report = {"full": stage(ws, "fetch"), "files_after_full": files(ws)}
    report["unreadable_after_full"] = unreadable(ws)
    subprocess.run(["mount", "-o", "remount,size=256m", str(ws)], check=True)
    report["again"] = stage(ws, "fetch")
    report["files_after_again"] = {f: n for f, n in files(ws).items() if not f.startswith("data/")}
    for name in ("manifest.csv", "metrics/data.json"):
        if (ws / name).exists():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ws / name, out / name)
    return report


def pages(n: int) -> int:
    return -(-n // PAGE) * PAGE


def checkpoint(ws: Path, out: Path) -> dict:
    import io

    import torch
    from test_resume import fit_tiny

    from tlstudy.training import resume

    def outcome(result, model) -> dict:
        keep = ("history", "best_epoch", "best_val_acc", "best_state", "diverged_epoch", "checkpoints")
        return {k: getattr(result, k) for k in keep} | {"model": model.state_dict()}

    run = dict(optimizer="sgd", trainable="head", schedule="cosine", epochs=5)  # a state of a few KB
    measured = out / "measured"  # on the real disk: the size of each state
    measure = resume.Checkpoints(measured, "run", "measure", log=lambda line: None, share=1)
    sizes = []
    real_save = measure.save
    measure.save = lambda e, s: (real_save(e, s), sizes.append((measured / f"run.e{e}.pt").stat().st_size))[0]
    fit_tiny(measure, **run)
    torch.save(outcome(*fit_tiny(None, **run)), out / "straight.pt")

    # Room for the states of epochs 1 and 2 with their records, and half of the third.
    folder = ws / "runs"
    folder.mkdir()
    fill(ws, 2 * (pages(sizes[0]) + PAGE) + pages(sizes[2] // 2))
    lines: list[str] = []
    report: dict = {"sizes": sizes}
    try:
        full = fit_tiny(resume.Checkpoints(folder, "run", "test", log=lines.append, share=1), **run)
        torch.save(outcome(*full), out / "full.pt")
    except Exception as exc:  # noqa: BLE001 (the test reports it)
        report["full_error"] = f"{type(exc).__name__}: {exc}"
    report |= {"lines": lines, "files_after_full": files(ws)}
    report["unreadable_after_full"] = unreadable(ws)
    (ws / "ballast").unlink()
    shutil.rmtree(folder)

    # A state whose bytes take exactly the free pages: its record finds no room.
    state = {"epoch": 1, "weights": torch.arange(40_000, dtype=torch.float32)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    record_dir = ws / "record"
    record_dir.mkdir()
    fill(ws, pages(len(buffer.getvalue())))
    lines = []
    try:
        saved = resume.Checkpoints(record_dir, "run", "rec", log=lines.append, share=1).save(1, state)
        report["record_save"] = saved
    except Exception as exc:  # noqa: BLE001
        report["record_error"] = f"{type(exc).__name__}: {exc}"
    report |= {"record_lines": lines, "files_after_record": files(ws)}
    return report


def main(scenario: str, ws: Path, params: Path, out: Path) -> None:
    size = {"train": SIZE_MB, "train_checkpoint": SIZE_MB, "fetch": 24, "checkpoint": 4}[scenario]
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}m", "tmpfs", str(ws)], check=True)
    shutil.copy(params, ws / "params.yaml")
    scenarios = {
        "train": train,
        "train_checkpoint": lambda ws, out: train(ws, out, CHECKPOINT_FREE_MB),
        "fetch": fetch,
        "checkpoint": checkpoint,
    }
    report = scenarios[scenario](ws, out)
    (out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
