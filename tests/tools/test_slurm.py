"""The cluster route (`python -m tlstudy slurm`) on a real one-node Slurm (scripts/slurm-cluster.sh)
with the real DVC in temporary repos: a job per part assembles what a sequential `dvc repro` gives;
a failing part keeps the final job from running and is named; a train job cancelled mid-grid
continues when the same command is submitted again; `-S lr=0.01` is one experiment. The jobs from
dvc.yaml's graph and the input errors need no cluster. Without Slurm the cluster tests skip, and
fail under TLSTUDY_REQUIRE_SLURM=1 (CI)."""

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TIMING, at_rev, tiny_overlay, tiny_workspace, without_timing

from tlstudy.tools import profile
from tlstudy.tools.slurm import main as slurm_main
from tlstudy.tools.slurm import plan

# Two parts, one of them from a backbone pretrained here, so the afterok chain has two links.
OVERLAY = tiny_overlay(
    keep=("scratch", "pacs_sources", "fewshot_finetune_pacs"),
    pretrain={"pacs_sources": {"source": "synthetic", "epochs": 1, "batch_size": 16}},
)
JOBS = {"data", "pretrain@pacs_sources", "train@scratch", "transfer@fewshot_finetune_pacs", "final"}
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED"}  # states of a job that goes on
LIMIT = 900  # seconds any one command may take: a hung job fails the test instead of hanging the suite
# Four runs of four epochs in train@scratch (new keys: hydra's +).
GRID = ["-S", "+parts.scratch.lr=[0.03,0.01,0.003,0.001]", "-S", "+parts.scratch.epochs=4"]
KEPT = "finished before the stage was interrupted; kept"  # train's line for each run it resumes


def env() -> dict:
    # As a user with the virtual environment activated: the stages call `python -m tlstudy`. A
    # checkpoint after every epoch (sbatch passes the environment on), so that a requeue lands
    # inside a run even at epochs this short.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return dict(os.environ, PATH=path, TLSTUDY_CHECKPOINT_SHARE="1")


def slurm(ws: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "tlstudy", "slurm", *args]
    return subprocess.run(argv, cwd=ws, env=env(), capture_output=True, text=True, timeout=LIMIT)


def dvc(ws: Path, *args: str) -> str:
    r = subprocess.run([profile.tool("dvc"), *args], cwd=ws, env=env(), capture_output=True, text=True, timeout=LIMIT)
    assert r.returncode == 0, f"dvc {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def workspace(dest: Path, overlay: dict = OVERLAY) -> Path:
    """A profile workspace (git + DVC repo of this project's pipeline) that has run nothing yet."""
    return tiny_workspace(dest, overlay, run=False)


def submission(ws: Path) -> dict:
    folder = json.loads((ws / ".dvc/tmp/slurm/latest.json").read_text())["folder"]
    return json.loads((Path(folder) / "submission.json").read_text())


def jobs_of(ws: Path) -> dict[str, dict]:
    return {j["name"]: j for j in submission(ws)["jobs"]}


def scontrol(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def outputs(ws: Path) -> dict[str, object]:
    """metrics/, details/ and plots/ as a person compares them: timing fields aside."""
    found = {}
    for folder in ("metrics", "details", "plots"):
        for path in sorted((ws / folder).rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(ws).as_posix()
            if path.suffix == ".json":
                found[rel] = without_timing(json.loads(path.read_text()))
            elif path.suffix == ".csv":
                rows = csv.DictReader(io.StringIO(path.read_text()))
                found[rel] = [{k: v for k, v in row.items() if k not in TIMING} for row in rows]
            else:
                found[rel] = path.read_bytes()
    return found


def slurm_missing() -> str | None:
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH"
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=60)
    if r.returncode:
        return f"no Slurm controller answers (sinfo: {r.stderr.strip()})"
    if not {s.rstrip("*~#!%$@^-+") for s in r.stdout.split()} & {"idle", "mixed", "allocated", "completing"}:
        return f"no Slurm node is up (sinfo: {r.stdout.strip() or 'no nodes'})"
    return None


@pytest.fixture(scope="module")
def cluster():
    why = slurm_missing()
    if why:
        hint = "start the one-node cluster: sudo scripts/slurm-cluster.sh start"
        if os.environ.get("TLSTUDY_REQUIRE_SLURM") == "1":
            pytest.fail(f"TLSTUDY_REQUIRE_SLURM=1 but {why}; {hint}")
        pytest.skip(f"{why}; {hint}")


@pytest.fixture(scope="module")
def study(cluster, module_tmp):
    """Two workspaces of the same params: one run through Slurm, one by a sequential dvc repro.
    The tests below run in order on them."""
    ws = {name: workspace(module_tmp / name) for name in ("cluster", "sequential")}
    yield ws
    # Whatever a failed test left queued or running must not outlive it.
    for record in (ws["cluster"] / ".dvc/tmp/slurm").glob("*/submission.json"):
        ids = [j["job_id"] for j in json.loads(record.read_text())["jobs"]]
        subprocess.run(["scancel", *ids], capture_output=True)


@pytest.mark.slow
def test_submit_wait_assembles_what_a_sequential_repro_gives_each_part_a_job_of_its_own(study):
    ws, seq = study["cluster"], study["sequential"]
    r = slurm(ws, "submit", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    dvc(seq, "repro")
    assert outputs(ws) == outputs(seq)
    assert {p for p in outputs(ws) if p.startswith("metrics/") and "/pretrain/" not in p} >= {
        "metrics/scratch.json", "metrics/fewshot_finetune_pacs.json",
    }  # fmt: skip

    jobs = jobs_of(ws)
    assert set(jobs) == JOBS and len({j["job_id"] for j in jobs.values()}) == len(JOBS)
    assert set(jobs["transfer@fewshot_finetune_pacs"]["after"]) == {"data", "pretrain@pacs_sources"}
    assert jobs["train@scratch"]["after"] == ["data"]
    assert set(jobs["final"]["after"]) == JOBS - {"final"}
    for name, job in jobs.items():
        info = scontrol(job["job_id"])
        assert (info["JobName"], info["JobState"]) == (f"tlstudy:{name}", "COMPLETED"), info
        # Each job ran its own stages and restored every other one from the run-cache.
        log = Path(job["log"]).read_text()
        ran = set(re.findall(r"Running stage '([^']+)'", log))
        assert ran == ({"report"} if name == "final" else set(job["stages"])), log
    final_log = Path(jobs["final"]["log"]).read_text()
    restored = set(re.findall(r"Stage '([^']+)' is cached - skipping run", final_log))
    assert restored == {s for j in jobs.values() if j["name"] != "final" for s in j["stages"]}

    assert "Data and pipelines are up to date" in dvc(ws, "status")
    assert (ws / "report/README.md").is_file()
    shown = slurm(ws, "status")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for name, job in jobs.items():
        row = next(line for line in shown.stdout.splitlines() if line.startswith(f"{name} "))
        assert job["job_id"] in row.split() and "COMPLETED" in row


@pytest.mark.slow
def test_a_failing_part_keeps_the_final_job_from_running_and_is_named(study):
    ws = study["cluster"]
    lock = (ws / "dvc.lock").read_bytes() if (ws / "dvc.lock").exists() else None  # None: run alone (xdist)
    r = slurm(ws, "submit", "-S", "parts.scratch.init=no/such/backbone.pt", "--wait")
    assert r.returncode == 1, r.stdout + r.stderr
    jobs = jobs_of(ws)
    failed = jobs["train@scratch"]
    shown = slurm(ws, "status")
    assert shown.returncode == 1
    for out in (r.stdout, shown.stdout):
        named = next(line for line in out.splitlines() if line.startswith("train@scratch (part scratch"))
        assert f"job {failed['job_id']} FAILED" in named and failed["log"] in named
    assert "no/such/backbone.pt" in Path(failed["log"]).read_text()
    final = scontrol(jobs["final"]["job_id"])
    assert (final["JobState"], final["Reason"]) == ("CANCELLED", "DependencyNeverSatisfied")
    assert not Path(jobs["final"]["log"]).exists() and not Path(jobs["final"]["record"]).exists()
    # The other part goes on (--wait returned when the final job was cancelled).
    transfer, deadline = jobs["transfer@fewshot_finetune_pacs"]["job_id"], time.monotonic() + LIMIT
    while scontrol(transfer)["JobState"] in ("PENDING", "RUNNING", "COMPLETING") and time.monotonic() < deadline:
        time.sleep(1)
    assert scontrol(transfer)["JobState"] == "COMPLETED"
    assert ((ws / "dvc.lock").read_bytes() if (ws / "dvc.lock").exists() else None) == lock


@pytest.mark.slow
def test_a_train_job_preempted_or_cancelled_mid_grid_continues(study):
    """Requeued (as Slurm preempts) inside a run: the job resumes in its copy, that run at the
    epoch after its last checkpoint. Cancelled: the same command submitted again resumes it.
    Either way the finished runs are kept, and the results are those of a sequential run."""
    ws, seq = study["cluster"], study["sequential"]
    r = slurm(ws, "submit", *GRID)
    assert r.returncode == 0, r.stdout + r.stderr
    first = jobs_of(ws)
    job_id, log = first["train@scratch"]["job_id"], Path(first["train@scratch"]["log"])
    runs = Path(submission(ws)["folder"]) / "jobs" / "train@scratch" / "work" / "runs" / "scratch"
    deadline = time.monotonic() + LIMIT

    def records() -> list[str]:
        return [p.name for p in runs.rglob("*.json")]

    def finished() -> int:  # a finished run's record is <key>.json; a checkpoint's, <key>.e<epoch>.json
        return sum(name.count(".") == 1 for name in records())

    def mid_run() -> int:
        """The newest checkpointed epoch of a run that has not finished (0: none)."""
        done = {n.split(".")[0] for n in records() if n.count(".") == 1}
        epochs = [int(n.split(".")[1][1:]) for n in records() if n.count(".") == 2 and n.split(".")[0] not in done]
        return max(epochs, default=0)

    def wait_for(what: str, done) -> None:
        while not done():
            assert scontrol(job_id)["JobState"] in ACTIVE, f"the job ended before {what}"
            assert time.monotonic() < deadline, f"no {what} in time"
            time.sleep(0.05)

    wait_for("a finished run and the next one mid-way", lambda: finished() >= 1 and mid_run() >= 1)
    # As Slurm preempts: the job goes back to the queue (for the credential lifetime, 20 s on the
    # cluster of scripts/slurm-cluster.sh) and starts again in its copy.
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    wait_for("resumed run", lambda: KEPT in log.read_text())
    before = log.read_text().count(KEPT)
    assert "restart 1" in log.read_text() and scontrol(job_id)["Restarts"] == "1"
    after_requeue = log.read_text().split("restart 1", 1)[1]
    wait_for("the interrupted run continued", lambda: "continuing after epoch" in log.read_text().split("restart 1")[1])
    epoch = int(re.search(r"continuing after epoch (\d+), from its checkpoint", log.read_text()).group(1))
    assert 1 <= epoch < 4, after_requeue
    wait_for("run after the requeue", lambda: finished() > before)

    subprocess.run(["scancel", job_id], check=True)
    while scontrol(job_id)["JobState"] not in ("CANCELLED", "COMPLETED", "FAILED"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert scontrol(job_id)["JobState"] == "CANCELLED", "the grid finished before the cancel"
    kept = finished()
    assert before < kept < 4
    assert scontrol(first["final"]["job_id"])["JobState"] == "CANCELLED"

    r = slurm(ws, "submit", *GRID, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    again = jobs_of(ws)
    assert again["train@scratch"]["job_id"] != job_id
    # Jobs that completed, or were still running, are not submitted again.
    assert again["transfer@fewshot_finetune_pacs"]["job_id"] == first["transfer@fewshot_finetune_pacs"]["job_id"]
    resumed = Path(again["train@scratch"]["log"]).read_text()
    assert resumed.count(KEPT) == kept, resumed
    # The data job had completed: kept, and no afterok on it (a cluster that forgot it after
    # MinJobAge would refuse the dependency); the final job waits for the new train job.
    assert again["data"]["job_id"] == first["data"]["job_id"] and again["data"]["kept"] == "completed"
    assert again["train@scratch"]["afterok"] == []
    assert again["train@scratch"]["job_id"] in again["final"]["afterok"]
    assert first["data"]["job_id"] not in again["final"]["afterok"]

    # The final job ran `dvc exp run --temp`: the experiment is a ref, the checkout as it was.
    dvc(ws, "exp", "apply", newest_experiment(ws))
    dvc(seq, "exp", "run", *GRID)
    assert outputs(ws) == outputs(seq)


def newest_experiment(ws: Path) -> str:
    shown = json.loads(dvc(ws, "exp", "show", "--json"))
    exps = [r for rev in shown for e in (rev.get("experiments") or []) for r in e["revs"]]
    return max(exps, key=lambda e: e["data"]["timestamp"])["name"]


def experiments(ws: Path) -> list[dict]:
    shown = json.loads(dvc(ws, "exp", "show", "--json"))
    return [r for rev in shown for e in (rev.get("experiments") or []) for r in e["revs"]]


@pytest.mark.slow
def test_an_experiment_through_slurm_is_one_experiment_in_dvc_exp_show(study):
    """Two experiments submitted back to back: each final job holds the checkout's lock in turn and
    records its own experiment, and the checkout's params.yaml stays as the user has it."""
    ws = study["cluster"]
    before = {e["rev"] for e in experiments(ws)}
    params = (ws / "params.yaml").read_bytes()
    first = slurm(ws, "submit", "-S", "lr=0.01")
    assert first.returncode == 0, first.stdout + first.stderr
    r = slurm(ws, "submit", "-S", "lr=0.003", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    deadline = time.monotonic() + LIMIT
    while len([e for e in experiments(ws) if e["rev"] not in before]) < 2:
        assert time.monotonic() < deadline, "the first experiment's final job did not end"
        time.sleep(2)
    new = [e for e in experiments(ws) if e["rev"] not in before]
    assert sorted(e["data"]["params"]["params.yaml"]["data"]["lr"] for e in new) == [0.003, 0.01]
    for e in new:  # each experiment's metrics are its own params', never the other's
        lr = e["data"]["params"]["params.yaml"]["data"]["lr"]
        assert at_rev(ws, e["rev"], "metrics/fewshot_finetune_pacs.json")["sgd"]["lr"] == lr
    assert (ws / "params.yaml").read_bytes() == params


@pytest.mark.slow
def test_through_a_dvc_remote_jobs_share_no_cache(cluster, tmp_path):
    """Nodes that share no DVC cache: each job's copy has a cache of its own, and the outputs (the
    uncached ones too) reach the next job and the checkout through the remote's run-cache. The
    README's recipe as it stands: the remote added, not committed (the copies are clones of HEAD,
    and get the remote from the checkout's config), at a path relative to the checkout."""
    ws = workspace(tmp_path / "ws", tiny_overlay())  # one part, no pretraining
    dvc(ws, "remote", "add", "-d", "store", "../store")
    try:
        r = slurm(ws, "submit", "--remote", "store", "--wait")
    finally:
        subprocess.run(["scancel", *[j["job_id"] for j in submission(ws)["jobs"]]], capture_output=True)
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = jobs_of(ws)
    assert set(jobs) == {"data", "train@scratch", "final"}
    for name in ("data", "train@scratch"):
        copy = Path(submission(ws)["folder"]) / "jobs" / name
        assert dvc(copy, "cache", "dir").strip() == str(copy / ".dvc" / "cache")
    # Each job ran its own stages only: the others came through the remote into an empty cache.
    ran = {
        name: set(re.findall(r"Running stage '([^']+)'", Path(job["log"]).read_text())) for name, job in jobs.items()
    }
    assert ran == {
        "data": {"fetch", "stats", "inspect", "variants"},
        "train@scratch": {"train@scratch", "evaluate@scratch"},
        "final": {"report"},
    }
    assert "Data and pipelines are up to date" in dvc(ws, "status")


# Without a cluster: the jobs read from dvc.yaml's graph, and input errors.


@pytest.fixture(scope="module")
def plain(module_tmp) -> Path:
    return workspace(module_tmp / "plain")


def test_jobs_follow_dvc_yaml_a_part_per_job_pretraining_first(plain):
    jobs = {j.name: j for j in plan.from_graph(plan.read(plain).edges)}
    assert set(jobs) == JOBS
    assert set(jobs["data"].stages) == {"fetch", "stats", "inspect", "variants"}
    assert jobs["train@scratch"].stages == ["train@scratch", "evaluate@scratch"]
    part = jobs["transfer@fewshot_finetune_pacs"]
    assert part.stages == ["transfer@fewshot_finetune_pacs", "evaluate_transfer@fewshot_finetune_pacs"]
    assert (part.kind, part.part, set(part.after)) == (
        "train",
        "fewshot_finetune_pacs",
        {"data", "pretrain@pacs_sources"},
    )
    assert jobs["final"].stages == ["report"] and jobs["final"].kind == "report"


def test_a_new_foreach_key_is_a_new_job_with_no_code_change():
    edges = {
        "prep": set(), "fit@a": {"prep"}, "fit@b": {"prep"}, "score@a": {"fit@a"}, "score@b": {"fit@b", "prep"},
        "base@x": {"prep"}, "tune@c": {"base@x"}, "score_tuned@c": {"tune@c"}, "summary": {"score@a", "score@b"},
        "publish": {"summary"},
    }  # fmt: skip
    jobs = {j.name: j for j in plan.from_graph(edges)}
    assert set(jobs) == {"data", "fit@a", "fit@b", "base@x", "tune@c", "final"}
    assert jobs["fit@b"].stages == ["fit@b", "score@b"] and jobs["tune@c"].after == ["base@x"]
    assert jobs["final"].stages == ["summary", "publish"]


def run_cli(ws: Path, monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(ws)
    code = slurm_main(list(args))
    return code, capsys.readouterr().err


def test_a_dirty_checkout_is_refused_naming_the_files(plain, monkeypatch, capsys):
    code_file = plain / "src/tlstudy/stages/train.py"
    original = code_file.read_text()
    try:
        code_file.write_text(original + "\n# edited\n")
        code, err = run_cli(plain, monkeypatch, capsys, "submit")
    finally:
        code_file.write_text(original)
    assert code == 2 and "src/tlstudy/stages/train.py" in err and "commit" in err


def test_bad_overrides_are_refused_naming_them(plain, monkeypatch, capsys):
    code, err = run_cli(plain, monkeypatch, capsys, "submit", "-S", "lr=[0.01")
    assert code == 2 and "-S lr=[0.01" in err and "DVC rejects it" in err
    code, err = run_cli(plain, monkeypatch, capsys, "submit", "-S", "lr=-1")
    assert code == 2 and "'lr'" in err and "-S lr=-1" in err


def test_an_unknown_job_kind_in_slurm_yaml_is_refused(plain, monkeypatch, capsys):
    (plain / "slurm.yaml").write_text("gpu: {gpus: 1}\n")
    try:
        code, err = run_cli(plain, monkeypatch, capsys, "submit")
    finally:
        (plain / "slurm.yaml").unlink()
    assert code == 2 and "slurm.yaml: unknown key 'gpu'" in err and "data, train, report" in err


def test_without_sbatch_on_path_submit_says_so(plain, monkeypatch, capsys, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "git").symlink_to(shutil.which("git"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    code, err = run_cli(plain, monkeypatch, capsys, "submit")
    assert code == 2 and "sbatch: not found on PATH" in err
    code, err = run_cli(plain, monkeypatch, capsys, "status")
    assert code == 2 and "nothing submitted" in err


def test_resources_come_from_slurm_yaml_per_job_kind(tmp_path):
    from tlstudy.tools.slurm import config

    (tmp_path / "slurm.yaml").write_text(
        "train: {partition: gpu, account: lab, time: '16:00:00', cpus: 8, mem: 32G, gpus: 1, extra: [--qos=short]}\n"
        "report: {time: '00:30:00'}\n"
    )
    loaded = config.load(tmp_path / "slurm.yaml")
    assert config.sbatch_options(loaded, "train") == [
        "--partition=gpu", "--account=lab", "--time=16:00:00", "--cpus-per-task=8", "--mem=32G", "--gres=gpu:1",
        "--qos=short",
    ]  # fmt: skip
    assert (
        config.sbatch_options(loaded, "report") == ["--time=00:30:00"] and config.sbatch_options(loaded, "data") == []
    )
    (tmp_path / "slurm.yaml").write_text("train: {gpus: two}\n")
    with pytest.raises(config.SlurmError, match=r"'train.gpus' must be a whole number of at least 1, got 'two'"):
        config.load(tmp_path / "slurm.yaml")
    (tmp_path / "slurm.yaml").write_text("train: {nodes: 2}\n")
    with pytest.raises(config.SlurmError, match=r"'train.nodes': unknown setting; accepted: partition, account"):
        config.load(tmp_path / "slurm.yaml")
    (tmp_path / "slurm.yaml").write_text("train: {time: 16:00:00}\n")  # YAML 1.2: a string, not 57600
    assert config.sbatch_options(config.load(tmp_path / "slurm.yaml"), "train") == ["--time=16:00:00"]
