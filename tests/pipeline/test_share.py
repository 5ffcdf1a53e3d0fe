"""Sharing an experiment between two machines, as two users would: machine A runs the pipeline,
pushes the commit to a git remote and its outputs to a DVC remote, runs an experiment and
`dvc exp push`es it; machine B, a fresh `git clone`, `dvc exp pull`s it, sees its metrics in
`dvc exp show`, applies it and finds nothing to re-run. Both remotes are local folders here (a bare
git repo and a local-path DVC remote); S3 or SSH work the same way."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import at_rev, tiny_workspace

from tlstudy.tools import profile

pytestmark = pytest.mark.slow
EXP = "lr-001"


def environment(clone: Path) -> dict:
    # The stages call `python -m tlstudy`. This project's venv has the package installed in
    # editable mode from the project's own src/, so in any clone it would import that code, not the
    # clone's src/ that DVC hashes as the stages' dependencies. A user on another machine runs
    # `pip install -e .` in the clone; PYTHONPATH=src is the same import without building a venv
    # (and what `tlstudy profile` uses for its own `dvc repro`).
    return dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(clone / "src"), os.environ.get("PYTHONPATH")])),
    )


def sh(cwd: Path, *cmd: str) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=environment(cwd), timeout=900)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def dvc(cwd: Path, *args: str) -> str:
    return sh(cwd, profile.tool("dvc"), *args)


def test_an_experiment_pushed_from_one_clone_is_pulled_applied_and_up_to_date_in_another(tmp_path):
    origin, store = tmp_path / "origin.git", tmp_path / "dvc-store"

    # Machine A: the pipeline, committed and pushed to both remotes.
    a = tiny_workspace(tmp_path / "a")  # one part, no pretraining
    main = sh(a, "git", "rev-parse", "--abbrev-ref", "HEAD").strip()
    sh(tmp_path, "git", "init", "-q", "--bare", f"--initial-branch={main}", str(origin))
    dvc(a, "remote", "add", "-d", "store", str(store))
    sh(a, "git", "commit", "-q", "-m", "DVC remote: store", "--", ".dvc/config")
    sh(a, "git", "remote", "add", "origin", str(origin))
    sh(a, "git", "push", "-q", "origin", main)
    dvc(a, "push")

    # An experiment on A, pushed: its git ref to origin, its cached outputs to the DVC remote.
    dvc(a, "exp", "run", "-S", "lr=0.01", "-n", EXP)
    produced = json.loads((a / "metrics/scratch.json").read_text())["sgd"]
    assert produced["lr"] == 0.01
    dvc(a, "exp", "push", "origin", EXP)
    assert sh(a, "git", "ls-remote", "origin", f"refs/exps/*/{EXP}").strip(), "the experiment's ref is on origin"

    # Machine B: a fresh clone, with the DVC remote from the committed config.
    b = tmp_path / "b"
    sh(tmp_path, "git", "clone", "-q", str(origin), str(b))
    assert "store" in dvc(b, "remote", "list")
    assert json.loads((b / "metrics/scratch.json").read_text())["sgd"]["lr"] == 0.03  # main's, from git
    dvc(b, "exp", "pull", "origin", EXP)

    shown = json.loads(dvc(b, "exp", "show", "--json"))
    exps = {r["name"]: r for rev in shown for e in (rev.get("experiments") or []) for r in e["revs"]}
    assert set(exps) == {EXP}
    data = exps[EXP]["data"]
    assert data["params"]["params.yaml"]["data"]["lr"] == 0.01
    assert set(data["metrics"]) == {"headline.json"}
    assert at_rev(b, exps[EXP]["rev"], "metrics/scratch.json")["sgd"]["test_acc"] == produced["test_acc"]

    dvc(b, "exp", "apply", EXP)
    dvc(b, "pull")
    assert "Data and pipelines are up to date" in dvc(b, "status")
    assert json.loads((b / "metrics/scratch.json").read_text())["sgd"]["test_acc"] == produced["test_acc"]
    # The trained model came over too: the experiment's models/scratch, from the DVC remote.
    lock = yaml.safe_load((b / "dvc.lock").read_text())
    model = next(o for o in lock["stages"]["train@scratch"]["outs"] if o["path"] == "models/scratch")
    assert (store / "files/md5" / model["md5"][:2] / model["md5"][2:]).exists()
    assert any((b / "models/scratch").iterdir())

    changed = json.loads(dvc(b, "metrics", "diff", main, "--json", "--targets", "metrics", "-R"))
    assert changed["metrics/scratch.json"]["sgd.lr"]["old"] == 0.03
    assert changed["metrics/scratch.json"]["sgd.lr"]["new"] == 0.01
    # Stages B would run import B's own copy of the code.
    where = sh(b, sys.executable, "-c", "import tlstudy; print(tlstudy.__file__)").strip()
    assert Path(where).is_relative_to(b / "src")
