"""fetch → stats → train → evaluate, called as the DVC stages call them, in a temporary folder."""

import csv
import json
from pathlib import Path

import pytest
import torch

from tlstudy import evaluate, fetch, stats, train


@pytest.fixture
def prepared(in_tmp, params):
    fetch.run(params)
    stats.run(params)
    return params


def test_a_grid_with_a_diverging_rate_goes_on_and_selects_the_best_run(prepared):
    params = prepared
    params["lr"], params["optimizer"] = [1e30, 0.01], ["sgd", "adam"]
    train.run(params, "scratch")
    runs = json.loads(open("models/scratch/runs.json").read())["runs"]
    assert [(r["optimizer"], r["lr"]) for r in runs] == [
        ("sgd", 1e30),
        ("sgd", 0.01),
        ("adam", 1e30),
        ("adam", 0.01),
    ]
    assert runs[0]["diverged_epoch"] is not None and runs[1]["diverged_epoch"] is None
    saved = torch.load("models/scratch/sgd.pt", weights_only=True)
    best = max((r for r in runs if r["group"] == "sgd"), key=lambda r: r["best_val_acc"])
    assert saved["lr"] == best["lr"] and saved["epoch"] == best["best_epoch"]

    rows = list(csv.DictReader(open("plots/train/scratch.csv")))
    assert list(rows[0]) == train.PLOT_COLUMNS
    assert {r["run"] for r in rows} >= {"sgd lr=0.01", "adam lr=0.01"}
    assert len([r for r in rows if r["run"] == "sgd lr=0.01"]) == params["epochs"]

    metrics = evaluate.run(params, "scratch")
    assert json.loads(open("metrics/scratch.json").read()) == metrics
    for opt in ("sgd", "adam"):
        m = metrics[opt]
        assert set(m) == {
            "lr",
            "epoch",
            "val_acc",
            "test_acc",
            "sec_per_epoch",
            "ms_per_example",
            "runs",
            "diverged",
        }
        assert 0 <= m["test_acc"] <= 1 and m["runs"] == 2 and m["diverged"] >= 1
    preds = list(csv.DictReader(open("plots/predictions/scratch/sgd.csv")))
    n_test = len([r for r in csv.DictReader(open("manifest.csv")) if r["full"] == "test"])
    assert len(preds) == n_test
    assert all(r["predicted"] == r["top1"] and float(r["p1"]) >= float(r["p2"]) >= float(r["p3"]) for r in preds)
    correct = sum(r["predicted"] == r["label"] for r in preds) / len(preds)
    assert correct == pytest.approx(metrics["sgd"]["test_acc"], abs=1e-6)


def test_evaluate_does_not_retrain_and_reproduces_the_metrics(prepared):
    train.run(prepared, "finetune")
    before = open("models/finetune/sgd.pt", "rb").read()
    first = evaluate.run(prepared, "finetune")
    assert evaluate.run(prepared, "finetune") == first
    assert open("models/finetune/sgd.pt", "rb").read() == before


def test_head_only_part_stores_only_the_head_and_evaluates_on_a_rebuilt_backbone(prepared):
    train.run(prepared, "fewshot_classifier")
    saved = torch.load("models/fewshot_classifier/sgd.pt", weights_only=True)
    assert set(saved["state"]) == {"weight", "bias"}
    runs = json.loads(open("models/fewshot_classifier/runs.json").read())
    assert runs["init"].startswith("random (stand-in for imagenet")
    metrics = evaluate.run(prepared, "fewshot_classifier")
    assert metrics["sgd"]["val_acc"] == pytest.approx(saved["val_acc"], abs=1e-6)


def test_augment_part_selects_one_model_per_variant(prepared):
    prepared["parts"]["augment"]["augment"] = ["none", "hflip_rot10"]
    train.run(prepared, "augment")
    metrics = evaluate.run(prepared, "augment")
    assert set(metrics) == {"none", "hflip_rot10"}
    rows = list(csv.DictReader(open("plots/train/augment.csv")))
    assert {r["variant"] for r in rows} == {"none", "hflip_rot10"} and {r["optimizer"] for r in rows} == {"sgd"}


def test_stats_match_the_training_images(prepared):
    from tlstudy import data

    ds = data.load(Path("work/images.pt"), Path("manifest.csv"))
    x, _ = ds.part("full", "train")
    s = json.loads(open("metrics/stats.json").read())
    ref = x.double().div(255)
    assert s["images"] == len(x)
    assert list(s["mean"].values()) == pytest.approx(ref.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert list(s["std"].values()) == pytest.approx(ref.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-6)
