"""A plain HTTP(S) download with resume, bounded retries, timeouts and a checksum.

The bytes go to `<dest>.part`; a retry resumes it with a Range request, and only a file whose
sha256 matches is renamed to `dest`. A wrong checksum removes the partial file. A full disk stops
the download at once (atomic.DiskFullError) and keeps the partial file for the next try.
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from pathlib import Path

from tlstudy.atomic import disk_full, out_of_space

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    pass


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_once(url: str, part: Path, timeout: float) -> None:
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
        got = 0
        with open(part, "ab" if resumed else "wb") as f:
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
                got += len(block)
        if expected is not None and got < expected:
            raise ConnectionError(f"connection closed after {got} of {expected} bytes")


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 2.0,
    log=print,
) -> Path:
    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last: Exception | None = None
    for attempt in range(1, retries + 1):
        try:
            _fetch_once(url, part, timeout)
            break
        except urllib.error.HTTPError as exc:
            last = exc
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            # A full disk does not clear by waiting: say so now instead of after every retry.
            full = out_of_space(exc)
            if full is not None:
                have = part.stat().st_size if part.exists() else 0
                kept = f"the partial download ({have} bytes) is kept"
                raise disk_full(part, full, left=kept, then="run the same command again: the download resumes") from exc
            last = exc
        if attempt < retries:
            wait = backoff * 2 ** (attempt - 1)
            log(f"download: attempt {attempt}/{retries} failed ({last}); retrying in {wait:.0f} s")
            time.sleep(wait)
    else:
        raise DownloadError(f"{url}: gave up after {retries} attempts: {last}") from last
    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256:
            part.unlink()
            raise DownloadError(
                f"{url}: checksum mismatch: expected sha256 {sha256}, got {actual}; the partial file was removed"
            )
    part.replace(dest)
    return dest
