"""Writes that leave either the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path, mode: str = "w", fsync: bool = True):
    """Open a temp file beside `path`; on success it replaces `path` in one rename.

    The rename alone makes the write atomic for a killed process; fsync adds durability
    across a power loss, at a cost that only matters for large files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
