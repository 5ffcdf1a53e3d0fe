"""Lock files that several users share: the GPU claims (engine.claim_gpu, in the temp folder or
TLSTUDY_LOCK_DIR) and the turns on a download (download.py, in a cache that containers started
with `docker run --user` share).

A lock is flock(2) on an open file, so the OS releases it when the process ends, even after a
kill. The file is created readable and writable by everyone, whatever the umask (it holds no
data, and NFS emulates flock with POSIX locks, which want a descriptor open for writing); one
that exists is opened without O_CREAT, which fs.protected_regular refuses for another user's file
in a sticky folder such as /tmp. A lock file or folder this user cannot open is one LockError.

Not filelock (4.3): in a sticky folder it refuses a lock file that another user created ("lock
file belongs to uid …"), the very case these locks are shared for.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from tlstudy.lib.errors import StudyError

MODE = 0o666


class LockError(StudyError):
    """A lock file this process may not open; the message names it and what to change."""


def open_lock(path: Path, instead: str) -> int:
    """A descriptor open for reading and writing on the lock file `path`, which is created if
    missing. `instead` ends the error's advice (`or set TLSTUDY_LOCK_DIR to …`)."""
    while True:
        try:
            return os.open(path, os.O_RDWR)
        except FileNotFoundError:
            pass
        except PermissionError as exc:
            raise denied(path, instead) from exc
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, MODE)
        except FileExistsError:
            continue  # another process created it in between: open theirs
        except PermissionError as exc:
            raise denied(path, instead) from exc
        try:
            os.fchmod(fd, MODE)  # the umask took group and others' write away
        except OSError:
            pass  # a filesystem without modes (some network mounts): the lock works all the same
        return fd


def try_lock(fd: int) -> bool:
    """Take the lock if no other process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise
    return True


def denied(path: Path, instead: str) -> LockError:
    """The one-line error for a lock file this process may not open or create."""
    user = f"uid {os.geteuid()}"
    try:
        st = path.stat()
    except OSError:
        folder = path.parent
        try:
            st = folder.stat()
            whose = f"uid {st.st_uid}'s, mode {stat.S_IMODE(st.st_mode):o}"
        except OSError:
            whose = "not readable"
        return LockError(
            f"lock file {path}: permission denied: {user} may not create files in {folder} ({whose}); "
            f"make the folder writable by your group (`chmod g+w {folder}`), {instead}"
        )
    return LockError(
        f"lock file {path}: permission denied: it is uid {st.st_uid}'s with mode {stat.S_IMODE(st.st_mode):o}, "
        f"which {user} may not write; `chmod 666 {path}` as its owner (or remove it while no process holds it), "
        f"{instead}"
    )
