"""Writes that leave either the old file or the new one, never a torn one.

A write the disk has no room for (ENOSPC, or EDQUOT over a quota) raises DiskFullError: one
message naming the file, the folder and its free space, after the temp file is removed; cli.main
prints it as one `error:` line."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tlstudy.lib.errors import StudyError

SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(StudyError, RuntimeError):
    """A write that the disk had no room (or no quota) for."""


def out_of_space(exc: BaseException | None) -> OSError | None:
    """The ENOSPC or EDQUOT error behind `exc`, if any. The chain is searched because torch.save
    reports a failed write as a RuntimeError ("unexpected pos …") whose context is the OSError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def free_space(path: str | Path) -> tuple[int, int] | None:
    """(free, total) bytes of the filesystem holding `path` (or its nearest existing parent), as
    an unprivileged process may use them; None where the system will not say."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


RERUN = "run the same command again: a training stage resumes from the runs it had finished (work/runs/)"


def disk_full(
    path: str | Path | None,
    exc: OSError,
    left: str = "nothing half-written was left behind",
    then: str = RERUN,
    doing: str = "",
) -> DiskFullError:
    """The one-line error for a write of `path` that failed with ENOSPC or EDQUOT; call it after
    the partial output is removed, so that the free space it reports is what is left."""
    reason = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on device"
    if path is None:
        path = exc.filename
    if path is None:
        return DiskFullError(f"{reason} ({exc}); free some space and {then}")
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    space = free_space(folder)
    room = f"{_size(space[0])} free of {_size(space[1])}" if space else "free space unknown"
    return DiskFullError(
        f"{reason} while writing {path}{doing} ({room} on the filesystem of {folder}); {left}. "
        f"Free space there (or move the project to a larger disk) and {then}"
    )


def _umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def replacing(path: str | Path, mode: str = "w", fsync: bool = True):
    """Open a temp file beside `path`; on success it replaces `path` in one rename.

    The rename alone makes the write atomic for a killed process; fsync adds durability
    across a power loss, at a cost that only matters for large files. The file gets the mode the
    umask gives a new file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if out_of_space(exc) is not None:
            raise disk_full(path, exc) from exc
        raise
    try:
        # mkstemp makes the file 0600; an output gets the mode any new file would (0644 under
        # umask 022, 0664 under 002), so a shared cache's group and a host user reading what a
        # container wrote can read it.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = out_of_space(exc)
        if full is not None:
            raise disk_full(path, full) from exc
        raise


def write_json(path: str | Path, obj) -> None:
    with replacing(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with replacing(path) as f:
        f.write(text)


def torch_save(path: str | Path, obj) -> None:
    """Weights and caches: atomic, not fsynced (tens of MB each; a lost file after a power cut
    only makes DVC or the resume store re-run the work)."""
    import torch

    with replacing(path, "wb", fsync=False) as f:
        torch.save(obj, f)


def save_figure(fig, path: str | Path, **savefig_kwargs) -> Path:
    """A matplotlib figure as PNG, written atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    with replacing(path, "wb", fsync=False) as f:
        fig.savefig(f, format="png", **savefig_kwargs)
    plt.close(fig)
    return Path(path)
