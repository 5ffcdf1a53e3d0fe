"""Runs of a part, kept on disk while its grid trains, so a killed stage resumes where it was.

DVC deletes a stage's outputs before running it, so the runs live outside them, in
`work/runs/<part>/`. A run is stored under a key that hashes everything that determines it
(the code its stage runs, the data, params, the run's own settings, and the device kind,
precision and layout the engine chose for `precision: auto`): a changed input never resumes a
stale run, and a job requeued onto another kind of node never continues one computed there in
another precision. A finished run is a JSON record, written last, after its weights. A run in
progress is its checkpoints (`Checkpoints`): the engine's whole state after an epoch, so a kill
loses at most the epochs since the last one. The directory is removed when the stage finishes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import torch

from tlstudy import deps, engine
from tlstudy.atomic import replacing, torch_save, write_json

CHUNK = 1 << 24
# The largest share of a run's wall time its checkpoints may cost (TLSTUDY_CHECKPOINT_SHARE
# overrides it; 1 saves after every epoch, as the tests do). A 64 px epoch of the offline
# profile takes seconds and a checkpoint of a ResNet-18 with Adam's moments ~140 MB, so there a
# save comes every few epochs; a 227 px epoch takes a minute, and every epoch is saved.
CHECKPOINT_SHARE = 0.05
SHARE_ENV = "TLSTUDY_CHECKPOINT_SHARE"
# What a first save is assumed to cost before one has been timed.
FIRST_SAVE_S = 1.0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path) -> str:
    """A file's sha256, read in chunks: the decoded images at 227 px are ~350 MiB."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(params: dict, spec: dict, inputs: list[Path], command: str, speed: engine.Speed) -> str:
    """A key for the runs of one part (or backbone) whose settings are `spec`: the code the stage
    command runs (the files dvc.yaml lists as its deps, deps.files), its inputs by content, the
    params that shape a run, and what the engine computes them as here (`speed.kind`: `auto`
    is a choice of the machine, and the key holds what was chosen)."""
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
    settings = {k: params[k] for k in keys} | {"part": spec, "computed_as": speed.kind}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def checkpoint_share() -> float:
    raw = os.environ.get(SHARE_ENV)
    if raw is None:
        return CHECKPOINT_SHARE
    try:
        share = float(raw)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        from tlstudy.errors import StudyError

        raise StudyError(f"{SHARE_ENV}={raw!r}: expected a share of the run's time in (0, 1], e.g. 0.05")
    return share


class Checkpoints:
    """The states of one run in progress: `<key>.e<epoch>.pt`, each followed by its record
    `<key>.e<epoch>.json` (size and sha256). The bytes are fsynced before the record is written,
    so a state with a record matching it is complete; a torn or corrupt one (a power cut, a bad
    disk) fails its check, is said in one line, and the one before it is used. The newest two
    are kept, the older ones removed once a new one is complete.

    A save is due when the time since the last one is long enough that the last save's cost is
    at most `share` of it; the states themselves do not depend on when they are taken."""

    def __init__(self, folder: Path, key: str, label: str, log=print, share: float | None = None):
        self.folder, self.key, self.label, self.log = folder, key, label, log
        self.share = checkpoint_share() if share is None else share
        self.cost = FIRST_SAVE_S
        self.since = time.monotonic()

    def _paths(self, epoch: int) -> tuple[Path, Path]:
        stem = f"{self.key}.e{epoch}"
        return self.folder / f"{stem}.pt", self.folder / f"{stem}.json"

    def epochs(self) -> list[int]:
        """Epochs with a state file or a record on disk, newest first."""
        found = set()
        for path in self.folder.glob(f"{self.key}.e*.*"):
            m = re.fullmatch(rf"{re.escape(self.key)}\.e(\d+)\.(?:pt|json)", path.name)
            if m:
                found.add(int(m[1]))
        return sorted(found, reverse=True)

    def _read(self, epoch: int) -> dict | str:
        """The state saved after `epoch`, or why it cannot be used."""
        pt, record = self._paths(epoch)
        try:
            meta = json.loads(record.read_text())
            data = pt.read_bytes()
        except FileNotFoundError as exc:
            return f"incomplete ({Path(exc.filename).name} is missing)"
        except (OSError, ValueError) as exc:
            return f"unreadable ({exc})"
        if not isinstance(meta, dict) or len(data) != meta.get("bytes") or _sha(data) != meta.get("sha256"):
            return "torn or corrupt (its size or sha256 differs from its record)"
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 (a file that passed its hash but does not load)
            return f"unreadable by torch.load ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        if not isinstance(state, dict) or state.get("epoch") != epoch:
            return "not a state of this run"
        return state

    def latest(self) -> dict | None:
        for epoch in self.epochs():
            state = self._read(epoch)
            if isinstance(state, dict):
                self.log(f"{self.label}: continuing after epoch {epoch}, from its checkpoint")
                self.since = time.monotonic()
                return state
            earlier = "the one before it" if any(e < epoch for e in self.epochs()) else "the run's start"
            self.log(f"{self.label}: warning: the checkpoint of epoch {epoch} is {state}; continuing from {earlier}")
            for path in self._paths(epoch):
                path.unlink(missing_ok=True)
        return None

    def due(self) -> bool:
        elapsed = time.monotonic() - self.since
        return self.cost <= self.share * (elapsed + self.cost)

    def save(self, epoch: int, state: dict) -> float:
        """Write the state after `epoch`; returns the seconds it took."""
        start = time.monotonic()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        pt, record = self._paths(epoch)
        with replacing(pt, "wb") as f:
            f.write(data)
        write_json(record, {"epoch": epoch, "bytes": len(data), "sha256": _sha(data)})
        for old in self.epochs()[2:]:
            for path in self._paths(old):
                path.unlink(missing_ok=True)
        self.since = time.monotonic()
        self.cost = self.since - start
        return self.cost

    def clear(self) -> None:
        for epoch in self.epochs():
            for path in self._paths(epoch):
                path.unlink(missing_ok=True)


class RunStore:
    def __init__(self, part: str, base: str, root: Path = Path("work/runs")):
        self.dir = root / part
        self.base = base

    def _key(self, run: engine.Run) -> str:
        return _sha(f"{self.base}|{run.optimizer}|{run.lr!r}|{run.variant}".encode())[:20]

    def checkpoints(self, run: engine.Run, label: str, log=print) -> Checkpoints:
        return Checkpoints(self.dir, self._key(run), label, log)

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
        Checkpoints(self.dir, key, "").clear()  # the record replaces them

    def drop_state(self, run: engine.Run) -> None:
        (self.dir / f"{self._key(run)}.pt").unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
