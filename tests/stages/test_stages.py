"""fetch → stats → train → evaluate, called as the DVC stages call them, in a temporary folder."""

import csv
import json
from pathlib import Path

import pytest
import torch

from tlstudy.lib import resampling, uncertainty
from tlstudy.stages import evaluate, fetch, stats, train
from tlstudy.training import curves, engine


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
    saved = torch.load("models/scratch/seed0/sgd.pt", weights_only=True)
    best = max((r for r in runs if r["group"] == "sgd"), key=lambda r: r["best_val_acc"])
    assert saved["lr"] == best["lr"] and saved["epoch"] == best["best_epoch"]

    rows = list(csv.DictReader(open("plots/train/scratch.csv")))
    assert list(rows[0]) == curves.PLOT_COLUMNS
    assert {r["run"] for r in rows} >= {"sgd lr=0.01", "adam lr=0.01"}
    assert len([r for r in rows if r["run"] == "sgd lr=0.01"]) == params["epochs"]

    metrics = evaluate.run(params, "scratch")
    assert json.loads(open("details/scratch.json").read()) == metrics
    per_image = list(csv.DictReader(open("details/predictions/scratch.csv", encoding="utf-8")))
    assert list(per_image[0]) == ["path", "label", "sgd:seed0", "adam:seed0"]
    # What `dvc metrics diff` shows: the test accuracy and what selected it, nothing else.
    headline = json.loads(open("metrics/scratch.json").read())
    assert headline == {
        opt: {k: metrics[opt][k] for k in ("test_acc", "val_acc", "lr", "epoch")} for opt in ("sgd", "adam")
    }
    for opt in ("sgd", "adam"):
        m = metrics[opt]
        assert set(m) == {
            "lr", "epoch", "val_acc", "val_acc_lo", "val_acc_hi", "test_acc", "test_acc_lo", "test_acc_hi",
            "interval", "val_interval", "sec_per_epoch", "ms_per_example", "runs", "diverged", "n_val", "n_test",
            "precision",
        }  # fmt: skip
        assert m["precision"] == engine.speed_for(torch.device("cpu"), params["precision"]).precision
        assert 0 <= m["test_acc"] <= 1 and m["runs"] == 2 and m["diverged"] >= 1
        # One seed: the bootstrap over the test images of its per-image results, around the accuracy.
        got = resampling.image_seed_interval([[r[f"{opt}:seed0"] == r["label"] for r in per_image]])
        assert (m["test_acc_lo"], m["test_acc_hi"]) == (round(got["lo"], 6), round(got["hi"], 6))
        assert m["interval"] == got["label"] and "test images, one seed" in m["interval"]
        assert m["test_acc_lo"] <= m["test_acc"] <= m["test_acc_hi"] and m["test_acc_lo"] < m["test_acc_hi"]
    preds = list(csv.DictReader(open("plots/predictions/scratch/sgd.csv")))
    n_test = len([r for r in csv.DictReader(open("manifest.csv")) if r["full"] == "test"])
    assert len(preds) == n_test
    assert all(r["predicted"] == r["top1"] and float(r["p1"]) >= float(r["p2"]) >= float(r["p3"]) for r in preds)
    correct = sum(r["predicted"] == r["label"] for r in preds) / len(preds)
    assert correct == pytest.approx(metrics["sgd"]["test_acc"], abs=1e-6)
    # The first seed's plot file and the per-image file of every seed agree.
    assert [(r["path"], r["predicted"]) for r in preds] == [(r["path"], r["sgd:seed0"]) for r in per_image]
    assert metrics["sgd"]["n_test"] == n_test


def test_seeds_run_the_grid_once_each_and_give_a_mean_with_an_interval_over_seeds(prepared):
    params = prepared
    params["optimizer"], params["seeds"] = ["sgd", "adam"], [0, 1, 2]
    train.run(params, "fewshot_scratch")
    runs = json.loads(open("models/fewshot_scratch/runs.json").read())
    assert runs["seeds"] == [0, 1, 2] and [r["seed"] for r in runs["runs"]] == [0, 0, 1, 1, 2, 2]
    assert {
        p.relative_to("models/fewshot_scratch").as_posix() for p in Path("models/fewshot_scratch").rglob("*.pt")
    } == {f"seed{s}/{o}.pt" for s in (0, 1, 2) for o in ("sgd", "adam")}
    # The seed changes the initialisation (and order, draws): the seeds' curves differ.
    rows = list(csv.DictReader(open("plots/train/fewshot_scratch.csv")))
    assert {r["run"] for r in rows} == {f"{o} lr=0.01 seed={s}" for o in ("sgd", "adam") for s in (0, 1, 2)}
    losses = {r["seed"]: r["train_loss"] for r in rows if r["optimizer"] == "sgd" and r["epoch"] == "1"}
    assert len(set(losses.values())) == 3
    assert not Path("work/runs/fewshot_scratch").exists()

    metrics = evaluate.run(params, "fewshot_scratch")
    per_image = list(csv.DictReader(open("details/predictions/fewshot_scratch.csv", encoding="utf-8")))
    for opt in ("sgd", "adam"):
        m = metrics[opt]
        tests = [m["seeds"][s]["test_acc"] for s in ("0", "1", "2")]
        correct = [[r[f"{opt}:seed{s}"] == r["label"] for r in per_image] for s in (0, 1, 2)]
        assert [sum(c) / len(c) for c in correct] == pytest.approx(tests, abs=1e-6)
        # The interval covers the test images and the seeds: the two-way bootstrap of every seed's results.
        got = resampling.image_seed_interval(correct)
        assert m["test_acc"] == pytest.approx(sum(tests) / 3, abs=1e-6) and m["interval"] == got["label"]
        assert (m["test_acc_lo"], m["test_acc_hi"]) == (round(got["lo"], 6), round(got["hi"], 6))
        mean, lo, hi = uncertainty.mean_ci([m["seeds"][s]["val_acc"] for s in ("0", "1", "2")])
        assert (m["val_acc_lo"], m["val_acc_hi"]) == (pytest.approx(lo, abs=1e-6), pytest.approx(hi, abs=1e-6))
        assert "lr" not in m and all("lr" in v and "test_acc_lo" in v for v in m["seeds"].values())
    # The headline over seeds: the mean with its interval; each seed's pick stays in the details.
    headline = json.loads(open("metrics/fewshot_scratch.json").read())
    assert headline == {
        o: {k: metrics[o][k] for k in ("test_acc", "test_acc_lo", "test_acc_hi", "val_acc")} for o in ("sgd", "adam")
    }
    # Seed 0 of three is the run a single seed 0 gives: adding seeds changes nothing already computed.
    single = dict(params, seeds=[0])
    train.run(single, "fewshot_scratch")
    alone = evaluate.run(single, "fewshot_scratch")
    for opt in ("sgd", "adam"):
        assert alone[opt]["test_acc"] == metrics[opt]["seeds"]["0"]["test_acc"]


def test_evaluate_does_not_retrain_and_reproduces_the_metrics(prepared):
    train.run(prepared, "finetune")
    before = open("models/finetune/seed0/sgd.pt", "rb").read()
    first = evaluate.run(prepared, "finetune")
    assert evaluate.run(prepared, "finetune") == first
    assert open("models/finetune/seed0/sgd.pt", "rb").read() == before


def test_head_only_part_stores_only_the_head_and_evaluates_on_a_rebuilt_backbone(prepared):
    train.run(prepared, "fewshot_classifier")
    saved = torch.load("models/fewshot_classifier/seed0/sgd.pt", weights_only=True)
    assert set(saved["state"]) == {"weight", "bias"}
    runs = json.loads(open("models/fewshot_classifier/runs.json").read())
    assert runs["init"].startswith("random (stand-in for imagenet")
    metrics = evaluate.run(prepared, "fewshot_classifier")
    assert metrics["sgd"]["val_acc"] == pytest.approx(saved["val_acc"], abs=1e-6)


def test_augment_part_selects_one_model_per_variant(prepared):
    prepared["parts"]["augment"]["augment"] = ["none", "hflip_rot10", "blur3", "blur5"]
    train.run(prepared, "augment")
    metrics = evaluate.run(prepared, "augment")
    assert set(metrics) == {"none", "hflip_rot10", "blur3", "blur5"}
    # A sweep's headline: the mean test accuracy per family and its best variant, not every variant.
    headline = json.loads(open("metrics/augment.json").read())
    assert set(headline) == {"none", "flip / rotation", "blur", "best_variant"}
    blur = (metrics["blur3"]["test_acc"] + metrics["blur5"]["test_acc"]) / 2
    assert headline["blur"] == {"test_acc": pytest.approx(blur, abs=1e-6)}
    best = max(metrics, key=lambda v: metrics[v]["test_acc"])
    assert headline["best_variant"] == best
    rows = list(csv.DictReader(open("plots/train/augment.csv")))
    assert {r["variant"] for r in rows} == set(metrics) and {r["optimizer"] for r in rows} == {"sgd"}
    assert {(r["variant"], r["family"]) for r in rows if r["variant"] in ("blur3", "hflip_rot10")} == {
        ("blur3", "blur"),
        ("hflip_rot10", "flip / rotation"),
    }


def test_a_sweep_keeps_test_logits_not_models_and_scores_them_as_from_the_weights(prepared, tmp_path):
    """A sweep's selected models are not kept (45 MB each): their test logits are, and evaluate
    scores them to the same test accuracy as the weights. The first seed of a plain part keeps
    its weights; its other seeds keep logits."""
    from tlstudy.data import images as data
    from tlstudy.training import engine, models

    prepared["parts"]["augment"].update(augment=["none", "hflip"], init="random")
    prepared["parts"]["scratch"]["seeds"] = [0, 1]
    train.run(prepared, "augment")
    train.run(prepared, "scratch")
    for path in ("models/augment/seed0/none.pt", "models/augment/seed0/hflip.pt", "models/scratch/seed1/sgd.pt"):
        saved = torch.load(path, weights_only=True)
        assert "state" not in saved and saved["test_logits"].shape == (len(_test_paths()), 7)
    assert "state" in torch.load("models/scratch/seed0/sgd.pt", weights_only=True)
    by_logits = evaluate.run(prepared, "augment")
    assert all(Path(p).stat().st_size < 100_000 for p in Path("models/augment").rglob("*.pt"))

    # The same selections, weights kept: what evaluate measured before the logits existed.
    ds = data.load(Path("work/images.pt"), Path("manifest.csv"))
    x_test, y_test = ds.part("fewshot", "test")
    for variant in ("none", "hflip"):
        saved = torch.load(f"models/augment/seed0/{variant}.pt", weights_only=True)
        split = train.load_split(ds, "fewshot", torch.device("cpu"))
        store_free = engine.fit(
            models.build(7, "random", "random", 0), "all", engine.Run("sgd", saved["lr"], variant),
            train.transform_for(prepared, variant, "pixels", split, 0)[0], split, prepared["epochs"],
            prepared["batch_size"], prepared, 0, "check",
        )  # fmt: skip
        model = models.build(7, "random", "random", 0)
        model.load_state_dict(store_free.best_state)
        predicted = engine.predict(model, x_test, split.mean, split.std).argmax(1)
        acc = (predicted == y_test).float().mean().item()
        assert by_logits[variant]["test_acc"] == round(acc, 6)
        rows = list(csv.DictReader(open(f"plots/predictions/augment/{variant}.csv")))
        assert [r["predicted"] for r in rows] == [ds.classes[i] for i in predicted.tolist()]


def _test_paths() -> list[str]:
    return [r["path"] for r in csv.DictReader(open("manifest.csv")) if r["fewshot"] == "test"]


def test_the_studys_placement_augments_after_normalising_and_validates_augmented_images(prepared):
    from tlstudy.data import images as data
    from tlstudy.training import augment, engine, placement

    params = prepared
    ds = data.load(Path("work/images.pt"), Path("manifest.csv"))
    split = train.load_split(ds, "fewshot", torch.device("cpu"))
    # Brightness near 1 on normalised floats: torchvision clamps them to [0, 1], so every value
    # below the mean is wiped to 0 — the model sees what the study's model saw.
    t, val_split = train.transform_for(params, "bright001", "study", split, seed=0)
    assert isinstance(t, placement.StudyPlacement)
    seen = engine.normalise(val_split.x_val, split.mean, split.std)
    plain = engine.normalise(split.x_val, split.mean, split.std)
    assert seen.min() >= -1e-5 and seen.max() <= 1 + 1e-5
    below, inside = plain < -0.05, (plain > 0.05) & (plain < 0.95)
    assert below.float().mean() > 0.05 and inside.any()
    assert seen[below].abs().max() < 1e-5  # wiped
    assert ((seen[inside] / plain[inside]) - 1).abs().max() < 0.0101  # brightness factor in [0.99, 1.01]
    assert not torch.equal(val_split.x_val, split.x_val.float()) and torch.equal(val_split.x_train, split.x_train)
    # Flips keep the value range: normalised images come back as they were, flipped or not.
    t, val_split = train.transform_for(params, "hflip", "study", split, seed=0)
    seen = engine.normalise(val_split.x_val, split.mean, split.std)
    for img, ref in zip(seen, plain):
        assert torch.allclose(img, ref, atol=1e-4) or torch.allclose(img, ref.flip(-1), atol=1e-4)
    # Ours: the uint8 pixels are augmented and validation stays clean.
    t, val_split = train.transform_for(params, "bright001", "pixels", split, seed=0)
    assert isinstance(t, augment.Batched) and val_split is split

    params["parts"]["augment_study"]["augment"] = ["none", "bright005"]
    train.run(params, "augment_study")
    assert json.loads(open("models/augment_study/runs.json").read())["placement"] == "study"
    metrics = evaluate.run(params, "augment_study")
    assert set(metrics) == {"none", "bright005"}


def test_stats_match_the_training_images(prepared):
    from tlstudy.data import images as data

    ds = data.load(Path("work/images.pt"), Path("manifest.csv"))
    x, _ = ds.part("full", "train")
    s = json.loads(open("metrics/stats.json").read())
    ref = x.double().div(255)
    assert s["images"] == len(x)
    assert list(s["mean"].values()) == pytest.approx(ref.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert list(s["std"].values()) == pytest.approx(ref.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-6)
