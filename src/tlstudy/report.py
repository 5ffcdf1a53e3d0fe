"""Stage `report`: `report/README.md` and its PNG figures, regenerated from the pipeline's
metrics, curves, predictions and run records — no model is loaded, so it takes seconds.

Every table puts the study's own numbers (resources/study.yaml) beside ours; a number the study
did not give us is shown as "—". Runs that diverged are listed and marked in the curves.
"""

from __future__ import annotations

import csv
import json
import shutil
from importlib import resources
from pathlib import Path

import yaml

from tlstudy.atomic import save_figure, write_text
from tlstudy.params import all_parts, describe_init, part_spec

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
    """Per optimizer a column, per quantity a row; one line per run; diverged runs end in ×."""
    plt = _plt()
    if not runs:
        return None
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


def sgd_vs_adam_figure(part: str, rows: list[dict], metrics: dict, path: Path) -> Path | None:
    plt = _plt()
    picks = {opt: m for opt, m in metrics.items() if "lr" in m}
    if not picks:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for opt, m in picks.items():
        pts = [r for r in rows if r["optimizer"] == opt and float(r["lr"]) == m["lr"]]
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
    header = ["optimizer", "lr", "epoch", "val acc", "test acc", "study test acc", "study lr", "study epoch",
              "study val acc", "s/epoch", "ms/example", "runs (diverged)"]  # fmt: skip
    rows = []
    metrics = metrics or {}
    for opt in list(dict.fromkeys([*optimizers, *metrics])):
        m, s = metrics.get(opt), study.get(opt, {}) or {}
        if m is None:
            ours = ["not run"] + [DASH] * 3
            timing, runs = [DASH, DASH], DASH
        elif "lr" not in m:
            ours = [f"all {m['runs']} runs diverged"] + [DASH] * 3
            timing, runs = [DASH, DASH], f"{m['runs']} ({m['diverged']})"
        else:
            ours = [num(m["lr"]), str(m["epoch"]), pct(m["val_acc"]), pct(m["test_acc"])]
            timing = [num(m["sec_per_epoch"], "{:.3f}"), num(m["ms_per_example"], "{:.3f}")]
            runs = f"{m['runs']} ({m['diverged']})"
        study_cells = [pct(s.get("test_acc")), num(s.get("lr")), num(s.get("epoch")), pct(s.get("val_acc"))]
        rows.append([opt, *ours, *study_cells, *timing, runs])
    return md_table(header, rows)


def augment_table(metrics: dict | None, study: dict) -> str:
    metrics = metrics or {}
    tested = {v: m for v, m in metrics.items() if "test_acc" in m}
    # Sorted as the study sorts Table VIII: by test accuracy, best first; the best in bold.
    order = sorted(tested, key=lambda v: (-tested[v]["test_acc"], v)) + [v for v in metrics if v not in tested]
    rows = []
    for rank, v in enumerate(order):
        m, s = metrics[v], study.get(v, {}) or {}
        if v in tested:
            cells = [num(m["lr"]), str(m["epoch"]), pct(m["val_acc"]), pct(m["test_acc"])]
        else:
            cells = [f"all {m['runs']} runs diverged", DASH, DASH, DASH]
        if rank == 0 and v in tested:
            cells = [f"**{c}**" for c in cells]
            v = f"**{v}**"
        rows.append([v, *cells, num(s.get("lr")), num(s.get("epoch")), pct(s.get("val_acc")), pct(s.get("test_acc"))])
    return md_table(
        [
            "variant",
            "lr",
            "epoch",
            "val acc",
            "test acc",
            "study lr",
            "study epoch",
            "study val acc",
            "study test acc",
        ],
        rows,
    )


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
        m = read_json(Path("metrics/pretrain") / f"{name}.json")
        md += [f"## Pretraining `{name}` on {', '.join(spec['domains'])}", ""]
        if m is None:
            md += ["Not run.", ""]
            continue
        rows = [[d, m["images"][d]["train"], m["images"][d]["val"], pct(m["val_acc_per_domain"][d])]
                for d in spec["domains"]]  # fmt: skip
        rows.append(["**all**", sum(v["train"] for v in m["images"].values()),
                     sum(v["val"] for v in m["images"].values()), pct(m["val_acc"])])  # fmt: skip
        md += [
            f"ResNet-18 from random init, {spec['optimizer']} lr {spec['lr']:g} (momentum {spec['momentum']:g}, weight "
            f"decay {spec['weight_decay']:g}, {spec['schedule']} schedule), batch {spec['batch_size']}, augmentation "
            f"`{spec['augment']}`, {m['epochs']} epochs; best epoch {m['epoch']} by validation accuracy; "
            f"{m['sec_per_epoch']:.1f} s/epoch.",
            "",
            md_table(["domain", "train images", "validation images", "validation accuracy"], rows),
            "",
            f"**Leave-one-domain-out:** this 7-way model on the cartoon test set, with no cartoon training at all: "
            f"**{pct(m['cartoon_test_acc'])}** ({m['cartoon_test_n']} images).",
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
                rows.append([f"`{name}`", init, *[pct((m.get(o) or {}).get("test_acc")) for o in ("sgd", "adam")]])
    if not rows:
        return []
    return ["## Backbones side by side", "",
            md_table(["part", "backbone", "SGD test acc", "Adam test acc"], rows), ""]  # fmt: skip


def _pick(m: dict | None) -> str:
    if not m:
        return "not run"
    if "test_acc" not in m:
        return "all runs diverged"
    return f"{pct(m['test_acc'])} (lr {m['lr']:g}, epoch {m['epoch']})"


def _study_pick(s: dict | None) -> str:
    return DASH if not s or s.get("test_acc") is None else f"{pct(s['test_acc'])} (lr {s['lr']:g}, epoch {s['epoch']})"


def summary(params: dict, metrics: dict, study: dict) -> str:
    """The results in one table: per part, SGD and Adam test accuracy of the selected run beside the
    study's, the backbone named; the leave-one-domain-out rows; the augmentation sweep's extremes."""
    rows = []
    for part in all_parts(params):
        if part == "augment":
            continue
        m = metrics.get(part) or {}
        s = study["parts"].get(part, {})
        init = describe_init(part_spec(params, part)["init"], params["imagenet_weights"], params, part)
        rows.append([f"`{part}`", init, _pick(m.get("sgd")), _pick(m.get("adam")),
                     _study_pick(s.get("sgd")), _study_pick(s.get("adam"))])  # fmt: skip
    for name in params["pretrain"]:
        m = read_json(Path("metrics/pretrain") / f"{name}.json")
        if m:
            rows.append([f"`pretrain@{name}` on cartoon, no cartoon training", f"pretrained here: {name}",
                         pct(m["cartoon_test_acc"]), DASH, DASH, DASH])  # fmt: skip
    md = [md_table(["part", "backbone", "SGD test acc", "Adam test acc", "study SGD", "study Adam"], rows)]
    aug = {v: m for v, m in (metrics.get("augment") or {}).items() if "test_acc" in m}
    if aug:
        order = sorted(aug, key=lambda v: (-aug[v]["test_acc"], v))
        theirs = study.get("augment", {})

        def cell(v: str) -> str:
            return f"`{v}` {pct(aug[v]['test_acc'])} (study {pct((theirs.get(v) or {}).get('test_acc'))})"

        best, worst = ", ".join(cell(v) for v in order[:3]), ", ".join(cell(v) for v in order[-3:])
        baseline = cell("none") if "none" in aug else DASH
        md += ["", f"Augmentation sweep (`augment`, {len(aug)} variants, SGD): best {best}; worst {worst}; "
               f"no augmentation {baseline}."]  # fmt: skip
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
    md += [f"Data: `{params['data']['source']}` at {params['data']['image_size']} px; {params['epochs']} epochs "
           f"unless a part says otherwise; batch {params['batch_size']}; seed {params['seed']}. The study's numbers "
           f"stand beside ours; {DASH} marks one it does not give.", ""]  # fmt: skip
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
        if part == "augment":
            continue
        s = study["parts"].get(part, {})
        md += [f"### {s.get('title', part)} (`{part}`)", "", part_table(part, metrics[part], s), ""]
        init = describe_init(part_spec(params, part)["init"], params["imagenet_weights"], params, part)
        if init.startswith(("random (stand-in", "pretrained here")):
            md += [f"*Backbone: {init}.*", ""]
        fig = curves_figure(part, curves[part], runs[part], fig_dir / f"curves_{part}.png")
        if fig:
            md += [f"![{part} curves](figures/{fig.name})", ""]

    if "augment" in parts:
        md += ["## Table VIII: few-shot full fine-tuning per augmentation variant (SGD)", "",
               augment_table(metrics["augment"], study.get("augment", {})), ""]  # fmt: skip
        fig = curves_figure("augment", curves["augment"], runs["augment"], fig_dir / "curves_augment.png")
        if fig:
            md += ["![augment curves](figures/curves_augment.png)", ""]

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
