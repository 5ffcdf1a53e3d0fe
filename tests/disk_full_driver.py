"""Run inside a private mount namespace (`unshare -rm python disk_full_driver.py SCENARIO WS PARAMS
OUT`): mounts a small tmpfs on WS and runs a stage there into the full disk, records what it left,
frees space and runs the same command again. Everything it learns goes to OUT (on the real disk)
as report.json, with the final outputs copied beside it; the test reads them after the namespace
is gone.

train: prepares the workspace (fetch, stats), fills the disk but for FREE_MB and trains.
fetch: unpacks the PACS archive that TLSTUDY_DOWNLOADS (on the real disk) already holds into a
tmpfs smaller than the images, then remounts it larger."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SIZE_MB = 320
FREE_MB = 70  # room for one stored run's weights (about 45 MB for ResNet-18), not for two


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


def train(ws: Path, out: Path) -> dict:
    report: dict = {"prepare": [stage(ws, "fetch"), stage(ws, "stats")]}
    st = os.statvfs(ws)
    ballast = st.f_bavail * st.f_frsize - FREE_MB * 2**20
    with open(ws / "ballast", "wb") as f:
        block = b"\0" * 2**20
        for _ in range(ballast // len(block)):
            f.write(block)
    report["full"] = stage(ws, "train", "--part", "scratch")
    report["files_after_full"] = files(ws)
    report["unreadable_after_full"] = unreadable(ws)
    (ws / "ballast").unlink()
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


def main(scenario: str, ws: Path, params: Path, out: Path) -> None:
    size = {"train": SIZE_MB, "fetch": 24}[scenario]
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}m", "tmpfs", str(ws)], check=True)
    shutil.copy(params, ws / "params.yaml")
    report = {"train": train, "fetch": fetch}[scenario](ws, out)
    (out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
