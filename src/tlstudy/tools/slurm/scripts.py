"""The batch script of each job: `dvc repro` of its stages in its working copy (the final job: `dvc
repro` or `dvc exp run -S …` in the user's checkout), and a record of how it ended that outlives
the controller's memory of the job on a cluster with no accounting database."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from tlstudy.tools.slurm.plan import Job

# Every value below reaches bash quoted for it (shlex.quote, never inside a double-quoted string:
# a path may hold ', ", $ or spaces), and a value in a comment has its line breaks escaped, so
# that no checkout path or -S value can run as a command.
HEADER = """#!/bin/bash
# Written by `python -m tlstudy slurm submit` for {checkout} at commit {commit}
# (params {key}): {what}.
# Submitted as: sbatch {sbatch}
set -u
record() {{
  # How this attempt ended, for `python -m tlstudy slurm status` once Slurm has forgotten the job.
  printf '{{"job_id": "%s", "state": "%s", "exit": %s, "restarts": %s, "host": "%s", "time": "%s"}}\\n' \\
    "$SLURM_JOB_ID" "$1" "$2" "${{SLURM_RESTART_COUNT:-0}}" "$(hostname)" "$(date -Iseconds)" >{record}.tmp
  mv {record}.tmp {record}
}}
lock() {{
  # Held on fd 9 until the job ends. A lock that cannot be taken (NFS without its lock service:
  # "No locks available") stops the job: unlocked, two jobs could share one copy or one checkout.
  if mkdir -p "$(dirname "$1")" && exec 9>>"$1"; then
    flock -n 9 || {{ echo "tlstudy slurm: waiting for the lock $1"; flock 9; }} && return 0
  fi
  echo "tlstudy slurm: cannot lock $1; stopping rather than run unlocked" >&2
  record FAILED 3; exit 3
}}
cd {cwd} || {{ echo "tlstudy slurm: "{cwd}" is gone" >&2; record FAILED 1; exit 1; }}
# The stages run `python -m tlstudy` from this folder's own code, the code DVC hashes.
export PATH={path}:"$PATH" PYTHONPATH={cwd}/src DVC_NO_ANALYTICS=1
# One download of PACS for every job (fetch's, then pretraining's), kept in the checkout for later runs.
if [ -z "${{TLSTUDY_DOWNLOADS:-}}" ]; then export TLSTUDY_DOWNLOADS={downloads}; else export TLSTUDY_DOWNLOADS; fi
# The GPU comes from Slurm (CUDA_VISIBLE_DEVICES); TLSTUDY_GPUS's lock files share the GPUs of one host.
unset TLSTUDY_GPUS
# PyTorch's threads follow the CPUs asked for (a node's other cores are other jobs').
if [ -n "${{SLURM_CPUS_PER_TASK:-}}" ]; then export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK; fi
echo "tlstudy slurm: "{name}": job $SLURM_JOB_ID, restart ${{SLURM_RESTART_COUNT:-0}}, $(hostname), $(date -Iseconds)"
echo "tlstudy slurm: in $PWD"
record RUNNING null
"""

FOOTER = """rc=$?
if [ $rc -eq 0 ]; then record COMPLETED 0; else record FAILED $rc; fi
echo "tlstudy slurm: "{name}": exit $rc, $(date -Iseconds)"
exit $rc
"""


def comment(text: object) -> str:
    """A value as it may stand in a comment line: its line breaks escaped."""
    return str(text).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


@dataclass(frozen=True)
class Target:
    """What every script of one submission shares."""

    checkout: Path
    commit: str
    key: str  # the hash of (commit, params, checkout, cache) that names the submission's folder
    base: Path  # that folder: copies, logs, scripts, records
    dvc: str  # the venv's dvc
    remote: str | None

    def head(self, job: Job, cwd: Path, record: Path, options: list[str], what: str) -> str:
        from tlstudy.tools.profile import _python_on_path

        args = sbatch_args(job, self.base / "logs", options)
        return HEADER.format(
            sbatch=comment(" ".join(shlex.quote(a) for a in args)), checkout=comment(self.checkout),
            commit=self.commit, key=self.key, what=comment(what), record=shlex.quote(str(record)),
            cwd=shlex.quote(str(cwd)), path=shlex.quote(_python_on_path(cwd)), name=shlex.quote(job.name),
            downloads=shlex.quote(str(self.checkout / "work" / "downloads")),
        )  # fmt: skip

    def run(self, *args: str) -> str:
        return " ".join(shlex.quote(a) for a in (self.dvc, *args))


def sbatch_args(job: Job, log_dir: Path, options: list[str]) -> list[str]:
    """The job's sbatch options, given on sbatch's command line (an argument list: no quoting
    for a shell or for #SBATCH lines to get wrong)."""
    return [
        f"--job-name=tlstudy:{job.name}",
        # %j: a resubmitted job is a new Slurm job with a log of its own; a requeued one appends.
        f"--output={log_dir / (job.folder + '.%j.log')}",
        "--open-mode=append",
        # A preempted or failed node's job goes back to the queue and resumes in its copy.
        "--requeue",
        *options,
    ]


def part_script(t: Target, job: Job, copy: Path, record: Path, options: list[str]) -> str:
    """A data or part job: its stages in its own working copy; the stages upstream of them
    (fetch's outputs, a backbone) come from the run-cache."""
    body = [
        "# One job at a time in this copy (a job queued twice waits); so a DVC lock left by a killed attempt,",
        "# maybe on another node, is stale: the rwlock, and the repo lock, which core.hardlink_lock (for NFS)",
        "# leaves behind as a file.",
        f"lock {shlex.quote(str(t.base / 'state' / (job.folder + '.lock')))}",
        "rm -f .dvc/tmp/rwlock .dvc/tmp/lock*",
    ]
    # With a remote instead of a shared cache, what upstream jobs made comes through it.
    steps = [t.run("repro", *(["--pull"] if t.remote else []), *job.stages)]
    # DVC leaves stages with uncached outputs out of the run-cache; runcache.py records them, and
    # sends them to the remote with the files `dvc push --run-cache` leaves behind.
    helper = ("python", "-m", "tlstudy.tools.slurm.runcache", *(["--push", t.remote] if t.remote else []), *job.stages)
    steps.append(" ".join(shlex.quote(a) for a in helper))
    body.append(" && ".join(steps))
    head = t.head(job, copy, record, options, f"the stages {' '.join(job.stages)} in their own working copy")
    return head + "\n".join(body) + "\n" + FOOTER.format(name=shlex.quote(job.name))


def final_script(t: Target, job: Job, record: Path, options: list[str], params_sha: dict[str, str],
                 overrides: list[str], name: str | None, sources: list[str]) -> str:  # fmt: skip
    """The final job: in the user's checkout, `dvc repro` — or `dvc exp run --temp -S …`, a real
    experiment that leaves the checkout's files as they are — restores every stage the other jobs
    ran from the run-cache and runs the rest (the report), writing dvc.lock or the experiment.

    Final jobs of one checkout take turns (flock on a file in .dvc/tmp/slurm), and each checks,
    once it holds the lock, that the checkout is what was submitted: HEAD, the params files by
    content, and the code, data and dvc.yaml the stages depend on (`sources`) unchanged from HEAD
    — else DVC would run the whole pipeline on this one node, or record a mix of two submissions."""
    fail = "record FAILED 3; exit 3; }"
    lock = shlex.quote(str(t.checkout / ".dvc" / "tmp" / "slurm" / "final.lock"))
    checks = [
        "# One final job at a time in this checkout; each checks it after it holds the lock.",
        f"lock {lock}",
        f'[ "$(git rev-parse HEAD)" = {t.commit} ] || {{ echo "tlstudy slurm: the checkout is no longer at '
        f'{t.commit[:10]} (submitted); submit again" >&2; {fail}',
    ]  # fmt: skip
    for file, sha in sorted(params_sha.items()):
        f = shlex.quote(file)
        checks.append(
            f'[ "$(sha256sum {f} | cut -d" " -f1)" = {sha} ] || {{ echo "tlstudy slurm: "{f}" '
            f'changed in the checkout since the submission; submit again" >&2; {fail}'
        )
    listed = " ".join(shlex.quote(p) for p in sources)
    checks.append(
        f"changed=$(git status --porcelain --untracked-files=all -- {listed})\n"
        '[ -z "$changed" ] || { echo "tlstudy slurm: files the stages depend on changed in the checkout since the '
        f'submission (the jobs ran HEAD\'s):" >&2; echo "$changed" >&2; '
        f'echo "commit or stash them and submit again" >&2; {fail}'
    )  # fmt: skip
    if overrides:
        # --temp: the experiment runs in a folder of DVC's own, so the checkout's params.yaml stays
        # as the user has it (DVC would leave the overrides in it) and its outputs too.
        run = ["exp", "run", "--temp", *(a for o in overrides for a in ("-S", o)), *(["-n", name] if name else [])]
    else:
        run = ["repro"]
    if t.remote:
        run.append("--pull")
    # The user may run DVC in the checkout meanwhile: wait for its lock rather than fail. DVC runs
    # through dvc_utf8, which writes DVC's config as UTF-8 (a checkout under a non-ASCII path).
    dvc = ("python", "-m", "tlstudy.tools.slurm.dvc_utf8", "--wait-for-lock", *run)
    body = [*checks, " ".join(shlex.quote(a) for a in dvc)]
    head = t.head(job, t.checkout, record, options, f"`dvc {' '.join(run)}` in the checkout")
    return head + "\n".join(body) + "\n" + FOOTER.format(name=shlex.quote(job.name))
