"""Stage `report`: `report/README.md` and its PNG figures, regenerated from the pipeline's
metrics, curves, predictions and run records — no model is loaded, so it takes seconds.

Every table puts the study's own numbers (resources/study.yaml) beside ours; a number the study
did not give us is shown as "—". Runs that diverged are listed and marked in the curves. Every
accuracy of ours carries its 95 % interval in brackets: Wilson's from the counts for one seed,
Student's t over seeds for several (uncertainty.py); SGD and Adam are compared per part with a
paired test, and a sweep run under both augmentation placements gets the two side by side.
"""

from __future__ import annotations

import csv
import json
import shutil
from importlib import resources
from pathlib import Path

import yaml

from tlstudy import uncertainty
from tlstudy.atomic import save_figure, write_text
from tlstudy.params import all_parts, describe_init, part_grid, part_placement, part_spec

OUT = Path("report")
DASH = "—"


# --- inputs ------------------------------------------------------------------------------


def study_numbers() -> dict:
    return yaml.safe_load(resources.files("tlstudy.resources").joinpath("study.yaml").read_text())


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def pct(x) -> str:
    return DASH if x is None else f"{100 * x:.2f} %"


def num(x, fmt="{:g}") -> str:
    return DASH if x is None else fmt.format(x)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def wilson_cell(acc: float, n: int) -> str:
    """An accuracy on n images with its Wilson interval (for metrics that give the counts)."""
    lo, hi = uncertainty.wilson(round(acc * n), n)
    return pct_ci({"a": acc, "a_lo": lo, "a_hi": hi}, "a")


def pct_ci(m: dict | None, key: str) -> str:
    """`67.51 % [61.3, 73.1]`: an accuracy with its 95 % interval, when the metrics carry one."""
    if not m or m.get(key) is None:
        return DASH
    lo, hi = m.get(f"{key}_lo"), m.get(f"{key}_hi")
    if lo is None or hi is None:
        return pct(m[key])
    return f"{100 * m[key]:.2f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def seed_picks(m: dict) -> dict[str, dict]:
    """Each seed's selection of a group: under `seeds` for several, the entry itself for one."""
    return m.get("seeds") or {"0": m}


def n_seeds(m: dict | None) -> int:
    return len(m["seeds"]) if m and "seeds" in m else 1


def lr_cell(m: dict) -> str:
    """The selected lr: one value, or per seed how often each was picked (`0.01 ×3, 0.001 ×2`)."""
    if "lr" in m:
        return num(m["lr"])
    counts: dict[float, int] = {}
    for pick in m["seeds"].values():
        counts[pick["lr"]] = counts.get(pick["lr"], 0) + 1
    return ", ".join(f"{lr:g} ×{c}" for lr, c in sorted(counts.items(), key=lambda kv: (-kv[1], -kv[0])))


def epoch_cell(m: dict) -> str:
    if "epoch" in m:
        return str(m["epoch"])
    epochs = [pick["epoch"] for pick in m["seeds"].values()]
    return f"{min(epochs)}–{max(epochs)}" if min(epochs) != max(epochs) else str(epochs[0])


# --- figures -----------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    return save_figure(fig, path, dpi=90)


QUANTITIES = (
    ("train_loss", "training loss"),
    ("val_loss", "validation loss"),
    ("val_acc", "validation accuracy"),
)


def curves_figure(part: str, rows: list[dict], runs: list[dict], path: Path) -> Path | None:
    """Per optimizer a column, per quantity a row; one line per run; diverged runs end in ×.
    With several seeds, one line per configuration: the mean over seeds in a min–max band."""
    plt = _plt()
    if not runs:
        return None
    if len({r.get("seed", 0) for r in runs}) > 1:
        return spread_figure(part, rows, runs, path)
    by_variant = len({r["variant"] for r in runs}) > 1
    # Many variants: one panel per quantity holding every run; otherwise a column per optimizer.
    columns = ["all variants"] if by_variant else sorted({r["optimizer"] for r in runs})
    width = 14 if by_variant else 5 * len(columns)  # many runs: the legend gets its own column
    fig, axes = plt.subplots(3, len(columns), figsize=(width, 9), squeeze=False)
    for c, column in enumerate(columns):
        for r in runs:
            if not by_variant and r["optimizer"] != column:
                continue
            pts = [row for row in rows if row["run"] == r["run"]]
            label = r["run"]  # names the variant too when there are several
            if r["diverged_epoch"] is not None:
                label += f" (diverged @ {r['diverged_epoch']})"
            for q, (key, title) in enumerate(QUANTITIES):
                ax = axes[q][c]
                xs = [int(p["epoch"]) for p in pts]
                ys = [float(p[key]) for p in pts]
                (line,) = ax.plot(xs, ys, marker=".", label=label)
                if r["diverged_epoch"] is not None:
                    ax.plot([r["diverged_epoch"]], [ys[-1] if ys else 0], "x", color=line.get_color(), ms=9)
                ax.set_title(f"{part} — {column}: {title}" if not by_variant else f"{part}: {title}")
                ax.set_xlabel("epoch")
        if not by_variant:
            axes[0][c].legend(fontsize=7)
    if by_variant:
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="center right", fontsize=5, ncol=2)
        fig.tight_layout(rect=(0, 0, 0.62, 1))
    else:
        fig.tight_layout()
    return save(fig, path)


def spread_figure(part: str, rows: list[dict], runs: list[dict], path: Path) -> Path | None:
    """Curves over seeds: per configuration (optimizer, lr, variant) the mean of the seeds that
    reached each epoch, with the band from their minimum to their maximum."""
    plt = _plt()
    configs = list(dict.fromkeys((r["optimizer"], r["lr"], r["variant"]) for r in runs))
    by_variant = len({c[2] for c in configs}) > 1
    columns = ["all variants"] if by_variant else list(dict.fromkeys(c[0] for c in configs))
    fig, axes = plt.subplots(3, len(columns), figsize=(14 if by_variant else 5 * len(columns), 9), squeeze=False)
    for opt, lr, variant in configs:
        members = [r for r in runs if (r["optimizer"], r["lr"], r["variant"]) == (opt, lr, variant)]
        names = {r["run"] for r in members}
        pts = [row for row in rows if row["run"] in names]
        diverged = sum(r["diverged_epoch"] is not None for r in members)
        label = f"{variant + ' ' if by_variant else ''}{opt} lr={lr:g} ({len(members)} seeds"
        label += f", {diverged} diverged)" if diverged else ")"
        c = 0 if by_variant else columns.index(opt)
        epochs = sorted({int(p["epoch"]) for p in pts})
        for q, (key, title) in enumerate(QUANTITIES):
            ax = axes[q][c]
            values = [[float(p[key]) for p in pts if int(p["epoch"]) == e] for e in epochs]
            (line,) = ax.plot(epochs, [sum(v) / len(v) for v in values], label=label)
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=line.get_color(),
                            alpha=0.2, linewidth=0)  # fmt: skip
            ax.set_title(f"{part} — {columns[c]}: {title} (mean, min–max over seeds)", fontsize=9)
            ax.set_xlabel("epoch")
    for c in range(len(columns)):
        axes[0][c].legend(fontsize=6 if by_variant else 7)
    fig.tight_layout()
    return save(fig, path)


def sgd_vs_adam_figure(part: str, rows: list[dict], metrics: dict, path: Path) -> Path | None:
    plt = _plt()
    # The first seed's selected run of each optimizer; with one seed every row is that seed's.
    picks = {
        opt: next(iter(m["seeds"].items())) if "seeds" in m else (None, m)
        for opt, m in metrics.items()
        if "test_acc" in m
    }
    if not picks:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for opt, (seed, m) in picks.items():
        pts = [
            r
            for r in rows
            if r["optimizer"] == opt and float(r["lr"]) == m["lr"] and (seed is None or r["seed"] == seed)
        ]
        for ax, (key, title) in zip(axes, QUANTITIES):
            ax.plot(
                [int(p["epoch"]) for p in pts],
                [float(p[key]) for p in pts],
                marker=".",
                label=f"{opt} lr={m['lr']:g}",
            )
            ax.set_title(f"{part}: {title}")
            ax.set_xlabel("epoch")
    axes[0].legend()
    fig.tight_layout()
    return save(fig, path)


def misclassified_figure(examples: list[tuple[str, dict, object]], path: Path) -> Path | None:
    """examples: (part, prediction row, 3×H×W uint8 image)."""
    plt = _plt()
    if not examples:
        return None
    parts = list(dict.fromkeys(p for p, _, _ in examples))
    fig, axes = plt.subplots(len(parts), 3, figsize=(9, 4.2 * len(parts)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, part in enumerate(parts):
        for j, (_, row, img) in enumerate([e for e in examples if e[0] == part][:3]):
            ax = axes[i][j]
            ax.imshow(img.permute(1, 2, 0).numpy())
            top3 = "\n".join(
                f"{row[f'top{k}']}: {100 * float(row[f'p{k}']):.1f} %" for k in (1, 2, 3) if row.get(f"top{k}")
            )
            ax.set_title(f"{part}\ntrue: {row['label']}\n{top3}", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


# --- the report --------------------------------------------------------------------------


def part_table(part: str, metrics: dict | None, study: dict, optimizers=("sgd", "adam")) -> str:
    header = ["optimizer", "lr", "epoch", "val acc [95 % CI]", "test acc [95 % CI]", "seeds", "study test acc",
              "study lr", "study epoch", "study val acc", "s/epoch", "ms/example", "runs (diverged)"]  # fmt: skip
    rows = []
    metrics = metrics or {}
    for opt in list(dict.fromkeys([*optimizers, *metrics])):
        m, s = metrics.get(opt), study.get(opt, {}) or {}
        if m is None:
            ours = ["not run"] + [DASH] * 4
            timing, runs = [DASH, DASH], DASH
        elif "test_acc" not in m:
            ours = [f"all {m['runs']} runs diverged"] + [DASH] * 4
            timing, runs = [DASH, DASH], f"{m['runs']} ({m['diverged']})"
        else:
            ours = [lr_cell(m), epoch_cell(m), pct_ci(m, "val_acc"), pct_ci(m, "test_acc"), str(n_seeds(m))]
            timing = [num(m["sec_per_epoch"], "{:.3f}"), num(m["ms_per_example"], "{:.3f}")]
            runs = f"{m['runs']} ({m['diverged']})"
        study_cells = [pct(s.get("test_acc")), num(s.get("lr")), num(s.get("epoch")), pct(s.get("val_acc"))]
        rows.append([opt, *ours, *study_cells, *timing, runs])
    return md_table(header, rows)


def sweep_order(metrics: dict) -> list[str]:
    """Variants as the study sorts Table VIII: by test accuracy, best first; untested last."""
    tested = {v: m for v, m in metrics.items() if "test_acc" in m}
    return sorted(tested, key=lambda v: (-tested[v]["test_acc"], v)) + [v for v in metrics if v not in tested]


def augment_table(metrics: dict | None, study: dict) -> str:
    metrics = metrics or {}
    rows = []
    for rank, v in enumerate(sweep_order(metrics)):
        m, s = metrics[v], study.get(v, {}) or {}
        if "test_acc" in m:
            cells = [lr_cell(m), epoch_cell(m), pct_ci(m, "val_acc"), pct_ci(m, "test_acc")]
            if rank == 0:
                cells, v = [f"**{c}**" for c in cells], f"**{v}**"
        else:
            cells = [f"all {m['runs']} runs diverged", DASH, DASH, DASH]
        rows.append([v, *cells, num(s.get("lr")), num(s.get("epoch")), pct(s.get("val_acc")), pct(s.get("test_acc"))])
    header = ["variant", "lr", "epoch", "val acc [95 % CI]", "test acc [95 % CI]", "study lr", "study epoch",
              "study val acc", "study test acc"]  # fmt: skip
    return md_table(header, rows)


def optimizer_test(part: str, m: dict | None) -> dict | None:
    """SGD − Adam test accuracy of one part, tested: a paired t-test over the seeds both ran
    (a seed is a pair: same initialisation, data order and draws), else, with one seed, McNemar's
    exact test on the two selected models' test predictions."""
    sgd, adam = (m or {}).get("sgd"), (m or {}).get("adam")
    if not sgd or not adam or "test_acc" not in sgd or "test_acc" not in adam:
        return None
    a, b = seed_picks(sgd), seed_picks(adam)
    common = [k for k in a if k in b]
    if len(common) >= 2:
        return uncertainty.paired_t([a[k]["test_acc"] for k in common], [b[k]["test_acc"] for k in common])
    folder = Path("plots/predictions") / part
    right = {
        opt: {r["path"]: r["predicted"] == r["label"] for r in read_csv(folder / f"{opt}.csv")}
        for opt in ("sgd", "adam")
    }
    if not right["sgd"] or right["sgd"].keys() != right["adam"].keys():
        return None
    only_sgd = sum(ok and not right["adam"][p] for p, ok in right["sgd"].items())
    only_adam = sum(ok and not right["sgd"][p] for p, ok in right["adam"].items())
    return {**uncertainty.mcnemar(only_sgd, only_adam), "n": 1, "diff": sgd["test_acc"] - adam["test_acc"]}


def test_cell(t: dict | None) -> str:
    """`SGD − Adam +2.1 pp, p = 0.43 (paired t, 5 seeds)`, compactly."""
    if t is None:
        return DASH
    where = (
        f"paired t, {t['n']} seeds" if t["test"] == "paired t" else f"McNemar, {t['only_a']} vs {t['only_b']} images"
    )
    return f"{100 * t['diff']:+.1f} pp, p = {t['p']:.2g} ({where})"


def optimizer_section(params: dict, metrics: dict) -> list[str]:
    rows, tested = [], []
    for part in all_parts(params):
        m = metrics.get(part) or {}
        t = optimizer_test(part, m)
        if t is None:
            continue
        tested.append((part, t))
        diff = f"{100 * t['diff']:+.2f}"
        if t["test"] == "paired t":
            diff += f" [{100 * t['diff_lo']:+.1f}, {100 * t['diff_hi']:+.1f}]"
            how = f"paired t-test, {t['n']} seeds (t = {t['t']:.2f}, {t['n'] - 1} df)"
        else:
            how = f"McNemar exact, one seed: {t['only_a']} images right by SGD alone, {t['only_b']} by Adam alone"
        rows.append([f"`{part}`", pct_ci(m["sgd"], "test_acc"), pct_ci(m["adam"], "test_acc"), diff, how,
                     f"**{t['p']:.3g}**" if t["p"] < 0.05 else f"{t['p']:.3g}"])  # fmt: skip
    if not rows:
        return []
    significant = [f"`{part}`" for part, t in tested if t["p"] < 0.05]
    verdict = (
        f"p < 0.05 in {len(significant)} of {len(tested)} parts ({', '.join(significant)})"
        if significant
        else f"p ≥ 0.05 in all {len(tested)} parts: no difference between SGD and Adam is established"
    )
    return [
        "## SGD vs Adam: tested",
        "",
        md_table(
            ["part", "SGD test acc", "Adam test acc", "SGD − Adam, points [95 % CI]", "test", "p (two-sided)"], rows
        ),  # fmt: skip
        "",
        "Where a part ran several seeds, a **paired t-test over seeds**: each seed trains both optimizers from the "
        "same initialisation, data order and augmentation draws, so its two test accuracies form a pair, and each "
        "seed selects its own (lr, epoch) by validation accuracy, so the test covers the whole procedure. Not a "
        "permutation test: with 5 seeds an exact sign-flip test has 2⁵ = 32 relabellings and a two-sided p of at "
        "least 0.0625, so it could never reach 5 %. With one seed, **McNemar's exact test** on the test images "
        "only asks whether these two selected models differ; it cannot separate the optimizers from training noise "
        f"(that needs seeds: `dvc exp run -S 'seeds=[0,1,2,3,4]'`). Result: {verdict}.",
        "",
    ]


# --- the augmentation placement ----------------------------------------------------------

GEOMETRIC = {"RandomHorizontalFlip", "RandomVerticalFlip", "RandomAffine", "RandomRotation", "GaussianBlur"}
FAMILIES = ("colour jitter", "grayscale / invert", "geometric and blur", "none")


def family(spec: list) -> str:
    names = {step[0] for step in spec}
    if not names:
        return "none"
    if "ColorJitter" in names:
        return "colour jitter"
    return "geometric and blur" if names <= GEOMETRIC else "grayscale / invert"


def placement_pairs(params: dict) -> list[tuple[str, str]]:
    """(ours, study's) sweep parts that differ only in their augmentation placement (and perhaps
    in which variants they sweep: the table shows each variant that either ran)."""

    def rest(part: str) -> dict:
        return {k: v for k, v in part_spec(params, part).items() if k not in ("placement", "augment")}

    parts = all_parts(params)
    return [
        (ours, theirs)
        for theirs in parts
        if part_placement(params, theirs) == "study"
        for ours in parts
        if part_placement(params, ours) == "pixels" and rest(ours) == rest(theirs)
    ]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def family_means(params: dict, ours: dict, placed: dict, study: dict) -> dict[str, dict]:
    """Per family of variants: how many, and the mean validation and test accuracy of the study,
    of ours and of the study's placement (None where none ran)."""
    augmentations = params["augmentations"]
    variants = [v for v in augmentations if v in ours or v in placed]
    means = {}
    for fam in FAMILIES:
        members = [v for v in variants if family(augmentations[v]) == fam]
        means[fam] = {"n": len(members)}
        for label, table in (("study", study), ("ours", ours), ("placed", placed)):
            for key in ("val", "test"):
                got = [table[v][f"{key}_acc"] for v in members if f"{key}_acc" in (table.get(v) or {})]
                means[fam][f"{label}_{key}"] = _mean(got)
    return means


def hypothesis(means: dict) -> dict | None:
    """The verdict on the hypothesis, by a rule fixed before the runs: the study's placement must
    (1) make the colour-jitter variants lose at least 10 points of test accuracy against the
    geometric and blur ones beyond what they lose under ours, and (2) hide it from validation:
    their validation-minus-test gap must exceed that of the geometric and blur ones by at least 10
    points. Both: confirmed; one: partly; neither: not confirmed."""
    colour, geo = means["colour jitter"], means["geometric and blur"]
    needed = ("ours_test", "placed_test", "placed_val")
    if not colour["n"] or not geo["n"] or any(colour[k] is None or geo[k] is None for k in needed):
        return None
    drop = (geo["placed_test"] - colour["placed_test"]) - (geo["ours_test"] - colour["ours_test"])
    hidden = (colour["placed_val"] - colour["placed_test"]) - (geo["placed_val"] - geo["placed_test"])
    held = [drop >= 0.10, hidden >= 0.10]
    return {"verdict": {2: "confirmed", 1: "partly confirmed", 0: "not confirmed"}[sum(held)],
            "drop": drop, "hidden": hidden, "held": held}  # fmt: skip


def hypothesis_paragraph(means: dict) -> list[str]:
    h = hypothesis(means)
    if h is None:
        return ["Not enough variants ran under both placements to test the hypothesis.", ""]
    colour, geo = means["colour jitter"], means["geometric and blur"]
    study_gap = ""
    if colour["study_val"] is not None and geo["study_val"] is not None:
        study_gap = (
            f" (the study: colour jitter {pct(colour['study_val'])} validation, {pct(colour['study_test'])} test; "
            f"geometric and blur {pct(geo['study_val'])} / {pct(geo['study_test'])})"
        )
    return [
        f"**The hypothesis is {h['verdict']} by these data.** Under the study's placement the colour-jitter "
        f"variants reach {pct(colour['placed_val'])} validation and {pct(colour['placed_test'])} test accuracy on "
        f"average, the geometric and blur variants {pct(geo['placed_val'])} / {pct(geo['placed_test'])}; under ours "
        f"{pct(colour['ours_val'])} / {pct(colour['ours_test'])} and {pct(geo['ours_val'])} / "
        f"{pct(geo['ours_test'])}{study_gap}. Measured against the geometric and blur variants, the colour-jitter "
        f"variants fall {100 * h['drop']:.1f} points further behind in test accuracy under the study's placement "
        f"than under ours (criterion 1, the collapse: at least 10, {'met' if h['held'][0] else 'not met'}), and "
        f"under the study's placement their validation accuracy exceeds their test accuracy by "
        f"{100 * h['hidden']:.1f} points more than for the geometric and blur variants (criterion 2, the collapse "
        f"hidden from validation: at least 10, "
        f"{'met' if h['held'][1] else 'not met'}). Both criteria: confirmed; one: partly; neither: not confirmed "
        "(a rule fixed before the runs).",
        "",
    ]


def placement_section(params: dict, metrics: dict, study: dict) -> list[str]:
    """Each variant's accuracy under our placement and the study's, beside Table VIII, and what
    that says about the hypothesis for the study's colour-jitter collapse."""
    md = []
    theirs_table = study.get("augment", {})
    for ours, theirs in placement_pairs(params):
        if not (is_sweep(params, ours) and is_sweep(params, theirs)):
            continue
        a, b = metrics.get(ours) or {}, metrics.get(theirs) or {}
        rows = []
        for v in [v for v in params["augmentations"] if v in a or v in b]:
            s = theirs_table.get(v) or {}
            rows.append([f"`{v}`", family(params["augmentations"][v]), pct(s.get("val_acc")), pct(s.get("test_acc")),
                         pct_ci(a.get(v), "val_acc"), pct_ci(a.get(v), "test_acc"),
                         pct_ci(b.get(v), "val_acc"), pct_ci(b.get(v), "test_acc")])  # fmt: skip
        means = family_means(params, a, b, theirs_table)
        fam_rows = [[fam, m["n"], pct(m["study_val"]), pct(m["study_test"]), pct(m["ours_val"]), pct(m["ours_test"]),
                     pct(m["placed_val"]), pct(m["placed_test"])] for fam, m in means.items() if m["n"]]  # fmt: skip
        header = ["variant", "family", "study val", "study test", f"ours (`{ours}`) val", "ours test",
                  f"study's placement (`{theirs}`) val", "study's placement test"]  # fmt: skip
        md += [
            f"## Table VIII under both augmentation placements (`{ours}` and `{theirs}`)",
            "",
            "Ours: the uint8 images are augmented, then normalised; validation images are clean. The study's "
            "(`placement: study`): torchvision's transforms on the normalised float tensors, where colour "
            "operations clamp to [0, 1] and so wipe every below-mean value, while flips, affine and blur leave "
            "the value range alone; validation images augmented like the training ones (one draw per image). The "
            "test images are clean under both. Same seeds, grid and epochs for both.",
            "",
            md_table(header, rows),
            "",
            "Means per family of variants:",
            "",
            md_table(
                [
                    "family",
                    "variants",
                    "study val",
                    "study test",
                    "ours val",
                    "ours test",
                    "study's placement val",
                    "study's placement test",
                ],
                fam_rows,
            ),  # fmt: skip
            "",
            *hypothesis_paragraph(means),
        ]
    return md


def stats_table(stats: dict | None, study: dict) -> str:
    rows = []
    for i, ch in enumerate(("r", "g", "b")):
        ours = [num(stats["mean"][ch], "{:.4f}"), num(stats["std"][ch], "{:.4f}")] if stats else [DASH, DASH]
        rows.append([ch.upper(), *ours, f"{study['stats']['mean'][i]:.4f}", f"{study['stats']['std'][i]:.4f}",
                     f"{study['imagenet']['mean'][i]:.3f}", f"{study['imagenet']['std'][i]:.3f}"])  # fmt: skip
    return md_table(["channel", "μ (ours)", "σ (ours)", "μ (study)", "σ (study)", "μ (ImageNet)", "σ (ImageNet)"], rows)


def misclassified(parts: list[str], metrics: dict, images_path: Path) -> list:
    """Three misclassified test images per part, from its optimizer with the best test accuracy."""
    if not images_path.exists():
        return []
    import torch

    cache = torch.load(images_path, weights_only=True)
    index = {p: i for i, p in enumerate(cache["paths"])}
    out = []
    for part in parts:
        tested = {g: m for g, m in (metrics.get(part) or {}).items() if "test_acc" in m}
        if not tested:
            continue
        group = max(tested, key=lambda g: tested[g]["test_acc"])
        wrong = [r for r in read_csv(Path("plots/predictions") / part / f"{group}.csv") if r["predicted"] != r["label"]]
        out += [(f"{part} ({group})", r, cache["images"][index[r["path"]]]) for r in wrong[:3] if r["path"] in index]
    return out


def pretrain_section(params: dict, fig_dir: Path) -> list[str]:
    """Each pretrained backbone: validation accuracy overall and per domain, and the
    leave-one-domain-out figure (the pretrained 7-way model on the cartoon test set)."""
    md = []
    for name, spec in params["pretrain"].items():
        m = read_json(Path("details/pretrain") / f"{name}.json")
        md += [f"## Pretraining `{name}` on {', '.join(spec['domains'])}", ""]
        if m is None:
            md += ["Not run.", ""]
            continue
        rows = [[d, m["images"][d]["train"], m["images"][d]["val"],
                 wilson_cell(m["val_acc_per_domain"][d], m["images"][d]["val"])] for d in spec["domains"]]  # fmt: skip
        n_val = sum(v["val"] for v in m["images"].values())
        rows.append(["**all**", sum(v["train"] for v in m["images"].values()), n_val,
                     wilson_cell(m["val_acc"], n_val)])  # fmt: skip
        md += [
            f"ResNet-18 from random init, {spec['optimizer']} lr {spec['lr']:g} (momentum {spec['momentum']:g}, weight "
            f"decay {spec['weight_decay']:g}, {spec['schedule']} schedule), batch {spec['batch_size']}, augmentation "
            f"`{spec['augment']}`, {m['epochs']} epochs; best epoch {m['epoch']} by validation accuracy; "
            f"{m['sec_per_epoch']:.1f} s/epoch.",
            "",
            md_table(["domain", "train images", "validation images", "validation accuracy [95 % CI]"], rows),
            "",
            f"**Leave-one-domain-out:** this 7-way model on the cartoon test set, with no cartoon training at all: "
            f"**{wilson_cell(m['cartoon_test_acc'], m['cartoon_test_n'])}** ({m['cartoon_test_n']} images).",
            "",
        ]
        rows_csv = read_csv(Path("plots/pretrain") / f"{name}.csv")
        if rows_csv:
            runs = [{"run": rows_csv[0]["run"], "optimizer": spec["optimizer"], "variant": spec["augment"],
                     "diverged_epoch": None}]  # fmt: skip
            fig = curves_figure(f"pretrain {name}", rows_csv, runs, fig_dir / f"curves_pretrain_{name}.png")
            md += [f"![pretraining curves](figures/{fig.name})", ""]
    return md


def backbones_section(params: dict, metrics: dict) -> list[str]:
    """Parts that differ only in their backbone, side by side (e.g. ImageNet vs PACS sources)."""
    rows = []
    for part in params["transfer"]:
        spec = {k: v for k, v in params["transfer"][part].items() if k != "init"}
        for other, other_spec in params["parts"].items():
            if {k: v for k, v in other_spec.items() if k != "init"} != spec:
                continue
            for name in (other, part):
                m = metrics.get(name) or {}
                init = describe_init(part_spec(params, name)["init"], params["imagenet_weights"], params, name)
                rows.append([f"`{name}`", init, *[pct_ci(m.get(o), "test_acc") for o in ("sgd", "adam")]])
    if not rows:
        return []
    return ["## Backbones side by side", "",
            md_table(["part", "backbone", "SGD test acc", "Adam test acc"], rows), ""]  # fmt: skip


def _pick(m: dict | None) -> str:
    if not m:
        return "not run"
    if "test_acc" not in m:
        return "all runs diverged"
    if "seeds" in m:
        return f"{pct_ci(m, 'test_acc')} (mean of {n_seeds(m)} seeds)"
    return f"{pct_ci(m, 'test_acc')} (lr {m['lr']:g}, epoch {m['epoch']})"


def _study_pick(s: dict | None) -> str:
    return DASH if not s or s.get("test_acc") is None else f"{pct(s['test_acc'])} (lr {s['lr']:g}, epoch {s['epoch']})"


def _variant_cell(aug: dict, study_aug: dict, v: str) -> str:
    return f"`{v}` {pct(aug[v]['test_acc'])} (study {pct((study_aug.get(v) or {}).get('test_acc'))})"


def is_sweep(params: dict, part: str) -> bool:
    """A part over several augmentation variants (Table VIII), reported per variant."""
    return len(part_grid(params, part)[2]) > 1


def summary(params: dict, metrics: dict, study: dict) -> str:
    """The results in one table: per part, SGD and Adam test accuracy of the selected run (with
    its 95 % interval) beside the study's, the backbone named, the SGD-vs-Adam test; the
    leave-one-domain-out rows; the augmentation sweep's extremes and the placement verdict."""
    rows = []
    for part in all_parts(params):
        if is_sweep(params, part):
            continue
        m = metrics.get(part) or {}
        s = study["parts"].get(part, {})
        init = describe_init(part_spec(params, part)["init"], params["imagenet_weights"], params, part)
        rows.append([f"`{part}`", init, _pick(m.get("sgd")), _pick(m.get("adam")), test_cell(optimizer_test(part, m)),
                     _study_pick(s.get("sgd")), _study_pick(s.get("adam"))])  # fmt: skip
    for name in params["pretrain"]:
        m = read_json(Path("details/pretrain") / f"{name}.json")
        if m:
            rows.append([f"`pretrain@{name}` on cartoon, no cartoon training", f"pretrained here: {name}",
                         wilson_cell(m["cartoon_test_acc"], m["cartoon_test_n"]), DASH, DASH, DASH, DASH])  # fmt: skip
    header = ["part", "backbone", "SGD test acc [95 % CI]", "Adam test acc [95 % CI]", "SGD − Adam, tested",
              "study SGD", "study Adam"]  # fmt: skip
    md = [md_table(header, rows)]
    pairs = placement_pairs(params)
    for part in all_parts(params):
        aug = {v: m for v, m in (metrics.get(part) or {}).items() if "test_acc" in m}
        if not is_sweep(params, part) or not aug or any(part == theirs for _, theirs in pairs):
            continue
        order, table = sweep_order(aug), study.get("augment", {})
        best = ", ".join(_variant_cell(aug, table, v) for v in order[:3])
        worst = ", ".join(_variant_cell(aug, table, v) for v in order[-3:])
        baseline = _variant_cell(aug, table, "none") if "none" in aug else DASH
        md += ["", f"Augmentation sweep (`{part}`, {len(aug)} variants, SGD): best {best}; worst {worst}; "
               f"no augmentation {baseline}."]  # fmt: skip
    for ours, theirs in pairs:
        if not (is_sweep(params, ours) and is_sweep(params, theirs)):
            continue
        means = family_means(params, metrics.get(ours) or {}, metrics.get(theirs) or {}, study.get("augment", {}))
        h, colour = hypothesis(means), means["colour jitter"]
        if h is not None:
            md += ["", f"Augmentation placement (`{ours}` vs `{theirs}`): colour-jitter variants "
                   f"{pct(colour['ours_test'])} test accuracy on average under ours, {pct(colour['placed_test'])} "
                   "under the study's placement; the hypothesis for the study's collapse is "
                   f"**{h['verdict']}**."]  # fmt: skip
    return "\n".join(md) + "\n"


def run(params: dict) -> Path:
    study = study_numbers()
    demo = params["data"]["source"] == "synthetic"
    fig_dir = OUT / "figures"
    shutil.rmtree(OUT, ignore_errors=True)
    fig_dir.mkdir(parents=True)
    parts = all_parts(params)
    metrics = {p: read_json(Path("metrics") / f"{p}.json") for p in parts}
    runs = {p: (read_json(Path("models") / p / "runs.json") or {}).get("runs", []) for p in parts}
    curves = {p: read_csv(Path("plots/train") / f"{p}.csv") for p in parts}

    md = ["# Transfer-learning study: report", ""]
    if demo:
        md += ["> **Demo.** Synthetic images (7 classes of shapes), small images, few epochs, a reduced grid; "
               "a seeded random backbone stands in for ImageNet weights. The numbers show that the pipeline "
               "works, not what transfer learning achieves.", ""]  # fmt: skip
    seeds = ", ".join(str(x) for x in params["seeds"]) if isinstance(params["seeds"], list) else params["seeds"]
    md += [f"Data: `{params['data']['source']}` at {params['data']['image_size']} px (split and few-shot subset "
           f"from seed {params['seed']}); {params['epochs']} epochs and training seeds {seeds} unless a part says "
           f"otherwise; batch {params['batch_size']}. The study's numbers stand beside ours; {DASH} marks one it "
           "does not give. Brackets hold 95 % intervals: Wilson's for a single run (from the number of images), "
           "Student's t over seeds for the mean of several seeds.", ""]  # fmt: skip
    table = summary(params, metrics, study)
    write_text(OUT / "summary.md", table)
    md += ["## Summary", "", table]

    inspect = read_json(Path("metrics/inspect.json"))
    md += ["## Part 1: SqueezeNet 1.0 on a Samoyed", ""]
    if inspect:
        if inspect["weights"] == "random":
            md += ["> Random weights (demo or offline): the classes below are not a prediction.", ""]
        theirs = study["inspect"]["top5"]
        md += ["Table I: top-5 classes", "",
               md_table(["rank", "class", "probability", "study class", "study probability"],
                        [[i + 1, c, f"{p:.4f}", theirs[i][0], f"{theirs[i][1]:.4f}"]
                         for i, (c, p) in enumerate(inspect["top5"].items())]), ""]  # fmt: skip
        for name, title in (("photo", "Input photo"), ("kernels", "First-layer kernels"),
                            ("features_before_relu", "First 16 channels before ReLU"),
                            ("features_after_relu", "First 16 channels after ReLU")):  # fmt: skip
            src = Path("plots/inspect") / f"{name}.png"
            if src.exists():
                shutil.copy2(src, fig_dir / f"inspect_{name}.png")
                md += [f"**{title}**", "", f"![{title}](figures/inspect_{name}.png)", ""]
    else:
        md += ["Not run (`metrics/inspect.json` is missing).", ""]

    md += [
        "## Dataset statistics (training images)",
        "",
        stats_table(read_json(Path("metrics/stats.json")), study),
        "",
    ]

    md += pretrain_section(params, fig_dir)
    md += ["## Tables II–VII: the best run per optimizer", ""]
    for part in parts:
        if is_sweep(params, part):
            continue
        s = study["parts"].get(part, {})
        md += [f"### {s.get('title', part)} (`{part}`)", "", part_table(part, metrics[part], s), ""]
        init = describe_init(part_spec(params, part)["init"], params["imagenet_weights"], params, part)
        if init.startswith(("random (stand-in", "pretrained here")):
            md += [f"*Backbone: {init}.*", ""]
        fig = curves_figure(part, curves[part], runs[part], fig_dir / f"curves_{part}.png")
        if fig:
            md += [f"![{part} curves](figures/{fig.name})", ""]

    for part in [p for p in parts if is_sweep(params, p)]:
        placed = " under the study's augmentation placement" if part_placement(params, part) == "study" else ""
        md += [f"## Table VIII: few-shot full fine-tuning per augmentation variant (`{part}`{placed})", "",
               augment_table(metrics[part], study.get("augment", {})), ""]  # fmt: skip
        fig = curves_figure(part, curves[part], runs[part], fig_dir / f"curves_{part}.png")
        if fig:
            md += [f"![{part} curves](figures/{fig.name})", ""]
    md += placement_section(params, metrics, study)

    if metrics.get("finetune"):
        fig = sgd_vs_adam_figure(
            "finetune", curves["finetune"], metrics["finetune"], fig_dir / "sgd_vs_adam_finetune.png"
        )
        if fig:
            md += [
                "## SGD vs Adam, full fine-tuning (the selected run of each)",
                "",
                "![SGD vs Adam](figures/sgd_vs_adam_finetune.png)",
                "",
            ]

    md += optimizer_section(params, metrics)
    md += backbones_section(params, metrics)

    rows = []
    for part in parts:
        m = metrics[part] or {}
        cells = []
        for opt in ("sgd", "adam"):
            o = m.get(opt, {})
            cells += [num(o.get("sec_per_epoch"), "{:.3f}"), num(o.get("ms_per_example"), "{:.3f}")]
        rows.append([part, *cells])
    t = study["timing"]
    rows.append(["study (full fine-tuning, 227 px)", num(t["sgd_sec_per_epoch"]), num(t["sgd_ms_per_example"]),
                 num(t["adam_sec_per_epoch"]), DASH])  # fmt: skip
    md += [
        "## Training time",
        "",
        md_table(["part", "SGD s/epoch", "SGD ms/example", "Adam s/epoch", "Adam ms/example"], rows),
        "",
        f"The study: about {t['sgd_ms_per_example']:g} ms per training image with SGD from scratch and for full "
        f"fine-tuning, about {100 * t['head_only_ms_per_example_reduction']:.0f} % less per image head-only.",
        "",
    ]

    examples = misclassified(
        [p for p in ("scratch", "classifier", "finetune") if p in parts], metrics, Path("work/images.pt")
    )
    fig = misclassified_figure(examples, fig_dir / "misclassified.png")
    md += ["## Misclassified test images (true label, top-3 predictions)", ""]
    md += ["![misclassified](figures/misclassified.png)", ""] if fig else ["None to show.", ""]

    diverged = [(p, r) for p in parts for r in runs[p] if r["diverged_epoch"] is not None]
    md += ["## Diverged runs", ""]
    md += (
        [
            md_table(
                ["part", "run", "diverged at epoch"],
                [[p, r["run"], r["diverged_epoch"]] for p, r in diverged],
            )
        ]
        if diverged
        else ["None."]
    )
    write_text(OUT / "README.md", "\n".join(md) + "\n")
    print(f"report: {OUT / 'README.md'} with {len(list(fig_dir.glob('*.png')))} figures")
    return OUT
