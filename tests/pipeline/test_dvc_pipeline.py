"""The real dvc.yaml, run by the real DVC in a temporary git repo (the profiles' workspace builder):
`dvc repro`, then `dvc exp run -S lr=0.01`, then the comparison commands a user would type."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import PARTS, SWEEPS, at_rev, tiny_overlay, tiny_workspace

from tlstudy.tools import profile

pytestmark = pytest.mark.slow
# Every part of the study, pretraining and both sweeps (two variants each), two rates, both optimizers.
OVERLAY = tiny_overlay(
    keep=None,
    lr=[0.03, 0.003],
    optimizer=["sgd", "adam"],
    data={"synthetic_per_class": 10},
    parts={"augment": {"augment": ["none", "hflip"]}, "augment_study": {"augment": ["none", "bright005"]}},
    pretrain={"pacs_sources": {"source": "synthetic", "epochs": 2, "batch_size": 16, "lr": 0.01}},
    # One transfer part: the few-shot one adds stages, not code paths (the Slurm and GPU-check
    # tests run it).
    transfer={"fewshot_finetune_pacs": None},
)
TRANSFER = ["finetune_pacs"]
FEWSHOT = [p for p in PARTS if p.startswith("fewshot_")]
# The parts with one model per optimizer (the sweeps have one per variant): each is a row of the
# SGD-vs-Adam tests and of `compare`.
SINGLE = [p for p in PARTS if p not in SWEEPS] + TRANSFER


# headline.json's columns: the study's six parts (report/headline.py), all in the demo.
HEADLINE = {"scratch", "head", "finetune", "fs_scratch", "fs_head", "fs_finetune"}


def dvc(ws, *args, env: dict | None = None) -> str:
    # As a user with the virtual environment activated: stages call `python -m tlstudy`.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {}))
    r = subprocess.run([profile.tool("dvc"), *args], cwd=ws, capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"dvc {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def metrics(ws, folder: str = "metrics", parts=PARTS + TRANSFER) -> dict:
    """Each part's headline metrics (`metrics/`) or, with folder="details", everything evaluate wrote."""
    return {p: json.loads((ws / folder / f"{p}.json").read_text()) for p in parts}


def metric_values(tree) -> int:
    """How many numbers a metrics file (or DVC's JSON of one) holds: one column each in `dvc exp show`."""
    if isinstance(tree, dict):
        return sum(metric_values(v) for v in tree.values())
    return int(isinstance(tree, (int, float)) and not isinstance(tree, bool))


def stage_output_bytes(ws, skip=("fetch", "stats", "inspect")) -> int:
    """What the stages after fetch/stats/inspect wrote, as dvc.lock records it."""
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    return sum(o.get("size", 0) for name, st in lock.items() if name not in skip for o in st.get("outs", []))


@pytest.fixture(scope="module")
def workspace(module_tmp):
    return tiny_workspace(module_tmp / "ws", OVERLAY)


def test_repro_computes_every_part_and_leaves_a_clean_pipeline(workspace):
    m, d = metrics(workspace), metrics(workspace, "details")
    for part in SINGLE:
        assert set(m[part]) == set(d[part]) == {"sgd", "adam"}
        assert all(set(v) == {"test_acc", "val_acc", "lr", "epoch"} for v in m[part].values())
        assert {v["lr"] for v in m[part].values()} <= {0.03, 0.003}
        assert all(v["test_acc_lo"] <= v["test_acc"] <= v["test_acc_hi"] for v in d[part].values())
    assert set(d["augment"]) == {"none", "hflip"} and set(d["augment_study"]) == {"none", "bright005"}
    # A sweep's headline: the mean per family of variants and its best variant.
    assert set(m["augment"]) == {"none", "flip / rotation", "best_variant"}
    assert set(m["augment_study"]) == {"none", "colour jitter", "best_variant"}
    assert "Data and pipelines are up to date" in dvc(workspace, "status")
    assert (workspace / "manifest.csv").exists() and (workspace / "metrics/stats.json").exists()
    assert len(json.loads((workspace / "metrics/inspect.json").read_text())["top5"]) == 5
    report = (workspace / "report/README.md").read_text()
    assert "> **Demo.**" in report and "Leave-one-domain-out" in report
    assert "## Table VIII under both augmentation placements (`augment` and `augment_study`)" in report
    pre = json.loads((workspace / "details/pretrain/pacs_sources.json").read_text())
    assert set(pre["val_acc_per_domain"]) == {"art_painting", "photo", "sketch"} and 0 <= pre["target_test_acc"] <= 1
    assert (workspace / "backbones/pacs_sources.pt").exists()
    # A run costs megabytes: a sweep keeps test logits, not 45 MB models.
    assert stage_output_bytes(workspace) <= 600e6
    assert all(p.stat().st_size < 1e6 for p in (workspace / "models/augment").rglob("*.pt"))


def test_exp_run_with_one_lr_and_three_seeds_reruns_only_training_and_is_comparable(workspace):
    # One experiment for the two knobs a person turns first: a new lr re-runs every part's
    # training and nothing before it; three seeds are the fewest with a spread over seeds (two
    # give a t interval on one degree of freedom) and reach every seed-dependent path (per-seed
    # picks, seed columns, the paired test, both sweeps' placements). Each experiment re-runs
    # every part, so one of them instead of two saves a whole pipeline's worth of stages.
    out = dvc(workspace, "exp", "run", "-S", "lr=0.01", "-S", "seeds=[0,1,2]")
    for stage in ("fetch", "stats", "inspect", "pretrain@pacs_sources"):
        assert f"Stage '{stage}' didn't change, skipping" in out
    assert "Running stage 'report'" in out
    assert "Running stage 'train@scratch'" in out and "Running stage 'evaluate@augment'" in out
    assert "Running stage 'transfer@finetune_pacs'" in out
    assert all(f"Running stage 'train@{p}'" in out for p in FEWSHOT)
    assert yaml.safe_load((workspace / "params.yaml").read_text())["lr"] == 0.01
    d = metrics(workspace, "details")
    # Over seeds, each seed's pick is its own (details/); the metrics keep the means and intervals.
    assert {s["lr"] for part in d.values() for v in part.values() for s in v["seeds"].values()} == {0.01}
    assert all(v["runs"] == 3 for v in d["scratch"].values())  # one rate, three seeds
    for part in d.values():
        for v in part.values():
            assert sorted(v["seeds"]) == ["0", "1", "2"] and "test images and 3 seeds" in v["interval"]
            assert v["test_acc_lo"] <= v["test_acc"] <= v["test_acc_hi"]
    report = (workspace / "report/README.md").read_text()
    # SGD vs Adam in every part that is not a sweep, each on every seed's per-image results.
    tested = report.split("### SGD vs Adam across parts")[1].split("\n\n")[1]
    assert len(tested.splitlines()) - 2 == len(SINGLE)
    assert f"p adjusted (Holm, m = {len(SINGLE)})" in tested
    per_image = (workspace / "details/predictions/scratch.csv").read_text().splitlines()[0]
    assert per_image == "path,label," + ",".join(f"{o}:seed{s}" for o in ("sgd", "adam") for s in range(3))

    # A plain diff is the headline: one number per part of the study, nothing else.
    headline = json.loads(dvc(workspace, "metrics", "diff", "--json", "--all"))
    assert set(headline) == {"headline.json"}
    assert set(headline["headline.json"]) == set(json.loads((workspace / "headline.json").read_text())) == HEADLINE
    diff = dvc(workspace, "metrics", "diff", "--json", "--targets", "metrics", "-R")
    changed = json.loads(diff)
    # The baseline's one seed had its lr and epoch in the metrics; over seeds they are per seed
    # (details/), so they leave the metrics. The interval's bounds come in, so they are always in
    # the diff; the mean and the validation accuracy are there exactly when they differ from the
    # one seed's values.
    assert changed["metrics/scratch.json"]["sgd.lr"]["old"] in (0.03, 0.003)
    old = at_rev(workspace, "HEAD", "metrics/scratch.json")["sgd"]
    new = json.loads((workspace / "metrics/scratch.json").read_text())["sgd"]
    expected = {f"sgd.{k}" for k in set(old) | set(new) if old.get(k) != new.get(k)}
    assert {"sgd.lr", "sgd.test_acc_lo", "sgd.test_acc_hi"} <= expected
    assert {k for k in changed["metrics/scratch.json"] if k.startswith("sgd.")} == expected, new
    assert not any(".seeds." in k for f in changed.values() for k in f)  # per-seed picks stay in details/
    # What a person compares, nothing that moves with the machine's load: no timing, no counts.
    # Which of these move with lr depends on the CPU's kernels (a sweep's best variant may or may not).
    keys = {k.split(".")[-1] for f in changed.values() for k in f}
    compared = {"test_acc", "val_acc", "lr", "epoch", "test_acc_lo", "test_acc_hi", "target_test_acc", "best_variant"}
    assert "lr" in keys and keys <= compared
    # The table a person reads: a row per changed number, no more.
    table = dvc(workspace, "metrics", "diff", "--targets", "metrics", "-R")
    rows = [line for line in table.splitlines() if line.strip()]
    assert len(rows) <= 1 + sum(len(f) for f in changed.values())

    shown = json.loads(dvc(workspace, "exp", "show", "--json"))
    revs = [r for rev in shown for r in [rev, *(x for e in rev.get("experiments") or [] for x in e["revs"])]]
    assert len(revs) >= 3, "dvc exp show lists the workspace, the baseline and the experiment"
    for rev in revs:
        files = rev["data"]["metrics"]
        assert set(files) == {"headline.json"} and metric_values(files["headline.json"]["data"]) == 6, rev["rev"]
    # As a person reads it at 120 columns: the headline whole, no column collapsed to "…" — in
    # less -S (DVC's pager draws the table at full width; its first screen is each line's first
    # 120 characters) and, with only the columns that changed, without a pager.
    wide = dvc(workspace, "exp", "show", "--no-pager", env={"COLUMNS": "2000"}).splitlines()
    screen = "\n".join(line[:120] for line in wide)
    assert all(f" {name} " in screen for name in HEADLINE)
    assert "…" not in screen
    # What changed, at 120 columns: every headline value that differs between the rows, first and
    # in full (which ones differ depends on the CPU's kernels); after them the changed params and
    # the changed outputs' hashes as far as they fit (more of them where fewer values moved), the
    # rest collapsed into one last column.
    order = list(json.loads((workspace / "headline.json").read_text()))
    values = [rev["data"]["metrics"]["headline.json"]["data"] for rev in revs]
    moved = [name for name in order if len({v[name] for v in values}) > 1]
    narrow = dvc(workspace, "exp", "show", "--no-pager", "--only-changed", env={"COLUMNS": "120"})
    header = next(line for line in narrow.splitlines() if "Experiment" in line).split()
    assert header[:2] == ["Experiment", "Created"] and header[2 : 2 + len(moved)] == moved, narrow
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    outputs = {o["path"].split("/")[0] for st in lock.values() for o in st.get("outs", [])}
    assert set(header[2 + len(moved) :]) <= {"lr", "seeds", "…"} | outputs and header.count("…") <= 1, narrow
    assert "…" not in header or header[-1] == "…", narrow
    # The README's one command for "which is better": every part's test accuracy, a column per
    # experiment, in a 200-column terminal.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run([sys.executable, "-m", "tlstudy", "compare"], cwd=workspace, env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()  # fmt: skip
    assert max(len(line) for line in out) <= 200 and len(out[0].split()) == 2 + len(revs)
    for part in SINGLE:
        for opt in ("sgd", "adam"):
            row = next(line for line in out if line.split()[:2] == [part, opt])
            assert row.split()[2] == f"{100 * d[part][opt]['test_acc']:.2f}"  # the workspace's

    plots = json.loads(dvc(workspace, "plots", "diff", "HEAD", "--json"))
    ids = set(plots["data"] if "data" in plots else plots)
    # One chart per part's curves file from one declaration in dvc.yaml, rows per quantity.
    assert {f"plots/train/{p}.csv" for p in PARTS + TRANSFER} | {"plots/pretrain/pacs_sources.csv"} <= ids
    fields = {row["field"] for row in plots["data"]["plots/train/scratch.csv"][0]["content"]["data"]["values"]}
    assert fields == {"train_loss", "val_loss", "val_acc"}
    assert any("predictions/scratch" in i for i in ids)


def backbone_md5(ws) -> str:
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    return next(o["md5"] for o in lock["pretrain@pacs_sources"]["outs"] if o["path"].endswith(".pt"))


def test_changing_pretraining_reruns_only_the_parts_that_start_from_it(workspace):
    # Another learning rate changes the weights of every epoch, so the backbone changes on any
    # processor (fewer epochs need not: the same best epoch gives the same bytes).
    before = backbone_md5(workspace)
    out = dvc(workspace, "exp", "run", "-S", "pretrain.pacs_sources.lr=0.02")
    assert "Running stage 'pretrain@pacs_sources'" in out and backbone_md5(workspace) != before
    assert "Running stage 'transfer@finetune_pacs'" in out and "Running stage 'evaluate_transfer@finetune_pacs'" in out
    assert "Running stage 'train@scratch'" not in out and "Running stage 'train@finetune'" not in out
    assert "Stage 'train@scratch' didn't change, skipping" in out


def test_a_new_augmentation_variant_puts_only_the_parts_that_train_with_it_out_of_date(workspace):
    from tlstudy.lib import yamlio

    params = yamlio.load((workspace / "params.yaml").read_text())
    params["augmentations"]["vflip"] = [["RandomVerticalFlip", {"p": 0.5}]]
    params["parts"]["augment"]["augment"].append("vflip")  # the demo's sweeps list their variants
    params["augmentations"]["bright005"] = [["ColorJitter", {"brightness": 0.06}]]  # augment_study's
    (workspace / "params.yaml").write_text(yamlio.dump(params))
    augment = {"train@augment", "evaluate@augment"}  # its own entry changed: it lists vflip now
    assert set(json.loads(dvc(workspace, "status", "--json"))) == {"variants", "report", *augment}
    # A part depends on its variants through the file `variants` writes for it: once that ran,
    # the sweep whose variant changed is out of date too, and no other part, nor fetch or stats.
    dvc(workspace, "repro", "variants")
    study = {"train@augment_study", "evaluate@augment_study"}
    assert set(json.loads(dvc(workspace, "status", "--json"))) == {"report", *augment, *study}
