"""Progress in any terminal or log: plain lines without a TTY, not a flood; a bar on a terminal."""

import fcntl
import io
import os
import struct
import termios

from tlstudy.lib.progress import Progress, duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run(progress: Progress, clock: Clock, label: str, epochs: int, seconds: float) -> None:
    progress.start(label, epochs)
    for epoch in range(1, epochs + 1):
        clock.now += seconds
        progress.epoch(epoch, 1.0 / epoch, 0.1 * epoch)
    progress.end()


def test_without_a_terminal_a_line_every_20_seconds_with_the_time_left():
    out, clock = io.StringIO(), Clock()
    progress = Progress("train@scratch", total=3 * 8, stream=out, tty=False, clock=clock)
    for lr in ("0.01", "0.001", "0.0001"):
        run(progress, clock, f"scratch sgd lr={lr}", 8, seconds=6.0)
    lines = out.getvalue().splitlines()
    # 24 epochs of 6 s: the first, then one at least 20 s after the last (every 4th epoch), and the stage's last.
    assert len(lines) == 1 + 5 + 1
    assert lines[0] == (
        "scratch sgd lr=0.01 epoch 1/8: loss 1.0000, val_acc 0.1000 | train@scratch 4 %, 6.0 s/epoch, ~2 min left"
    )
    assert lines[-1].startswith("scratch sgd lr=0.0001 epoch 8/8:") and lines[-1].endswith(
        "100 %, 6.0 s/epoch, ~0 s left"
    )


def test_resumed_and_diverged_runs_count_as_done_so_the_estimate_stays_right():
    out, clock = io.StringIO(), Clock()
    progress = Progress("train@scratch", total=3 * 10, stream=out, tty=False, clock=clock, every_s=0)
    progress.advance(10)  # a run finished before the stage was interrupted
    progress.start("scratch sgd lr=1e+30", 10)
    clock.now += 5.0
    progress.write("scratch sgd lr=1e+30: loss turned non-finite at epoch 1; run recorded as diverged")
    progress.end()  # its 10 epochs are done, 0 trained
    run(progress, clock, "scratch sgd lr=0.01", 10, seconds=5.0)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("recorded as diverged")
    assert "train@scratch 70 %" in lines[1] and "~45 s left" in lines[1]  # 9 epochs left at 5 s each
    assert lines[-1].endswith("100 %, 5.0 s/epoch, ~0 s left")


def _pty(columns: int):
    """A real pseudo-terminal of that width (0: one nobody sized), its output side readable."""
    master, slave = os.openpty()
    if columns:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    os.set_blocking(master, False)
    return master, os.fdopen(slave, "w")


def _read(master: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_on_a_terminal_a_bar_and_no_lines():
    master, stream = _pty(columns=120)
    clock = Clock()
    progress = Progress("train@scratch", total=4, stream=stream, clock=clock)
    run(progress, clock, "scratch sgd lr=0.01", 4, seconds=1.0)
    progress.close()
    stream.flush()
    text = _read(master)
    assert progress.tty and "\r" in text and "val_acc=0.400" in text and "scratch sgd lr=0.01" in text
    assert "epoch 4/4:" not in text  # the plain lines are for logs only
    stream.close()


def test_a_terminal_nobody_sized_gets_the_lines():
    """tqdm draws nothing on a 0-column terminal (`script` without a terminal makes one): lines instead."""
    master, stream = _pty(columns=0)
    clock = Clock()
    progress = Progress("train@scratch", total=4, stream=stream, clock=clock)
    run(progress, clock, "scratch sgd lr=0.01", 4, seconds=1.0)
    stream.flush()
    assert not progress.tty and "epoch 4/4: loss 0.2500, val_acc 0.4000" in _read(master)
    stream.close()


def test_durations_are_coarse():
    assert [duration(s) for s in (42, 600, 7500)] == ["42 s", "10 min", "2 h 05 min"]
