"""Finished runs of a part, kept on disk while its grid trains, so a killed stage resumes.

DVC deletes a stage's outputs before running it, so the runs live outside them, in
`work/runs/<part>/`. A run is stored under a key that hashes everything that determines it
(the code of the engine, the data, params and the run's own settings): a changed input never
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

from tlstudy import engine
from tlstudy.atomic import torch_save, write_json

CODE = ("engine.py", "models.py", "augment.py", "train.py", "pretrain.py", "resume.py")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(params: dict, spec: dict, inputs: list[Path]) -> str:
    """A key for the runs of one part (or backbone) whose settings are `spec`."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in CODE:
        h.update((here / name).read_bytes())
    for path in inputs:
        h.update(
            _sha(path.read_bytes()).encode() if path.stat().st_size < 1 << 26 else str(path.stat().st_size).encode()
        )
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
