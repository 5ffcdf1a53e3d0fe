"""A plain HTTP(S) download with resume, bounded retries, timeouts, progress and a checksum.

The bytes go to `<dest>.part`; a retry resumes it with a Range request, and only a file whose
sha256 matches is renamed to `dest`. A connection cut mid-body — a short read, or a chunked
response that stops before its last chunk (http.client.IncompleteRead, which is no OSError) — is
retried like any dropped connection; a 429 or 503 waits what its Retry-After asks (up to
MAX_WAIT_S) before the next try. A wrong checksum removes the partial file. A full disk stops the
download at once (atomic.DiskFullError) and keeps the partial file for the next try. Progress is
shown as the training's is: a bar on a terminal, a line every 20 s elsewhere.

Processes that fetch the same file into one folder (Slurm jobs sharing a download folder) take
turns on `<dest>.lock` (flock, released by the OS even after a kill; created writable by every
user of the folder, locks.py): one downloads, the others wait, then find the verified file and
reuse it.

Kept by hand rather than `pooch` or `huggingface_hub.hf_hub_download` (issue 35): pooch resumes
nothing (a retry starts the archive over), honours no Retry-After and takes no lock between
processes; hf_hub_download wants the Hub's API in front of `data.url` (a user's mirror or the
tests' server on 127.0.0.1 would have to imitate it). Each property above is tested here against
a real HTTP server; the lock is tlstudy.lib.locks (a flock on a file every user may open).
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from tlstudy.lib import locks
from tlstudy.lib.atomic import disk_full, out_of_space
from tlstudy.lib.errors import StudyError
from tlstudy.lib.progress import Transfer

CHUNK = 1 << 20
MAX_WAIT_S = 600.0  # the longest Retry-After honoured: a server asking for more is not waited out


class DownloadError(StudyError, RuntimeError):
    pass


class NotWritable(StudyError):
    """A download file or folder this user may not write (one shared with other users)."""


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def retry_after(exc: urllib.error.HTTPError, now: float | None = None) -> float | None:
    """Seconds a 429/503 response asks to wait (Retry-After: seconds or an HTTP date), or None."""
    value = (exc.headers.get("Retry-After") or "").strip() if exc.headers is not None else ""
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _fetch_once(url: str, part: Path, timeout: float, progress: Transfer) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "tlstudy"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # we already hold every byte
            return
        raise
    with response:
        resumed = response.status == 206
        expected = response.headers.get("Content-Length")
        expected = int(expected) if expected is not None else None
        progress.start(have if resumed else 0, (have if resumed else 0) + expected if expected is not None else None)
        got = 0
        with open(part, "ab" if resumed else "wb") as f:
            for block in _blocks(response):
                f.write(block)
                got += len(block)
                progress.update(len(block))
        if expected is not None and got < expected:
            raise ConnectionError(f"connection closed after {got} of {expected} bytes")
    progress.finish()


def _blocks(response):
    """The body in blocks; a chunked body cut mid-way still hands over what arrived before the
    read fails (IncompleteRead carries it), so that the retry resumes after those bytes."""
    while True:
        try:
            block = response.read(CHUNK)
        except http.client.IncompleteRead as exc:
            yield exc.partial
            raise
        if not block:
            return
        yield block


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 2.0,
    log=print,
    progress: Transfer | None = None,
) -> Path:
    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _turn(dest, log):
        # Another process may have finished it while this one waited.
        if dest.exists() and (sha256 is None or sha256_of(dest) == sha256):
            log(f"download: {dest.name}: downloaded meanwhile by another process; using it")
            return dest
        return _download(url, dest, sha256, retries, timeout, backoff, log, progress)


@contextlib.contextmanager
def _turn(dest: Path, log):
    """Hold `<dest>.lock` for the download; wait, saying so once, while another process holds it.
    The lock file is shared by every user of the folder (locks.py)."""
    fd = locks.open_lock(dest.with_name(dest.name + ".lock"), "or set TLSTUDY_DOWNLOADS to a folder of your own")
    try:
        if not locks.try_lock(fd):
            log(f"download: {dest.name}: another process is downloading it into {dest.parent}; waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _download(url, dest: Path, sha256, retries, timeout, backoff, log, progress) -> Path:
    part = dest.with_name(dest.name + ".part")
    progress = progress or Transfer(dest.name)
    last: Exception | None = None
    for attempt in range(1, retries + 1):
        asked = None
        try:
            _fetch_once(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as exc:
            last = exc
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            if exc.code in (429, 503):
                asked = retry_after(exc)
        except PermissionError as exc:
            # Another user's partial file, or a folder this user may not write: no retry changes that.
            raise NotWritable(
                f"{exc.filename or part}: permission denied for uid {os.geteuid()}; remove the partial download or "
                "make it and its folder writable by your group, or set TLSTUDY_DOWNLOADS to a folder of your own"
            ) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, http.client.HTTPException) as exc:
            # A full disk does not clear by waiting: say so now instead of after every retry.
            full = out_of_space(exc)
            if full is not None:
                have = part.stat().st_size if part.exists() else 0
                kept = f"the partial download ({have} bytes) is kept"
                raise disk_full(part, full, left=kept, then="run the same command again: the download resumes") from exc
            last = exc
        finally:
            progress.close()
        if attempt < retries:
            wait = backoff * 2 ** (attempt - 1)
            said = ""
            if asked is not None:
                wait = max(wait, min(asked, MAX_WAIT_S))
                capped = f", capped at {MAX_WAIT_S:.0f} s" if asked > MAX_WAIT_S else ""
                said = f" (Retry-After: {asked:.0f} s{capped})"
            log(f"download: attempt {attempt}/{retries} failed ({_why(last)}); retrying in {wait:.0f} s{said}")
            time.sleep(wait)
    else:
        raise DownloadError(f"{url}: gave up after {retries} attempts: {_why(last)}") from last
    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256:
            part.unlink()
            raise DownloadError(
                f"{url}: checksum mismatch: expected sha256 {sha256}, got {actual}; the partial file was removed"
            )
    part.replace(dest)
    return dest


def _why(exc: BaseException | None) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed mid-body after {len(exc.partial)} more bytes"
    return str(exc)
