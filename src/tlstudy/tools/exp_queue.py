"""`python -m tlstudy queue -j N`: DVC's experiment queue, served until nothing is queued or running.

`dvc queue start -j N` alone can leave experiments queued with no worker (issue #23). DVC's queue
workers are Celery workers on a filesystem broker (.dvc/tmp/exps/celery/broker): a control message
is a file per worker queue, and a worker's queue is named after its slot
(`dvc-exp-<hash>-<n>@localhost`, dvc's LocalCeleryQueue._spawn_worker), so it outlives the worker.
A shutdown that no running worker reads at once stays there: what `dvc queue stop` sends to a slot
with no worker, or what the idle check of a worker that is already stopping sends to itself
(dvc_task's TemporaryWorker.monitor). Nothing expires it: the filesystem transport keeps every
message and the worker side of kombu (pidbox Node.handle_message) ignores the `expires` header.
The next worker of that slot takes one experiment, reads the old shutdown and exits when that
experiment ends, and its own idle check leaves a new shutdown behind, so the workspace stays this
way (upstream: treeverse/dvc#10427, #10562, #10578). `dvc exp clean` deletes such messages (they
have all expired) and keeps the queued experiments.

So this command runs `dvc exp clean` when no experiment is running, then `dvc queue start -j N`,
and follows the queue; should queued experiments wait with a slot free for `grace` seconds (a
worker stopped early, however), it starts the workers again, up to MAX_RESTARTS times in a row
without progress, then ends naming what stays queued. An experiment that stays Running with no
process running it and no worker left to end it (its worker killed, by the OOM killer or `kill
-9`: DVC's task never ends then) ends it too, named, after `grace` seconds. Its worker counts:
DVC keeps the entry Running while the worker collects the results and cleans up after the
experiment's process exits, which takes a while on NFS or with a large `work/`. It schedules
nothing itself: DVC's workers take the experiments, each in a workspace of its own, and the
workers inherit this process's environment (TLSTUDY_GPUS: each stage claims a GPU of its own,
engine.claim_gpu).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tlstudy.lib.errors import StudyError

HELP = "run every queued experiment (dvc exp run --queue) on N of DVC's workers; return when all ended"
DONE = ("Success", "Failed", "Unknown")
MAX_RESTARTS = 3  # worker restarts in a row with nothing changing in the queue, before giving up
STUCK = 3  # exit status when the queue cannot go on: an orphaned Running entry, or no worker takes any


class QueueError(StudyError):
    """The queue cannot be served from here; the message says why and what to do."""


def add_parser(sub) -> None:
    q = sub.add_parser("queue", help=HELP, description=HELP)
    q.add_argument(
        "-j", "--jobs", type=jobs_arg, default=1, metavar="N", help="workers, experiments at a time (default: 1)"
    )


def jobs_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers: give a whole number, 1 or more")
    return n


def repo_root(start: Path) -> Path:
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise QueueError(
        f"{start} is not in a DVC repository (no .dvc/ in it or above): run this in the workspace where "
        "you queued the experiments with `dvc exp run --queue`"
    )


def queue_status(root: Path) -> dict[str, tuple[str, str]]:
    """Each queue entry's (name, status), by stash revision, as `dvc queue status` lists them. Read
    through DVC's API: `dvc queue status` would also ask every worker, a broadcast that adds a
    message to every worker queue on each poll, and cost a process start."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {e["rev"]: (e.get("name") or e["rev"][:7], e["status"]) for e in repo.experiments.celery_queue.status()}


def orphaned(root: Path, revs: list[str], workers: dict[str, int] | None = None) -> dict[str, int | None]:
    """Of the Running entries `revs`, those that no live process runs and no live worker collects,
    with the pid that ran them (None: none was recorded). DVC records each experiment's process
    in its queue's process folder (dvc_task's ProcessManager); that process is a child of the
    worker (`dvc exp queue-worker dvc-exp-<hash>-<n>@localhost`), which collects and cleans up
    after it. `workers` remembers each entry's worker from one call to the next (an exited
    process's parent is unknown); where none was seen, any live worker of this workspace counts."""
    import hashlib

    import psutil
    from dvc.repo import Repo

    def live(pid: int) -> psutil.Process | None:
        try:
            p = psutil.Process(pid)
            return p if p.status() != psutil.STATUS_ZOMBIE else None
        except psutil.Error:
            return None

    def is_worker(p: psutil.Process | None) -> bool:
        try:
            args = p.cmdline() if p is not None else []
        except psutil.Error:
            return False
        return "queue-worker" in args and any(a.startswith(node) for a in args)

    workers = {} if workers is None else workers
    found = {}
    with Repo(str(root)) as repo:
        queue = repo.experiments.celery_queue
        node = f"dvc-exp-{hashlib.sha256(queue.wdir.encode('utf-8')).hexdigest()[:6]}-"  # as DVC names them
        for rev in revs:
            info = queue.proc.get(rev)
            ran = None
            if info is not None and info.returncode is None:  # not reaped yet: the pid is still its
                try:
                    workers.setdefault(rev, psutil.Process(info.pid).ppid())  # a zombie still names it
                except psutil.Error:
                    pass
                ran = live(info.pid)
            if ran is not None:
                continue
            if rev in workers:
                collected = is_worker(live(workers[rev]))
            else:
                collected = any(is_worker(live(p.pid)) for p in psutil.process_iter())
            if not collected:
                found[rev] = info.pid if info is not None else None
    return found


def dvc(root: Path, *args: str) -> str:
    """A dvc command in the workspace, its output returned. The output goes through a file, not a
    pipe: `dvc queue start` leaves worker daemons that hold it open until they exit."""
    from tlstudy.tools.profile import _python_on_path, tool_argv

    # The stages call `python -m tlstudy.stage`: this interpreter's, as with an activated venv.
    env = dict(os.environ, PATH=f"{_python_on_path(root)}{os.pathsep}{os.environ.get('PATH', '')}")
    with tempfile.TemporaryFile("w+") as out:
        code = subprocess.run(
            [*tool_argv("dvc"), *args], cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        ).returncode
        out.seek(0)
        text = out.read().strip()
    if code:
        raise QueueError(f"`dvc {' '.join(args)}` failed (exit {code}):\n{text}")
    return text


def serve(
    jobs: int,
    root: Path | None = None,
    poll_s: float = 5.0,
    grace_s: float = 30.0,
    log: Callable[[str], None] = print,
) -> int:
    """Start `jobs` workers and follow the queue until nothing is queued or running. 0 when every
    experiment it saw ended Success, 1 when one failed."""
    root = repo_root(Path(root or Path.cwd()).resolve())
    status = queue_status(root)
    mine = {rev for rev, (_, st) in status.items() if st not in DONE}
    if not mine:
        log("queue: nothing queued; queue experiments first, e.g. `dvc exp run --queue -S lr=0.01`")
        return 0

    def start(running: int) -> None:
        if not running:
            # Safe only with no experiment running: it also deletes a live worker's unread messages.
            log("queue: dvc exp clean  (drops the shutdowns stopped workers left, see docs/experiments.md)")
            dvc(root, "exp", "clean")
        log(f"queue: dvc queue start -j {jobs}")
        log("queue: " + dvc(root, "queue", "start", "-j", str(jobs)))

    shown: dict[str, str] = {}
    short_since = None
    restarts = 0  # in a row, with no entry changing its status in between
    alone_since: dict[str, float] = {}  # Running entries with no live process or worker, since when
    workers: dict[str, int] = {}  # each Running entry's worker, once seen
    try:
        start(sum(st == "Running" for _, st in status.values()))
        while True:
            for rev, (name, st) in status.items():
                if rev in mine and shown.get(rev) != st:
                    log(f"queue: {name} {st}")
                    shown[rev] = st
                    restarts = 0
            queued = [rev for rev, (_, st) in status.items() if st == "Queued"]
            running = [rev for rev, (_, st) in status.items() if st == "Running"]
            mine.update(queued, running)
            if not queued and not running:
                break
            now = time.monotonic()
            lost = orphaned(root, running, workers)
            alone_since = {rev: alone_since.get(rev, now) for rev in lost}
            dead = {rev: pid for rev, pid in lost.items() if now - alone_since[rev] >= grace_s}
            if dead:
                return orphans_found({rev: (status[rev][0], pid) for rev, pid in dead.items()}, grace_s, log)
            if queued and len(running) < jobs:
                short_since = short_since or now
                if now - short_since >= grace_s:
                    if restarts >= MAX_RESTARTS:
                        return not_taken([status[rev][0] for rev in queued], restarts, grace_s, root, log)
                    restarts += 1
                    log(
                        f"queue: {len(queued)} queued and {len(running)} running on {jobs} workers for "
                        f"{grace_s:.0f} s: fewer workers than asked for; starting workers again "
                        f"({restarts} of {MAX_RESTARTS})"
                    )
                    start(len(running))
                    short_since = None
            else:
                short_since = None
            time.sleep(poll_s)
            status = queue_status(root)
    except KeyboardInterrupt:
        log("queue: no longer following; the workers go on (`dvc queue status`; `dvc queue stop` stops them)")
        return 130
    return summary({rev: status[rev] for rev in mine if rev in status}, log)


def orphans_found(dead: dict[str, tuple[str, int | None]], grace_s: float, log: Callable[[str], None]) -> int:
    for name, pid in dead.values():
        ran = f"pid {pid}, gone" if pid is not None else "no process recorded"
        log(
            f"queue: {name} is Running in DVC's queue, but no process has run it for {grace_s:.0f} s ({ran}, and "
            "no worker collects it): its worker was killed (out of memory, kill -9, a reboot), and DVC will never "
            "end it"
        )
    names = " ".join(name for name, _ in dead.values())
    log(f"queue: to go on: `dvc queue kill {names}` marks it ended (or `dvc queue stop --kill`), then queue it")
    log("queue: anew with the same -S options (`dvc exp run --queue -S ...`) and run this again")
    return STUCK


def not_taken(names: list[str], restarts: int, grace_s: float, root: Path, log: Callable[[str], None]) -> int:
    log(
        f"queue: {len(names)} experiment(s) still queued ({', '.join(sorted(names))}) after {restarts} restarts of "
        f"the workers, {grace_s:.0f} s apart, with no experiment starting or ending: no worker takes them"
    )
    logs = root / ".dvc" / "tmp" / "exps" / "celery"
    log(f"queue: the workers' own output says why: {logs}/dvc-exp-worker-*.out; `dvc queue status` lists them")
    return STUCK


def summary(entries: dict[str, tuple[str, str]], log: Callable[[str], None]) -> int:
    failed = sorted(name for name, st in entries.values() if st != "Success")
    log(f"queue: done, {len(entries) - len(failed)} of {len(entries)} succeeded; compare them with `dvc exp show`")
    if not failed:
        return 0
    log(f"queue: did not succeed: {', '.join(failed)}")
    log(f"queue: why: `dvc queue logs {failed[0]}`. Again, after a fix: `dvc queue remove {failed[0]}`, then")
    log("queue: queue it anew with the same -S options (`dvc exp run --queue -S ...`) and run this again")
    return 1
