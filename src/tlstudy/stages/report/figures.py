"""The report's figures (PNG, matplotlib). Accuracies in %, loss axes on a log scale so that one
diverged run (a validation loss of 1e5 at epoch 1) cannot flatten every other curve, a sweep as
small multiples by family of variants, and the two figures a reader should see first: every
part's test accuracy at a glance, and Table VIII under both augmentation placements."""

from __future__ import annotations

import math
import re
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


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    return save_figure(fig, path, dpi=90)


def _value(row: dict, key: str) -> float:
    return 100 * float(row[key]) if key == "val_acc" else float(row[key])


def log_ticks(low: float, high: float) -> list[float]:
    """Where a log axis from low to high is labelled: at every power of ten in range (matplotlib's
    own locator skips decades on a long axis), over less than two decades at 1, 2 and 5 × 10^k as
    well, and where that gives fewer than three ticks at linear steps beside any decade."""
    from matplotlib import ticker

    low = max(low, high * 1e-12)
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    decades = [float(f"1e{k}") for k in range(first, last + 1) if low <= float(f"1e{k}") <= high]
    if high / low >= 100:
        return decades
    ticks = [float(f"{m}e{k}") for k in range(first, last + 1) for m in (1, 2, 5) if low <= float(f"{m}e{k}") <= high]
    if len(ticks) >= 3:
        return ticks
    for bins in (5, 8, 12):  # at least three labels, whatever the limits round to
        linear = [t for t in ticker.MaxNLocator(nbins=bins, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
                  if low <= t <= high]  # fmt: skip
        if len(linear) >= 3:
            break
    return sorted({float(f"{t:.12g}") for t in linear} | set(decades))


def plain(y: float, _=None) -> str:
    """A log axis's label: a plain number from 0.001 to 1000, a power of ten beyond."""
    if y <= 0:
        return ""
    k = math.floor(math.log10(y) + 1e-9)
    if -3 <= k <= 3:
        return f"{y:.6g}"
    m = y / 10**k
    return f"$10^{{{k}}}$" if abs(m - 1) < 1e-6 else f"${m:.3g}\\times10^{{{k}}}$"


def _style(ax, key: str, title: str) -> None:
    from matplotlib import ticker

    ax.set_title(title, fontsize=9)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if key != "val_acc":
        ax.set_yscale("log", nonpositive="clip")
        # Ticks fixed from the final limits (every artist is drawn by now): a reader compares
        # losses, so every decade carries a label, a diverged run's 10^5 included.
        ax.yaxis.set_major_locator(ticker.FixedLocator(log_ticks(*ax.get_ylim())))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(plain))
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


def curves_figure(title: str, rows: list[dict], runs: list[dict], path: Path, backbone: str | None = None):
    """A column per optimizer, a row per quantity, a line per learning rate (mean over seeds with
    its min–max band when there are several); `backbone`, the weights the part started from, in
    the heading."""
    fig = curves(title, rows, runs, backbone)
    return save(fig, path) if fig else None


def curves(title: str, rows: list[dict], runs: list[dict], backbone: str | None = None):
    if not runs:
        return None
    plt = pyplot()
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
    heading = f"{title} — backbone: {backbone}" if backbone else title
    if seeds > 1:
        heading += f"\nthe mean of {seeds} seeds, the band from their minimum to their maximum"
    if seeds > 1 or backbone:
        fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    return fig


def selected_lr(m: dict | None) -> float | None:
    """The lr a sweep variant selected: its own, or the one most seeds picked."""
    if not m or "test_acc" not in m:
        return None
    if "lr" in m:
        return m["lr"]
    return Counter(p["lr"] for p in m["seeds"].values()).most_common(1)[0][0]


def sweep_figure(part: str, rows: list[dict], runs: list[dict], details: dict, families: dict, path: Path,
                 backbone: str | None = None):  # fmt: skip
    """Small multiples: a column per family of variants, a row per quantity; each variant at its
    selected learning rate (mean over seeds with a band when there are several), and no
    augmentation (`none`) as a black dashed reference in every panel."""
    fig = sweep(part, rows, runs, details, families, backbone)
    return save(fig, path) if fig else None


def sweep(part: str, rows: list[dict], runs: list[dict], details: dict, families: dict, backbone: str | None = None):
    if not runs:
        return None
    plt = pyplot()
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
    from_ = f" — backbone: {backbone}\n" if backbone else ": "
    fig.suptitle(f"{part}{from_}each variant at its selected learning rate", fontsize=11)
    fig.tight_layout()
    return fig


# An interval kind's line in the accuracy-per-row figures, in the order kinds first appear:
# solid, dashed, dotted, dash-dot-dot (dash-dot is the majority-class line's).
INTERVAL_STYLES = ("-", (0, (4, 2)), (0, (1, 1.3)), (0, (4, 1.5, 1, 1.5, 1, 1.5)))


def interval_label(kind: str | None) -> str:
    """A details entry's `interval` as a legend says it: a full label as given; the short forms
    details held before labels ("wilson", "t over 3 seeds") spelled out."""
    if not kind:
        return "95 % interval"
    if kind == "wilson":
        return "95 % interval: Wilson, over test images (one seed)"
    if re.fullmatch(r"t over \d+ seeds?", kind):
        return f"95 % interval: {kind}"
    return kind


def majority_rate(labels: list[str]) -> float:
    """The share of the most frequent class among `labels` (the test images' true classes): what
    a model that always answers that class scores."""
    if not labels:
        raise ValueError("majority_rate: no labels given; pass the test images' true classes, one per image")
    return Counter(labels).most_common(1)[0][1] / len(labels)


def _interval(ax, y: float, m: dict | None, colour: str, marker: str, kinds: dict) -> bool:
    """A point at the test accuracy and its interval, in the line style of the interval's kind
    (`kinds`: legend text -> style, grown as kinds appear); whether anything was drawn."""
    if not m or m.get("test_acc") is None:
        return False
    x, lo, hi = 100 * m["test_acc"], m.get("test_acc_lo"), m.get("test_acc_hi")
    if lo is None or hi is None:  # a number with no interval: the point alone
        ax.plot([x], [y], marker, color=colour, ms=5)
        return True
    kind = interval_label(m.get("interval"))
    style = kinds.setdefault(kind, INTERVAL_STYLES[len(kinds) % len(INTERVAL_STYLES)])
    err = [[max(0.0, x - 100 * lo)], [max(0.0, 100 * hi - x)]]
    bars = ax.errorbar([x], [y], xerr=err, fmt=marker, color=colour, ms=5, capsize=2, lw=1.2)
    for collection in bars.lines[2]:
        collection.set_linestyle(style)
    return True


def _key(**line):
    """A legend entry drawn nowhere: a marker or a line with the style given."""
    from matplotlib.lines import Line2D

    return Line2D([], [], **line)


def _accuracy_rows(fig, ax, labels: list[str], title: str, xlabel: str, handles: list, kinds: dict,
                   majority: float | None):  # fmt: skip
    """The frame both accuracy-per-row figures share: a row per label top down, 0–100 %, chance
    dotted, the majority class's rate dash-dotted, the legend under the axes with an entry per
    series, per reference line and per kind of interval drawn."""
    ax.axvline(CHANCE, color="0.5", ls=":", lw=1)
    handles = [*handles, _key(color="0.5", ls=":", lw=1, label="chance (1 in 7)")]
    if majority is not None:
        ax.axvline(100 * majority, color="0.15", ls="-.", lw=1)
        handles.append(_key(color="0.15", ls="-.", lw=1, label=f"majority class ({100 * majority:.1f} %)"))
    handles += [_key(color="0.3", ls=style, lw=1.2, label=kind) for kind, style in kinds.items()]
    ax.set_yticks(range(len(labels)), list(reversed(labels)), fontsize=8)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.set_xlim(0, 100)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    # As many columns as the longest entry leaves room for (7 pt DejaVu: about 0.055 in a character).
    widest = max(len(h.get_label()) for h in handles)
    ncol = max(1, min(len(handles), int(0.95 * fig.get_figwidth() // (0.055 * widest + 0.55))))
    legend_y = -0.9 / fig.get_figheight()
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, legend_y), ncol=ncol,
              frameon=False)  # fmt: skip
    fig.tight_layout()
    return fig


def table8_figure(variants: list[str], families: dict, series: list[tuple[str, dict]], study: dict, path: Path,
                  majority: float | None = None, backbone: str | None = None):  # fmt: skip
    """Each variant's test accuracy with its 95 % interval under each placement (`series`: label,
    details), the study's value beside it; variants grouped by family, chance and (given) the
    majority class's rate as lines; `backbone` in the title."""
    fig = table8(variants, families, series, study, majority, backbone)
    return save(fig, path) if fig else None


def table8(variants: list[str], families: dict, series: list[tuple[str, dict]], study: dict,
           majority: float | None = None, backbone: str | None = None):  # fmt: skip
    if not variants:
        return None
    plt = pyplot()
    order = [v for f in transforms.FAMILIES for v in variants if families.get(v) == f]
    fig, ax = plt.subplots(figsize=(9.5, 0.32 * len(order) + 2.6))
    styles = [("tab:blue", "o"), ("tab:red", "s"), ("tab:green", "^")]
    step = 0.26
    kinds, drawn, theirs_drawn = {}, set(), False
    for i, v in enumerate(order):
        y = len(order) - 1 - i
        for k, (_, table) in enumerate(series):
            offset = ((len(series) - 1) / 2 - k) * step  # the first series on top
            colour, marker = styles[k % len(styles)]
            if _interval(ax, y + offset, table.get(v), colour, marker, kinds):
                drawn.add(k)
        theirs = (study.get(v) or {}).get("test_acc")
        if theirs is not None:
            ax.plot([100 * theirs], [y], "kx", ms=7, mew=1.6)
            theirs_drawn = True
    handles = [_key(color=styles[k % len(styles)][0], marker=styles[k % len(styles)][1], ls="None", ms=5, label=label)
               for k, (label, _) in enumerate(series) if k in drawn]  # fmt: skip
    if theirs_drawn:
        handles.append(_key(color="k", marker="x", ls="None", ms=7, mew=1.6, label="the study"))
    start = 0
    for f in transforms.FAMILIES:  # a band and a name per family
        n = sum(families.get(v) == f for v in order)
        if n:
            top = len(order) - start - 0.5
            ax.axhspan(top - n, top, color="0.93" if (transforms.FAMILIES.index(f) % 2) else "white", zorder=0)
            ax.text(101, top - n / 2, f, va="center", ha="left", fontsize=8, color="0.3")
            start += n
    title = "Table VIII: few-shot full fine-tuning per augmentation variant"
    title += f"\nbackbone: {backbone}" if backbone else ""
    return _accuracy_rows(fig, ax, order, title, "test accuracy (%)", handles, kinds, majority)


def glance_figure(rows: list[dict], path: Path, majority: float | None = None) -> Path | None:
    """Every part's test accuracy per optimizer, with its interval and the study's value (hollow)
    beside each; chance and (given) the majority class's rate as lines. `rows`: {label, ours:
    {optimizer: details}, study: {optimizer: the study's pick}} (any of them missing)."""
    fig = glance(rows, majority)
    return save(fig, path) if fig else None


def glance(rows: list[dict], majority: float | None = None):
    if not rows:
        return None
    plt = pyplot()
    opts = [o for o in optimizers.NAMES if any(o in r.get("ours", {}) or o in r.get("study", {}) for r in rows)]
    step = 0.28 if len(opts) <= 2 else 0.56 / len(opts)  # the rows of a part stay within its band
    fig, ax = plt.subplots(figsize=(10, 0.62 * len(rows) + 2.4))
    kinds, ours, theirs = {}, set(), set()
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        for k, opt in enumerate(opts):
            index = optimizers.NAMES.index(opt)
            colour, dy = COLOURS[index % len(COLOURS)], ((len(opts) - 1) / 2 - k) * step
            if _interval(ax, y + dy, row.get("ours", {}).get(opt), colour, MARKERS[index % len(MARKERS)], kinds):
                ours.add(opt)
            value = (row.get("study", {}).get(opt) or {}).get("test_acc")
            if value is not None:
                ax.plot([100 * value], [y + dy], "D", mfc="none", mec=colour, ms=7, mew=1.5)
                theirs.add(opt)
    handles = []
    for opt in opts:
        index = optimizers.NAMES.index(opt)
        colour = COLOURS[index % len(COLOURS)]
        if opt in ours:
            handles.append(_key(color=colour, marker=MARKERS[index % len(MARKERS)], ls="None", ms=5,
                                label=f"{optimizers.label(opt)} (ours)"))  # fmt: skip
        if opt in theirs:
            handles.append(_key(marker="D", mfc="none", mec=colour, ls="None", ms=7, mew=1.5,
                                label=f"the study, {optimizers.label(opt)}"))  # fmt: skip
    title = "Results at a glance: the selected model of each part and optimizer"
    return _accuracy_rows(fig, ax, [r["label"] for r in rows], title, "test accuracy (%)", handles, kinds, majority)
