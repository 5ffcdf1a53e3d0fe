"""The cluster route when things go wrong, on the real one-node Slurm (scripts/slurm-cluster.sh):
a Slurm query that fails is "unknown for now", never an end; a submit during such a blip submits
nothing; a bad slurm.yaml is refused before anything is queued; an sbatch that fails midway
cancels what it queued and says so; a checkout path with quotes, `$`, spaces and non-ASCII runs.
A failing query or sbatch is a wrapper on PATH that fails on cue in front of the real command:
the cluster stays real."""

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import at_rev, tiny_overlay
from test_slurm import LIMIT, cluster, experiments, jobs_of, submission, workspace  # noqa: F401 (cluster: a fixture)

from tlstudy.tools.slurm import plan

pytestmark = pytest.mark.slow


def faulty(folder: Path, tool: str, fail_calls: str, message: str) -> Path:
    """A `tool` on PATH before the real one: calls numbered in `fail_calls` (a bash pattern, e.g.
    '[2-4]' or '*') fail with `message`; every call's arguments are logged."""
    real = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / tool
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/bash
        n=$(( $(cat {folder}/{tool}.count 2>/dev/null || echo 0) + 1 ))
        echo $n > {folder}/{tool}.count
        echo "$*" >> {folder}/{tool}.calls
        case $n in {fail_calls}) echo "{message}" >&2; exit 1;; esac
        exec {real} "$@"
        """)
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


def run_slurm(ws: Path, *args: str, path_first: Path | None = None) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    if path_first is not None:
        path = f"{path_first}{os.pathsep}{path}"
    env = dict(os.environ, PATH=path)
    argv = [sys.executable, "-m", "tlstudy", "slurm", *args]
    return subprocess.run(argv, cwd=ws, env=env, capture_output=True, text=True, timeout=LIMIT)


def fresh(tmp: Path, name: str) -> Path:
    """The smallest pipeline with a part: the data job, train@scratch, final."""
    return workspace(tmp / name, tiny_overlay())


def queued_ids(ws: Path) -> set[str]:
    """Every job of this workspace's submissions that Slurm still holds."""
    ids = set()
    for record in (ws / ".dvc/tmp/slurm").glob("*/submission.json"):
        ids |= {j["job_id"] for j in json.loads(record.read_text())["jobs"]}
    return ids


@pytest.fixture
def cleanup():
    spaces = []
    yield spaces.append
    for ws in spaces:  # whatever a failed test left queued or running must not outlive it
        if ws.exists() and queued_ids(ws):
            subprocess.run(["scancel", *queued_ids(ws)], capture_output=True)


def test_a_query_slurm_does_not_answer_is_unknown_for_now_and_wait_goes_on(cluster, tmp_path, cleanup):  # noqa: F811
    ws = fresh(tmp_path, "ws")
    cleanup(ws)
    # The second to fourth squeue time out, as a busy controller's do.
    fake = faulty(tmp_path / "bin", "squeue", "[2-4]", "slurm_load_jobs error: Socket timed out on send/recv operation")
    r = run_slurm(ws, "submit", "--wait", path_first=fake)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "Socket timed out" in out and "unknown for now" in out and "Slurm answers again" in out
    assert "done: the final job" in out
    # Only this submission's jobs are asked for, never the whole cluster's.
    ids = {j["job_id"] for j in submission(ws)["jobs"]}
    calls = (fake / "squeue.calls").read_text().splitlines()
    assert len(calls) >= 5
    for call in calls:
        asked = call.split("-j ", 1)[1].split()[0].split(",")
        assert set(asked) <= ids, call


def test_a_submit_while_slurm_does_not_answer_submits_nothing(cluster, tmp_path, cleanup):  # noqa: F811
    ws = fresh(tmp_path, "ws")
    cleanup(ws)
    r = run_slurm(ws, "submit")
    assert r.returncode == 0, r.stdout + r.stderr
    before = submission(ws)
    folder = Path(before["folder"])
    copies_before = {p: p.stat().st_mtime_ns for p in (folder / "jobs").rglob("params.yaml")}
    fake = faulty(tmp_path / "bin", "squeue", "*", "slurm_load_jobs error: Unable to contact slurm controller")
    started = time.monotonic()
    again = run_slurm(ws, "submit", path_first=fake)
    assert again.returncode == 2, again.stdout + again.stderr
    err = again.stderr.strip().splitlines()[-1]
    assert (
        err.startswith("error: cannot tell whether the jobs of the last submission") and "Nothing was submitted" in err
    )
    assert "Unable to contact slurm controller" in err
    assert time.monotonic() - started >= 10  # asked three times, 5 s apart
    assert submission(ws) == before  # no record rewritten
    assert {p: p.stat().st_mtime_ns for p in (folder / "jobs").rglob("params.yaml")} == copies_before
    assert not (fake / "sbatch.calls").exists()
    subprocess.run(["scancel", *queued_ids(ws)], check=True)


def test_a_partition_slurm_does_not_have_is_refused_before_any_job_is_queued(cluster, tmp_path, cleanup):  # noqa: F811
    ws = fresh(tmp_path, "ws")
    cleanup(ws)
    (ws / "slurm.yaml").write_text("report: {partition: nosuch, time: '00:10:00'}\n")
    r = run_slurm(ws, "submit")
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {ws / 'slurm.yaml'}: 'report': Slurm refuses --partition=nosuch --time=00:10:00: ")
    assert "invalid partition" in line and line.endswith("nothing was submitted")
    assert not list((ws / ".dvc/tmp/slurm").glob("*/submission.json"))
    (ws / "slurm.yaml").write_text("train: {time: '16 hours'}\n")
    r = run_slurm(ws, "submit")
    assert r.returncode == 2 and "'train.time' is '16 hours', not a time sbatch takes" in r.stderr


def test_an_sbatch_failing_midway_cancels_what_this_submit_queued_and_records_it(cluster, tmp_path, cleanup):  # noqa: F811
    ws = fresh(tmp_path, "ws")
    cleanup(ws)
    # sbatch --test-only (calls 1-3: a kind each) and the first real submission pass; the second
    # real one meets a per-user limit.
    fake = faulty(tmp_path / "bin", "sbatch", "5", "sbatch: error: QOSMaxSubmitJobPerUserLimit")
    r = run_slurm(ws, "submit", path_first=fake)
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr
    assert "QOSMaxSubmitJobPerUserLimit" in err and "cancelled the 1 job(s) this submit had queued" in err
    record = submission(ws)
    assert [j["name"] for j in record["jobs"]] == [plan.DATA] and record["cancelled"] == [record["jobs"][0]["job_id"]]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = run_slurm(ws, "status").stdout
        if "CANCELLED" in state:
            break
        time.sleep(1)
    assert f"{plan.DATA} " in state and "CANCELLED" in state
    # Submitted again without the fault, it runs to the end.
    r = run_slurm(ws, "submit", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert jobs_of(ws)[plan.FINAL]["job_id"]


def test_a_checkout_path_with_quotes_dollars_spaces_and_non_ascii_runs(cluster, tmp_path, cleanup):  # noqa: F811
    odd = tmp_path / """it's "a" $HOME `x` étude"""
    odd.mkdir()
    ws = fresh(odd, "my ws")
    cleanup(ws)
    r = run_slurm(ws, "submit", "-S", "lr=[0.03]", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = jobs_of(ws)
    for job in jobs.values():
        log = Path(job["log"]).read_text()
        assert "syntax error" not in log and "command not found" not in log, log
        assert f"tlstudy slurm: {job['name']}: exit 0" in log
    # The experiment, assembled by `dvc exp run --temp` in DVC's own folder under that path.
    (exp,) = experiments(ws)
    assert at_rev(ws, exp["rev"], "metrics/scratch.json")["sgd"]["lr"] == 0.03


def test_status_when_the_submission_folder_is_gone_says_so_in_one_line(cluster, tmp_path, cleanup):  # noqa: F811
    ws = fresh(tmp_path, "ws")
    cleanup(ws)
    r = run_slurm(ws, "submit")
    assert r.returncode == 0, r.stdout + r.stderr
    # Whether its jobs ran or not, the record is what status reads: cancelled, not waited for.
    subprocess.run(["scancel", *queued_ids(ws)], check=True)
    folder = Path(submission(ws)["folder"])
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    r = run_slurm(ws, "status")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {folder / 'submission.json'}: the last submission's record is gone")


def test_code_edited_after_the_submit_stops_the_final_job_instead_of_retraining_on_one_node(cluster, tmp_path, cleanup):  # noqa: F811,E501
    ws = fresh(tmp_path, "ws")
    cleanup(ws)
    r = run_slurm(ws, "submit")
    assert r.returncode == 0, r.stdout + r.stderr
    # Edited while the jobs run HEAD's code (the final job waits for the part jobs).
    engine = ws / "src/tlstudy/training/engine.py"
    engine.write_text(engine.read_text() + "\n# an edit after the submission\n")
    folder = Path(submission(ws)["folder"])
    wait = run_slurm(ws, "status")
    deadline = time.monotonic() + LIMIT
    active = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")
    while "final " not in wait.stdout or any(s in wait.stdout.split("final ", 1)[1].split("\n")[0] for s in active):
        assert time.monotonic() < deadline, wait.stdout
        time.sleep(2)
        wait = run_slurm(ws, "status")
    final = jobs_of(ws)[plan.FINAL]
    log = Path(final["log"]).read_text()
    assert "files the stages depend on changed in the checkout since the submission" in log, log
    assert "src/tlstudy/training/engine.py" in log and "Running stage" not in log
    assert "FAILED" in wait.stdout.split("final ", 1)[1].split("\n")[0]
    assert not (ws / "dvc.lock").exists() and folder.is_dir()


def test_an_override_with_quotes_and_a_line_break_stays_a_value_in_the_job_script(tmp_path):
    """-S values reach the final job's command quoted, and its comment lines escaped: the text
    after a line break never runs as a command."""
    from tlstudy.tools.slurm import scripts

    odd = tmp_path / "it's $x"
    record = odd / "state" / "final.json"
    t = scripts.Target(odd, "a" * 40, "k", odd / "base", "dvc", None)
    job = plan.Job(plan.FINAL, "report", None, ["report"], [])
    override = "inspect.image='a \"b\"\ntouch PWNED'"
    text = scripts.final_script(t, job, record, [], {"params.yaml": "0" * 64}, [override], "n\nm", ["src/x.py"])
    assert subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True).returncode == 0
    # Comment lines carry the value with its line break escaped.
    comments = [line for line in text.splitlines() if line.startswith("#") and "touch PWNED" in line]
    assert comments and all("\\n" in line for line in comments)
    # The command: bash parses the override and the name back as single words, as given.
    command = text[text.index("python -m tlstudy.tools.slurm.dvc_utf8") : text.index("\nrc=$?")]
    words = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], capture_output=True, text=True).stdout
    words = words.split("\0")
    assert override in words and "n\nm" in words
