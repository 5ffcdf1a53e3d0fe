import hashlib
import io
import socket

import pytest
from http_fixture import Server

from tlstudy.data.download import DownloadError, download
from tlstudy.lib.progress import Transfer

BODY = bytes(range(256)) * 4000  # ~1 MB
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server():
    with Server() as s:
        s.files["/pacs.zip"] = BODY
        yield s


def get(server, tmp_path, **kw):
    kw.setdefault("backoff", 0.01)
    return download(server.url("/pacs.zip"), tmp_path / "pacs.zip", log=lambda m: None, **kw)


def test_plain_download_with_checksum(server, tmp_path):
    assert get(server, tmp_path, sha256=SHA).read_bytes() == BODY
    assert not (tmp_path / "pacs.zip.part").exists()


def test_a_dropped_connection_resumes_where_it_stopped(server, tmp_path):
    server.faults = ["cut"]
    assert get(server, tmp_path, sha256=SHA).read_bytes() == BODY
    assert server.requests[0][1] is None
    assert server.requests[1][1] == f"bytes={len(BODY) // 2}-"


def test_server_errors_are_retried_then_succeed(server, tmp_path):
    server.faults = ["500", "500"]
    assert get(server, tmp_path, sha256=SHA).read_bytes() == BODY
    assert len(server.requests) == 3


def test_retries_are_bounded(server, tmp_path):
    server.faults = ["500"] * 10
    with pytest.raises(DownloadError, match="gave up after 3 attempts"):
        get(server, tmp_path, retries=3)
    assert len(server.requests) == 3


def test_a_wrong_checksum_removes_the_partial_file_and_says_both_sums(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(DownloadError, match=f"expected sha256 {wrong}, got {SHA}"):
        get(server, tmp_path, sha256=wrong)
    assert not (tmp_path / "pacs.zip").exists() and not (tmp_path / "pacs.zip.part").exists()


def test_not_found_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url("/missing.zip"), tmp_path / "m.zip", log=lambda m: None, backoff=0.01)
    assert len(server.requests) == 1


def test_no_server_listening_fails_after_bounded_retries(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="gave up after 2 attempts"):
        download(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", retries=2, backoff=0.01, log=lambda m: None)


def test_a_chunked_response_cut_mid_body_is_retried_and_resumes(server, tmp_path):
    """http.client raises IncompleteRead (no OSError) when a chunked body stops early."""
    server.faults = ["chunked-cut"]
    assert get(server, tmp_path, sha256=SHA).read_bytes() == BODY
    assert len(server.requests) == 2 and server.requests[0][1] is None
    assert server.requests[1][1] == f"bytes={len(BODY) // 2}-"  # it kept what arrived, asked for the rest


@pytest.mark.parametrize("status", ["429", "503"])
def test_retry_after_is_waited_before_the_next_try(server, tmp_path, status):
    server.faults = [f"{status}:1"]
    said = []
    download(server.url("/pacs.zip"), tmp_path / "p.zip", sha256=SHA, backoff=0.01, log=said.append)
    assert len(server.requests) == 2
    assert server.times[1] - server.times[0] >= 1.0  # the backoff alone would be 0.01 s
    assert "Retry-After: 1 s" in said[0]


def test_progress_without_a_terminal_is_a_line_at_start_and_end_with_sizes(server, tmp_path):
    out = io.StringIO()
    server.faults = ["cut"]
    get(server, tmp_path, sha256=SHA, progress=Transfer("pacs.zip", stream=out, tty=False, every_s=3600))
    lines = out.getvalue().splitlines()
    mb = f"{len(BODY) / 1e6:.1f} MB"
    # The first attempt starts at 0 and is cut; the second resumes from half and ends at 100 %.
    assert lines[0] == f"download pacs.zip: 0 kB of {mb} (0 %)"
    assert lines[1].startswith(f"download pacs.zip: {len(BODY) // 2 / 1e6:.1f} MB of {mb} (50 %)")
    assert lines[-1].startswith(f"download pacs.zip: {mb} of {mb} (100 %), ") and lines[-1].endswith("left")
    assert len(lines) == 3


def test_progress_on_a_terminal_is_a_bar_in_bytes(server, tmp_path):
    out = io.StringIO()
    get(server, tmp_path, sha256=SHA, progress=Transfer("pacs.zip", stream=out, tty=True))
    assert "pacs.zip" in out.getvalue() and "B/s" in out.getvalue()


def test_two_processes_fetching_into_one_folder_download_once_and_both_get_the_verified_file(server, tmp_path):
    """As two Slurm jobs sharing a download folder: one downloads, the other waits for it and
    reuses the file; no interleaved writes, no partial file deleted under the other."""
    import os
    import subprocess
    import sys

    server.pause_s = 0.1  # ~16 pieces: about 2 s, long enough for the second to arrive mid-way
    code = (
        "import sys; from tlstudy.data.download import download\n"
        "p = download(sys.argv[1], sys.argv[2], sha256=sys.argv[3], log=print)\n"
        "print('got', p.stat().st_size)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    argv = [sys.executable, "-c", code, server.url("/pacs.zip"), str(tmp_path / "pacs.zip"), SHA]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not server.requests:  # the first one is downloading
        assert first.poll() is None, first.communicate()[0]
    second = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outs = [p.communicate(timeout=120)[0] for p in (first, second)]
    assert first.returncode == second.returncode == 0, outs
    assert all(f"got {len(BODY)}" in out for out in outs)
    assert len(server.requests) == 1  # one download
    assert "another process is downloading it" in outs[1] and "downloaded meanwhile by another process" in outs[1]
    assert (tmp_path / "pacs.zip").read_bytes() == BODY and not (tmp_path / "pacs.zip.part").exists()


def test_the_download_lock_is_writable_by_every_user_and_another_user_downloads_through_it(server, shared):
    """A shared cache (`docker run --user`, Slurm jobs of several users): root's download, under
    umask 022, leaves a lock file that another user's download of the same file takes turns on."""
    import stat

    import as_nobody

    with pytest.raises(DownloadError, match="HTTP 404"):  # root's try: the server does not have it yet
        download(server.url("/later.zip"), shared / "later.zip", log=lambda m: None, backoff=0.01)
    lock = shared / "later.zip.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o666 and lock.stat().st_uid == 0
    server.files["/later.zip"] = BODY
    got = as_nobody.run(download, server.url("/later.zip"), shared / "later.zip", SHA, 5, 60.0, 0.01, lambda m: None)
    assert got == {"returned": repr(shared / "later.zip")}, got
    assert (shared / "later.zip").stat().st_uid == as_nobody.NOBODY and (shared / "later.zip").read_bytes() == BODY


def test_a_download_lock_another_user_may_not_write_is_one_clear_error_before_any_request(server, shared):
    """A lock file root's download made with the old mode (0644) stops another user's download at
    once, in one line naming the file and what to do."""
    import as_nobody

    lock = shared / "pacs.zip.lock"
    lock.touch(mode=0o644)
    lock.chmod(0o644)
    said = as_nobody.run(download, server.url("/pacs.zip"), shared / "pacs.zip", SHA, 5, 60.0, 0.01, lambda m: None)
    assert said["raised"] == "LockError" and said["study_error"], said
    message = said["message"]
    assert "\n" not in message and message.startswith(f"lock file {lock}: permission denied: it is uid 0's"), message
    assert f"`chmod 666 {lock}`" in message and "TLSTUDY_DOWNLOADS" in message, message
    assert server.requests == []


def test_another_users_partial_download_is_one_clear_error_not_retries(server, shared):
    """Root's download was cut and left its partial file (0644); another user's resume cannot
    append to it, and no retry changes that: one line naming it, after one request."""
    import as_nobody

    part = shared / "pacs.zip.part"
    part.write_bytes(BODY[:1000])
    part.chmod(0o644)
    said = as_nobody.run(download, server.url("/pacs.zip"), shared / "pacs.zip", SHA, 5, 60.0, 0.01, lambda m: None)
    assert said["raised"] == "NotWritable" and said["study_error"], said
    message = said["message"]
    assert "\n" not in message and message.startswith(f"{part}: permission denied for uid 65534"), message
    assert "TLSTUDY_DOWNLOADS" in message
    assert len(server.requests) == 1 and part.read_bytes() == BODY[:1000]
