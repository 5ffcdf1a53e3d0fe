"""The report, built from fixture outputs: a diverged run, a missing optimizer, all-diverged groups."""

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from tlstudy.lib import findings, resampling, uncertainty
from tlstudy.lib.uncertainty import with_wilson
from tlstudy.stages import report
from tlstudy.stages.evaluate import aggregate, seed_predictions_csv
from tlstudy.training.curves import PLOT_COLUMNS

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


def metric(lr, epoch, val, test, diverged=0, runs=2, n_val=20, n_test=8):
    """One seed's metrics as evaluate writes them: Wilson intervals from 20 val / 8 test images."""
    return {"lr": lr, "epoch": epoch, **with_wilson("val_acc", val, n_val), **with_wilson("test_acc", test, n_test),
            "interval": "wilson", "sec_per_epoch": 1.5, "ms_per_example": 2.25, "runs": runs, "diverged": diverged,
            "n_val": n_val, "n_test": n_test}  # fmt: skip


def write_predictions(root: Path, part: str, paths: list[str], right: dict[str, list[list[bool]]]):
    """details/predictions/<part>.csv as evaluate writes it, from group -> [seed][image] right or
    wrong (a wrong image is predicted as the next class)."""
    labels = [p.split("/")[0] for p in paths]
    wrong = {c: CLASSES[(i + 1) % len(CLASSES)] for i, c in enumerate(CLASSES)}
    columns = {f"{g}:seed{s}": [lab if ok else wrong[lab] for lab, ok in zip(labels, seed)]
               for g, seeds in right.items() for s, seed in enumerate(seeds)}  # fmt: skip
    (root / "details/predictions").mkdir(parents=True, exist_ok=True)
    (root / "details/predictions" / f"{part}.csv").write_text(seed_predictions_csv(paths, labels, columns))


def cell(a: list[list[bool]], b: list[list[bool]], p_adjusted: float) -> str:
    """What the report's tested cell must say for a − b, from the library it is made with."""
    d = resampling.paired_image_seed_difference(a, b)
    words = findings.verdict(d["diff"], d["lo"], d["hi"], p_adjusted)
    interval = f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]".replace("-", "−")
    return f"{interval} pp; {uncertainty.p_text(d['p'])}, adj. {uncertainty.p_value(p_adjusted)}; {words}"


def run_record(name, opt, lr, variant="none", diverged=None, best=0.5):
    return {"run": name, "group": opt if variant == "none" else variant, "optimizer": opt, "lr": lr,
            "variant": variant, "best_epoch": 0 if diverged == 1 else 2, "best_val_acc": best,
            "epochs_run": 3 if diverged is None else diverged - 1, "diverged_epoch": diverged}  # fmt: skip


def curve_rows(name, opt, lr, epochs, variant="none", family="none"):
    return [
        [name, 0, opt, lr, variant, family, e, 2.0 / e, 0.3 * e, 2.1 / e, 0.25 * e, 0.5] for e in range(1, epochs + 1)
    ]


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
    write_json(in_tmp / "details/scratch.json", {"sgd": metric(0.01, 2, 0.55, 0.5, diverged=1),
                                                 "adam": metric(0.001, 3, 0.65, 0.625)})  # fmt: skip
    write_json(in_tmp / "models/scratch/runs.json", {"runs": [
        run_record("sgd lr=1e+30", "sgd", 1e30, diverged=1), run_record("sgd lr=0.01", "sgd", 0.01),
        run_record("adam lr=0.001", "adam", 0.001)]})  # fmt: skip
    header = PLOT_COLUMNS
    write_csv(in_tmp / "plots/train/scratch.csv", header,
              curve_rows("sgd lr=0.01", "sgd", "0.01", 3)
              + curve_rows("adam lr=0.001", "adam", "0.001", 3))  # fmt: skip
    # classifier: Adam missing entirely (e.g. run with -S optimizer=sgd).
    write_json(in_tmp / "details/classifier.json", {"sgd": metric(0.003, 1, 0.7, 0.75)})
    write_json(in_tmp / "models/classifier/runs.json", {"runs": [run_record("sgd lr=0.003", "sgd", 0.003)]})
    write_csv(in_tmp / "plots/train/classifier.csv", header, curve_rows("sgd lr=0.003", "sgd", "0.003", 3))
    # finetune: every Adam run diverged.
    write_json(
        in_tmp / "details/finetune.json",
        {"sgd": metric(0.01, 3, 0.9, 0.875), "adam": {"runs": 1, "diverged": 1}},
    )
    finetune_runs = [run_record("sgd lr=0.01", "sgd", 0.01), run_record("adam lr=0.03", "adam", 0.03, diverged=1)]
    write_json(in_tmp / "models/finetune/runs.json", {"runs": finetune_runs})
    write_csv(in_tmp / "plots/train/finetune.csv", header, curve_rows("sgd lr=0.01", "sgd", "0.01", 3))
    write_json(in_tmp / "details/augment.json", {"none": metric(0.01, 2, 0.5, 0.5, runs=1),
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
    # Every seed's per-image results, which the tests read: the dog images wrong, as above.
    dogs_wrong = [[not p.startswith("dog") for p in paths]]
    write_predictions(in_tmp, "scratch", paths, {"sgd": dogs_wrong, "adam": dogs_wrong})
    write_predictions(in_tmp, "classifier", paths, {"sgd": [[True] * len(paths)]})
    write_predictions(in_tmp, "finetune", paths, {"sgd": dogs_wrong})
    return params


def test_report_tables_put_the_studys_numbers_beside_ours(outputs):
    report.run(outputs)
    md = Path("report/README.md").read_text()
    assert md.startswith("# Transfer-learning study: report\n\n> **Demo.**")
    row = lambda opt, part: next(  # noqa: E731
        line for line in md.split(f"(`{part}`)")[1].splitlines() if line.startswith(f"| {opt} |")
    )
    # 11 of 20 validation images, 4 of 8 test images: Wilson 95 % [34.2, 74.2] and [21.5, 78.5].
    assert row("sgd", "scratch") == (
        "| sgd | 0.01 | 2 | 55.00 % [34.2, 74.2] | 50.00 % [21.5, 78.5] | 1 | 60.60 % | 0.03 | 18 | 77.43 % | 2 (1) |"
    )
    assert row("adam", "scratch").startswith("| adam | 0.001 | 3 | 65.00 % [43.3, 81.9] | 62.50 % [30.6, 86.3] | 1 |")
    assert row("adam", "classifier") == ("| adam | not run | — | — | — | — | 81.78 % | 0.0001 | 38 | 88.36 % | — |")
    assert row("adam", "finetune").startswith("| adam | all 1 runs diverged | — | — | — | — | 93.22 % |")
    assert "| R | 0.8100 | 0.2700 | 0.8116 | 0.2730 | 0.485 | 0.229 |" in md
    # One unit throughout: Table I's probabilities in % too.
    assert "| 1 | Samoyed | 50.00 % | Samoyed | 95.04 % |" in md and "Random weights" in md
    # Every heading names the backbone the part really used, and the study's beside it.
    assert "### Table III: training the head only, backbone frozen (`classifier`) — backbone: random, standing in" in md
    assert "; the study's: ImageNet.*" in md and "ImageNet backbone)" not in md
    assert "## How to read this" in md.split("## Summary")[0] and "Brackets hold 95 % intervals" in md
    summary = md.split("## Summary")[1]
    ours = (
        "| `scratch` | random init | 50.00 % [21.5, 78.5] (lr 0.01, epoch 2) "
        "| 62.50 % [30.6, 86.3] (lr 0.001, epoch 3) |"
    )
    # One seed: the difference over the test images, from the per-image predictions (both get the
    # dog images wrong: no difference, whatever the details' fixture accuracies say).
    dogs_wrong = [[False, False, True, True, True, True]]  # in the paths' order: dog, elephant, giraffe
    assert f"{ours} {cell(dogs_wrong, dogs_wrong, 1.0)} | — | 60.60 % (lr 0.03, epoch 18) |" in summary
    # classifier (SGD, every image right) against scratch's selected Adam: one of a family of two.
    tests = json.loads(Path("report/tests.json").read_text())["each transfer part vs scratch"]["tests"]
    assert set(tests) == {"classifier", "finetune"} and tests["classifier"]["groups"] == ["sgd", "adam"]
    q = tests["classifier"]["p_adjusted"]
    assert q == min(1, 2 * tests["classifier"]["p"])  # Holm, the smaller p of two
    assert f"| {cell([[True] * 6], dogs_wrong, q)} |" in summary.split("| `classifier` |")[1].splitlines()[0]
    assert Path("report/summary.md").read_text() in md


def test_table_viii_is_sorted_by_test_accuracy_with_the_best_in_bold(outputs):
    report.run(outputs)
    md = Path("report/README.md").read_text()
    table = md.split("## Table VIII")[1].split("\n\n")[1].splitlines()[2:]
    assert [line.split(" | ")[0].strip("| *`") for line in table] == ["hflip", "none", "blur3"]
    assert table[0] == (
        "| **`hflip`** | flip / rotation | **0.01** | **3** | **60.00 % [38.7, 78.1]** | **75.00 % [40.9, 92.9]** "
        "| 0.03 | 12 | 97.87 % | 82.78 % |"
    )


def test_diverged_runs_are_listed_and_every_figure_is_a_real_png(outputs):
    report.run(outputs)
    md = Path("report/README.md").read_text()
    diverged = md.split("## Diverged runs")[1]
    assert "| `scratch` | sgd lr=1e+30 | 1 |" in diverged and "| `finetune` | adam lr=0.03 | 1 |" in diverged
    figures = re.findall(r"\]\((figures/[^)]+\.png)\)", md)
    # inspect, results at a glance, three parts' curves, the sweep's Table VIII and its curves,
    # confusion matrices, misclassified
    assert len(figures) == 4 + 1 + 3 + 2 + 1 + 1
    assert {"figures/results_at_a_glance.png", "figures/table8_augment.png"} <= set(figures)
    for rel in figures:
        path = Path("report") / rel
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 150, rel
        assert path.stat().st_size > 5_000, rel
    assert sorted(p.name for p in Path("report/figures").iterdir()) == sorted(Path(f).name for f in figures)
    assert "| study (full fine-tuning, 227 px) | 5.57 | 3 | 7.49 | — |" in md


def test_headline_holds_each_parts_selected_test_accuracy_and_confusion_counts_its_predictions(outputs):
    """headline.json: of SGD and Adam the higher validation accuracy (SGD on a tie), its test
    accuracy in %; the confusion matrix counts that model's test predictions."""
    from tlstudy.stages.report.document import confusion_matrices
    from tlstudy.stages.report.inputs import Inputs

    write_json(Path("metrics/scratch.json"), {"sgd": {"test_acc": 0.5, "val_acc": 0.55},
                                              "adam": {"test_acc": 0.625, "val_acc": 0.65}})  # fmt: skip
    write_json(Path("metrics/classifier.json"), {"sgd": {"test_acc": 0.75, "val_acc": 0.7}})
    write_json(Path("metrics/finetune.json"), {"sgd": {"test_acc": 0.875, "val_acc": 0.9},
                                               "adam": {"test_acc": 0.5, "val_acc": 0.9}})  # fmt: skip
    report.run(outputs)
    assert json.loads(Path("headline.json").read_text()) == {"scratch": 62.5, "head": 75.0, "finetune": 87.5}
    matrices = {title.split()[0]: (title, classes, counts) for title, classes, counts in confusion_matrices(
        Inputs(outputs))}  # fmt: skip
    assert set(matrices) == {"scratch", "classifier", "finetune"}  # a sweep has no single selected model
    title, classes, counts = matrices["scratch"]
    assert title == "scratch (Adam): 66.7 %" and classes == CLASSES
    assert counts == [[0, 0, 2], [0, 2, 0], [0, 0, 2]]  # both dogs taken for giraffes
    assert "![Confusion matrices](figures/confusion.png)" in Path("report/README.md").read_text()


TEST_PATHS = [f"{c}/pic_{i}.jpg" for c in CLASSES for i in range(3)][:8]


def right_first(picks: dict[int, tuple[float, int, float, float]]) -> list[list[bool]]:
    """Per seed, its test accuracy as the first images right and the rest wrong (8 test images)."""
    return [[i < round(8 * test) for i in range(8)] for _, _, _, test in picks.values()]


def seeded(picks: dict[int, tuple[float, int, float, float]]) -> dict:
    """A group over seeds as evaluate writes it, from (lr, epoch, val, test) per seed."""
    per_seed = {str(s): metric(lr, ep, val, test) for s, (lr, ep, val, test) in picks.items()}
    for m in per_seed.values():
        for key in ("interval", "runs", "diverged", "n_val", "n_test"):
            m.pop(key)
    return {**aggregate(per_seed, right_first(picks)), "runs": 2 * len(picks), "diverged": 0, "n_val": 20, "n_test": 8}


@pytest.fixture
def seeds_and_placements(in_tmp, params):
    params["parts"] = {k: params["parts"][k] for k in ("fewshot_scratch", "augment", "augment_study")}
    variants = ["none", "bright005", "hue005", "hflip", "blur3"]
    for part in ("augment", "augment_study"):
        params["parts"][part]["augment"] = variants
    sgd = {0: (0.01, 4, 0.55, 0.5), 1: (0.01, 6, 0.6, 0.625), 2: (0.001, 5, 0.5, 0.5)}
    adam = {0: (0.001, 3, 0.65, 0.75), 1: (0.001, 3, 0.7, 0.875), 2: (0.001, 2, 0.6, 0.75)}
    write_json(in_tmp / "details/fewshot_scratch.json", {"sgd": seeded(sgd), "adam": seeded(adam)})
    write_predictions(in_tmp, "fewshot_scratch", TEST_PATHS, {"sgd": right_first(sgd), "adam": right_first(adam)})
    records, rows = [], []
    for opt, picks in (("sgd", sgd), ("adam", adam)):
        for seed in picks:
            name = f"{opt} lr=0.01 seed={seed}"
            records.append({**run_record(name, opt, 0.01), "seed": seed})
            rows += [[r[0], seed, *r[2:7], r[7] + 0.1 * seed, *r[8:]] for r in curve_rows(name, opt, "0.01", 3)]
    write_json(in_tmp / "models/fewshot_scratch/runs.json", {"runs": records})
    write_csv(in_tmp / "plots/train/fewshot_scratch.csv", PLOT_COLUMNS, rows)
    # Ours: every variant near 0.6 on validation and test. The study's placement: colour jitter
    # validates at 0.8 and tests at 0.125; flips and blur as under ours.
    ours = {v: metric(0.01, 3, 0.6, 0.625, runs=1) for v in variants}
    placed = {v: metric(0.01, 3, 0.8, 0.125, runs=1) if v in ("bright005", "hue005") else ours[v] for v in variants}
    for part, table in (("augment", ours), ("augment_study", placed)):
        write_json(in_tmp / f"details/{part}.json", table)
        write_json(in_tmp / f"models/{part}/runs.json",
                   {"runs": [run_record(f"{v} sgd lr=0.01", "sgd", 0.01, v) for v in variants]})  # fmt: skip
        write_csv(in_tmp / f"plots/train/{part}.csv", PLOT_COLUMNS,
                  sum((curve_rows(f"{v} sgd lr=0.01", "sgd", "0.01", 3, v) for v in variants), []))  # fmt: skip
    return params


def test_seeds_give_intervals_over_images_and_seeds_and_a_paired_test(seeds_and_placements):
    """Three seeds: the test accuracy's interval is the bootstrap over the test images and the
    seeds; SGD − Adam is tested on the same images and seeds, and its words follow the rule."""
    report.run(seeds_and_placements)
    md = Path("report/README.md").read_text()
    sgd, adam = (right_first(p) for p in ({0: (0, 0, 0, 0.5), 1: (0, 0, 0, 0.625), 2: (0, 0, 0, 0.5)},
                                         {0: (0, 0, 0, 0.75), 1: (0, 0, 0, 0.875), 2: (0, 0, 0, 0.75)}))  # fmt: skip
    got = resampling.image_seed_interval(sgd)
    assert got["covers"] == "images and seeds"
    expected = f"{100 * got['mean']:.2f} % [{100 * got['lo']:.1f}, {100 * got['hi']:.1f}]"
    table = md.split("(`fewshot_scratch`)")[1]
    sgd_row = next(line for line in table.splitlines() if line.startswith("| sgd |"))
    assert sgd_row.startswith("| sgd | 0.01 ×2, 0.001 ×1 | 4–6 | ") and f"| {expected} | 3 |" in sgd_row
    family = json.loads(Path("report/tests.json").read_text())["SGD vs Adam across parts"]
    t = family["tests"]["fewshot_scratch"]
    assert family["m"] == 1 and t["p_adjusted"] == t["p"]  # a family of one: nothing to correct
    assert t["diff"] == pytest.approx(-0.25) and t["n_seeds"] == 3 and t["n_images"] == 8
    tested = md.split("## Tested comparisons")[1]
    assert "### SGD vs Adam across parts" in tested and "p adjusted (Holm, m = 1)" in tested
    assert f"| **{findings.verdict(t['diff'], t['lo'], t['hi'], t['p_adjusted'])}** |" in tested
    assert f"{expected} (mean of 3 seeds)" in md.split("## Summary")[1]
    assert cell(sgd, adam, t["p"]) in md.split("## Summary")[1]
    words = findings.verdict(t["diff"], t["lo"], t["hi"], t["p_adjusted"])
    assert Path("report/findings.md").read_text() == (
        f"- **SGD vs Adam across parts** (Holm-adjusted, 1 test): {words}: `fewshot_scratch`.\n"
    )
    assert Path("report/figures/curves_fewshot_scratch.png").stat().st_size > 10_000


def test_selections_at_the_edges_of_the_grid_are_counted(seeds_and_placements):
    params = seeds_and_placements
    params["lr"], params["optimizer"], params["parts"]["fewshot_scratch"]["epochs"] = [0.01, 0.001], ["sgd", "adam"], 6
    report.run(params)
    table = Path("report/README.md").read_text().split("### Selections at the edge of the grid")[1]
    # SGD's seeds picked (0.01, 4), (0.01, 6), (0.001, 5); Adam's (0.001, 3), (0.001, 3), (0.001, 2).
    assert "| SGD | 3 | 2 (67 %) | 1 (33 %) | 1 (33 %) |" in table
    assert "| Adam | 3 | 0 (0 %) | 3 (100 %) | 0 (0 %) |" in table


def test_variants_that_predict_alike_and_one_class_predictors_are_named(seeds_and_placements):
    labels = [p.split("/")[0] for p in TEST_PATHS]
    shifted = labels[1:] + labels[:1]
    columns = {"none:seed0": labels, "bright005:seed0": ["giraffe"] * 8, "hue005:seed0": ["giraffe"] * 8,
               "hflip:seed0": shifted, "blur3:seed0": shifted}  # fmt: skip
    Path("details/predictions").mkdir(parents=True, exist_ok=True)
    Path("details/predictions/augment_study.csv").write_text(seed_predictions_csv(TEST_PATHS, labels, columns))
    report.run(seeds_and_placements)
    section = Path("report/README.md").read_text().split("(`augment_study` under the study's")[1].split("\n## ")[0]
    assert "*Identical predictions on every test image:* `bright005` = `hue005` — one result, counted 2" in section
    assert "`hflip` = `blur3`" in section and "`none` =" not in section
    assert "*One-class predictors:* `bright005`, `hue005` predict `giraffe` for every test image" in section


def test_the_two_placements_stand_side_by_side_with_a_verdict(seeds_and_placements):
    report.run(seeds_and_placements)
    md = Path("report/README.md").read_text()
    section = md.split("## Table VIII under both augmentation placements (`augment` and `augment_study`)")[1]
    row = next(line for line in section.splitlines() if line.startswith("| `bright005` |"))
    assert row == (
        "| `bright005` | colour jitter | 80.85 % | 21.96 % | 60.00 % [38.7, 78.1] | 62.50 % [30.6, 86.3] "
        "| 80.00 % [58.4, 91.9] | 12.50 % [2.2, 47.1] |"
    )
    # Colour jitter loses 50 points against flips and blur under the study's placement only, and
    # validation does not see it: both criteria hold.
    assert "**The hypothesis is confirmed by these data.**" in section
    assert "the hypothesis for the study's collapse is **confirmed**" in md.split("## Summary")[1]


@pytest.mark.parametrize(
    "placed_colour, verdict",
    [((0.8, 0.125), "confirmed"), ((0.15, 0.125), "partly confirmed"), ((0.6, 0.625), "not confirmed")],
)
def test_the_hypothesis_verdict_follows_its_stated_rule(placed_colour, verdict):
    base = {"n": 2, "study_val": None, "study_test": None}
    means = {
        "colour jitter": {**base, "ours_val": 0.6, "ours_test": 0.625, "placed_val": placed_colour[0],
                          "placed_test": placed_colour[1]},
        "geometric and blur": {**base, "ours_val": 0.6, "ours_test": 0.625, "placed_val": 0.6, "placed_test": 0.625},
    }  # fmt: skip
    assert report.hypothesis(means)["verdict"] == verdict


def test_the_report_stage_depends_on_every_module_of_the_report():
    """dvc.yaml lists the report's files one by one (a folder's hash would take in __pycache__):
    a new module must be listed, or changing it would not re-run the report."""
    from conftest import PROJECT

    deps = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]["report"]["deps"]
    modules = {f"src/tlstudy/stages/report/{p.name}" for p in (PROJECT / "src/tlstudy/stages/report").glob("*.py")}
    assert modules <= set(deps)


GREEN = (44, 160, 44)  # tab:green, AdamW's colour in every figure (SGD tab:blue, Adam tab:orange)


def has_colour(path: Path, rgb: tuple[int, int, int]) -> bool:
    with Image.open(path) as im:
        return any(c == rgb for _, c in im.convert("RGB").getcolors(maxcolors=1 << 24))


def test_a_third_optimizer_is_reported_beside_sgd_and_adam(outputs):
    """AdamW in `scratch`: a column, a row, a colour and a test against each other optimizer
    (every pair; SGD vs Adam stays as it was), and the headline's pick where it validates best."""
    report.run(outputs)
    assert not has_colour(Path("report/figures/results_at_a_glance.png"), GREEN)
    details = json.loads(Path("details/scratch.json").read_text())
    details["adamw"] = metric(0.001, 2, 0.75, 0.75)
    write_json(Path("details/scratch.json"), details)
    runs = json.loads(Path("models/scratch/runs.json").read_text())["runs"]
    write_json(Path("models/scratch/runs.json"), {"runs": [*runs, run_record("adamw lr=0.001", "adamw", 0.001)]})
    with open("plots/train/scratch.csv", "a", newline="") as f:
        csv.writer(f).writerows(curve_rows("adamw lr=0.001", "adamw", "0.001", 3))
    rows = list(csv.reader(open("plots/predictions/scratch/adam.csv", newline="")))
    write_csv(Path("plots/predictions/scratch/adamw.csv"), rows[0], rows[1:])
    paths = [r[0] for r in rows[1:]]
    dogs_wrong, all_right = [[not p.startswith("dog") for p in paths]], [[True] * len(paths)]
    write_predictions(Path("."), "scratch", paths, {"sgd": dogs_wrong, "adam": dogs_wrong, "adamw": all_right})
    write_json(Path("metrics/scratch.json"), {"sgd": {"test_acc": 0.5, "val_acc": 0.55},
                                              "adam": {"test_acc": 0.625, "val_acc": 0.65},
                                              "adamw": {"test_acc": 0.75, "val_acc": 0.75}})  # fmt: skip
    report.run(outputs)
    md = Path("report/README.md").read_text()
    summary = md.split("## Summary")[1]
    assert (
        "| part | backbone | SGD test acc [95 % CI] | Adam test acc [95 % CI] | AdamW test acc [95 % CI] "
        "| SGD − Adam, points [95 % CI]; p; verdict | SGD − AdamW, points [95 % CI]; p; verdict "
        "| Adam − AdamW, points [95 % CI]; p; verdict |"
    ) in summary
    # Each pair is its own family; in each, scratch is the only part that ran both.
    row = summary.split("| `scratch` |")[1].splitlines()[0]
    assert f"| 75.00 % [40.9, 92.9] (lr 0.001, epoch 2) | {cell(dogs_wrong, dogs_wrong, 1.0)} |" in row
    p = resampling.paired_image_seed_difference(dogs_wrong, all_right)["p"]
    assert f"| {cell(dogs_wrong, all_right, p)} | {cell(dogs_wrong, all_right, p)} |" in row
    tested = md.split("## Tested comparisons")[1]
    for pair in ("SGD vs Adam", "SGD vs AdamW", "Adam vs AdamW"):
        assert f"### {pair} across parts\n" in tested
    assert "| adamw | 0.001 | 2 | 75.00 % [53.1, 88.8] | 75.00 % [40.9, 92.9] | 1 | — |" in md.split("(`scratch`)")[1]
    assert "| part | SGD s/epoch | SGD ms/example | Adam s/epoch | Adam ms/example | AdamW s/epoch |" in md
    assert "Each part's selected model: of SGD, Adam and AdamW, the higher validation accuracy" in md
    assert json.loads(Path("headline.json").read_text())["scratch"] == 75.0
    assert has_colour(Path("report/figures/results_at_a_glance.png"), GREEN)
    with Image.open("report/figures/curves_scratch.png") as im:
        assert im.width == round(3 * 5.2 * 90)  # a column per optimizer
