"""The report, built from fixture outputs: a diverged run, a missing optimizer, all-diverged groups."""

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from tlstudy import report
from tlstudy.train import PLOT_COLUMNS

CLASSES = ["dog", "elephant", "giraffe"]


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def metric(lr, epoch, val, test, diverged=0, runs=2):
    return {"lr": lr, "epoch": epoch, "val_acc": val, "test_acc": test, "sec_per_epoch": 1.5,
            "ms_per_example": 2.25, "runs": runs, "diverged": diverged}  # fmt: skip


def run_record(name, opt, lr, variant="none", diverged=None, best=0.5):
    return {"run": name, "group": opt if variant == "none" else variant, "optimizer": opt, "lr": lr,
            "variant": variant, "best_epoch": 0 if diverged == 1 else 2, "best_val_acc": best,
            "epochs_run": 3 if diverged is None else diverged - 1, "diverged_epoch": diverged}  # fmt: skip


def curve_rows(name, opt, lr, epochs, variant="none"):
    return [[name, opt, lr, variant, e, 2.0 / e, 0.3 * e, 2.1 / e, 0.25 * e, 0.5] for e in range(1, epochs + 1)]


@pytest.fixture
def outputs(in_tmp, params):
    params["parts"] = {k: params["parts"][k] for k in ("scratch", "classifier", "finetune", "augment")}
    params["parts"]["augment"]["augment"] = ["none", "hflip", "blur3"]
    write_json(in_tmp / "metrics/stats.json", {"images": 10, "mean": {"r": 0.81, "g": 0.78, "b": 0.73},
                                              "std": {"r": 0.27, "g": 0.28, "b": 0.33}})  # fmt: skip
    write_json(in_tmp / "metrics/inspect.json", {"weights": "random", "top5": {"Samoyed": 0.5, "Pomeranian": 0.2,
               "white wolf": 0.1, "Arctic fox": 0.1, "kuvasz": 0.05}})  # fmt: skip
    for name in ("photo", "kernels", "features_before_relu", "features_after_relu"):
        (in_tmp / "plots/inspect").mkdir(parents=True, exist_ok=True)
        noise = torch.randint(0, 256, (300, 400, 3), dtype=torch.uint8).numpy()
        Image.fromarray(noise).save(in_tmp / "plots/inspect" / f"{name}.png")
    # scratch: SGD lr 1e30 diverged at epoch 1, SGD 0.01 fine; Adam fine.
    write_json(in_tmp / "metrics/scratch.json", {"sgd": metric(0.01, 2, 0.55, 0.5, diverged=1),
                                                 "adam": metric(0.001, 3, 0.65, 0.625)})  # fmt: skip
    write_json(in_tmp / "models/scratch/runs.json", {"runs": [
        run_record("sgd lr=1e+30", "sgd", 1e30, diverged=1), run_record("sgd lr=0.01", "sgd", 0.01),
        run_record("adam lr=0.001", "adam", 0.001)]})  # fmt: skip
    header = PLOT_COLUMNS
    write_csv(in_tmp / "plots/train/scratch.csv", header,
              curve_rows("sgd lr=0.01", "sgd", "0.01", 3)
              + curve_rows("adam lr=0.001", "adam", "0.001", 3))  # fmt: skip
    # classifier: Adam missing entirely (e.g. run with -S optimizer=sgd).
    write_json(in_tmp / "metrics/classifier.json", {"sgd": metric(0.003, 1, 0.7, 0.75)})
    write_json(in_tmp / "models/classifier/runs.json", {"runs": [run_record("sgd lr=0.003", "sgd", 0.003)]})
    write_csv(in_tmp / "plots/train/classifier.csv", header, curve_rows("sgd lr=0.003", "sgd", "0.003", 3))
    # finetune: every Adam run diverged.
    write_json(
        in_tmp / "metrics/finetune.json",
        {"sgd": metric(0.01, 3, 0.9, 0.875), "adam": {"runs": 1, "diverged": 1}},
    )
    finetune_runs = [run_record("sgd lr=0.01", "sgd", 0.01), run_record("adam lr=0.03", "adam", 0.03, diverged=1)]
    write_json(in_tmp / "models/finetune/runs.json", {"runs": finetune_runs})
    write_csv(in_tmp / "plots/train/finetune.csv", header, curve_rows("sgd lr=0.01", "sgd", "0.01", 3))
    write_json(in_tmp / "metrics/augment.json", {"none": metric(0.01, 2, 0.5, 0.5, runs=1),
                                                 "hflip": metric(0.01, 3, 0.6, 0.75, runs=1),
                                                 "blur3": metric(0.01, 1, 0.4, 0.25, runs=1)})  # fmt: skip
    write_json(in_tmp / "models/augment/runs.json", {"runs": [run_record(f"{v} sgd lr=0.01", "sgd", 0.01, v)
                                                              for v in ("none", "hflip", "blur3")]})  # fmt: skip
    write_csv(
        in_tmp / "plots/train/augment.csv",
        header,
        sum((curve_rows(f"{v} sgd lr=0.01", "sgd", "0.01", 3, v) for v in ("none", "hflip", "blur3")), []),
    )
    # Test predictions and the decoded images they point at.
    paths = [f"{c}/pic_{i}.jpg" for c in CLASSES for i in range(2)]
    g = torch.Generator().manual_seed(0)
    torch.save({"classes": CLASSES, "paths": paths, "labels": torch.tensor([0, 0, 1, 1, 2, 2]),
                "images": torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)},
               (in_tmp / "work").mkdir() or in_tmp / "work/images.pt")  # fmt: skip
    pred_header = ["path", "label", "predicted", "top1", "p1", "top2", "p2", "top3", "p3"]
    for part, group in (("scratch", "adam"), ("scratch", "sgd"), ("classifier", "sgd"), ("finetune", "sgd")):
        rows = [[p, p.split("/")[0], "giraffe" if p.startswith("dog") else p.split("/")[0],
                 "giraffe" if p.startswith("dog") else p.split("/")[0], "0.7", "dog", "0.2", "elephant", "0.1"]
                for p in paths]  # fmt: skip
        write_csv(in_tmp / "plots/predictions" / part / f"{group}.csv", pred_header, rows)
    return params


def test_report_tables_put_the_studys_numbers_beside_ours(outputs):
    report.run(outputs)
    md = Path("report/README.md").read_text()
    assert md.startswith("# Transfer-learning study: report\n\n> **Demo.**")
    row = lambda opt, part: next(  # noqa: E731
        line for line in md.split(f"(`{part}`)")[1].splitlines() if line.startswith(f"| {opt} |")
    )
    assert row("sgd", "scratch") == (
        "| sgd | 0.01 | 2 | 55.00 % | 50.00 % | 60.60 % | 0.03 | 18 | 77.43 % | 1.500 | 2.250 | 2 (1) |"
    )
    assert row("adam", "scratch").startswith("| adam | 0.001 | 3 | 65.00 % | 62.50 % | 64.41 % |")
    assert row("adam", "classifier") == "| adam | not run | — | — | — | 81.78 % | 0.0001 | 38 | 88.36 % | — | — | — |"
    assert row("adam", "finetune").startswith("| adam | all 1 runs diverged | — | — | — | 93.22 % |")
    assert "| R | 0.8100 | 0.2700 | 0.8116 | 0.2730 | 0.485 | 0.229 |" in md
    assert "| 1 | Samoyed | 0.5000 | Samoyed | 0.9504 |" in md and "Random weights" in md
    summary = md.split("## Summary")[1]
    ours = "| `scratch` | random | 50.00 % (lr 0.01, epoch 2) | 62.50 % (lr 0.001, epoch 3) |"
    assert f"{ours} 60.60 % (lr 0.03, epoch 18) |" in summary
    assert Path("report/summary.md").read_text() in md


def test_table_viii_is_sorted_by_test_accuracy_with_the_best_in_bold(outputs):
    report.run(outputs)
    md = Path("report/README.md").read_text()
    table = md.split("## Table VIII")[1].split("\n\n")[1].splitlines()[2:]
    assert [line.split(" | ")[0].strip("| *") for line in table] == ["hflip", "none", "blur3"]
    assert table[0] == "| **hflip** | **0.01** | **3** | **60.00 %** | **75.00 %** | 0.03 | 12 | 97.87 % | 82.78 % |"


def test_diverged_runs_are_listed_and_every_figure_is_a_real_png(outputs):
    report.run(outputs)
    md = Path("report/README.md").read_text()
    diverged = md.split("## Diverged runs")[1]
    assert "| scratch | sgd lr=1e+30 | 1 |" in diverged and "| finetune | adam lr=0.03 | 1 |" in diverged
    figures = re.findall(r"\]\((figures/[^)]+\.png)\)", md)
    assert len(figures) == 4 + 3 + 1 + 1 + 1  # inspect, three parts' curves, augment, SGD vs Adam, misclassified
    for rel in figures:
        path = Path("report") / rel
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 150, rel
        assert path.stat().st_size > 5_000, rel
    assert sorted(p.name for p in Path("report/figures").iterdir()) == sorted(Path(f).name for f in figures)
    assert "| study (full fine-tuning, 227 px) | 5.57 | 3 | 7.49 | — |" in md
