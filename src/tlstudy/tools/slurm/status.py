"""Every job's state: Slurm's own while the controller remembers the job (`squeue -j` for this
submission's jobs only, MinJobAge), its accounting where the cluster keeps one (`sacct -j`), and
otherwise the record the job script wrote when it started and ended.

A query that fails or times out (a busy controller, a network blip) is "unknown for now", raised
as QueryError, never read as "Slurm forgot the job": the callers retry, and `submit` never
submits a job again that it cannot show has ended."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from tlstudy.tools.slurm.errors import SlurmError

# States in which a job may still run: its working copy is not free, and the final job may follow.
ACTIVE = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
    "SIGNALING", "STAGE_OUT", "SUSPENDED",
}  # fmt: skip
QUERY_TIMEOUT_S = 60
# What squeue and scontrol print for job ids the controller no longer holds: an answer, not a failure.
FORGOTTEN = "Invalid job id specified"


class QueryError(SlurmError):
    """Slurm did not answer a query about the jobs (a failed or timed-out command): their states
    are unknown for now."""


def run_limited(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """`argv` run to its end, or TimeoutExpired after `timeout` s with everything it started
    killed: a child left behind (a site's wrapper around sbatch) would hold the pipes open, and
    subprocess.run would wait for it past its own timeout."""
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def on(cluster: str | None) -> list[str]:
    """The option that sends a Slurm command to the cluster a job was submitted to (`--clusters`
    in slurm.yaml's `extra`): without it every query would ask the login node's default cluster."""
    return [f"--clusters={cluster}"] if cluster else []


def _ask(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return run_limited(argv, QUERY_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise QueryError(f"{argv[0]} did not answer within {QUERY_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise QueryError(f"{argv[0]}: {exc}") from exc


def _squeue(ids: list[str], cluster: str | None = None) -> dict[str, dict[str, str]]:
    """The jobs among `ids` the controller remembers, finished ones included (`-t all`), by id:
    JobId, JobName, JobState, Reason. One query for the submission's jobs, whatever the cluster holds."""
    if not ids or shutil.which("squeue") is None:
        return {}
    r = _ask(["squeue", *on(cluster), "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%j|%T|%r"])
    if r.returncode:
        if FORGOTTEN in r.stderr:  # none of them is known any more
            return {}
        raise QueryError(f"squeue failed (exit {r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    known = {}
    for line in r.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[0] in ids:
            known[parts[0]] = dict(zip(("JobId", "JobName", "JobState", "Reason"), parts))
    return known


def _scontrol(job_id: str, cluster: str | None = None) -> dict[str, str]:
    """One job's fields from `scontrol show job -o <id>` (its exit code): {} if it is forgotten."""
    r = _ask(["scontrol", *on(cluster), "show", "job", "-o", job_id])
    if r.returncode:
        if FORGOTTEN in r.stderr:
            return {}
        raise QueryError(f"scontrol show job {job_id} failed (exit {r.returncode}): {r.stderr.strip()}")
    return dict(re.findall(r"(\w+)=(\S*)", r.stdout))


def _sacct(ids: list[str], cluster: str | None = None) -> dict[str, tuple[str, str, str]]:
    """(state, exit code, job name) per job from accounting; nothing where the cluster keeps none
    (sacct then fails at once, saying so: the records answer instead)."""
    if not ids or shutil.which("sacct") is None:
        return {}
    try:
        r = _ask(["sacct", *on(cluster), "-n", "-P", "-X", "-o", "JobID,State,ExitCode,JobName", "-j", ",".join(ids)])
    except QueryError:
        return {}
    if r.returncode:
        return {}
    out = {}
    for line in r.stdout.splitlines():
        job, state, code, name = (line.split("|", 3) + ["", "", ""])[:4]
        out[job] = (state.split()[0] if state else "", code, name)
    return out


def _record(path: str) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def rows(submission: dict) -> list[dict]:
    """The submission's jobs with `state` (one word, Slurm's) and `detail` (reason, exit code)."""
    slurm: dict[tuple, dict[str, str]] = {}
    accounting: dict[tuple, tuple[str, str, str]] = {}
    # Each job where it was submitted (a --clusters option): a cluster's job ids are its own.
    for cluster in dict.fromkeys(j.get("cluster") for j in submission["jobs"]):
        jobs = [j for j in submission["jobs"] if j.get("cluster") == cluster]
        ids = [j["job_id"] for j in jobs]
        names = {j["job_id"]: f"tlstudy:{j['name']}" for j in jobs}
        # A cluster started afresh numbers its jobs from 1 again: an id alone may be another job.
        known = {i: f for i, f in _squeue(ids, cluster).items() if f.get("JobName") == names[i]}
        slurm.update({(cluster, i): f for i, f in known.items()})
        asked = _sacct([i for i in ids if i not in known], cluster)
        accounting.update({(cluster, i): v for i, v in asked.items() if i in names and v[2] == names[i]})
    out = []
    for job in submission["jobs"]:
        jid, detail = job["job_id"], ""
        where = (job.get("cluster"), jid)
        record = _record(job["record"])
        if where in slurm:
            s = slurm[where]
            state = s.get("JobState", "UNKNOWN")
            reason = s.get("Reason", "None")
            if state in ACTIVE:
                detail = "" if reason in ("None", "") else reason
            elif state != "COMPLETED":
                code = _scontrol(jid, job.get("cluster")).get("ExitCode", "?")
                detail = f"exit {code}" if reason in ("None", "", "NonZeroExitCode") else reason
        elif where in accounting:
            state, code, _ = accounting[where]
            detail = "" if state == "COMPLETED" else f"exit {code}"
        elif record and record.get("job_id") == jid:
            state = record["state"]
            if state == "RUNNING":  # it never wrote its end: killed with its node, or by a signal
                state, detail = "UNKNOWN", f"started {record['time']} on {record['host']}, never recorded its end"
            elif state != "COMPLETED":
                detail = f"exit {record['exit']}"
        else:
            state, detail = "UNKNOWN", "Slurm no longer knows this job and it never started"
        restarts = int((record or {}).get("restarts", 0) or 0) if (record or {}).get("job_id") == jid else 0
        if restarts:
            detail = ", ".join(filter(None, [detail, f"requeued {restarts}x"]))
        out.append({**job, "state": state, "detail": detail})
    return out


def _short(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def table(rows: list[dict]) -> str:
    header = ("job", "part", "kind", "job id", "state", "log")
    lines = [header]
    for r in rows:
        state = r["state"] + (f" ({r['detail']})" if r.get("detail") else "")
        if r.get("kept"):
            state += f" [{r['kept']}: not submitted again]"
        lines.append((r["name"], r["part"] or "-", r["kind"], r["job_id"], state, _short(r["log"])))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)) + "  " + line[-1] for line in lines)


def explain(row: dict, tail: int = 12) -> str:
    """A job that did not complete: what, which job, how it ended, its log and the log's end."""
    what = f"part {row['part']}" if row["part"] else f"{row['kind']} job"
    detail = f" ({row['detail']})" if row.get("detail") else ""
    stages = " ".join(row["stages"])
    text = f"{row['name']} ({what}, stages {stages}): job {row['job_id']} {row['state']}{detail}; log {row['log']}"
    log = Path(row["log"])
    if log.is_file():
        last = log.read_text(errors="replace").splitlines()[-tail:]
        text += "\n" + "\n".join(f"  | {line}" for line in last)
    elif row["state"] == "CANCELLED":
        text += " (it never started: a job it waits for did not complete)"
    return text
