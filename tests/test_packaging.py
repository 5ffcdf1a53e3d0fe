"""`pip install .` alone gives a package whose every stage runs: the wheel, installed into a fresh
virtual environment with no requirements.txt, runs a small pipeline through DVC — its stages,
the plotting ones (inspect, report) included."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import PROJECT, tiny_overlay

pytestmark = pytest.mark.slow


def run(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_the_wheel_alone_installs_every_dependency_a_stage_imports(tmp_path):
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", PROJECT)
    (wheel,) = (tmp_path / "dist").glob("tlstudy-*.whl")
    venv = tmp_path / "venv"
    try:
        run(sys.executable, "-m", "venv", venv)
        run(venv / "bin/python", "-m", "pip", "install", "-q", wheel)
        imports = "import matplotlib, ruamel.yaml, dvc, torchvision, pyarrow, tqdm, tlstudy.stages.report"
        run(venv / "bin/python", "-c", imports)
        (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(tiny_overlay(lr=[0.01], fewshot={"per_class": 2})))
        # Only the fresh venv: its dvc and python beside it, nothing of the project's own .venv.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
        out = run(venv / "bin/python", "-m", "tlstudy", "profile", tmp_path / "overlay.yaml", "--dir",
                  tmp_path / "ws", cwd=PROJECT, env=env)  # fmt: skip
        ws = tmp_path / "ws"
        for stage in ("inspect", "fetch", "stats", "train@scratch", "evaluate@scratch", "report"):
            assert f"Running stage '{stage}'" in out, stage
        assert (ws / "report/README.md").is_file() and list((ws / "report/figures").glob("*.png"))
        assert {p.name for p in (ws / "plots/inspect").glob("*.png")} >= {"kernels.png", "photo.png"}
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # gigabytes of torch
