"""Stage `evaluate@<part>`: the part's selected models on the test set.

Two files, so that what DVC shows by default is what a person compares:
- `metrics/<part>.json` (declared metrics; `dvc exp show`, `dvc metrics diff`): per optimizer the
  test accuracy and what selected it — val_acc, lr, epoch — or, over several seeds, the mean
  test accuracy with its 95 % interval and the mean val_acc. A sweep over augmentation variants
  gives the mean test accuracy per family of variants and its best variant; its per-variant
  figures are in the details.
- `details/<part>.json` (not declared: it feeds the report): per optimizer or variant, val_acc
  and test_acc with their 95 % intervals (`_lo`, `_hi`), sec_per_epoch, ms_per_example, runs,
  diverged, n_val, n_test, precision (bf16 or fp32, as train@ computed). The test interval is a
  bootstrap over the test images and the seeds at once (resampling.py; over the images alone with
  one seed); `interval` says what it covers. The validation interval: Wilson's with one seed,
  Student's t over the seeds with several (`val_interval`). With several seeds, each seed's own
  selection is kept under `seeds`, with its Wilson intervals over the images.
- `details/predictions/<part>.csv`: every seed's selected model's prediction for every test image
  (a column `<group>:seed<k>` per group and seed beside `path` and `label`), so that anyone can
  redo the statistics — the report's tests read it.
`plots/predictions/<part>/<group>.csv` (path, label, predicted, top-3 with probabilities; the
first seed's model) feeds the confusion matrix and the misclassified-examples figure. It only
loads weights (or the test logits train@ kept instead): re-running it never retrains.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
from pathlib import Path

import torch

from tlstudy import params as P
from tlstudy.data import images as data
from tlstudy.data.normalisation import load_stats
from tlstudy.lib import resampling, uncertainty
from tlstudy.lib.atomic import replacing, write_json
from tlstudy.training import augment, engine, models

PREDICTION_COLUMNS = ["path", "label", "predicted", "top1", "p1", "top2", "p2", "top3", "p3"]


def predictions_csv(paths, labels, probs, classes) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PREDICTION_COLUMNS)
    k = min(3, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=1)
    for path, label, ps, ix in zip(paths, labels.tolist(), top_p.tolist(), top_i.tolist()):
        row = [path, classes[label], classes[ix[0]]]
        for p, i in zip(ps, ix):
            row += [classes[i], f"{p:.4f}"]
        w.writerow(row + [""] * (len(PREDICTION_COLUMNS) - len(row)))
    return buf.getvalue()


PREDICTIONS = Path("details/predictions")


def seed_column(group: str, seed: int | str) -> str:
    return f"{group}:seed{seed}"


def seed_predictions_csv(paths: list[str], labels: list[str], predicted: dict[str, list[str]]) -> str:
    """One row per test image: its path, its label, and each (group, seed) column's prediction."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", *predicted])
    for i, (path, label) in enumerate(zip(paths, labels)):
        w.writerow([path, label, *(column[i] for column in predicted.values())])
    return buf.getvalue()


def over_seeds(name: str, values: list[float]) -> dict:
    mean, lo, hi = uncertainty.mean_ci(values)
    return {name: round(mean, 6), f"{name}_lo": round(lo, 6), f"{name}_hi": round(hi, 6)}


def test_acc_interval(correct: list[list[bool]]) -> dict:
    """test_acc and its bootstrap interval over the test images and the seeds (`correct[seed][image]`)."""
    got = resampling.image_seed_interval(correct)
    return {"test_acc": round(got["mean"], 6), "test_acc_lo": round(got["lo"], 6), "test_acc_hi": round(got["hi"], 6),
            "interval": got["label"]}  # fmt: skip


def aggregate(per_seed: dict[str, dict], correct: list[list[bool]]) -> dict:
    """A group's figures over its seeds: test accuracy with its interval over images and seeds;
    one seed's validation accuracy with Wilson's interval, several seeds' mean with Student's t
    interval over seeds, each seed kept under `seeds`."""
    if len(per_seed) == 1:
        (only,) = per_seed.values()
        return {**only, **test_acc_interval(correct), "val_interval": "95 % Wilson interval over validation images"}
    picks = list(per_seed.values())
    out = {
        **over_seeds("val_acc", [m["val_acc"] for m in picks]),
        **test_acc_interval(correct),
        "val_interval": f"95 % t interval over {len(picks)} seeds",
        "sec_per_epoch": round(sum(m["sec_per_epoch"] for m in picks) / len(picks), 4),
        "ms_per_example": round(sum(m["ms_per_example"] for m in picks) / len(picks), 4),
        "seeds": per_seed,
    }
    return out


def headline(details: dict, families: dict[str, str] | None = None) -> dict:
    """What `dvc metrics diff` shows of a part: per group its test accuracy and what selected it
    (one seed), or the mean over seeds with its interval; for a sweep (`families`: variant →
    family), the mean test accuracy per family and the name of the best variant instead of 28
    groups: what a person compares, in few enough lines that `dvc metrics diff` stays one screen."""
    tested = {g: m for g, m in details.items() if "test_acc" in m}
    if families is None:
        keys = ("test_acc", "test_acc_lo", "test_acc_hi", "val_acc") if _over_seeds(tested) else None
        return {g: {k: m[k] for k in keys or ("test_acc", "val_acc", "lr", "epoch")} for g, m in tested.items()}
    out: dict = {}
    for fam in augment.FAMILIES:
        accs = [m["test_acc"] for v, m in tested.items() if families.get(v) == fam]
        if accs:
            out[fam] = {"test_acc": round(sum(accs) / len(accs), 6)}  # how many: in the details
    if tested:
        best = max(tested, key=lambda v: (tested[v]["test_acc"], v == "none"))
        out["best_variant"] = best  # its accuracy is in the details: one line less in every diff
    return out


def _over_seeds(groups: dict) -> bool:
    return any("seeds" in m for m in groups.values())


def run(params: dict, part: str) -> dict:
    resolved = P.part(params, part)
    folder = Path("models") / part
    runs_file = folder / "runs.json"
    if not runs_file.exists():
        raise FileNotFoundError(f"{runs_file}: missing; run the train@{part} stage first")
    saved_runs = json.loads(runs_file.read_text())
    runs, seeds = saved_runs["runs"], saved_runs["seeds"]
    dev = engine.device()
    speed = engine.speed_for(dev, params["precision"], params["data"]["image_size"])
    dataset = data.load(Path("work/images.pt"), Path("manifest.csv"))
    subset = resolved.subset
    x_test, y_test = dataset.part(subset, "test")
    n_val, n_test = len(dataset.roles[subset]["val"]), len(y_test)
    test_paths = [dataset.paths[i] for i in dataset.roles[subset]["test"].tolist()]
    mean, std = (torch.tensor(v, device=dev).view(1, 3, 1, 1) for v in load_stats())
    x_test, y_test = x_test.to(dev), y_test.to(dev)

    metrics: dict[str, dict] = {}
    built: dict[tuple, torch.nn.Module] = {}  # one initialisation per (classes, init, seed)
    pred_dir = Path("plots/predictions") / part
    shutil.rmtree(pred_dir, ignore_errors=True)
    pred_dir.mkdir(parents=True)
    PREDICTIONS.mkdir(parents=True, exist_ok=True)
    predicted: dict[str, list[str]] = {}  # column -> each test image's predicted class
    for group in dict.fromkeys(r["group"] for r in runs):
        members = [r for r in runs if r["group"] == group]
        entry = {"runs": len(members), "diverged": sum(r["diverged_epoch"] is not None for r in members)}
        entry["precision"] = saved_runs["precision"]  # what train@ computed in: bf16 or fp32
        per_seed: dict[str, dict] = {}
        correct: list[list[bool]] = []
        for seed in seeds:
            path = folder / f"seed{seed}" / f"{group}.pt"
            if not path.exists():
                print(f"evaluate@{part}: seed {seed}: {group}: every run diverged; no model to test")
                continue
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved["classes"] != dataset.classes:
                raise data.DataError(
                    f"{path}: trained on classes {saved['classes']}, but the data has {dataset.classes}; "
                    f"re-run train@{part}"
                )
            if "state" in saved:
                spec = (len(saved["classes"]), saved["init"], saved["imagenet_weights"], saved["seed"])
                if spec not in built:
                    built[spec] = models.build(*spec)
                model = copy.deepcopy(built[spec])
                models.restore(model, saved["trainable"], saved["state"])
                logits = engine.predict(speed.prepare(model), x_test, mean, std, speed)
            else:  # a model train@ did not keep: its test logits, computed there the same way
                logits = saved["test_logits"].to(dev)
            probs = logits.softmax(1)
            right = probs.argmax(1) == y_test
            test_acc = right.float().mean().item()
            correct.append(right.tolist())
            predicted[seed_column(group, seed)] = [dataset.classes[i] for i in probs.argmax(1).tolist()]
            chosen = next(
                r
                for r in members
                if r["seed"] == seed
                and r["lr"] == saved["lr"]
                and r["variant"] == saved["variant"]
                and r["optimizer"] == saved["optimizer"]
            )
            per_seed[str(seed)] = {
                "lr": saved["lr"],
                "epoch": saved["epoch"],
                **uncertainty.with_wilson("val_acc", saved["val_acc"], n_val),
                **uncertainty.with_wilson("test_acc", test_acc, n_test),
                "sec_per_epoch": round(chosen["sec_per_epoch"], 4),
                "ms_per_example": round(chosen["ms_per_example"], 4),
            }
            if seed == seeds[0]:
                # UTF-8 whatever the locale, as DVC's plots and the report read it.
                with replacing(pred_dir / f"{group}.csv", "wb") as f:
                    f.write(predictions_csv(test_paths, y_test.cpu(), probs.cpu(), dataset.classes).encode("utf-8"))
            print(
                f"evaluate@{part}: seed {seed}: {group}: lr {saved['lr']:g} epoch {saved['epoch']} "
                f"val_acc {saved['val_acc']:.4f} test_acc {test_acc:.4f}"
            )
        if per_seed:
            entry = {**aggregate(per_seed, correct), **entry}
        metrics[group] = {**entry, "n_val": n_val, "n_test": n_test}
    labels = [dataset.classes[i] for i in y_test.tolist()]
    with replacing(PREDICTIONS / f"{part}.csv", "wb") as f:
        f.write(seed_predictions_csv(test_paths, labels, predicted).encode("utf-8"))
    write_json(Path("details") / f"{part}.json", metrics)
    sweep = resolved.sweep
    families = {v: augment.family(params["augmentations"][v]) for v in resolved.variants} if sweep else None
    write_json(Path("metrics") / f"{part}.json", headline(metrics, families))
    return metrics
