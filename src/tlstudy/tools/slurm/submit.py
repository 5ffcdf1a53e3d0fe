"""`python -m tlstudy slurm submit`: the pipeline of the current params (or an experiment, `-S`) as
Slurm jobs that follow dvc.yaml's graph (plan.py), each in its own working copy (copies.py), and a
record of the submission that `status` reads.

Submitting the same command again continues: jobs that completed are not submitted again (their
stages are in the run-cache), jobs still queued or running are kept and waited for, the others
start again in their working copies, where a train stage resumes after its last finished run.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from tlstudy.lib.atomic import write_json
from tlstudy.tools.slurm import config as C
from tlstudy.tools.slurm import copies, plan, scripts, status
from tlstudy.tools.slurm.errors import SlurmError

CONFIG = "slurm.yaml"
LATEST = Path(".dvc/tmp/slurm/latest.json")  # in the checkout: where `status` finds the last submission
LOCK_WAIT_S = 1800  # how long a submit waits for another one of the same submission to finish


def require_slurm() -> None:
    for tool in ("sbatch", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            raise SlurmError(
                f"{tool}: not found on PATH; run this on a Slurm login node, or start the one-node "
                "cluster of scripts/slurm-cluster.sh (docs/cluster.md)"
            )


def _validate(params_text: str, overrides: list[str]) -> dict:
    from dvc.utils.serialize import parse_yaml

    from tlstudy import params as P

    params = parse_yaml(params_text, copies.PARAMS)  # as DVC and the stages read it: YAML 1.2
    try:
        P.validate(params, source=copies.PARAMS)
    except P.ParamsError as exc:
        after = f" (after {' '.join(f'-S {o}' for o in overrides)})" if overrides else ""
        raise SlurmError(f"{exc}{after}") from exc
    return params


def _check_remote(root: Path, remote: str) -> None:
    from tlstudy.tools.profile import tool

    listed = subprocess.run([tool("dvc"), "remote", "list"], cwd=root, capture_output=True, text=True).stdout
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    if remote not in names:
        raise SlurmError(f"--remote {remote}: no such DVC remote in {root}; known: {', '.join(names) or 'none'}")
    default = subprocess.run([tool("dvc"), "remote", "default"], cwd=root, capture_output=True, text=True)
    if default.stdout.strip() != remote:
        raise SlurmError(
            f"--remote {remote}: the final job runs `dvc repro --pull` in {root}, which pulls from the default "
            f"remote ({default.stdout.strip() or 'none'}); make it the default first: dvc remote default {remote}"
        )
    copies.remote_config(root, remote)  # its url, as the copies will get it


def check_plan(jobs: list[plan.Job]) -> None:
    """Every job waits only for jobs submitted before it, once each: otherwise an sbatch midway
    would name a job that does not exist yet."""
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise SlurmError(f"the plan has two jobs named {job.name!r}; stages: {' '.join(job.stages)}")
        missing = [a for a in job.after if a not in seen]
        if missing:
            raise SlurmError(
                f"the plan is not in dependency order: job {job.name} waits for {', '.join(missing)}, which "
                "would be submitted after it (do its stages wait on each other in dvc.yaml?)"
            )
        seen.add(job.name)


def check_options(opts: dict[str, list[str]], kinds: set[str], config_file: Path) -> None:
    """Each kind of job's options, as sbatch would take them, before anything is queued: `sbatch
    --test-only` checks the partition, account, time and resources against the cluster."""
    for kind in sorted(kinds):
        argv = ["sbatch", "--test-only", "--job-name=tlstudy-check", *opts[kind], "--wrap=true"]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=status.QUERY_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            limit = status.QUERY_TIMEOUT_S
            raise SlurmError(f"sbatch --test-only did not answer in {limit} s; nothing was submitted") from exc
        if r.returncode:
            text = r.stderr.strip() or r.stdout.strip()
            said = "; ".join(line.replace("sbatch: error: ", "").strip() for line in text.splitlines() if line.strip())
            where = f"{config_file}: '{kind}'" if opts[kind] else f"the {kind} jobs (no options in {config_file})"
            asked = " ".join(opts[kind]) or "the defaults"
            raise SlurmError(f"{where}: Slurm refuses {asked}: {said}; nothing was submitted")


class SbatchFailed(SlurmError):
    """sbatch said it failed, or did not answer: the controller may have taken the job all the same."""

    def __init__(self, message: str, timed_out: bool):
        super().__init__(message)
        self.timed_out = timed_out


def _sbatch(script: Path, after: list[str], options: list[str], cluster: str | None) -> tuple[str, str | None]:
    """(job id, cluster) of the job queued: sbatch --parsable prints `id;cluster` with --clusters."""
    argv = ["sbatch", "--parsable", *options]
    if after:
        # A failed or cancelled dependency cancels the job instead of leaving it pending forever.
        argv += [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
    try:
        r = status.run_limited([*argv, str(script)], status.QUERY_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise SbatchFailed(f"sbatch {script}: no answer within {status.QUERY_TIMEOUT_S} s", True) from exc
    except OSError as exc:
        raise SbatchFailed(f"sbatch {script}: {exc}", False) from exc
    if r.returncode:
        raise SbatchFailed(f"sbatch {script}: {r.stderr.strip() or r.stdout.strip()}", False)
    job_id, _, where = r.stdout.strip().partition(";")
    return job_id, where or cluster


def _taken(name: str, tag: str, cluster: str | None, looks: int) -> tuple[str, str | None] | None:
    """(job id, cluster) of the job sbatch queued under `tag` (its --comment) though it reported a
    failure, or None; QueryError when Slurm does not answer."""
    # -u takes a uid: a container's user may have no name.
    argv = ["squeue", *status.on(cluster), "-h", "-t", "all", "-u", str(os.getuid()), "-n", f"tlstudy:{name}",
            "-o", "%i|%k"]  # fmt: skip
    for look in range(looks):
        if look:
            time.sleep(2)  # a killed sbatch's request may still reach the controller
        r = status._ask(argv)
        if r.returncode:
            raise status.QueryError(f"squeue failed (exit {r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
        where = cluster
        for line in r.stdout.splitlines():
            if line.startswith("CLUSTER: "):  # with --clusters, each cluster's jobs follow its name
                where = line.split(":", 1)[1].strip()
            job_id, _, comment = line.strip().partition("|")
            if comment == tag:
                return job_id, where
    return None


def rows_retrying(submission: dict, tries: int = 3, pause_s: float = 5.0, out=print) -> list[dict]:
    """status.rows, asked again when Slurm does not answer; QueryError after `tries` failures."""
    for attempt in range(1, tries + 1):
        try:
            return status.rows(submission)
        except status.QueryError as exc:
            if attempt == tries:
                raise
            out(f"slurm: {exc}; asking again in {pause_s:g} s ({attempt} of {tries - 1} retries)")
            time.sleep(pause_s)
    raise AssertionError  # unreachable


def _previous(base: Path, out=print) -> dict[str, dict]:
    """The jobs of the last submission with these params, by name, with their states now."""
    path = base / "submission.json"
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    try:
        rows = rows_retrying(record, out=out)
    except status.QueryError as exc:
        raise SlurmError(
            f"cannot tell whether the jobs of the last submission ({path}) have ended: {exc}. Nothing was "
            "submitted (a job still running would run twice in its copy); try again when Slurm answers"
        ) from exc
    return {row["name"]: row for row in rows}


def _cancel(queued: list[tuple[str, str | None]], submission: dict, save) -> str:
    """After a failed sbatch: cancel what this submit queued (their stages would run, and the final
    job never), keep them in the record as cancelled, and say which. `queued`: (job id, cluster)."""
    if not queued:
        return "nothing had been queued by this submit"
    ids = [job_id for job_id, _ in queued]
    failed, commands = [], []
    for cluster in dict.fromkeys(c for _, c in queued):
        argv = ["scancel", *status.on(cluster), *(job_id for job_id, c in queued if c == cluster)]
        commands.append(" ".join(argv))
        try:
            r = status.run_limited(argv, status.QUERY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            failed.append(f"scancel did not answer within {status.QUERY_TIMEOUT_S} s")
            continue
        except OSError as exc:
            failed.append(f"scancel: {exc}")
            continue
        if r.returncode:
            failed.append(r.stderr.strip() or r.stdout.strip() or f"scancel exit {r.returncode}")
    submission["cancelled"] = ids
    save()
    if failed:
        return (
            f"cancelling the {len(queued)} job(s) this submit had queued failed ({'; '.join(failed)}): cancel them "
            f"yourself: {' && '.join(commands)}"
        )
    return (
        f"cancelled the {len(queued)} job(s) this submit had queued ({' '.join(ids)}); they stay in the record "
        "(python -m tlstudy slurm status); fix the cause and submit the same command again"
    )


@contextlib.contextmanager
def _one_submit_at_a_time(path: Path, out=print):
    """Held from reading the last submission to recording the last sbatch: a second submit of the
    same submission (run twice, or retried) waits, then finds the first's jobs and keeps them.
    Created group-writable, for a team's shared `workdir`."""
    from filelock import FileLock, Timeout

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
        try:
            if os.fstat(fd).st_uid == os.getuid():
                os.fchmod(fd, os.fstat(fd).st_mode & 0o7777 | 0o660)  # the umask may have taken g+w
        finally:
            os.close(fd)
        lock = FileLock(path, mode=0o664)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            out(f"slurm: another submit of this submission is under way ({path}); waiting for it to finish")
            lock.acquire(timeout=LOCK_WAIT_S)
    except Timeout as exc:
        raise SlurmError(
            f"{path}: another submit of this submission has held this lock for {LOCK_WAIT_S} s; nothing was "
            "submitted; let it finish (or stop it) and submit again"
        ) from exc
    except OSError as exc:
        raise SlurmError(
            f"{path}: cannot take the submit lock ({exc.strerror or exc}); nothing was submitted; the folder must "
            "be writable by you (group-writable for a shared workdir) on a filesystem with file locks"
        ) from exc
    try:
        yield
    finally:
        lock.release()


def run(cwd: Path, overrides: list[str], remote: str | None = None, name: str | None = None,
        config_file: Path | None = None, wait: bool = False, out=print) -> int:  # fmt: skip
    root = copies.checkout_root(cwd)
    config = C.load(config_file or root / CONFIG)
    if remote:
        _check_remote(root, remote)
    if name and not overrides:
        raise SlurmError(
            "--name names an experiment: give -S overrides too (without them the final job runs dvc repro)"
        )
    commit = copies.git(root, "rev-parse", "HEAD").strip()
    params = copies.overridden_params(root, overrides)
    values = _validate(params[copies.PARAMS], overrides)
    cache = None if remote else copies.cache_dir(root)
    key = copies.key(commit, params, root, f"remote {remote}" if remote else f"cache {cache}")
    workdir = Path(config["workdir"]).expanduser() if "workdir" in config else root / ".dvc" / "tmp" / "slurm"
    base = (workdir if workdir.is_absolute() else root / workdir) / key
    with _one_submit_at_a_time(base / "submit.lock", out):
        submission = _submit(root, config, config_file, commit, params, values, cache, key, base, overrides,
                             remote, name, out)  # fmt: skip
    out(status.table(rows_retrying(submission, out=out)))
    final = next(j for j in submission["jobs"] if j["name"] == plan.FINAL)["job_id"]
    if not wait:
        out(f"submitted: the final job is {final}; `python -m tlstudy slurm status` shows every job")
        return 0
    return wait_for(submission, out)


def _submit(root: Path, config: dict, config_file: Path | None, commit: str, params: dict[str, str], values: dict,
            cache: Path | None, key: str, base: Path, overrides: list[str], remote: str | None, name: str | None,
            out) -> dict:  # fmt: skip
    """The jobs queued and recorded, under the submission's lock: its record as `status` reads it."""
    # The graph of these params (a -S can add a part): read in a copy of its own.
    copies.make(base / ".plan", root, commit, params, None)
    pipeline = plan.read(base / ".plan")
    copies.check_clean(root, pipeline, set(params))
    jobs = plan.from_graph(pipeline.edges)
    check_plan(jobs)
    require_slurm()  # after the checks of the input, which need no cluster

    previous = _previous(base, out)
    if previous.get(plan.FINAL, {}).get("state") in status.ACTIVE:
        final = previous[plan.FINAL]
        raise SlurmError(
            f"this submission is still in progress: its final job {final['job_id']} is {final['state']} "
            "(python -m tlstudy slurm status); wait for it, or scancel it to submit again"
        )
    links = copies.data_links(root, values)
    from tlstudy.tools.profile import tool

    target = scripts.Target(root, commit, key, base, tool("dvc"), remote)
    for sub in ("logs", "scripts", "state"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    opts = {kind: C.sbatch_options(config, kind) for kind in C.KINDS}
    check_options(opts, {job.kind for job in jobs}, config_file or root / CONFIG)
    params_sha = {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in params}
    # Each job carries this submission's tag as its --comment: after an sbatch that reports a
    # failure (a lost reply, a timeout) the job, if the controller took it, is found and recorded.
    token = secrets.token_hex(6)
    ids: dict[str, str] = {}
    rows: list[dict] = []
    submission = {
        "submitted": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "checkout": str(root), "commit": commit, "key": key, "folder": str(base),
        "overrides": overrides, "remote": remote, "name": name, "tag": token, "jobs": rows,
    }  # fmt: skip
    queued: list[tuple[str, str | None]] = []  # (job id, cluster) of the jobs this submit queued, in order
    done: set[str] = set()  # jobs of the last submission that completed: kept, and waited for by nobody

    def save() -> None:
        # Written after every sbatch, so that `status` and the next submit see every job queued
        # so far, whatever happens next; never half-written.
        write_json(base / "submission.json", submission)
        (root / LATEST).parent.mkdir(parents=True, exist_ok=True)
        write_json(root / LATEST, {"folder": str(base)})

    for job in jobs:
        row = {"name": job.name, "kind": job.kind, "part": job.part, "stages": job.stages, "after": job.after,
               "record": str(base / "state" / f"{job.folder}.json")}  # fmt: skip
        before = previous.get(job.name) if job.name != plan.FINAL else None
        if before and before["state"] in (*status.ACTIVE, "COMPLETED"):
            # Its stages are in the run-cache, or will be: wait for it rather than run it twice.
            kept = "completed" if before["state"] == "COMPLETED" else "still queued or running"
            ids[job.name] = before["job_id"]
            if before["state"] == "COMPLETED":
                done.add(job.name)
            rows.append({**row, "job_id": before["job_id"], "log": before["log"], "kept": kept,
                         "cluster": before.get("cluster")})  # fmt: skip
            continue
        record = Path(row["record"])
        record.unlink(missing_ok=True)
        if job.name == plan.FINAL:
            sources = copies.source_paths(pipeline, set(params))
            text = scripts.final_script(target, job, record, opts[job.kind], params_sha, overrides, name, sources)
        else:
            copy = base / "jobs" / job.folder
            copies.make(copy, root, commit, params, cache, remote, links)
            text = scripts.part_script(target, job, copy, record, opts[job.kind])
        script = base / "scripts" / f"{job.folder}.sh"
        script.write_text(text)
        cluster = C.cluster_of(opts[job.kind])
        tag = f"tlstudy:{token}:{job.name}"
        args = [*scripts.sbatch_args(job, base / "logs", opts[job.kind]), f"--comment={tag}"]
        # A completed job is no dependency: a cluster forgets finished jobs after MinJobAge (300 s
        # by default), and sbatch refuses an afterok on a job id it no longer knows.
        waits = [ids[a] for a in job.after if a not in done]
        try:
            job_id, where = _sbatch(script, waits, args, cluster)
        except SbatchFailed as exc:
            try:
                found = _taken(job.name, tag, cluster, looks=3 if exc.timed_out else 1)
            except status.QueryError as lost:
                raise SlurmError(
                    f"{exc}\nwhether Slurm took {job.name} is unknown ({lost}): look for it with squeue -u "
                    f"{os.getuid()} -n tlstudy:{job.name} -o '%i %k' (comment {tag}) and scancel it\n"
                    f"{_cancel(queued, submission, save)}"
                ) from exc
            if found is None:
                raise SlurmError(f"{exc}\n{_cancel(queued, submission, save)}") from exc
            job_id, where = found
            out(f"slurm: {exc}; but Slurm took the job (comment {tag}): {job.name} is job {job_id}, recorded")
        ids[job.name] = job_id
        queued.append((job_id, where))
        log = str(base / "logs" / f"{job.folder}.{job_id}.log")
        rows.append({**row, "job_id": job_id, "log": log, "afterok": waits, "cluster": where})
        save()

    save()
    return submission


def wait_for(submission: dict, out=print, poll_s: float = 5.0) -> int:
    """Until the final job ends; non-zero when any job failed (naming it, with its log's end). A
    query Slurm does not answer is said once per outage and asked again: the jobs' states are
    unknown then, never taken as an end."""
    final = next(j for j in submission["jobs"] if j["name"] == plan.FINAL)
    shown, silent = "", False
    while True:
        try:
            rows = status.rows(submission)
        except status.QueryError as exc:
            if not silent:
                out(f"slurm: {exc}; the jobs' states are unknown for now, asking again every {poll_s:g} s")
            silent = True
            time.sleep(poll_s)
            continue
        if silent:
            out("slurm: Slurm answers again")
            silent = False
        now = status.table(rows)
        if now != shown:
            out(f"-- {datetime.datetime.now().strftime('%H:%M:%S')}\n{now}")
            shown = now
        state = next(r for r in rows if r["name"] == plan.FINAL)["state"]
        if state not in status.ACTIVE:
            break
        time.sleep(poll_s)
    failed = [r for r in rows if r["state"] not in ("COMPLETED", *status.ACTIVE)]
    for r in failed:
        out(status.explain(r))
    if state == "COMPLETED" and not failed:
        out(f"done: the final job {final['job_id']} assembled the result in {submission['checkout']}")
        return 0
    out(f"the final job {final['job_id']} ended {state}; fix what failed and submit the same command again: "
        "finished stages are restored from the run-cache, a stopped train stage resumes")  # fmt: skip
    return 1


def main_status(cwd: Path, out=print) -> int:
    root = copies.checkout_root(cwd)
    latest = root / LATEST
    if not latest.exists():
        raise SlurmError(f"{root}: nothing submitted from this checkout yet (python -m tlstudy slurm submit)")
    folder = Path(json.loads(latest.read_text())["folder"])
    record = folder / "submission.json"
    if not record.is_file():
        raise SlurmError(
            f"{record}: the last submission's record is gone (its folder was removed or moved); submit again: "
            "stages already done are restored from the run-cache"
        )
    submission = json.loads(record.read_text())
    rows = rows_retrying(submission, out=out)
    what = " ".join(f"-S {o}" for o in submission["overrides"]) or "the current params"
    out(f"submitted {submission['submitted']} at {submission['commit'][:10]}, {what}; folder {folder}")
    out(status.table(rows))
    for r in rows:
        if r["state"] not in ("COMPLETED", *status.ACTIVE):
            out(status.explain(r))
    return 0 if all(r["state"] in ("COMPLETED", *status.ACTIVE) for r in rows) else 1
