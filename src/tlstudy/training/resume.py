"""Runs of a part, kept on disk while its grid trains, so a killed stage resumes where it was.

DVC deletes a stage's outputs before running it, so the runs live outside them, in
`work/runs/<part>/`. A run is stored under a key that hashes everything that determines it
(the code its stage runs, the data, params, the run's own settings, and the device kind,
precision and layout the engine chose for `precision: auto`): a changed input never resumes a
stale run, and a job requeued onto another kind of node never continues one computed there in
another precision. A finished run is a JSON record, written last, after its weights. A run in
progress is its checkpoints (`Checkpoints`): the engine's whole state after an epoch, so a kill
loses at most the epochs since the last one. The directory is removed when the stage finishes.

The key also holds what makes two machines (or two tries on one) compute a run differently
(`environment`): torch's and torchvision's versions, and on a CPU the thread count and what picks
the kernels, on CUDA the GPU. In the key rather than checked in a checkpoint, because a finished
run's record is resumed by the same key and would otherwise be reused from another environment.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import torch

from tlstudy import deps
from tlstudy import params as P
from tlstudy.lib import cpu
from tlstudy.lib.atomic import free_space, replacing, torch_save, write_json
from tlstudy.lib.errors import StudyError
from tlstudy.training import engine

CHUNK = 1 << 24
# The largest share of a run's wall time its checkpoints may cost (TLSTUDY_CHECKPOINT_SHARE
# overrides it; 1 saves after every epoch, as the tests do; 0 saves none). A 64 px epoch of the
# offline profile takes seconds and a checkpoint of a ResNet-18 with Adam's moments ~140 MB, so
# there a save comes every few epochs; a 227 px epoch takes a minute, and every epoch is saved.
CHECKPOINT_SHARE = 0.05
SHARE_ENV = "TLSTUDY_CHECKPOINT_SHARE"
# What a first save is assumed to cost before one has been timed.
FIRST_SAVE_S = 1.0
# Top-level params outside the key: a run's own key holds its optimizer and lr and its store's
# base its seed; `spec` is the part's (or backbone's) own section, so the other sections stay
# out; `inspect` trains nothing. Every other key of params.TOP_KEYS is in it, a new one too.
OUTSIDE_KEY = frozenset({"seeds", "lr", "optimizer", "parts", "transfer", "pretrain", "inspect"})
# What caps the kernels PyTorch picks on a CPU (oneDNN's ISA under both its names, ATen's, MKL's).
KERNEL_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path) -> str:
    """A file's sha256, read in chunks: the decoded images at 227 px are ~350 MiB."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


@functools.cache
def _cpu_kernels() -> dict:
    """What decides the kernels oneDNN, ATen and MKL run here, read in this process: oneDNN's ISA
    is a function of the processor's flags, its cap and its version (torch's), and asking oneDNN
    itself (cpu.onednn_isa) costs a child process that imports torch."""
    return {"vendor": cpu.vendor(), "flags": cpu.cpuinfo()[1], "aten": torch.backends.cpu.get_cpu_capability()}


def environment(device: torch.device) -> dict:
    """What, beyond code, data and params, decides a run's numbers: the library versions; on a
    CPU the thread count (how every reduction is split) and the kernels; on CUDA the GPU, its
    CUDA and cuDNN (CPU threads compute none of a CUDA run's numbers)."""
    import torchvision

    env = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else None
        return env | {"gpu": name, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    caps = {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}
    return env | {"threads": torch.get_num_threads(), "kernels": _cpu_kernels() | {"caps": caps}}


def files_sha(root: Path, names: list[str]) -> str:
    """The files `names` under `root` by name and content: a source image rewritten, added,
    removed or moved to another class folder (its label) changes it."""
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(f"{name}\0{file_sha(root / name)}\n".encode())
    return h.hexdigest()


def fingerprint(
    params: dict,
    spec: dict,
    inputs: list[Path],
    command: str,
    speed: engine.Speed,
    images: tuple[Path, list[str]] | None = None,
) -> str:
    """A key for the runs of one part (or backbone) whose settings are `spec`: the code the stage
    command runs (the files dvc.yaml lists as its deps, deps.files), its inputs by content, the
    source `images` (a folder and the files under it the run reads) by name and content, the
    params that shape a run, what the engine computes them as here (`speed.kind`: `auto` is a
    choice of the machine, and the key holds what was chosen), and the `environment`."""
    h = hashlib.sha256()
    for path in deps.code_paths(command):
        h.update(path.read_bytes())
    for path in inputs:
        h.update(file_sha(path).encode())
    if images is not None:
        h.update(files_sha(*images).encode())
    settings = {k: params[k] for k in sorted(P.TOP_KEYS - OUTSIDE_KEY)} | {"part": spec, "computed_as": speed.kind}
    settings["environment"] = environment(speed.device)
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
    if not 0 <= share <= 1:
        raise StudyError(
            f"{SHARE_ENV}={raw!r}: expected a share of the run's time in [0, 1], e.g. 0.05 (0 turns checkpoints off)"
        )
    return share


class _Hashing:
    """The file a checkpoint is written to, hashing and counting the bytes as torch.save streams
    them: the state is never held serialized in memory beside itself."""

    def __init__(self, f):
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0
        self.error: OSError | None = None  # torch.save may report a failed write without its cause

    def write(self, data) -> int:
        try:
            n = self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.sha.update(data)
        self.bytes += memoryview(data).nbytes
        return n

    def flush(self) -> None:
        self.f.flush()


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind `exc` (atomic.DiskFullError and torch's RuntimeError wrap it), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _remove(path: Path) -> None:
    """Delete a file if it is there; one that cannot be deleted now is left for the next clean-up."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


# Folders (a stage's run store) whose checkpoint saves failed in this process: no save is tried
# there again, so a full disk costs one failed write and one warning per stage.
_stopped: set[Path] = set()


class Checkpoints:
    """The states of one run in progress: `<key>.e<epoch>.pt`, each followed by its record
    `<key>.e<epoch>.json` (size and sha256). The bytes are fsynced before the record is written,
    so a state with a record matching it is complete; a torn or corrupt one (a power cut, a bad
    disk) fails its check, is said in one line and deleted, and the one before it is used. One
    that cannot be read now (an OSError: EIO, ESTALE on NFS) is said and kept, and the one before
    it is used. The newest two are kept, the older ones removed once a new one is complete.

    A save is due when the time since the last one is long enough that the last save's cost is
    at most `share` of it; the states themselves do not depend on when they are taken. A save that
    fails (a full disk) is said once, leaves nothing behind, and ends the saves of every run
    sharing `scope` in this process: the run trains on and ends as it would have."""

    def __init__(
        self, folder: Path, key: str, label: str, log=print, share: float | None = None, scope: Path | None = None
    ):
        self.folder, self.key, self.label, self.log = folder, key, label, log
        self.share = checkpoint_share() if share is None else share
        self.scope = Path(scope or folder).absolute()
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

    def _read(self, epoch: int) -> dict | tuple[str, bool]:
        """The state saved after `epoch`, or why it cannot be used and whether that proves it bad
        (an OSError does not: the same read may work on the next try)."""
        pt, record = self._paths(epoch)
        try:
            meta = json.loads(record.read_text())
            sha = file_sha(pt)  # in chunks, then loaded from the file: never its bytes and its tensors at once
            size = pt.stat().st_size
        except FileNotFoundError as exc:
            return f"incomplete ({Path(exc.filename).name} is missing)", True
        except ValueError as exc:
            return f"torn or corrupt (its record is not JSON: {exc})", True
        except OSError as exc:
            return f"unreadable here ({exc})", False
        if not isinstance(meta, dict) or size != meta.get("bytes") or sha != meta.get("sha256"):
            return "torn or corrupt (its size or sha256 differs from its record)", True
        try:
            state = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 (a file that passed its hash but does not load)
            io_error = _os_error(exc)
            if io_error is not None:
                return f"unreadable here ({io_error})", False
            return f"unreadable by torch.load ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})", True
        if not isinstance(state, dict) or state.get("epoch") != epoch:
            return "not a state of this run", True
        return state

    def latest(self) -> dict | None:
        for epoch in self.epochs():
            state = self._read(epoch)
            if isinstance(state, dict):
                self.log(f"{self.label}: continuing after epoch {epoch}, from its checkpoint")
                self.since = time.monotonic()
                return state
            why, bad = state
            earlier = "the one before it" if any(e < epoch for e in self.epochs()) else "the run's start"
            if bad:
                self.log(f"{self.label}: warning: the checkpoint of epoch {epoch} is {why}; continuing from {earlier}")
                for path in self._paths(epoch):
                    _remove(path)
            else:
                self.log(
                    f"{self.label}: warning: the checkpoint of epoch {epoch} is {why}; kept (it may read next time), "
                    f"continuing from {earlier}"
                )
        return None

    def due(self) -> bool:
        if not self.share or self.scope in _stopped:
            return False
        elapsed = time.monotonic() - self.since
        return self.cost <= self.share * (elapsed + self.cost)

    def save(self, epoch: int, state: dict) -> float | None:
        """Write the state after `epoch`; returns the seconds it took, or None where it could not
        be written (said once; the saves stop)."""
        if not self.share or self.scope in _stopped:
            return None
        start = time.monotonic()
        pt, record = self._paths(epoch)
        out = None
        writing = pt
        try:
            with replacing(pt, "wb") as f:  # fsynced before its record says it is complete
                out = _Hashing(f)
                torch.save(state, out)
            writing = record
            try:
                write_json(record, {"epoch": epoch, "bytes": out.bytes, "sha256": out.sha.hexdigest()})
            except BaseException:
                _remove(pt)  # a state without its record is never used: no orphan
                raise
        except Exception as exc:
            error = _os_error(exc) or (out.error if out is not None else None)
            if error is None:
                raise
            self._stop(writing, error)
            return None
        for old in self.epochs()[2:]:
            for path in self._paths(old):
                _remove(path)
        self.since = time.monotonic()
        self.cost = self.since - start
        return self.cost

    def _stop(self, path: Path, error: OSError) -> None:
        _stopped.add(self.scope)
        why = error.strerror or str(error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT) and (space := free_space(self.folder)) is not None:
            why += f", {space[0] / 2**20:.1f} MiB free"
        self.log(
            f"{self.label}: warning: checkpoints stopped: could not write {path.name} in {self.folder} ({why}); "
            "nothing half-written is left, and training goes on without checkpoints until the stage ends "
            "(a kill now loses the epochs since the last one saved)"
        )

    def clear(self) -> None:
        for epoch in self.epochs():
            for path in self._paths(epoch):
                path.unlink(missing_ok=True)


class RunStore:
    def __init__(self, part: str, base: str, root: Path = Path("work/runs")):
        self.dir = root / part
        self.root = root
        self.base = base

    def _key(self, run: engine.Run) -> str:
        return _sha(f"{self.base}|{run.optimizer}|{run.lr!r}|{run.variant}".encode())[:20]

    def checkpoints(self, run: engine.Run, label: str, log=print) -> Checkpoints:
        return Checkpoints(self.dir, self._key(run), label, log, scope=self.root)

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
