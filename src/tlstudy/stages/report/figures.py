"""The report's figures (PNG, matplotlib). Accuracies in %, loss axes on a log scale so that one
diverged run (a validation loss of 1e5 at epoch 1) cannot flatten every other curve, a sweep as
small multiples by family of variants, and the two figures a reader should see first: every
part's test accuracy at a glance, and Table VIII under both augmentation placements."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tlstudy.lib.atomic import save_figure
from tlstudy.training import optimizers, transforms

QUANTITIES = (
    ("train_loss", "training loss (log scale)"),
    ("val_loss", "validation loss (log scale)"),
    ("val_acc", "validation accuracy (%)"),
)
# An optimizer's colour and marker in every figure, by its place in the registry: SGD blue
# circles, Adam orange squares, AdamW green triangles.
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
MARKERS = ("o", "s", "^", "v", "P", "X", "h", "*")
CHANCE = 100 / 7  # seven classes


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    return save_figure(fig, path, dpi=90)


def _value(row: dict, key: str) -> float:
    return 100 * float(row[key]) if key == "val_acc" else float(row[key])


def _style(ax, key: str, title: str) -> None:
    from matplotlib import ticker

    ax.set_title(title, fontsize=9)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if key != "val_acc":
        ax.set_yscale("log", nonpositive="clip")
        # Plain numbers, at 1, 2, 5 × 10^k over a short range and at powers of ten over a long one
        # (a diverged run's 1e5): a reader compares losses, not exponents.
        low, high = ax.get_ylim()
        subs = (1.0, 2.0, 5.0) if high / max(low, 1e-12) < 100 else (1.0,)
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(alpha=0.3)


def draw(axes, members: list[dict], rows: list[dict], label: str, **line) -> None:
    """One configuration on a column of axes (a row per quantity): its run, or with several seeds
    the mean of the seeds that reached each epoch in a min–max band. A diverged run ends in ×."""
    names = {r["run"] for r in members}
    pts = [row for row in rows if row["run"] in names]
    epochs = sorted({int(p["epoch"]) for p in pts})
    diverged = [r for r in members if r.get("diverged_epoch") is not None]
    if diverged:
        label += (
            f" ({len(diverged)} diverged)" if len(members) > 1 else f" (diverged @ {diverged[0]['diverged_epoch']})"
        )
    for ax, (key, _) in zip(axes, QUANTITIES):
        values = [[_value(p, key) for p in pts if int(p["epoch"]) == e] for e in epochs]
        if not values:
            continue
        mean = [sum(v) / len(v) for v in values]
        (drawn,) = ax.plot(epochs, mean, marker="." if len(members) == 1 else None, label=label, **line)
        if len(members) > 1:
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=drawn.get_color(),
                            alpha=0.18, linewidth=0)  # fmt: skip
        if len(members) == 1 and diverged:
            ax.plot([epochs[-1]], [mean[-1]], "x", color=drawn.get_color(), ms=9)


def curves_figure(title: str, rows: list[dict], runs: list[dict], path: Path) -> Path | None:
    """A column per optimizer, a row per quantity, a line per learning rate (mean over seeds with
    its min–max band when there are several)."""
    if not runs:
        return None
    plt = _plt()
    configs = list(dict.fromkeys((r["optimizer"], r["lr"]) for r in runs))
    columns = list(dict.fromkeys(opt for opt, _ in configs))
    seeds = len({r.get("seed", 0) for r in runs})
    fig, axes = plt.subplots(3, len(columns), figsize=(5.2 * len(columns), 9), squeeze=False)
    for opt, lr in configs:
        members = [r for r in runs if (r["optimizer"], r["lr"]) == (opt, lr)]
        draw(axes[:, columns.index(opt)], members, rows, f"{opt} lr={lr:g}")
    for c, opt in enumerate(columns):
        for q, (key, name) in enumerate(QUANTITIES):
            _style(axes[q][c], key, f"{title} — {opt}: {name}")
        if axes[0][c].get_legend_handles_labels()[0]:  # a column whose every run diverged draws none
            axes[0][c].legend(fontsize=7)
    if seeds > 1:
        fig.suptitle(f"{title}: the mean of {seeds} seeds, the band from their minimum to their maximum", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def selected_lr(m: dict | None) -> float | None:
    """The lr a sweep variant selected: its own, or the one most seeds picked."""
    if not m or "test_acc" not in m:
        return None
    if "lr" in m:
        return m["lr"]
    return Counter(p["lr"] for p in m["seeds"].values()).most_common(1)[0][0]


def sweep_figure(part: str, rows: list[dict], runs: list[dict], details: dict, families: dict, path: Path):
    """Small multiples: a column per family of variants, a row per quantity; each variant at its
    selected learning rate (mean over seeds with a band when there are several), and no
    augmentation (`none`) as a black dashed reference in every panel."""
    if not runs:
        return None
    plt = _plt()
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    columns = [f for f in transforms.FAMILIES if f != "none" and any(families.get(v) == f for v in variants)]
    if not columns:
        return None
    fig, axes = plt.subplots(3, len(columns), figsize=(4.6 * len(columns), 10), squeeze=False)

    def members(variant: str) -> list[dict]:
        lr = selected_lr(details.get(variant))
        return [r for r in runs if r["variant"] == variant and (lr is None or r["lr"] == lr)]

    for c, fam in enumerate(columns):
        own = [v for v in variants if families.get(v) == fam]
        # A family's variants run from mild to strong in params order (rot1 … rot60, blur1 … blur27):
        # a sequential map shows that order; its ends are kept off black (the baseline) and pale yellow.
        cmap = plt.get_cmap("plasma")
        for i, v in enumerate(own):
            draw(axes[:, c], members(v), rows, v, color=cmap(0.1 + 0.7 * i / max(1, len(own) - 1)))
        if "none" in variants:
            draw(axes[:, c], members("none"), rows, "none (no augmentation)", color="black", linestyle="--")
        for q, (key, name) in enumerate(QUANTITIES):
            _style(axes[q][c], key, f"{fam}: {name}")
        axes[2][c].legend(fontsize=6, ncol=2 if len(own) > 6 else 1)
    fig.suptitle(f"{part}: each variant at its selected learning rate", fontsize=11)
    fig.tight_layout()
    return save(fig, path)


def _interval(ax, y: float, m: dict | None, colour: str, marker: str, label: str | None) -> None:
    if not m or m.get("test_acc") is None:
        return
    x, lo, hi = (100 * m.get(k, m["test_acc"]) for k in ("test_acc", "test_acc_lo", "test_acc_hi"))
    ax.errorbar([x], [y], xerr=[[x - lo], [hi - x]], fmt=marker, color=colour, ms=5, capsize=2, lw=1.2, label=label)


def _accuracy_rows(fig, ax, labels: list[str], title: str, xlabel: str, ncol: int, path: Path) -> Path:
    """The frame both accuracy-per-row figures share: a row per label top down, 0–100 %, chance
    dotted, the legend under the axes."""
    ax.axvline(CHANCE, color="0.5", ls=":", lw=1, label="chance (1 in 7)")
    ax.set_yticks(range(len(labels)), list(reversed(labels)), fontsize=8)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.set_xlim(0, 100)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    legend_y = -0.9 / fig.get_figheight()
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, legend_y), ncol=ncol, frameon=False)
    fig.tight_layout()
    return save(fig, path)


def table8_figure(variants: list[str], families: dict, series: list[tuple[str, dict]], study: dict, path: Path):
    """Each variant's test accuracy with its 95 % interval under each placement (`series`: label,
    details), the study's value beside it; variants grouped by family, chance dotted."""
    if not variants:
        return None
    plt = _plt()
    order = [v for f in transforms.FAMILIES for v in variants if families.get(v) == f]
    fig, ax = plt.subplots(figsize=(9.5, 0.32 * len(order) + 2.4))
    styles = [("tab:blue", "o"), ("tab:red", "s"), ("tab:green", "^")]
    step = 0.26
    labelled = set()
    for i, v in enumerate(order):
        y = len(order) - 1 - i
        for k, (label, table) in enumerate(series):
            offset = ((len(series) - 1) / 2 - k) * step  # the first series on top
            colour, marker = styles[k % len(styles)]
            _interval(ax, y + offset, table.get(v), colour, marker, None if label in labelled else label)
            labelled.add(label)
        theirs = (study.get(v) or {}).get("test_acc")
        if theirs is not None:
            ax.plot([100 * theirs], [y], "kx", ms=7, mew=1.6, label=None if "study" in labelled else "the study")
            labelled.add("study")
    start = 0
    for f in transforms.FAMILIES:  # a band and a name per family
        n = sum(families.get(v) == f for v in order)
        if n:
            top = len(order) - start - 0.5
            ax.axhspan(top - n, top, color="0.93" if (transforms.FAMILIES.index(f) % 2) else "white", zorder=0)
            ax.text(101, top - n / 2, f, va="center", ha="left", fontsize=8, color="0.3")
            start += n
    title = "Table VIII: few-shot full fine-tuning per augmentation variant"
    return _accuracy_rows(fig, ax, order, title, "test accuracy (%), 95 % interval", 4, path)


def glance_figure(rows: list[dict], path: Path) -> Path | None:
    """Every part's test accuracy per optimizer, with 95 % intervals and the study's value
    (hollow) beside each. `rows`: {label, ours: {optimizer: details}, study: {optimizer: the
    study's pick}} (any of them missing)."""
    if not rows:
        return None
    plt = _plt()
    opts = [o for o in optimizers.NAMES if any(o in r.get("ours", {}) or o in r.get("study", {}) for r in rows)]
    step = 0.28 if len(opts) <= 2 else 0.56 / len(opts)  # the rows of a part stay within its band
    fig, ax = plt.subplots(figsize=(10, 0.62 * len(rows) + 2.2))
    seen = set()
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        for k, opt in enumerate(opts):
            index = optimizers.NAMES.index(opt)
            colour, dy = COLOURS[index % len(COLOURS)], ((len(opts) - 1) / 2 - k) * step
            label = f"{optimizers.label(opt)} (ours, 95 % interval)"
            _interval(ax, y + dy, row.get("ours", {}).get(opt), colour, MARKERS[index % len(MARKERS)],
                      None if label in seen else label)  # fmt: skip
            seen.add(label)
            theirs = (row.get("study", {}).get(opt) or {}).get("test_acc")
            if theirs is not None:
                label = f"the study, {optimizers.label(opt)}"
                ax.plot([100 * theirs], [y + dy], "D", mfc="none", mec=colour, ms=7, mew=1.5,
                        label=None if label in seen else label)  # fmt: skip
                seen.add(label)
    title = "Results at a glance: the selected model of each part and optimizer"
    return _accuracy_rows(fig, ax, [r["label"] for r in rows], title, "test accuracy (%)", 3, path)


def misclassified_figure(examples: list[tuple[str, dict, object]], path: Path) -> Path | None:
    """examples: (part, prediction row, 3×H×W uint8 image)."""
    if not examples:
        return None
    plt = _plt()
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
            # Class names are folder names: a `$` in one is text, not mathtext (which raises on `$\frac$`).
            ax.set_title(f"{part}\ntrue: {row['label']}\n{top3}", fontsize=8, parse_math=False)
    fig.tight_layout()
    return save(fig, path)


def confusion_figure(matrices: list[tuple[str, list[str], list[list[int]]]], path: Path) -> Path | None:
    """A confusion matrix per part: (title, classes, counts[true][predicted]). Each cell holds
    its count; its shade is the share of that true class (a row sums to 100 %), so a class
    that is mostly taken for another shows at a glance whatever the class sizes."""
    if not matrices:
        return None
    import numpy as np

    plt = _plt()
    ncol = min(3, len(matrices))
    nrow = -(-len(matrices) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.3 * ncol, 4.3 * nrow), squeeze=False)
    for ax in axes.flat[len(matrices) :]:
        ax.axis("off")
    for ax, (title, classes, counts) in zip(axes.flat, matrices):
        m = np.array(counts, dtype=float)
        share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(classes)):
            for j in range(len(classes)):
                if counts[i][j]:
                    ax.text(j, i, str(counts[i][j]), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.6 else "black")  # fmt: skip
        ticks = range(len(classes))
        ax.set_xticks(ticks, classes, rotation=60, ha="right", fontsize=7, parse_math=False)
        ax.set_yticks(ticks, classes, fontsize=7, parse_math=False)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.suptitle("Confusion matrices: test images, each part's selected model (first seed)", fontsize=10)
    fig.tight_layout()
    return save(fig, path)
