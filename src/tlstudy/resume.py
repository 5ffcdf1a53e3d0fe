"""Finished runs of a part, kept on disk while its grid trains, so a killed stage resumes.

DVC deletes a stage's outputs before running it, so the runs live outside them, in
`work/runs/<part>/`. A run is stored under a key that hashes everything that determines it
(the code its stage runs, the data, params and the run's own settings): a changed input never
resumes a stale run. The JSON record is written last, after the weights, so a run that has a
record is complete; a run killed half-way has none and trains again from its start. The
directory is removed when the stage finishes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from tlstudy import deps, engine
from tlstudy.atomic import torch_save, write_json

CHUNK = 1 << 24


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path) -> str:
    """A file's sha256, read in chunks: the decoded images at 227 px are ~350 MiB."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(params: dict, spec: dict, inputs: list[Path], command: str) -> str:
    """A key for the runs of one part (or backbone) whose settings are `spec`: the code the stage
    command runs (the files dvc.yaml lists as its deps, deps.files), its inputs by content and
    the params that shape a run."""
    h = hashlib.sha256()
    for path in deps.code_paths(command):
        h.update(path.read_bytes())
    for path in inputs:
        h.update(file_sha(path).encode())
    keys = (
        "seed",
        "epochs",
        "batch_size",
        "precision",
        "sgd",
        "adam",
        "imagenet_weights",
        "data",
        "fewshot",
        "augmentations",
    )
    h.update(json.dumps({k: params[k] for k in keys} | {"part": spec}, sort_keys=True).encode())
    return h.hexdigest()


class RunStore:
    def __init__(self, part: str, base: str, root: Path = Path("work/runs")):
        self.dir = root / part
        self.base = base

    def _key(self, run: engine.Run) -> str:
        return _sha(f"{self.base}|{run.optimizer}|{run.lr!r}|{run.variant}".encode())[:20]

    def load(self, run: engine.Run) -> engine.Result | None:
        record = self.dir / f"{self._key(run)}.json"
        if not record.exists():
            return None
        saved = json.loads(record.read_text())
        return engine.Result(
            run,
            history=saved["history"],
            best_epoch=saved["best_epoch"],
            best_val_acc=saved["best_val_acc"],
            diverged_epoch=saved["diverged_epoch"],
        )

    def state(self, run: engine.Run) -> dict:
        return torch.load(self.dir / f"{self._key(run)}.pt", map_location="cpu", weights_only=True)

    def save(self, result: engine.Result, keep_state: bool) -> None:
        """Store a finished run; its weights only while it is its group's pick."""
        key = self._key(result.run)
        if keep_state and result.best_state is not None:
            torch_save(self.dir / f"{key}.pt", result.best_state)
        record = {
            "history": result.history,
            "best_epoch": result.best_epoch,
            "best_val_acc": result.best_val_acc,
            "diverged_epoch": result.diverged_epoch,
        }
        write_json(self.dir / f"{key}.json", record)

    def drop_state(self, run: engine.Run) -> None:
        (self.dir / f"{self._key(run)}.pt").unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
