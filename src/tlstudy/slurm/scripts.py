"""The batch script of each job: `dvc repro` of its stages in its working copy (the final job: `dvc
repro` or `dvc exp run -S …` in the user's checkout), and a record of how it ended that outlives
the controller's memory of the job on a cluster with no accounting database."""

from __future__ import annotations

import shlex
from pathlib import Path

from tlstudy.slurm.plan import Job

HEADER = """#!/bin/bash
{sbatch}
# Written by `python -m tlstudy slurm submit` for {checkout} at commit {commit}
# (params {key}): {what}.
set -u
record() {{
  # How this attempt ended, for `python -m tlstudy slurm status` once Slurm has forgotten the job.
  printf '{{"job_id": "%s", "state": "%s", "exit": %s, "restarts": %s, "host": "%s", "time": "%s"}}\\n' \\
    "$SLURM_JOB_ID" "$1" "$2" "${{SLURM_RESTART_COUNT:-0}}" "$(hostname)" "$(date -Iseconds)" >{record}.tmp
  mv {record}.tmp {record}
}}
cd {cwd} || {{ echo "tlstudy slurm: {cwd} is gone" >&2; record FAILED 1; exit 1; }}
# The stages run `python -m tlstudy` from this folder's own code, the code DVC hashes.
export PATH={path}:"$PATH" PYTHONPATH={cwd}/src DVC_NO_ANALYTICS=1
# The GPU comes from Slurm (CUDA_VISIBLE_DEVICES); TLSTUDY_GPUS's lock files share the GPUs of one host.
unset TLSTUDY_GPUS
# PyTorch's threads follow the CPUs asked for (a node's other cores are other jobs').
if [ -n "${{SLURM_CPUS_PER_TASK:-}}" ]; then export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK; fi
echo "tlstudy slurm: {name}: Slurm job $SLURM_JOB_ID (restart ${{SLURM_RESTART_COUNT:-0}})" \
  "on $(hostname), $(date -Iseconds), in {cwd}"
record RUNNING null
"""

FOOTER = """rc=$?
if [ $rc -eq 0 ]; then record COMPLETED 0; else record FAILED $rc; fi
echo "tlstudy slurm: {name}: exit $rc, $(date -Iseconds)"
exit $rc
"""


def sbatch_lines(job: Job, log_dir: Path, options: list[str]) -> str:
    lines = [
        f"--job-name=tlstudy:{job.name}",
        # %j: a resubmitted job is a new Slurm job with a log of its own; a requeued one appends.
        f"--output={log_dir / (job.folder + '.%j.log')}",
        "--open-mode=append",
        # A preempted or failed node's job goes back to the queue and resumes in its copy.
        "--requeue",
        *options,
    ]
    return "\n".join(f"#SBATCH {shlex.quote(line)}" for line in lines)


def _dvc(dvc: str, *args: str) -> str:
    return " ".join(shlex.quote(a) for a in (dvc, *args))


def part_script(job: Job, copy: Path, record: Path, log_dir: Path, options: list[str], dvc: str, path: str,
                checkout: Path, commit: str, key: str, remote: str | None) -> str:  # fmt: skip
    """A data or part job: its stages in its own working copy; the stages upstream of them
    (fetch's outputs, a backbone) come from the run-cache."""
    body = [
        "# This copy is this job's alone: a DVC lock left by a killed attempt, maybe on another node, is stale.",
        "rm -f .dvc/tmp/rwlock",
    ]
    # With a remote instead of a shared cache, what upstream jobs made comes through it.
    steps = [_dvc(dvc, "repro", *(["--pull"] if remote else []), *job.stages)]
    # DVC leaves stages with uncached outputs out of the run-cache; runcache.py records them, and
    # sends them to the remote with the files `dvc push --run-cache` leaves behind.
    helper = ("python", "-m", "tlstudy.slurm.runcache", *(["--push", remote] if remote else []), *job.stages)
    steps.append(" ".join(shlex.quote(a) for a in helper))
    body.append(" && ".join(steps))
    head = HEADER.format(
        sbatch=sbatch_lines(job, log_dir, options), checkout=checkout, commit=commit, key=key,
        what=f"the stages {' '.join(job.stages)} in their own working copy", record=shlex.quote(str(record)),
        cwd=shlex.quote(str(copy)), path=shlex.quote(path), name=job.name,
    )  # fmt: skip
    return head + "\n".join(body) + "\n" + FOOTER.format(name=job.name)


def final_script(job: Job, checkout: Path, record: Path, log_dir: Path, options: list[str], dvc: str, path: str,
                 commit: str, key: str, params_sha: dict[str, str], overrides: list[str], name: str | None,
                 remote: str | None) -> str:  # fmt: skip
    """The final job: in the user's checkout, `dvc repro` — or `dvc exp run -S …`, a real
    experiment — restores every stage the other jobs ran from the run-cache and runs the rest
    (the report), writing dvc.lock. It refuses a checkout that moved since the submission, which
    would make DVC run the whole pipeline here."""
    checks = [f'[ "$(git rev-parse HEAD)" = {commit} ] || {{ echo "tlstudy slurm: the checkout is no longer at '
              f'{commit[:10]} (submitted); submit again" >&2; record FAILED 3; exit 3; }}']  # fmt: skip
    for file, sha in sorted(params_sha.items()):
        checks.append(
            f'[ "$(sha256sum {shlex.quote(file)} | cut -d" " -f1)" = {sha} ] || {{ echo "tlstudy slurm: {file} '
            f'changed in the checkout since the submission; submit again" >&2; record FAILED 3; exit 3; }}'
        )
    if overrides:
        run = ["exp", "run", *(a for o in overrides for a in ("-S", o)), *(["-n", name] if name else [])]
    else:
        run = ["repro"]
    if remote:
        run.append("--pull")
    # The user may run DVC in the checkout meanwhile: wait for its lock rather than fail.
    body = [*checks, _dvc(dvc, "--wait-for-lock", *run)]
    head = HEADER.format(
        sbatch=sbatch_lines(job, log_dir, options), checkout=checkout, commit=commit, key=key,
        what=f"`dvc {' '.join(run)}` in the checkout", record=shlex.quote(str(record)),
        cwd=shlex.quote(str(checkout)), path=shlex.quote(path), name=job.name,
    )  # fmt: skip
    return head + "\n".join(body) + "\n" + FOOTER.format(name=job.name)
