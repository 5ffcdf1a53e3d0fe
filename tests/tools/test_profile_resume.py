"""A profile run again after its DVC was killed between a stage's end and its dvc.lock entry: the
stage's outputs are on disk, in no .gitignore yet, and the profile's commit of its pipeline must
leave them to DVC (committed, DVC refuses the stage: "already tracked by SCM")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT, git, show, tiny_overlay, tiny_workspace

from tlstudy.tools import profile

pytestmark = pytest.mark.slow


def test_outputs_of_a_stage_dvc_never_recorded_stay_out_of_the_profiles_commit(tmp_path):
    ws = tiny_workspace(tmp_path / "ws", run=False)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env["PYTHONPATH"] = str(ws / "src")
    # What a DVC killed after the stage's command ended leaves: fetch's outputs, no lock entry.
    subprocess.run([sys.executable, "-m", "tlstudy.stage", "fetch"], cwd=ws, env=env, check=True, capture_output=True)
    assert (ws / "manifest.csv").is_file() and not (ws / "dvc.lock").exists()

    # The same profile again, as `make offline` resumes: its pipeline is committed afresh.
    overlay = tmp_path / "ws.overlay.yaml"
    overlay.write_text(yaml.safe_dump(tiny_overlay(data={"synthetic_per_class": 9})))
    profile.prepare(ws, PROJECT, profile.profile_params(PROJECT, str(overlay)), "tiny", fresh=False, links={})
    tracked = git(ws, "ls-files").split()
    assert "params.yaml" in tracked and "manifest.csv" not in tracked
    assert "synthetic_per_class: 9" in show(ws, "HEAD", "params.yaml")

    r = subprocess.run([profile.tool("dvc"), "repro", "fetch"], cwd=ws, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Running stage 'fetch'" in r.stdout and "fetch" in yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
