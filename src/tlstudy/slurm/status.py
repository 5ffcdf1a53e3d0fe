"""Every job's state: Slurm's own while the controller remembers the job (`scontrol show job`,
MinJobAge), its accounting where the cluster keeps one (`sacct`), and otherwise the record the
job script wrote when it started and ended."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

# States in which a job may still run: its working copy is not free, and the final job may follow.
ACTIVE = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
    "SIGNALING", "STAGE_OUT", "SUSPENDED",
}  # fmt: skip


def _scontrol(ids: list[str]) -> dict[str, dict[str, str]]:
    """`scontrol show job -o`: every job the controller remembers, by id, as key=value fields."""
    if not ids or shutil.which("scontrol") is None:
        return {}
    r = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True)
    known = {}
    for line in r.stdout.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("JobId") in ids:
            known[fields["JobId"]] = fields
    return known


def _sacct(ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """(state, exit code, job name) per job from accounting; nothing where the cluster keeps none."""
    if not ids or shutil.which("sacct") is None:
        return {}
    r = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode,JobName", "-j", ",".join(ids)],
                       capture_output=True, text=True)  # fmt: skip
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
    ids = [j["job_id"] for j in submission["jobs"]]
    names = {j["job_id"]: f"tlstudy:{j['name']}" for j in submission["jobs"]}
    # A cluster started afresh numbers its jobs from 1 again: an id alone may be another job.
    slurm = {i: f for i, f in _scontrol(ids).items() if f.get("JobName") == names[i]}
    accounting = {i: v for i, v in _sacct([i for i in ids if i not in slurm]).items() if v[2] == names[i]}
    out = []
    for job in submission["jobs"]:
        jid, detail = job["job_id"], ""
        record = _record(job["record"])
        if jid in slurm:
            s = slurm[jid]
            state = s.get("JobState", "UNKNOWN")
            reason, code = s.get("Reason", "None"), s.get("ExitCode", "0:0")
            if state in ACTIVE:
                detail = "" if reason in ("None", "") else reason
            elif state != "COMPLETED":
                detail = f"exit {code}" if reason in ("None", "", "NonZeroExitCode") else reason
        elif jid in accounting:
            state, code, _ = accounting[jid]
            detail = "" if state == "COMPLETED" else f"exit {code}"
        elif record and record.get("job_id") == jid:
            state = record["state"]
            if state == "RUNNING":  # it never wrote its end: killed with its node, or by a signal
                state, detail = "UNKNOWN", f"started {record['time']} on {record['host']}, never recorded its end"
            elif state != "COMPLETED":
                detail = f"exit {record['exit']}"
        else:
            state, detail = "UNKNOWN", "Slurm no longer knows this job and it never started"
        restarts = int((slurm.get(jid) or {}).get("Restarts", 0) or (record or {}).get("restarts", 0) or 0)
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
