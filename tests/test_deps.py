"""Every stage's code deps in dvc.yaml are the files its command runs (deps.py derives them from
the imports), the resume fingerprint hashes the same list, and the stages' real imports, taken
from running each one, are inside it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import PROJECT

from tlstudy import deps
from tlstudy.lib import yamlio
from tlstudy.stage import MODULES
from tlstudy.training import engine, resume

COMMAND = re.compile(r"^python -m tlstudy\.stage (\w+)\b")


def stage_entries() -> dict[str, dict]:
    """dvc.yaml's stages, a foreach group as its `do` template."""
    stages = yamlio.load((PROJECT / "dvc.yaml").read_text())["stages"]
    return {name: entry.get("do", entry) for name, entry in stages.items()}


def test_every_stage_runs_through_the_stage_runner():
    commands = {name: COMMAND.match(entry["cmd"]) for name, entry in stage_entries().items()}
    assert all(commands.values()), {n: e["cmd"] for n, e in stage_entries().items() if not commands[n]}
    assert {m.group(1) for m in commands.values()} == set(MODULES)


def test_every_stage_lists_exactly_the_package_files_its_command_runs():
    wrong = {}
    for name, entry in stage_entries().items():
        command = COMMAND.match(entry["cmd"]).group(1)
        listed = {d for d in entry["deps"] if isinstance(d, str) and d.startswith("src/")}
        derived = set(deps.files(command))
        if listed != derived:
            wrong[name] = {"missing": sorted(derived - listed), "not run": sorted(listed - derived)}
    assert not wrong, f"dvc.yaml's code deps differ from `python -m tlstudy.deps`: {wrong}"


def test_the_closure_follows_deferred_imports_and_leaves_the_tools_out():
    train = deps.files("train")
    # placement.py is imported by train.py alone; deps.py by resume.py; transforms.py only inside
    # params.validate (a deferred import); weights.py through models.py.
    for module in (
        "training/placement.py",
        "deps.py",
        "training/transforms.py",
        "training/weights.py",
        "stage.py",
        "__init__.py",
    ):
        assert f"src/tlstudy/{module}" in train, module
    every = {f for command in MODULES for f in deps.files(command)}
    for tool in ("cli.py", "tools/profile.py", "tools/bench.py", "tools/compare.py", "tools/machine.py", "__main__.py"):
        assert f"src/tlstudy/{tool}" not in every, tool
    assert "src/tlstudy/resources/study.yaml" in deps.files("report")
    assert "src/tlstudy/resources/pacs_sources.csv" in deps.files("pretrain")


def test_the_augmentation_kernels_are_code_of_the_stages_that_augment_images_alone():
    # Params validation builds every variant (transforms.py) in every stage; applying one to
    # images (augment.py) is training's, so editing a kernel re-runs no fetch, stats or inspect.
    for command in ("inspect", "fetch", "stats", "variants", "report"):
        assert "src/tlstudy/training/augment.py" not in deps.files(command), command
        assert "src/tlstudy/training/transforms.py" in deps.files(command), command
    for command in ("pretrain", "train", "evaluate"):
        assert "src/tlstudy/training/augment.py" in deps.files(command), command


def test_the_resume_fingerprint_hashes_the_stage_deps_and_inputs_by_content(params, tmp_path):
    src = PROJECT / "src"
    for command in ("train", "pretrain"):
        assert [p.relative_to(src.parent).as_posix() for p in deps.code_paths(command)] == deps.files(command)
    # An input of any size counts by its bytes: two files of the same size (over the 64 MiB at
    # which the key once fell back to the size alone) give different keys.
    big = tmp_path / "images.pt"
    big.write_bytes(b"\0" * (65 << 20))
    spec = params["parts"]["scratch"]
    speed = engine.speed_for(torch.device("cpu"), "fp32", 32)
    before = resume.fingerprint(params, spec, [big], "train", speed)
    with open(big, "r+b") as f:
        f.seek(40 << 20)
        f.write(b"\1")
    assert big.stat().st_size == 65 << 20
    assert resume.fingerprint(params, spec, [big], "train", speed) != before
    assert resume.file_sha(big) == hashlib.sha256(big.read_bytes()).hexdigest()


RECORD = """
import atexit, json, os, sys
os.umask(0o022)
atexit.register(lambda: print("IMPORTED " + json.dumps(sorted(
    m.__file__ for n, m in list(sys.modules.items()) if n.split(".")[0] == "tlstudy" and getattr(m, "__file__", None)
))))
import tlstudy.stage
raise SystemExit(tlstudy.stage.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_each_stage_imports_only_files_its_deps_list_and_writes_0644(tmp_path, params):
    """Run every stage command on tiny synthetic data, recording the package files it really
    imported: each must be in its derived list (the list may hold more: deferred imports on
    paths this run did not take). Under umask 022 every file a stage writes is 0644."""
    params.update(epochs=1, lr=[0.01], optimizer=["sgd"], seeds=[0])
    params["data"]["synthetic_per_class"] = 8
    params["fewshot"]["per_class"] = 2
    params["inspect"] = {"weights": "random", "image": str(PROJECT / "assets" / "samoyed.jpg")}
    params["parts"] = {"scratch": params["parts"]["scratch"]}
    params["pretrain"]["pacs_sources"].update(source="synthetic", epochs=1, batch_size=16)
    params["transfer"] = {"finetune_pacs": params["transfer"]["finetune_pacs"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"))
    runs = [
        ["inspect"], ["fetch"], ["stats"], ["variants"], ["pretrain", "--backbone", "pacs_sources"],
        ["train", "--part", "scratch"],
        ["evaluate", "--part", "scratch"], ["train", "--part", "finetune_pacs"], ["report"],
    ]  # fmt: skip
    for argv in runs:
        before = {p for p in tmp_path.rglob("*") if p.is_file()}
        r = subprocess.run([sys.executable, "-c", RECORD, *argv], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, f"{argv}: {r.stderr[-2000:]}"
        line = next(x for x in r.stdout.splitlines() if x.startswith("IMPORTED "))
        imported = {os.path.relpath(f, PROJECT) for f in json.loads(line.removeprefix("IMPORTED "))}
        assert imported <= set(deps.files(argv[0])), (argv, sorted(imported - set(deps.files(argv[0]))))
        written = {p for p in tmp_path.rglob("*") if p.is_file() and "__pycache__" not in p.parts} - before
        modes = {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777) for p in written}
        assert written and set(modes.values()) == {"0o644"}, (argv, modes)
