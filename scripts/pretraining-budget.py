#!/usr/bin/env python3
"""How much pretraining does transfer need? The offline study's source-domain pretraining at
several budgets, as DVC experiments in the offline profile's workspace, and their publication.

    python scripts/pretraining-budget.py run        # the experiments not yet done, one at a time
    python scripts/pretraining-budget.py publish    # results/pretraining-budget/: metrics, timing, figure

Both take `--workspace DIR` (default work/profiles/offline), `--carried DIR` (default
results/carried/pretraining-budget), `--epochs N ...` (the default recipe's budgets, default 12
30 60 120) and `--strong N` (the strong recipe's budget, default 60; 0 for none); `publish` also
`--out DIR` (default results/pretraining-budget), so that both can run on a small workspace of
generated images. `run` also takes `--data`/`--sources`, the PACS folders a machine has, as
`make offline` takes them.

`run` works in the offline workspace (`make offline` builds it, work/profiles/offline; where
there is none, `run` prepares it without running its baseline). Each budget
is one `dvc exp run -n <name>` there with its overrides (`budgets`), on the baseline's params.yaml:
the pretraining and the four transfer parts that start from it (head-only and fine-tuning, full
and few-shot, over the profile's seeds) re-run, the rest is unchanged since the experiment before
and skipped, the strong recipe's too: its new `augmentations.strong` re-runs `variants`, and each
training stage depends only on its own part's variants file, which it leaves the same (the
2026-12-03 sweep's code made every training stage read `augmentations`, and re-ran `scratch` and
`fewshot_scratch` there, to the same accuracies). The two
augmentation sweeps (every transfer part with an `augment` list) are left out of these
experiments (`~transfer.augment`, `~transfer.augment_study`): they answer another question and
would cost 2 x 28 runs per budget. Interrupted, it continues: finished experiments
are skipped, an unfinished one runs again before any other, with its finished stages kept
(tools.experiments.unfinished_first says why first) and its `train` stage resuming after its
last finished run (work/runs/ stays in the workspace).
Wall and CPU seconds of every experiment and stage, per sitting, go to the workspace's
work/budget-timing.json. Each finished experiment is carried out of the workspace at once, into
results/carried/pretraining-budget/<name>/ (`carry`: the files publish reads, its overrides and
sittings): commit it, and a later `run` in a new workspace skips it. The sweep is hours longer
than a session, and the workspace does not always outlive one.

`publish` reads each experiment's metrics, details and per-image test predictions from its
carried folder, or else from its git ref in the workspace (they are committed with it: cache:
false), and writes results/pretraining-budget/, replaced whole once everything is computed: per
experiment its params overrides, params.yaml and dvc.lock, metrics/ and details/ of the
pretraining and the transfer parts, details/predictions/<part>.csv of the transfer parts and of
scratch and fewshot_scratch (every seed's selected model on every test image, so that anyone can
redo the tests), budget.json (the curve's numbers and the tests), summary.md (the tables
docs/results.md quotes), findings.md (each family's verdicts in a line, which the README quotes),
timing.json and budget.png; the carried folders it published are then removed (the publication
holds their files, and timing.json their sittings). A reader gets the experiments
themselves back by running `run` (every stage restores from a shared DVC cache or remote if one
holds them; otherwise it recomputes).

The tests (docs/statistics.md): each transfer part's selected model against its subset's scratch
one, paired by seed and test image, the difference's interval and p from the bootstrap over test
images and seeds (report.verdicts.difference). The declared families: one per transfer part —
"<part> vs <scratch> across budgets" — its tests the budgets, Holm-corrected together, verdict
words by findings.verdict. A finding of this sweep is
read off one part's curve ("fine-tuning passes scratch from 60 epochs on"), so the family is the
set it is picked from: the chance of any false finding about a part across budgets stays at most
5 %. The four parts answer four questions (frozen or fine-tuned, full or few-shot); pooling all
budgets × parts in one family would make a finding about one part depend on how many others ran.

The strong recipe was fixed before any cartoon result of this sweep was seen: 60 epochs with the
colour augmentation that domain-generalisation work on PACS relies on (colour jitter 0.4 on
brightness, contrast and saturation, 0.1 on hue, random grayscale 0.2) on top of the default
flips and ±10° rotations — sketches are grayscale and paintings colourful, so invariance to
colour is what a backbone needs to carry across PACS's domains.

Independent cosine runs, not one warmup-stable-decay trunk with a decay branched off at each
budget: each budget is then exactly today's recipe at another length (the 12-epoch one is the
published backbone, unchanged, so DVC skips it), and the engine needs no new schedule, which
would be new stage code and a republication of results/offline. The price: 270 new pretraining
epochs (30 + 60 + 120 + 60 strong) where a trunk would need about 120 + 4 short decays + 60.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))
from tlstudy.lib.atomic import save_figure, write_json, write_text  # noqa: E402
from tlstudy.stages.report.inputs import seed_correct_text  # noqa: E402
from tlstudy.tools import experiments as X  # noqa: E402
from tlstudy.tools.experiments import experiments, parser, ref_text, run_all, totals, without_sweeps  # noqa: E402
from tlstudy.training import optimizers  # noqa: E402

WORKSPACE = PROJECT / "work/profiles/offline"
OUT = PROJECT / "results/pretraining-budget"
CARRIED = PROJECT / "results/carried/pretraining-budget"
TIMING = "work/budget-timing.json"
STRONG = (
    "+augmentations.strong=[[RandomHorizontalFlip,{p:0.5}],[RandomAffine,{degrees:10}],"
    "[ColorJitter,{brightness:0.4,contrast:0.4,saturation:0.4,hue:0.1}],[RandomGrayscale,{p:0.2}]]"
)
DEFAULT_EPOCHS, DEFAULT_STRONG = [12, 30, 60, 120], 60


def budgets(epochs: list[int], strong: int) -> dict[str, tuple[int, str, list[str]]]:
    """name -> (pretraining epochs, the recipe in words, dvc exp run -S overrides)."""
    out = {f"pretrain-{e:03d}ep": (e, "default recipe", [f"pretrain.pacs_sources.epochs={e}"]) for e in epochs}
    if strong:
        out[f"pretrain-{strong:03d}ep-strong"] = (
            strong,
            "strong colour augmentation",
            [f"pretrain.pacs_sources.epochs={strong}", STRONG, "pretrain.pacs_sources.augment=strong"],
        )
    return out


PARTS = ["classifier", "finetune", "fewshot_classifier", "fewshot_finetune"]  # the transfer parts
SCRATCH = {"full": "scratch", "fewshot": "fewshot_scratch"}


def run(ws: Path, plan: dict, carried: Path, data: Path | None = None, sources: Path | None = None) -> None:
    X.prepared(ws, PROJECT, data, sources, "budget")
    dropped = without_sweeps(ws)
    run_all(ws, {name: overrides + dropped for name, (_, _, overrides) in plan.items()}, ws / TIMING, "budget",
            folder=lambda name: carried / name, carry=lambda name: carry(ws, carried, name, plan))  # fmt: skip
    print("budget: every experiment is done; `python scripts/pretraining-budget.py publish` publishes them")


def files(name: str, text) -> dict[str, str]:
    """Every file of an experiment that publish reads or copies (rel -> text), from `text` (rel
    -> its text or None: experiments.ref_text or folder_text); refused, naming the file, where
    one is missing."""
    wanted = ["params.yaml", "dvc.lock", "headline.json"]
    for sub in ("metrics", "details"):
        wanted += [f"{sub}/pretrain/pacs_sources.json", *(f"{sub}/{p}.json" for p in PARTS)]
    wanted += [f"details/{p}.json" for p in SCRATCH.values()]
    got = {rel: text(rel) for rel in wanted}
    missing = [rel for rel, t in got.items() if t is None]
    if missing:
        raise SystemExit(f"budget: {name}: {', '.join(missing)} missing; re-run the sweep "
                         "(`python scripts/pretraining-budget.py run`)")  # fmt: skip
    for part in PARTS + list(SCRATCH.values()):
        got[f"details/predictions/{part}.csv"] = predictions(text, name, part)
    return got


def carry(ws: Path, carried: Path, name: str, plan: dict) -> None:
    """A finished experiment's files into carried/<name>/ with its overrides and sittings
    (experiments.carry): what publish needs of it once the workspace is gone. Commit them."""
    got = files(name, ref_text(ws, experiments(ws)[name]))
    X.carry(carried / name, got, name, *record(ws, X.recorded(ws / TIMING), plan, name))
    print(f"budget: {name}: carried to {carried / name}")


def record(ws: Path, timing: dict, plan: dict, name: str) -> tuple[list[str], list[dict]]:
    """An experiment's -S overrides and sittings; one with no record had the plan's, as `run` gives them."""
    return X.record(timing.get(name, {}), lambda: plan[name][2] + without_sweeps(ws))


def predictions(text, name: str, part: str) -> str:
    """An experiment's details/predictions/<part>.csv as committed with it."""
    path = f"details/predictions/{part}.csv"
    got = text(path)
    if got is None:
        raise SystemExit(
            f"budget: {name}: {path} is not in the experiment (it ran before evaluate@ kept every seed's per-image "
            "predictions); refresh the workspace with today's code (`make offline`), then re-run the sweep "
            "(`python scripts/pretraining-budget.py run`)"
        )
    return got


def curve(experiment_files: dict[str, dict[str, str]], plan: dict) -> dict:
    """The numbers of the figure, from each experiment's `files`: per experiment, pretraining's
    and each transfer part's, and each transfer part against scratch, judged in its family
    (`judged`)."""
    out, compared = {}, {}
    for name, got in experiment_files.items():
        epochs, recipe, _ = plan[name]
        pre = json.loads(got["details/pretrain/pacs_sources.json"])
        # The sweep is on cartoon; pretraining has called its test numbers target_test_* since
        # data.domain, and budget.json keeps the names it was published with.
        pre = {k.replace("target_test", "cartoon_test"): v for k, v in pre.items()}
        entry = {"epochs": epochs, "recipe": recipe, "pretrain": {k: pre[k] for k in (
            "epoch", "val_acc", "val_acc_lo", "val_acc_hi", "cartoon_test_acc", "cartoon_test_acc_lo",
            "cartoon_test_acc_hi", "sec_per_epoch")}}  # fmt: skip
        details = {part: json.loads(got[f"details/{part}.json"]) for part in PARTS + list(SCRATCH.values())}
        for part, d in details.items():
            entry[part] = {
                opt: {k: d[opt][k] for k in ("test_acc", "test_acc_lo", "test_acc_hi", "interval", "val_acc")}
                for opt in d
            }
        correct = {part: seed_correct_text(got[f"details/predictions/{part}.csv"]) for part in details}
        compared[name] = {part: versus_scratch(name, details, correct, part) for part in PARTS}
        out[name] = entry
    for name, tests in judged(compared).items():
        out[name]["vs_scratch"] = tests
    return out


def versus_scratch(name: str, details: dict, correct: dict, part: str) -> dict:
    """Experiment `name`'s transfer part against its subset's scratch part, each its selected
    optimizer (`_selected`): the difference of their test accuracies, paired by seed and test
    image, with its interval and p from the bootstrap over images and seeds
    (report.verdicts.difference). `correct`: part -> group -> seed -> image -> right."""
    from tlstudy.stages.report import headline, verdicts

    scratch = SCRATCH["fewshot" if part.startswith("fewshot") else "full"]
    ours, theirs = headline.selected_group(details[part]), headline.selected_group(details[scratch])
    d = verdicts.difference(correct[part].get(ours), correct[scratch].get(theirs))
    if d is None:
        raise SystemExit(
            f"budget: {name}: details/predictions/{part}.csv ({ours}) and details/predictions/{scratch}.csv "
            f"({theirs}) share no seed on the same test images; re-run the sweep "
            "(`python scripts/pretraining-budget.py run`)"
        )
    # The effect and its interval first, p after (docs/statistics.md).
    return {"optimizer": optimizers.label(ours), "scratch": scratch, "scratch_optimizer": optimizers.label(theirs),
            "groups": [ours, theirs], "diff": d["diff"], "lo": d["lo"], "hi": d["hi"], "interval": d["label"],
            "n_seeds": d["n_seeds"], "n_images": d["n_images"], "bootstrap": d["method"], "p": d["p"]}  # fmt: skip


def family(part: str) -> str:
    """The declared family of `part`'s tests against scratch (the module's docstring says why)."""
    return f"{part} vs {SCRATCH['fewshot' if part.startswith('fewshot') else 'full']} across budgets"


def judged(compared: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """experiment -> transfer part -> its comparison with scratch (`versus_scratch`), judged in
    the part's family, the experiments its tests: findings.judge (Holm), each test with its raw
    and adjusted p, the verdict, the family, its correction and its size m."""
    from tlstudy.lib import findings

    out: dict[str, dict[str, dict]] = {name: {} for name in compared}
    for part in PARTS:
        got = findings.judge(family(part), {name: tests[part] for name, tests in compared.items()})
        for name, t in got["tests"].items():
            out[name][part] = {**t, "family": got["family"], "correction": got["method_name"], "m": got["m"]}
    return out


def _selected(metrics: dict) -> tuple[dict, str]:
    """A part's model as `headline.json` selects it (report.headline.selected_group: the optimizer
    with the higher validation accuracy, the first in the registry on a tie), with the
    optimizer's label."""
    from tlstudy.stages.report import headline

    group = headline.selected_group(metrics)
    return metrics[group], optimizers.label(group)


def plot(numbers: dict, study: dict):
    """Test accuracy against pretraining epochs (a linear axis labelled at each budget): per part
    the selected model's mean with its interval, a point per experiment and no line between
    experiments; head-only and fine-tuning side by side at each budget, the strong recipe's stars
    to the right of theirs; scratch's interval a band, the study's ImageNet value a dotted line
    of the part's colour. Every word is in the titles and the legend, none among the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), sharey=True)
    colours = {"classifier": "#1f77b4", "finetune": "#d62728"}
    plain = [e for e in numbers.values() if e["recipe"] == "default recipe"]
    strong = [e for e in numbers.values() if e["recipe"] != "default recipe"]
    ticks = sorted({e["epochs"] for e in numbers.values()})
    span = (ticks[-1] - ticks[0]) or ticks[-1]
    # Dodged in epochs, so that no interval hides another: head-only left of fine-tuning, the
    # strong recipe's pair right of the default's at the same budget.
    dodge = {"classifier": -0.018 * span, "finetune": 0.018 * span}
    shared = {e["epochs"] for e in plain}
    names = set()
    for ax, subset in zip(axes, ("full", "fewshot")):
        scratch, opt = _selected(next(iter(numbers.values()))[SCRATCH[subset]])
        ax.axhspan(100 * scratch["test_acc_lo"], 100 * scratch["test_acc_hi"], color="0.87", zorder=0)
        ax.axhline(100 * scratch["test_acc"], color="0.55", lw=1, zorder=0)
        for part in [p for p in PARTS if p.startswith("fewshot") == (subset == "fewshot")]:
            mode = part.removeprefix("fewshot_")
            colour = colours[mode]
            for entries, marker, ms in ((plain, "o", 6), (strong, "*", 11)):
                for e in entries:
                    dx = 0.075 * span if entries is strong and e["epochs"] in shared else 0.0
                    m, name = _selected(e[part])
                    names.add(name)
                    y = 100 * m["test_acc"]
                    err = [[y - 100 * m["test_acc_lo"]], [100 * m["test_acc_hi"] - y]]
                    ax.errorbar([e["epochs"] + dx + dodge[mode]], [y], yerr=err, color=colour, marker=marker, ms=ms,
                                mfc="white" if name == "SGD" else colour, capsize=3, ls="none", lw=1.6)  # fmt: skip
            ref = _selected(study["parts"][part])[0]["test_acc"] if part in study["parts"] else None
            if ref is not None:
                ax.axhline(100 * ref, color=colour, ls=":", lw=1.2)
        ax.set_xlim(ticks[0] - 0.1 * span, ticks[-1] + 0.16 * span)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("pretraining epochs on art_painting, photo, sketch")
        seeds = "full subset (3 seeds)" if subset == "full" else "few-shot subset (5 seeds)"
        ax.set_title(f"{seeds}; grey: {SCRATCH[subset]} ({opt})", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cartoon test accuracy (%): mean over seeds, 95 % interval")
    handles = [
        plt.Line2D([], [], color=colours["classifier"], marker="o", ls="none", label="head-only (backbone frozen)"),
        plt.Line2D([], [], color=colours["finetune"], marker="o", ls="none", label="fine-tuning (all layers)"),
        *(plt.Line2D([], [], color="0.3", marker="*", ms=10, ls="none", label=f"{e['epochs']} epochs, {e['recipe']}")
          for e in strong[:1]),
        plt.Line2D([], [], color="0.3", ls=":", label="the study's ImageNet value (part's colour)"),
        matplotlib.patches.Patch(color="0.87", label="from scratch: mean, 95 % interval"),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    if len(names) > 1:
        which = "filled: Adam, hollow: SGD"
    else:
        which = f"{next(iter(names))} in every case"
    fig.suptitle(
        "Does more pretraining on PACS's other domains transfer to cartoon?\nEach point: one experiment, the "
        f"optimizer with the higher validation accuracy ({which})",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


COLUMNS = {"classifier": "head-only", "finetune": "fine-tuning",
           "fewshot_classifier": "few-shot head-only", "fewshot_finetune": "few-shot fine-tuning"}  # fmt: skip


def _cell(metrics: dict, interval: bool = True) -> str:
    """The selected model's test accuracy, its interval, its optimizer."""
    best, opt = _selected(metrics)
    spread = f" [{100 * best['test_acc_lo']:.1f}, {100 * best['test_acc_hi']:.1f}]" if interval else ""
    return f"{100 * best['test_acc']:.1f}{spread} {opt}"


def _budget(e: dict) -> str:
    return f"{e['epochs']} epoch{'s' * (e['epochs'] != 1)}" + (
        "" if e["recipe"] == "default recipe" else f", {e['recipe']}"
    )


def table(numbers: dict, study: dict) -> str:
    """summary.md: the curve as a table, scratch and the study's ImageNet values beside it; then
    each transfer part against scratch, as `judged` gives it (budget.json's `vs_scratch`)."""
    from tlstudy.lib import findings
    from tlstudy.stages.report import tables

    old = [n for n, e in numbers.items() if any("verdict" not in t for t in e["vs_scratch"].values())]
    if old:
        raise ValueError(
            f"budget.json: {', '.join(old)}: vs_scratch has no verdict (published before the tests against scratch "
            "were judged in families); re-run the sweep (make budget)"
        )
    head = ["pretraining on PACS's other domains", "backbone val", "cartoon, no cartoon training", *COLUMNS.values()]
    rows = [head, ["---"] * len(head)]
    for e in numbers.values():
        pre = e["pretrain"]
        rows.append([
            _budget(e),
            f"{100 * pre['val_acc']:.1f} (epoch {pre['epoch']})",
            f"{100 * pre['cartoon_test_acc']:.1f} [{100 * pre['cartoon_test_acc_lo']:.1f}, "
            f"{100 * pre['cartoon_test_acc_hi']:.1f}]",
            *(_cell(e[part]) for part in COLUMNS),
        ])  # fmt: skip
    first = next(iter(numbers.values()))
    scratch = {p: _cell(first[SCRATCH["fewshot" if p.startswith("fewshot") else "full"]]) for p in COLUMNS}
    rows.append(["none: scratch (fewshot_scratch)", "", "", *scratch.values()])
    rows.append(["ImageNet (the study)", "", "", *(_cell(study["parts"][p], interval=False) for p in COLUMNS)])
    tests = [["pretraining", *(f"{c} − scratch" for c in COLUMNS.values())], ["---"] * (1 + len(COLUMNS))]
    tests += [[_budget(e), *(tables.test_cell(e["vs_scratch"][p]) for p in COLUMNS)] for e in numbers.values()]
    every = [t for e in numbers.values() for t in e["vs_scratch"].values()]
    over = "test images and seeds" if any(t["n_seeds"] > 1 for t in every) else "test images"
    m = sorted({t["m"] for t in every})
    correction = sorted({t["correction"] for t in every})
    first = tables.prose(
        "Cartoon test accuracy (%) by pretraining budget: each part's optimizer with the higher validation "
        f"accuracy (as in `headline.json`), mean over seeds [95 % interval over {over}, a bootstrap; the "
        "backbone's own on cartoon: Wilson's over the images]."
    )
    second = tables.prose(
        "Each transfer part against scratch on the same subset (`vs_scratch` in `budget.json`): the "
        f"difference in points [95 % interval over {over}, a bootstrap paired by seed and image], p, then p "
        f"adjusted within the part's family and the verdict. One family per transfer part, its tests the "
        f"{' or '.join(map(str, m))} budgets, corrected together with {' or '.join(correction)}'s method (the "
        "chance of any false finding about a part across budgets stays at most 5 %). The words follow one rule: "
        f"{findings.PASSES} when the adjusted p is below 0.05 and the whole interval is above 0, {findings.BELOW} "
        f"the same below 0, {findings.NO_DIFFERENCE} otherwise — which is not evidence that there is none."
    )
    accuracies, differences = ("\n".join("| " + " | ".join(r) + " |" for r in rs) for rs in (rows, tests))
    return f"{first}\n\n{accuracies}\n\n{second}\n\n{differences}\n"


def finding(numbers: dict) -> str:
    """findings.md: each part's family in one line, every word from the rule, as the offline
    report's findings.md gives its families (report.document.findings_text); the README quotes it,
    and docs/results.md the whole of summary.md."""
    from tlstudy.stages.report.document import findings_text

    families = {}
    for part in PARTS:
        tests = {name: e["vs_scratch"][part] for name, e in numbers.items()}
        first = next(iter(tests.values()))
        families[first["family"]] = {"tests": tests, "m": first["m"], "method_name": first["correction"]}
    return findings_text(families)


def publish(ws: Path, out: Path, plan: dict, carried: Path) -> None:
    from tlstudy.stages.report import study as S
    from tlstudy.tools.machine import machine, summary

    kept = {n: X.carried(carried / n) for n in plan}
    kept = {n: r for n, r in kept.items() if r}
    found = experiments(ws) if (ws / ".git").is_dir() else {}
    refs = {n: found[n] for n in plan if n in found and n not in kept}
    missing = [n for n in plan if n not in refs and n not in kept]
    if missing:
        raise SystemExit(f"budget: not run yet: {', '.join(missing)}; run `python scripts/pretraining-budget.py run`")
    # The plan's order, not git's; each from its carried folder where it has one.
    got = {n: files(n, X.folder_text(carried / n) if n in kept else ref_text(ws, refs[n])) for n in plan}
    numbers, study = curve(got, plan), S.numbers()
    timing = X.recorded(ws / TIMING) | kept
    details = machine()
    spent = {n: {**totals(timing[n]), "by_sitting": timing[n]["sittings"]} for n in plan if n in timing}
    figure = plot(numbers, study)
    # Everything is computed before the first file is written, into a folder beside `out` that
    # replaces it whole: a refusal or a kill leaves the last publication as it was.
    staging = out.with_name(f".{out.name}.publishing")
    shutil.rmtree(staging, ignore_errors=True)
    for name, texts in got.items():
        folder = staging / name
        write_json(folder / "overrides.json", record(ws, timing, plan, name)[0])
        # The experiment's params and lock (what it ran, for the check that it ran today's code),
        # and the per-image predictions byte for byte: what `vs_scratch` was computed from.
        for rel, text in texts.items():
            write_text(folder / rel, text)
    write_json(staging / "budget.json", numbers)
    write_text(staging / "summary.md", table(numbers, study))
    write_text(staging / "findings.md", finding(numbers))
    write_json(staging / "timing.json", {
        "machine": summary(details), "machine_details": details,
        "total": {k: round(sum(t[k] for t in spent.values()), 1) for k in ("wall_s", "cpu_s")},
        "experiments": spent})  # fmt: skip
    save_figure(figure, staging / "budget.png", dpi=110)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    for name in kept:
        shutil.rmtree(carried / name)
    if carried.is_dir() and not any(carried.iterdir()):
        carried.rmdir()
    print(f"budget: published {len(got)} experiments to {out}" + (f"; their carried folders removed from {carried}"
                                                                     if kept else ""))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, WORKSPACE, OUT, "where publish writes")
    ap.add_argument(
        "--carried", type=Path, default=CARRIED, help="where run carries each experiment (default: %(default)s)"
    )
    ap.add_argument("--data", type=Path, help="run: the baseline domain's PACS folder, as `make offline` takes it")
    ap.add_argument("--sources", type=Path, help="run: a folder of <domain>/<class>/<image> for the other domains")
    ap.add_argument("--epochs", type=int, nargs="+", default=DEFAULT_EPOCHS, help="the default recipe's budgets")
    ap.add_argument("--strong", type=int, default=DEFAULT_STRONG, help="the strong recipe's budget; 0: none")
    args = ap.parse_args(argv)
    plan = budgets(args.epochs, args.strong)
    ws = args.workspace.resolve()
    if args.command == "run":
        run(ws, plan, args.carried.resolve(), args.data, args.sources)
    else:
        publish(ws, args.out.resolve(), plan, args.carried.resolve())


if __name__ == "__main__":
    main()
