"""The report's figures as matplotlib objects, before they are saved: log axes labelled at every
decade, a legend entry per kind of interval and for the majority class, the most confident
mistakes per class, titles that name the backbone, and the budget figure's points neither
joined nor crowded by words."""

import json
import math

import pytest
import torch
from conftest import PROJECT, load_script

from tlstudy.stages.report import figures, prediction_figures
from tlstudy.stages.report import study as S

BOOTSTRAP = "95 % CI over test images and 3 seeds (bootstrap)"


def entry(acc: float, interval: str, half: float = 0.04) -> dict:
    return {"test_acc": acc, "test_acc_lo": acc - half, "test_acc_hi": acc + half, "interval": interval}


def missing_decades(ax) -> list[float]:
    """The powers of ten within a log y axis's limits that carry no labelled tick."""
    ax.figure.canvas.draw()
    lo, hi = ax.get_ylim()
    labelled = [t for t, text in zip(ax.get_yticks(), ax.get_yticklabels()) if text.get_text()]
    decades = [10.0**k for k in range(math.ceil(math.log10(lo)), math.floor(math.log10(hi)) + 1)]
    return [d for d in decades if not any(math.isclose(t, d, rel_tol=1e-9) for t in labelled)]


def scientific(ax) -> list[str]:
    """A y axis's labels written as 1e+06, 1e-05 and the like."""
    return [t.get_text() for t in ax.get_yticklabels() if "e+" in t.get_text() or "e-" in t.get_text()]


def test_loss_axes_label_every_decade_in_plain_numbers_and_name_the_backbone():
    """A diverged run's validation loss spans ten decades: matplotlib's own locator labelled every
    other one, and wrote 1e+06."""
    losses = (3e8, 2e6, 1e4, 40, 2.5, 0.6, 0.4)
    rows = [{"run": "r", "epoch": e, "train_loss": 1.9 - 0.04 * e, "val_loss": v, "val_acc": 0.1 + 0.05 * e}
            for e, v in enumerate(losses, 1)]  # fmt: skip
    runs = [{"run": "r", "optimizer": "sgd", "lr": 0.1, "variant": "none", "diverged_epoch": None}]
    fig = figures.curves("scratch", rows, runs, backbone="random init")
    train, val, _ = fig.axes
    assert missing_decades(val) == [] and scientific(val) == []
    # Within one decade (1.6 to 1.9): at least three plain labels, none of them a power of ten.
    labels = [t.get_text() for t in train.get_yticklabels() if t.get_text()]
    assert len(labels) >= 3 and all(float(x) for x in labels), labels
    assert "random init" in fig.get_suptitle()


def test_log_ticks_hold_every_decade_whatever_the_range():
    for low, high in ((0.3, 3e5), (0.05, 2.0), (0.9, 1.9), (2e-4, 0.02), (1e-3, 1e9)):
        ticks = figures.log_ticks(low, high)
        decades = [10.0**k for k in range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)]
        assert all(any(math.isclose(t, d) for t in ticks) for d in decades), (low, high, ticks)
        assert len(ticks) >= 3 or high / low >= 100, (low, high, ticks)
    assert [figures.plain(y) for y in (0.001, 0.5, 1000, 1e4, 1e-4)] == ["0.001", "0.5", "1000", "$10^{4}$",
                                                                         "$10^{-4}$"]  # fmt: skip


def bar_styles(ax) -> list[str]:
    """The dash pattern of each interval drawn, in drawing order."""
    return [str(c.get_linestyle()) for c in ax.collections if c.__class__.__name__ == "LineCollection"]


def test_glance_legend_has_an_entry_per_interval_kind_and_the_majority_class():
    rows = [
        {"label": "scratch", "ours": {"sgd": entry(0.6, "t over 3 seeds"), "adam": entry(0.65, "t over 3 seeds")},
         "study": {"sgd": {"test_acc": 0.7}}},
        {"label": "classifier", "ours": {"sgd": entry(0.5, "wilson")}},
        {"label": "finetune", "ours": {"adam": entry(0.4, BOOTSTRAP)}},
        {"label": "pretrain", "ours": {"adam": {"test_acc": 0.3, "test_acc_lo": None, "test_acc_hi": None}}},
    ]  # fmt: skip
    fig = figures.glance(rows, majority=46 / 237)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sum("t over 3 seeds" in t for t in texts) == 1, texts
    assert sum("Wilson" in t for t in texts) == 1, texts
    assert texts.count(BOOTSTRAP) == 1, texts
    assert [t for t in texts if t.startswith("majority class")] == ["majority class (19.4 %)"]
    assert "chance (1 in 7)" in texts and "SGD (ours)" in texts and "the study, SGD" in texts
    # Drawn in row order: scratch's two t intervals alike, Wilson's and the bootstrap's each its own.
    t_sgd, t_adam, wilson, boot = bar_styles(ax)
    assert t_sgd == t_adam and len({t_sgd, wilson, boot}) == 3
    assert any(math.isclose(line.get_xdata()[0], 100 * 46 / 237) for line in ax.get_lines())


def test_table8_legend_names_both_placements_their_interval_kinds_the_majority_and_the_backbone():
    ours = {"none": entry(0.36, "wilson"), "hflip": entry(0.37, "wilson")}
    placed = {"none": entry(0.35, "t over 5 seeds"), "hflip": entry(0.3, "t over 5 seeds")}
    families = {"none": "none", "hflip": "flip / rotation"}
    study = {"none": {"test_acc": 0.78}}
    fig = figures.table8(["none", "hflip"], families, [("ours (augment)", ours), ("study's (augment_study)", placed)],
                         study, majority=0.2, backbone="ImageNet")  # fmt: skip
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[:3] == ["ours (augment)", "study's (augment_study)", "the study"]
    assert "majority class (20.0 %)" in texts
    assert [t for t in texts if t.startswith("95 % interval")] == [
        "95 % interval: Wilson, over test images (one seed)",
        "95 % interval: t over 5 seeds",
    ]
    assert "ImageNet" in ax.get_title()


def test_majority_rate_is_the_most_frequent_class_share():
    assert figures.majority_rate(["dog", "house", "dog", "guitar"]) == 0.5
    with pytest.raises(ValueError, match="no labels"):
        figures.majority_rate([])


def prediction(path: str, label: str, predicted: str, p1: float) -> dict:
    other = label if predicted != label else "house"
    return {"path": path, "label": label, "predicted": predicted, "top1": predicted, "p1": str(p1),
            "top2": other, "p2": str(round(1 - p1, 4)), "top3": "", "p3": ""}  # fmt: skip


ROWS = [
    prediction("dog/1.jpg", "dog", "dog", 0.99),  # right, and the most confident row of all
    prediction("dog/2.jpg", "dog", "giraffe", 0.55),
    prediction("dog/3.jpg", "dog", "horse", 0.81),
    prediction("dog/4.jpg", "dog", "giraffe", 0.62),
    prediction("$elephant/1.jpg", "$elephant", "dog", 0.7),
    prediction("guitar/1.jpg", "guitar", "guitar", 0.9),  # a class with no mistake
    prediction("house/1.jpg", "house", "person", 0.4),
]


def test_confident_mistakes_pick_the_most_confident_wrong_rows_of_each_class_in_class_order():
    one = prediction_figures.confident_mistakes(ROWS)
    assert [r["path"] for r in one] == ["$elephant/1.jpg", "dog/3.jpg", "house/1.jpg"]
    two = prediction_figures.confident_mistakes(ROWS, per_class=2)
    assert [r["path"] for r in two] == ["$elephant/1.jpg", "dog/3.jpg", "dog/4.jpg", "house/1.jpg"]
    assert all(r["predicted"] != r["label"] for r in two)
    with pytest.raises(ValueError, match="per_class"):
        prediction_figures.confident_mistakes(ROWS, per_class=0)


def test_misclassified_figure_shows_a_column_per_class_and_says_most_confident_mistake():
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    examples = [("scratch (sgd)", r, img) for r in prediction_figures.confident_mistakes(ROWS)]
    examples += [("finetune (adam)", r, img) for r in prediction_figures.confident_mistakes(ROWS[:4])]  # dog only
    fig = prediction_figures.misclassified(examples, per_class=1)
    assert "most confident mistake per true class" in fig.get_suptitle()
    assert len(fig.axes) == 2 * 3  # two parts by three classes
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["true: $elephant\ndog: 70.0 %\n$elephant: 30.0 %", "true: dog\nhorse: 81.0 %\ndog: 19.0 %",
                          "true: house\nperson: 40.0 %\nhouse: 60.0 %"]  # fmt: skip
    # The part that got $elephant and house right says so in their cells.
    finetune = fig.axes[3:]
    assert [len(ax.images) for ax in finetune] == [0, 1, 0]
    assert [t.get_text() for t in finetune[0].texts] == ["true: $elephant\nno mistake"]
    fig.canvas.draw()  # a `$` in a class name is text, not mathtext


def budget_script():
    return load_script("pretraining-budget")


def drawn_texts(fig) -> list:
    """Every text the figure draws: titles, labels, legend entries, the tick labels in view."""
    from matplotlib.text import Text

    fig.canvas.draw()
    ticks, shown = set(), set()
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks |= {id(tick.label1), id(tick.label2)}
                if lo <= tick.get_loc() <= hi:
                    shown |= {id(tick.label1), id(tick.label2)}
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text() and (id(t) not in ticks or id(t) in shown)]


def intervals_px(fig) -> list[tuple[float, object]]:
    """Each interval drawn, as (x in pixels, its bounding box in pixels, caps included)."""
    from matplotlib.container import ErrorbarContainer
    from matplotlib.transforms import Bbox

    out = []
    for ax in fig.axes:
        for container in ax.containers:
            if not isinstance(container, ErrorbarContainer):
                continue
            for segments in (c.get_segments() for c in container.lines[2]):
                for seg in segments:
                    (x0, y0), (x1, y1) = ax.transData.transform(seg)
                    half = 3 * fig.dpi / 72  # capsize 3 pt
                    out.append((x0, Bbox([[min(x0, x1) - half, min(y0, y1)], [max(x0, x1) + half, max(y0, y1)]])))
    return out


def test_budget_figure_draws_single_runs_as_unjoined_points_and_no_label_overlaps_another_or_a_point():
    script = budget_script()
    numbers = json.loads((PROJECT / "results/pretraining-budget/budget.json").read_text())
    fig = script.plot(numbers, S.numbers())
    # Each budget is one experiment: its points carry intervals and no line joins them.
    lines = [c.lines[0] for ax in fig.axes for c in ax.containers]
    assert len(lines) == 2 * 2 * len(numbers)
    assert {line.get_linestyle() for line in lines} == {"None"}
    texts = [(t.get_text(), t.get_window_extent()) for t in drawn_texts(fig)]
    assert all(fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1) for _, box in texts)
    for i, (a, box) in enumerate(texts):
        for b, other in texts[i + 1 :]:
            assert not box.shrunk(0.98, 0.98).overlaps(other), f"{a!r} overlaps {b!r}"
    bars = intervals_px(fig)
    for a, box in texts:
        assert not any(box.overlaps(bar) for _, bar in bars), f"{a!r} overlaps an interval"
    # Intervals at one budget stand apart: no two caps within a cap's width of each other.
    xs = sorted(x for x, _ in bars)
    cap = 2 * 3 * fig.dpi / 72
    assert all(b - a > cap for a, b in zip(xs, xs[1:])), xs


def test_budget_figure_marks_sgd_points_hollow_and_says_so():
    script = budget_script()
    numbers = json.loads((PROJECT / "results/pretraining-budget/budget.json").read_text())
    first = next(iter(numbers.values()))
    first["finetune"]["sgd"]["val_acc"] = 1.0  # SGD selected for full fine-tuning at the first budget
    fig = script.plot(numbers, S.numbers())
    from matplotlib.colors import to_rgba

    faces = [to_rgba(c.lines[0].get_markerfacecolor()) for c in fig.axes[0].containers]
    assert faces.count(to_rgba("white")) == 1
    assert "hollow: SGD" in fig.get_suptitle()
    for text in drawn_texts(fig):  # the longer title too stays within the figure
        box = text.get_window_extent()
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1), text.get_text()
