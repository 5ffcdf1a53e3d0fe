"""Where a long stage is, in any terminal or log: a tqdm bar on a terminal; elsewhere (`docker
run` without -t, CI, `nohup`, a profile's log) a plain line for an epoch at most every `every_s`
seconds — the stage's first epoch and its last always — with the run, its loss and validation
accuracy, the stage's share done and the time left. Never a flood: a few-shot epoch takes a
second, and a sweep has 140 runs; a 60-second epoch gets a line of its own.

The time left assumes every remaining epoch costs what the stage's epochs have cost so far;
resumed or diverged runs count as done, so the estimate stays right after an interruption.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm


def _terminal(stream) -> bool:
    """A terminal a bar can be drawn on: a TTY with a width (a pseudo-terminal nobody sized, as
    `script` makes without one, has 0 columns, and tqdm then draws nothing at all)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


def duration(seconds: float) -> str:
    """`45 s`, `12 min`, `2 h 05 min`: coarse on purpose, it is an estimate."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h} h {m:02d} min"


class Progress:
    """A stage's progress over `total` epochs, made of runs of a known number of epochs each."""

    def __init__(self, stage: str, total: int, stream=None, every_s: float = 20.0, tty: bool | None = None, clock=None):
        self.stage, self.total = stage, max(1, total)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = tty if tty is not None else _terminal(self.stream)
        self.every_s, self.clock = every_s, clock or time.monotonic
        self.done = 0  # epochs finished or counted as done
        self.timed = 0  # of those, the epochs trained in this process (the rate's basis)
        self.spent = 0.0
        self.run_label, self.run_epochs, self.run_done = "", 0, 0
        self.last_line = None
        self.bar = (
            tqdm(total=self.total, desc=stage, unit="epoch", file=self.stream, dynamic_ncols=True, leave=False)
            if self.tty
            else None
        )
        self.run_started = None

    # --- what the engine calls -------------------------------------------------------------

    def start(self, label: str, epochs: int) -> None:
        self.run_label, self.run_epochs, self.run_done = label, epochs, 0
        self.run_started = self.clock()
        if self.bar is not None:
            self.bar.set_description(label)

    def epoch(self, epoch: int, loss: float, val_acc: float) -> None:
        now = self.clock()
        self.spent += now - self.run_started
        self.run_started = now
        self.run_done, self.done, self.timed = epoch, self.done + 1, self.timed + 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", val_acc=f"{val_acc:.3f}")
            return
        last = self.done >= self.total
        if last or self.last_line is None or now - self.last_line >= self.every_s:
            self.last_line = now
            self.line(
                f"{self.run_label} epoch {epoch}/{self.run_epochs}: loss {loss:.4f}, val_acc {val_acc:.4f} | "
                f"{self.summary()}"
            )

    def resumed(self, epochs: int) -> None:
        """The run continues from a checkpoint: its first `epochs` count as done."""
        self.run_done = epochs
        self.advance(epochs)

    def end(self) -> None:
        """The run is over: epochs it did not train (it diverged) count as done."""
        skipped = self.run_epochs - self.run_done
        self.advance(skipped)
        self.run_epochs = self.run_done = 0

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            self.line(message)

    # --- what the stage calls ---------------------------------------------------------------

    def advance(self, epochs: int) -> None:
        """Epochs done without training here (a run resumed from the store)."""
        if epochs <= 0:
            return
        self.done += epochs
        if self.bar is not None:
            self.bar.update(epochs)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # --- helpers ----------------------------------------------------------------------------

    def summary(self) -> str:
        share = f"{self.stage} {100 * min(self.done, self.total) / self.total:.0f} %"
        if not self.timed:
            return share
        per_epoch = self.spent / self.timed
        left = per_epoch * max(0, self.total - self.done)
        return f"{share}, {per_epoch:.1f} s/epoch, ~{duration(left)} left"

    def line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def size(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


class Transfer:
    """A download's progress, the same two ways: a tqdm bar in bytes on a terminal; elsewhere a
    line when it starts, at most every `every_s` seconds, and when it ends — `download
    pacs.parquet: 120.5 of 191.4 MB (63 %), 4.1 MB/s, ~17 s left`. A resumed download starts
    from the bytes it already has; the rate counts only what this attempt fetched."""

    def __init__(self, label: str, stream=None, every_s: float = 20.0, tty: bool | None = None, clock=None):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = tty if tty is not None else _terminal(self.stream)
        self.every_s, self.clock = every_s, clock or time.monotonic
        self.bar = None
        self.done = self.fetched = 0
        self.total: int | None = None
        self.started = self.last_line = 0.0

    def start(self, have: int, total: int | None) -> None:
        """An attempt begins with `have` bytes on disk, of `total` (None: the server did not say)."""
        self.close()
        self.done, self.fetched, self.total = have, 0, total
        self.started = self.last_line = self.clock()
        if self.tty:
            self.bar = tqdm(
                total=total, initial=have, desc=self.label, unit="B", unit_scale=True, file=self.stream, leave=False
            )
        else:
            self.line()

    def update(self, n: int) -> None:
        self.done, self.fetched = self.done + n, self.fetched + n
        if self.bar is not None:
            self.bar.update(n)
        elif self.clock() - self.last_line >= self.every_s:
            self.line()

    def finish(self) -> None:
        if self.bar is None:
            self.line()
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def line(self) -> None:
        now = self.clock()
        self.last_line = now
        of = f" of {size(self.total)} ({100 * self.done / self.total:.0f} %)" if self.total else ""
        text = f"download {self.label}: {size(self.done)}{of}"
        elapsed = now - self.started
        if self.fetched and elapsed > 0:
            rate = self.fetched / elapsed
            text += f", {size(rate)}/s"
            if self.total:
                text += f", ~{duration(max(0, self.total - self.done) / rate)} left"
        print(text, file=self.stream, flush=True)
