"""A second user for the tests of shared lock files: a function run in a forked child that gave
up root for nobody (uid and gid 65534, no other groups). Forked rather than started anew: the
child needs this interpreter, which may live where nobody may not read (a venv whose Python is
under /root). The folder both share is conftest's `shared` fixture."""

from __future__ import annotations

import os
import pickle

import pytest

from tlstudy.lib.errors import StudyError

NOBODY = 65534


def run(fn, *args, user: int | None = NOBODY, umask: int = 0o022) -> dict:
    """What `fn(*args)` did in a child process as `user` (None: as this one) under `umask`:
    {"returned": repr} or {"raised": type name, "message": str, "study_error": bool}."""
    if user is not None and os.geteuid() != 0:
        pytest.skip("acting as a second user needs root")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        try:
            os.close(read)
            os.umask(umask)
            if user is not None:
                os.setgroups([])
                os.setgid(user)
                os.setuid(user)
            try:
                out = {"returned": repr(fn(*args))}
            except BaseException as exc:  # noqa: BLE001 (reported to the parent, which asserts on it)
                out = {"raised": type(exc).__name__, "message": str(exc), "study_error": isinstance(exc, StudyError)}
            with os.fdopen(write, "wb") as f:
                f.write(pickle.dumps(out))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)
