"""The report's figures of the test predictions: each part's confusion matrix, and the most
confident mistake per true class with its top-3."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tlstudy.stages.report.figures import pyplot, save


def _confidence(row: dict) -> float:
    """The probability a prediction row gives the class it predicted."""
    k = 1
    while row.get(f"top{k}") is not None:
        if row[f"top{k}"] == row["predicted"]:
            return float(row[f"p{k}"])
        k += 1
    return float(row["p1"])


def confident_mistakes(rows: list[dict], per_class: int = 1) -> list[dict]:
    """The `per_class` most confident mistakes of each true class (the highest probability on the
    wrong class predicted), classes in name order, the most confident first within one. `rows`:
    prediction rows (path, label, predicted, top1, p1, …)."""
    if per_class < 1:
        raise ValueError(f"confident_mistakes: per_class is {per_class}; it takes a whole number of at least 1")
    wrong = [r for r in rows if r["predicted"] != r["label"]]
    out = []
    for cls in sorted({r["label"] for r in wrong}):
        mine = sorted((r for r in wrong if r["label"] == cls), key=lambda r: (-_confidence(r), r["path"]))
        out += mine[:per_class]
    return out


def misclassified_figure(examples: list[tuple[str, dict, object]], path: Path, per_class: int | None = None):
    """examples: (part, prediction row, 3×H×W uint8 image). A column per true class, a row per
    part (and rank, with several per class). `per_class`: how many mistakes per class the caller
    picked by `confident_mistakes`, which the title then says; None: mistakes picked otherwise."""
    fig = misclassified(examples, per_class)
    return save(fig, path) if fig else None


def misclassified(examples: list[tuple[str, dict, object]], per_class: int | None = None):
    if not examples:
        return None
    plt = pyplot()
    parts = list(dict.fromkeys(p for p, _, _ in examples))
    classes = sorted({row["label"] for _, row, _ in examples})
    cells: dict[tuple[str, str], list] = {}
    for part, row, img in examples:
        cells.setdefault((part, row["label"]), []).append((row, img))
    ranks = {p: max(len(cells.get((p, c), [])) for c in classes) for p in parts}
    lines = [(p, r) for p in parts for r in range(ranks[p])]
    fig, axes = plt.subplots(len(lines), len(classes), figsize=(max(4.0, 1.75 * len(classes)) + 0.4,
                             2.55 * len(lines) + 0.5), squeeze=False)  # fmt: skip
    for i, (part, rank) in enumerate(lines):
        for j, cls in enumerate(classes):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j == 0:
                # Class and part names are folder names: a `$` in one is text, not mathtext
                # (which raises on `$\frac$`).
                name = part if ranks[part] == 1 else f"{part} #{rank + 1}"
                # Wrapped to the image's height (about 24 characters at 8 pt), so rows' names never meet.
                ax.set_ylabel(textwrap.fill(name, 24), fontsize=8, parse_math=False)
            mine = cells.get((part, cls), [])
            if rank >= len(mine):
                ax.text(0.5, 0.5, f"true: {cls}\nno mistake", ha="center", va="center", fontsize=7, color="0.4",
                        transform=ax.transAxes, parse_math=False)  # fmt: skip
                continue
            row, img = mine[rank]
            ax.imshow(img.permute(1, 2, 0).numpy())
            top3 = "\n".join(
                f"{row[f'top{k}']}: {100 * float(row[f'p{k}']):.1f} %" for k in (1, 2, 3) if row.get(f"top{k}")
            )
            ax.set_title(f"true: {row['label']}\n{top3}", fontsize=7, parse_math=False)
    if per_class is None:
        title = "Misclassified test images: true class, top-3 predictions"
    else:
        which = "mistake" if per_class == 1 else f"{per_class} mistakes"
        title = f"The most confident {which} per true class (test images): true class, top-3 predictions"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def confusion_figure(matrices: list[tuple[str, list[str], list[list[int]]]], path: Path) -> Path | None:
    """A confusion matrix per part: (title, classes, counts[true][predicted]). Each cell holds
    its count; its shade is the share of that true class (a row sums to 100 %), so a class
    that is mostly taken for another shows at a glance whatever the class sizes."""
    if not matrices:
        return None
    import numpy as np

    plt = pyplot()
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
