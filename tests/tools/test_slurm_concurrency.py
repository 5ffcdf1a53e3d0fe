"""The cluster route when submits overlap or Slurm's answers go astray, on the real one-node Slurm
(scripts/slurm-cluster.sh): two submits at once queue one submission; an sbatch that reports a
failure after the controller took the job, or hangs, leaves no job unrecorded; a `--clusters`
option reaches every query and scancel; two checkouts sharing a `workdir` keep their own
submissions; a job whose lock cannot be taken stops. Faults are wrappers on PATH in front of the
real commands. The data job is held (`--begin`), so that nothing but the job under test runs."""

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import tiny_overlay
from test_slurm import LIMIT, cluster, workspace  # noqa: F401 (cluster: a fixture)

from tlstudy.tools.slurm import main as slurm_main
from tlstudy.tools.slurm import plan, scripts, status

pytestmark = pytest.mark.slow

HOLD = 'data: {extra: ["--begin=now+3600"]}\n'  # queued, never started: the test ends before
LOST = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"


# The real commands, found before any test puts a wrapper in front of them.
REAL = {tool: shutil.which(tool) for tool in ("sbatch", "squeue", "scontrol", "sacct", "scancel", "flock")}


def real(tool: str) -> str:
    return REAL[tool] or pytest.fail(f"{tool} not on PATH")


def wrapper(folder: Path, tool: str, body: str) -> Path:
    """`tool` on PATH before the real one, running `body` (bash; $REAL is the real command, $N the
    call's number, $TEST_ONLY 1 for `sbatch --test-only`)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / tool
    head = f"""\
        #!/bin/bash
        REAL={real(tool)}
        N=$(( $(cat {folder}/{tool}.count 2>/dev/null || echo 0) + 1 )); echo $N > {folder}/{tool}.count
        case " $* " in *" --test-only "*) TEST_ONLY=1;; *) TEST_ONLY=0;; esac
        """
    script.write_text(textwrap.dedent(head) + textwrap.dedent(body))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # as with the venv activated


def environ(path_first: Path | None = None) -> dict:
    return dict(os.environ, PATH=PATH if path_first is None else f"{path_first}{os.pathsep}{PATH}")


@pytest.fixture
def slurm(monkeypatch, capsys):
    """`python -m tlstudy slurm ARGS` in a checkout, in this process (DVC and torch imported once):
    (exit code, stdout, stderr). Slurm commands, and the jobs, get PATH with `path_first` first."""

    def call(ws: Path, *args: str, path_first: Path | None = None) -> tuple[int, str, str]:
        monkeypatch.setenv("PATH", environ(path_first)["PATH"])
        monkeypatch.chdir(ws)
        capsys.readouterr()
        code = slurm_main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return call


# The last job id Slurm knew as each test began, by the test's tmp_path. Paths repeat from run to
# run (pytest numbers its folders afresh once a passed run's are gone) and this cluster lists ended
# jobs for a day (MinJobAge), so a job under the same folder from an earlier run is not this test's.
BEGAN: dict[Path, int] = {}


def listed() -> list[tuple[int, str, str, str, str]]:
    """Every job the real squeue lists, ended ones included: (number, id, name, state, script)."""
    out = subprocess.run(
        [real("squeue"), "-h", "-t", "all", "-o", "%i|%j|%T|%o"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split("|", 3) for line in out.splitlines()]
    return [(int(job_id.split("_")[0]), job_id, name, state, script) for job_id, name, state, script in rows]


def last_job_id() -> int:
    return max((number for number, *_ in listed()), default=0)


def in_slurm(folder: Path) -> dict[str, tuple[str, str]]:
    """Every job of this test whose script lies under `folder`, by id: (name, state). Asked of the
    real squeue, orphans included: the record is what the test checks, not what it asks."""
    floor = next((last for began, last in BEGAN.items() if began == folder or began in folder.parents), 0)
    return {
        job_id: (name, state)
        for number, job_id, name, state, script in listed()
        if script.startswith(f"{folder}/") and number > floor
    }


def record_of(ws: Path) -> dict:
    folder = json.loads((ws / ".dvc/tmp/slurm/latest.json").read_text())["folder"]
    return json.loads((Path(folder) / "submission.json").read_text())


def recorded(ws: Path) -> dict[str, str]:
    return {j["job_id"]: j["name"] for j in record_of(ws)["jobs"]}


@pytest.fixture(scope="module")
def template(cluster, module_tmp) -> Path:  # noqa: F811
    # The smallest pipeline with a part: the data job, train@scratch, final.
    return workspace(module_tmp / "template", tiny_overlay())


@pytest.fixture
def checkout(template, tmp_path):
    """A checkout of its own (a clone of the template: the same commit and params), its data job
    held; every job under tmp_path is cancelled at the end, recorded or not."""

    def make(name: str = "ws", slurm_yaml: str = HOLD) -> Path:
        ws = tmp_path / name
        subprocess.run(["git", "clone", "-q", str(template), str(ws)], check=True)
        (ws / "slurm.yaml").write_text(slurm_yaml)
        return ws

    BEGAN[tmp_path] = last_job_id()
    yield make
    left = list(in_slurm(tmp_path))
    if left:
        subprocess.run([real("scancel"), *left], capture_output=True)
    del BEGAN[tmp_path]


def test_two_submits_at_once_queue_one_submission(checkout, tmp_path, slurm):
    ws = checkout()
    # A slow controller: each real submission takes 2 s; the second submit starts once the first
    # is in its sbatch loop (its first real sbatch, the 4th call after three --test-only).
    slow = wrapper(tmp_path / "bin", "sbatch", '[ $TEST_ONLY = 1 ] || sleep 2\nexec $REAL "$@"\n')
    argv = [sys.executable, "-m", "tlstudy", "slurm", "submit"]
    first = subprocess.Popen(argv, cwd=ws, env=environ(slow), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + LIMIT
    while not (slow / "sbatch.count").exists() or int((slow / "sbatch.count").read_text() or 0) < 4:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    code, out, err = slurm(ws, "submit", path_first=slow)
    first_out, first_err = first.communicate(timeout=LIMIT)
    assert first.returncode == 0, first_out + first_err
    # The second waited for the first, then found its jobs queued: as a retried submit, it queues nothing.
    assert code == 2, out + err
    assert "another submit of this submission is under way" in out
    assert "this submission is still in progress" in err
    held = in_slurm(tmp_path)
    assert {i: name for i, (name, _) in held.items()} == {i: f"tlstudy:{n}" for i, n in recorded(ws).items()}
    assert sorted(recorded(ws).values()) == sorted(["data", "train@scratch", plan.FINAL])
    code, out, _ = slurm(ws, "status")
    assert code == 0 and set(held) <= set(out.split())


def test_an_sbatch_that_fails_after_slurm_took_the_job_leaves_no_job_unrecorded(checkout, tmp_path, slurm):
    ws = checkout()
    # Each real submission reaches the controller, and the reply is lost on the way back.
    lost = wrapper(
        tmp_path / "bin", "sbatch", f'[ $TEST_ONLY = 1 ] && exec $REAL "$@"\n$REAL "$@"\necho "{LOST}" >&2\nexit 1\n'
    )
    code, out, err = slurm(ws, "submit", path_first=lost)
    assert code == 0, out + err
    assert out.count("but Slurm took the job") == 3
    held = in_slurm(tmp_path)
    assert len(held) == 3 and set(held) == set(recorded(ws))
    assert all(state == "PENDING" for _, state in held.values())


def test_an_sbatch_and_a_scancel_that_hang_are_given_up_on(checkout, tmp_path, monkeypatch, slurm):
    ws = checkout()
    # The data job's sbatch hangs after the controller took the job; the train job's is refused
    # outright; the scancel that follows hangs too.
    bin_ = wrapper(
        tmp_path / "bin", "sbatch",
        '[ $TEST_ONLY = 1 ] && exec $REAL "$@"\n'
        '[ $N = 4 ] && { $REAL "$@"; exec sleep 40; }\n'
        'echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2; exit 1\n',
    )  # fmt: skip
    wrapper(bin_, "scancel", "exec sleep 40\n")
    monkeypatch.setattr(status, "QUERY_TIMEOUT_S", 3)
    started = time.monotonic()
    code, out, err = slurm(ws, "submit", path_first=bin_)
    took = time.monotonic() - started
    assert code == 2, out + err
    assert took < 60, f"{took:.0f} s: sbatch or scancel was waited for"
    ((job_id, name),) = recorded(ws).items()
    assert name == "data" and "but Slurm took the job" in out
    assert "no answer within 3 s" in out and "QOSMaxSubmitJobPerUserLimit" in err
    assert f"scancel did not answer within 3 s): cancel them yourself: scancel {job_id}" in err
    assert record_of(ws)["cancelled"] == [job_id]
    assert set(in_slurm(tmp_path)) == {job_id}


CLUSTERS = """\
here=0; args=()
while [ $# -gt 0 ]; do
  case $1 in
    -M|--clusters) [ "$2" = tlstudy ] && here=1; shift 2; continue;;
    -M*|--clusters=*) v=${1#-M}; v=${v#--clusters=}; [ "$v" = tlstudy ] && here=1; shift; continue;;
  esac
  args+=("$1"); shift
done
"""
# What each command says on a login node whose default cluster is another one, without --clusters.
ELSEWHERE = {
    "squeue": "slurm_load_jobs error: Invalid job id specified",
    "scontrol": "slurm_load_jobs error: Invalid job id specified",
    "sacct": "sacct: error: Problem talking to the database",
    "scancel": "scancel: error: Kill job error: Invalid job id specified",
}


def test_a_clusters_option_reaches_every_query_and_scancel(checkout, tmp_path, slurm):
    """The one-node cluster has no accounting database, which `--clusters` needs: wrappers stand
    for a login node whose default cluster is another one, and send `--clusters=tlstudy` on to
    the real one-node cluster."""
    option = '["--clusters=tlstudy"]'
    ws = checkout(slurm_yaml=f'data: {{extra: ["--begin=now+3600", "--clusters=tlstudy"]}}\n'
                  f"train: {{extra: {option}}}\nreport: {{extra: {option}}}\n")  # fmt: skip
    bin_ = tmp_path / "bin"
    # The third real submission (the final job) is refused: the two queued before are cancelled.
    wrapper(bin_, "sbatch", CLUSTERS + textwrap.dedent("""\
        [ $here = 1 ] || { echo "sbatch: error: not the cluster under test" >&2; exit 1; }
        [ $TEST_ONLY = 1 ] && exec $REAL "${args[@]}"
        real=$(( $(cat $0.real 2>/dev/null || echo 0) + 1 )); echo $real > $0.real
        [ $real = 3 ] && { echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2; exit 1; }
        out=$($REAL "${args[@]}") || exit $?
        echo "$out;tlstudy"
        """))  # fmt: skip
    for tool, said in ELSEWHERE.items():
        wrapper(bin_, tool, CLUSTERS + f'[ $here = 1 ] || {{ echo "{said}" >&2; exit 1; }}\n'
                + ('echo "CLUSTER: tlstudy"\n' if tool == "squeue" else "") + 'exec $REAL "${args[@]}"\n')  # fmt: skip
    code, out, err = slurm(ws, "submit", path_first=bin_)
    assert code == 2, out + err
    assert "cancelled the 2 job(s) this submit had queued" in err
    held = in_slurm(tmp_path)
    assert set(held) == set(recorded(ws)) and len(held) == 2
    deadline = time.monotonic() + 30
    while any(state != "CANCELLED" for _, state in in_slurm(tmp_path).values()):
        assert time.monotonic() < deadline, in_slurm(tmp_path)
        time.sleep(0.5)
    _, shown, _ = slurm(ws, "status", path_first=bin_)
    for job_id, name in recorded(ws).items():
        row = next(line for line in shown.splitlines() if line.startswith(f"{name} "))
        assert job_id in row.split() and "CANCELLED" in row, shown


def test_two_checkouts_sharing_a_workdir_keep_their_own_submissions(checkout, tmp_path, slurm):
    shared = f"workdir: {tmp_path / 'scratch'}\n{HOLD}"
    mine, clone = checkout("mine", shared), checkout("clone", shared)
    code, out, err = slurm(mine, "submit")
    assert code == 0, out + err
    code, out, err = slurm(clone, "submit")
    assert code == 0, out + err
    a, b = record_of(mine), record_of(clone)
    assert a["folder"] != b["folder"] and not set(recorded(mine)) & set(recorded(clone))
    assert (a["checkout"], b["checkout"]) == (str(mine), str(clone))
    assert set(in_slurm(tmp_path / "scratch")) == set(recorded(mine)) | set(recorded(clone))
    # The clone's jobs feed the clone's cache, and `status` in each shows its own jobs.
    copy = Path(b["folder"]) / "jobs" / "data"
    assert f"dir = {clone / '.dvc' / 'cache'}" in (copy / ".dvc" / "config.local").read_text()
    shown = set(slurm(mine, "status")[1].split())
    assert set(recorded(mine)) <= shown and not set(recorded(clone)) & shown


NO_LOCKS = 'echo "flock: 9: No locks available" >&2; exit 1\n'  # NFS without its lock service


def test_a_part_job_whose_lock_fails_stops(checkout, tmp_path, slurm):
    ws = checkout(slurm_yaml="")
    bin_ = wrapper(tmp_path / "bin", "flock", NO_LOCKS)
    code, out, err = slurm(ws, "submit", path_first=bin_)  # the jobs get the submit's PATH, and the wrapper
    assert code == 0, out + err
    jobs = {j["name"]: j for j in record_of(ws)["jobs"]}
    deadline = time.monotonic() + 120
    while in_slurm(tmp_path)[jobs["data"]["job_id"]][1] in status.ACTIVE:
        assert time.monotonic() < deadline, "the data job did not end"
        time.sleep(0.5)
    assert in_slurm(tmp_path)[jobs["data"]["job_id"]][1] == "FAILED"
    log = Path(jobs["data"]["log"]).read_text()
    assert "cannot lock" in log and "stopping rather than run unlocked" in log and "Running stage" not in log, log
    assert json.loads(Path(jobs["data"]["record"]).read_text())["state"] == "FAILED"


def test_a_final_job_whose_lock_fails_stops_before_it_looks_at_the_checkout(checkout, tmp_path):
    """The final job's script, run by bash as Slurm would, in a checkout at the commit submitted."""
    ws = checkout(slurm_yaml="")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True, text=True).stdout.strip()
    target = scripts.Target(ws, commit, "k", tmp_path / "base", "dvc", None)
    job = plan.Job(plan.FINAL, "report", None, ["report"], [])
    record = tmp_path / "base" / "state" / "final.json"
    record.parent.mkdir(parents=True)
    text = scripts.final_script(target, job, record, [], {"params.yaml": "0" * 64}, [], None, ["src"])
    bin_ = wrapper(tmp_path / "bin", "flock", NO_LOCKS)
    env = dict(environ(bin_), SLURM_JOB_ID="1")
    r = subprocess.run(["bash", "-c", text], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "cannot lock" in r.stderr and "final.lock" in r.stderr
    assert "changed in the checkout" not in r.stderr  # stopped at the lock, not at the checks after it
    assert json.loads(record.read_text())["state"] == "FAILED"
