"""scripts/gpu-check.sh, dry-run on the CPU with tiny data, so the device check cannot rot between
the rare sessions that get a GPU: the same script, through `dvc repro` in a profile workspace,
every stage (pretraining and both sweeps included), the same files back."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT, SHARED_PACS

SCRIPT = PROJECT / "scripts" / "gpu-check.sh"
SHARED_SOURCES = SHARED_PACS.parent / "pacs_sources"
DOMAINS = ["art_painting", "photo", "sketch"]
# The dry run's overrides: every kind of stage, as small as it goes. Of the parts that differ only
# in subset or init, one of each way to train stays (scratch: all layers; classifier: the head on
# features computed once; both sweeps; one transfer part): the others add stages, not code paths.
DRY_SETS = [
    "data.image_size=32",
    "lr=0.01",
    "optimizer=[sgd]",
    "batch_size=16",
    "fewshot.per_class=3",
    "pretrain.pacs_sources.batch_size=32",
    "parts.augment.augment=[none,bright005]",
    "parts.augment_study.augment=[none,bright005]",
    *(f"parts.{p}=null" for p in ("finetune", "fewshot_scratch", "fewshot_classifier", "fewshot_finetune")),
    "transfer.finetune_pacs=null",
]
# Batches of 2: the CPU case at 32 px times 12 images, not params' 6 batches of 32 (test_bench.py says why).
BENCH_ARGS = (
    "--per-class 2 --val-per-class 1 --batch-size 2 --repeats 1 --head-epochs 1 --size 32 --configs none/sgd "
    "--cpu-sizes 32"
)
FAST_TEST = "tests/training/test_engine.py::test_best_epoch_is_the_earliest_of_equal_validation_accuracies"
RETURNED = {"machine.json", "tests.txt", "timing.json", "results.tar.gz", "bench.json", "summary.txt", "log.txt"}


def _write_split_lists(cartoon: Path, train: dict[str, list[str]], test: dict[str, list[str]]) -> None:
    """The official lists' format (`cartoon/<class>/<file> <label>`), naming only the files here."""
    classes = sorted(set(train) | set(test))
    (cartoon / "splits").mkdir(parents=True, exist_ok=True)
    for name, chosen in (("cartoon_train_kfold.txt", train), ("cartoon_crossval_kfold.txt", test)):
        lines = [f"cartoon/{c}/{f} {classes.index(c) + 1}" for c in classes for f in chosen[c]]
        (cartoon / "splits" / name).write_text("\n".join(lines) + "\n")


def tiny_gpu_data(root: Path, train_per_class: int = 6, test_per_class: int = 2, sources_per_class: int = 3) -> str:
    """A folder laid out as gpu-data/ is (pacs_cartoon/ with splits/, pacs_sources/), from a few
    real PACS images per class when ../shared/data has them, else the demo's synthetic shapes."""
    cartoon, sources = root / "pacs_cartoon", root / "pacs_sources"
    if SHARED_PACS.is_dir() and SHARED_SOURCES.is_dir():
        lists = {
            role: [line.split()[0].split("/", 1)[1] for line in path.read_text().splitlines() if line.strip()]
            for role, path in (
                ("train", SHARED_PACS / "splits" / "cartoon_train_kfold.txt"),
                ("test", SHARED_PACS / "splits" / "cartoon_crossval_kfold.txt"),
            )
        }
        chosen = {}
        for role, n in (("train", train_per_class), ("test", test_per_class)):
            chosen[role] = {}
            for rel in lists[role]:
                cls, name = rel.split("/")
                if len(chosen[role].setdefault(cls, [])) < n:
                    chosen[role][cls].append(name)
                    (cartoon / cls).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(SHARED_PACS / rel, cartoon / rel)
        _write_split_lists(cartoon, chosen["train"], chosen["test"])
        for folder in sorted(p for p in SHARED_SOURCES.glob("*/*") if p.is_dir() and p.parent.name in DOMAINS):
            dest = sources / folder.parent.name / folder.name
            dest.mkdir(parents=True)
            for f in sorted(folder.iterdir())[:sources_per_class]:
                shutil.copy2(f, dest / f.name)
        return "real PACS"
    from tlstudy.data import synthetic

    synthetic.generate(cartoon, train_per_class + test_per_class, 64, seed=0)
    names = {c.name: sorted(p.name for p in c.iterdir()) for c in cartoon.iterdir() if c.is_dir()}
    _write_split_lists(
        cartoon, {c: n[:train_per_class] for c, n in names.items()}, {c: n[train_per_class:] for c, n in names.items()}
    )
    for domain, style in zip(DOMAINS, synthetic.STYLES):
        synthetic.generate(sources / domain, sources_per_class, 64, seed=0, style=style)
    return "synthetic"


def expected_stages(params: dict) -> set[str]:
    stages = {"inspect", "fetch", "stats", "variants", "report"} | {f"pretrain@{b}" for b in params["pretrain"]}
    stages |= {f"{kind}@{p}" for p in params["parts"] for kind in ("train", "evaluate")}
    stages |= {f"{kind}@{p}" for p in params["transfer"] for kind in ("transfer", "evaluate_transfer")}
    return stages


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu_brings_back_every_stage_and_result(tmp_path):
    kind = tiny_gpu_data(tmp_path / "gpu-data")
    out, ws = tmp_path / "out", tmp_path / "ws"
    env = dict(
        os.environ,
        GPU_DATA=str(tmp_path / "gpu-data"),
        OUT=str(out),
        WS=str(ws),
        SITE=str(tmp_path / "site"),
        PYTHON=sys.executable,
        EPOCHS="1",
        SETS=" ".join(DRY_SETS),
        TESTS=FAST_TEST,
        BENCH_ARGS=BENCH_ARGS,
    )
    start = time.perf_counter()
    r = subprocess.run(["bash", str(SCRIPT)], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=1200)
    took = time.perf_counter() - start
    assert r.returncode == 0, f"gpu-check failed ({kind} data):\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    print(f"gpu-check dry run on {kind} data: {took:.0f} s")

    # What the device tool brings back: at most 8 files, named as it accepts.
    returned = {p.name for p in out.iterdir()}
    assert returned == RETURNED and len(returned) <= 8
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in returned)

    # The study ran through `dvc repro` in a profile workspace, with the overrides applied.
    params = yaml.safe_load((ws / "params.yaml").read_text())
    assert params["data"]["image_size"] == 32 and params["epochs"] == 1
    assert params["pretrain"]["pacs_sources"]["epochs"] == 1 and params["imagenet_weights"] == "random"
    assert params["data"]["source"] == "local" and params["pretrain"]["pacs_sources"]["source"] == "local"
    assert set(params["parts"]) == {"scratch", "classifier", "augment", "augment_study"} and params["pretrain"]
    assert params["parts"]["classifier"]["trainable"] == "head" and set(params["transfer"]) == {"fewshot_finetune_pacs"}
    stages = expected_stages(params)
    assert set(yaml.safe_load((ws / "dvc.lock").read_text())["stages"]) == stages
    assert "Running stage 'pretrain@pacs_sources'" in (out / "log.txt").read_text()

    timing = json.loads((out / "timing.json").read_text())
    assert set(timing["stages"]) == stages and all(s > 0 for s in timing["stages"].values())

    parts = [*params["parts"], *params["transfer"]]
    with tarfile.open(out / "results.tar.gz") as tar:
        names = set(tar.getnames())
        metrics = {p: json.load(tar.extractfile(f"metrics/{p}.json")) for p in parts}
        runs = {p: json.load(tar.extractfile(f"models/{p}/runs.json")) for p in parts}
    assert {"params.yaml", "dvc.lock", "metrics/pretrain/pacs_sources.json", "report/summary.md"} <= names
    assert any(n.startswith("details/") for n in names)
    for part, groups in metrics.items():
        assert groups and any("test_acc" in g for g in groups.values() if isinstance(g, dict)), part
    for sweep in ("augment", "augment_study"):
        assert {r["variant"] for r in runs[sweep]["runs"]} == {"none", "bright005"}

    machine = json.loads((out / "machine.json").read_text())
    assert machine["cpu_capability"] and machine["versions"]["dvc"] and machine["torch_threads"] >= 1
    assert "passed" in (out / "tests.txt").read_text()
    assert json.loads((out / "bench.json").read_text())
    summary = (out / "summary.txt").read_text()
    assert f"stages timed: {len(stages)}" in summary and "pretrain@pacs_sources" in summary
    assert all(re.search(rf"^{p} +\S", summary, re.M) for p in parts), summary


def test_summary_reads_the_full_record_from_details_and_only_the_parts(tmp_path):
    """summary.txt's lines: details/<part>.json holds the intervals when metrics/ holds only the
    headline; a metrics file that is no part (data.json, the split's provenance) is no line."""
    from tlstudy.tools.profile import summary

    (tmp_path / "metrics" / "pretrain").mkdir(parents=True)
    (tmp_path / "details").mkdir()
    (tmp_path / "params.yaml").write_text("parts: {scratch: {}}\ntransfer: {finetune: {}}\n")
    full = {"lr": 0.01, "epoch": 3, "test_acc": 0.5, "test_acc_lo": 0.4, "test_acc_hi": 0.6}
    (tmp_path / "details" / "scratch.json").write_text(json.dumps({"sgd": full}))
    (tmp_path / "metrics" / "scratch.json").write_text(json.dumps({"sgd": {"test_acc": 0.5, "lr": 0.01, "epoch": 3}}))
    (tmp_path / "metrics" / "finetune.json").write_text(json.dumps({"adam": {"test_acc": 0.7, "seeds": {"0": {}}}}))
    (tmp_path / "metrics" / "data.json").write_text(json.dumps({"split": "official lists"}))
    pretrain = {"val_acc": 0.6, "epoch": 2, "cartoon_test_acc": 0.3}
    (tmp_path / "metrics" / "pretrain" / "pacs_sources.json").write_text(json.dumps(pretrain))
    lines = summary(tmp_path / "metrics").splitlines()[1:]
    assert lines == [
        f"{'finetune':<22} adam 0.70 (1 seeds)",
        f"{'scratch':<22} sgd 0.50 [0.40, 0.60] (0.01, 3)",
        f"{'pretrain@pacs_sources':<22} val 0.60 (epoch 2), cartoon test with no cartoon training 0.30",
    ]
