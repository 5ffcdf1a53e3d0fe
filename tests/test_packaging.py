"""`pip install .` alone gives a package whose every stage runs: the wheel, installed into a fresh
virtual environment with no requirements.txt, runs a small pipeline through DVC — its stages,
the plotting ones (inspect, report) included.

PyTorch's own distributions (torch, torchvision, triton, the CUDA libraries: 5 of the 6 GB a fresh
install writes) come from this environment, linked into the fresh one as installed distributions
(`pytorch-linked.pth`). pip still resolves the wheel's requirements against them, installs what
they need and lack and every other requirement itself; the wheel is checked to declare torch and
torchvision, which the link would otherwise hide."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT, tiny_overlay

pytestmark = pytest.mark.slow


def run(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


# The distributions linked rather than installed, and the top-level names they install.
LINKED = ("torch", "torchvision", "triton", "nvidia")


def pytorch_linked(dest: Path) -> Path:
    """dest/ with a link to each of this environment's PyTorch folders and their .dist-info."""
    site = Path(sysconfig.get_paths()["purelib"])
    dest.mkdir()
    for path in site.iterdir():
        name = path.name.lower().replace("-", "_")
        if name.split(".")[0] in ("functorch", "torchgen") or any(
            name == top or name.startswith((f"{top}.", f"{top}_", f"{top}-")) for top in LINKED
        ):
            (dest / path.name).symlink_to(path)
    return dest


def requirements(wheel: Path) -> set[str]:
    """The names of the distributions the wheel's metadata requires."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    return {Requirement(line.split(":", 1)[1]).name.lower() for line in lines if line.startswith("Requires-Dist:")}


def test_the_wheel_alone_installs_every_dependency_a_stage_imports(tmp_path):
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", PROJECT)
    (wheel,) = (tmp_path / "dist").glob("tlstudy-*.whl")
    assert {"torch", "torchvision"} <= requirements(wheel)
    venv = tmp_path / "venv"
    try:
        run(sys.executable, "-m", "venv", venv)
        fresh_site = run(venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        (Path(fresh_site.strip()) / "pytorch-linked.pth").write_text(f"{pytorch_linked(tmp_path / 'pytorch')}\n")
        # --no-compile: the stages compile what they import; pip would compile every module of
        # every requirement first (half the install's time).
        out = run(venv / "bin/python", "-m", "pip", "install", "--no-compile", wheel)
        assert "Successfully installed" in out and "torch-" not in out.split("Successfully installed")[1]
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
        shutil.rmtree(venv, ignore_errors=True)
