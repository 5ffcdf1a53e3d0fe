#!/usr/bin/env python3
"""How much pretraining does transfer need? The offline study's source-domain pretraining at
several budgets, as DVC experiments in the offline profile's workspace, and their publication.

    python scripts/pretraining-budget.py run        # the experiments not yet done, one at a time
    python scripts/pretraining-budget.py publish    # results/pretraining-budget/: metrics, timing, figure

Both take `--workspace DIR` (default work/profiles/offline), `--epochs N ...` (the default
recipe's budgets, default 12 30 60 120) and `--strong N` (the strong recipe's budget, default 60;
0 for none); `publish` also `--out DIR` (default results/pretraining-budget), so that it can
run on a small workspace of generated images.

`run` needs the offline workspace (`make offline` builds it, work/profiles/offline). Each budget
is one `dvc exp run -n <name>` there with its overrides (`budgets`), on the baseline's params.yaml:
the pretraining and the four transfer parts that start from it (head-only and fine-tuning, full
and few-shot, over the profile's seeds) re-run, the rest is restored from DVC's run-cache — but
for the strong recipe, whose new `augmentations.strong` is a param every training stage reads:
there `scratch` and `fewshot_scratch` re-run too (in the published sweep, to the same accuracies). The two
augmentation sweeps (every transfer part with an `augment` list) are left out of these
experiments (`~transfer.augment`, `~transfer.augment_study`): they answer another question and
would cost 2 x 28 runs per budget. Interrupted, it continues: finished experiments
are skipped, an unfinished one runs again with its finished stages restored from the run-cache
and its `train` stage resuming after its last finished run (work/runs/ stays in the workspace).
Wall and CPU seconds of every experiment and stage, per sitting, go to the workspace's
work/budget-timing.json.

`publish` reads each experiment's metrics and details from its git ref (they are committed with
it: cache: false) and writes results/pretraining-budget/: per experiment its params overrides,
params.yaml and dvc.lock, metrics/ and details/ of the pretraining and the transfer parts,
budget.json (the curve's numbers),
timing.json and budget.png. A reader gets the experiments themselves back by running `run` (every
stage restores from a shared DVC cache or remote if one holds them; otherwise it recomputes).

The strong recipe was fixed before any cartoon result of this sweep was seen: 60 epochs with the
colour augmentation that domain-generalisation work on PACS relies on (colour jitter 0.4 on
brightness, contrast and saturation, 0.1 on hue, random grayscale 0.2) on top of the default
flips and ±10° rotations — sketches are grayscale and paintings colourful, so invariance to
colour is what a backbone needs to carry across PACS's domains.

Independent cosine runs, not one warmup-stable-decay trunk with a decay branched off at each
budget: each budget is then exactly today's recipe at another length (the 12-epoch one is the
published backbone, restored from the run-cache), and the engine needs no new schedule, which
would be new stage code and a republication of results/offline. The price: 270 new pretraining
epochs (30 + 60 + 120 + 60 strong) where a trunk would need about 120 + 4 short decays + 60.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))
from tlstudy.lib.atomic import save_figure, write_json, write_text  # noqa: E402
from tlstudy.tools import profile  # noqa: E402

WORKSPACE = PROJECT / "work/profiles/offline"
OUT = PROJECT / "results/pretraining-budget"
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


def sh(ws: Path, *cmd: str) -> str:
    return subprocess.run(cmd, cwd=ws, check=True, capture_output=True, text=True).stdout


def experiments(ws: Path) -> dict[str, str]:
    """Finished experiments of the workspace's baseline, by name: their git refs."""
    refs = sh(ws, "git", "for-each-ref", "--format=%(refname)", "refs/exps/")
    head = sh(ws, "git", "rev-parse", "HEAD").strip()
    out = {}
    for ref in refs.split():
        # refs/exps/<2 chars>/<38 chars of the baseline sha>/<name>
        parts = ref.split("/")
        if len(parts) == 5 and parts[2] + parts[3] == head:
            out[parts[4]] = ref
    return out


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a running process and of the children it has waited for (each stage that
    DVC ran and reaped), from /proc; 0 where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return round(sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK"), 1)


def totals(entry: dict) -> dict:
    """An experiment's time over its sittings: wall and CPU seconds, each stage's wall seconds."""
    stages: dict[str, float] = {}
    for s in entry["sittings"]:
        for stage, sec in s["stages_run_s"].items():
            stages[stage] = round(stages.get(stage, 0) + sec, 1)
    return {
        "sittings": len(entry["sittings"]),
        "wall_s": round(sum(s["wall_s"] for s in entry["sittings"]), 1),
        "cpu_s": round(sum(s["cpu_s"] for s in entry["sittings"]), 1),
        "stages_run_s": stages,
    }


def without_sweeps(ws: Path) -> list[str]:
    """The -S removals of the baseline's augmentation sweeps: its transfer parts with an `augment` list."""
    import yaml

    transfer = yaml.safe_load(sh(ws, "git", "show", "HEAD:params.yaml")).get("transfer") or {}
    return [f"~transfer.{name}" for name, part in transfer.items() if part and part.get("augment")]


def exp_run(argv: list[str], ws: Path, env: dict, sitting: dict, save) -> int:
    """Runs one `dvc exp run`, its output passed through, measuring into `sitting` (and calling
    `save`) at each stage's start and every half minute; its exit status."""
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stage, started, saved = None, wall0, 0.0

    def measure(now: float) -> float:
        if stage:
            sitting["stages_run_s"][stage] = round(now - started, 1)
        sitting["wall_s"], sitting["cpu_s"] = round(now - wall0, 1), _tree_cpu_s(proc.pid)
        save()
        return now

    for line in proc.stdout:
        print(line, end="", flush=True)
        m, now = re.match(r"Running stage '([^']+)'", line), time.perf_counter()
        if m:
            saved = measure(now)
            stage, started = m.group(1), now
        elif now - saved > 30:
            saved = measure(now)
    code = proc.wait()
    measure(time.perf_counter())
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sitting["cpu_s"] = round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1)
    sitting["finished"] = code == 0
    save()
    return code


def run(ws: Path, plan: dict) -> None:
    if not (ws / "dvc.yaml").exists():
        raise SystemExit(f"{ws}: no offline workspace; run `make offline` first")
    timing_path = ws / "work/budget-timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(ws / "src"),
    )
    done, dvc, dropped = experiments(ws), profile.tool_argv("dvc"), without_sweeps(ws)
    for name, (_, _, overrides) in plan.items():
        if name in done:
            print(f"budget: {name}: done before; kept")
            continue
        # Every experiment starts from the baseline's params, not from the last experiment's.
        sh(ws, "git", "checkout", "HEAD", "--", "params.yaml")
        argv = [*dvc, "exp", "run", "-n", name]
        for o in overrides + dropped:
            argv += ["-S", o]
        print(f"budget: {name}: {' '.join(argv[len(dvc) :])}", flush=True)
        # One entry per sitting, written at every stage's end and every half minute: a sitting the
        # session's end kills keeps its wall time (the CPU of the stage it interrupted is lost with
        # the process), and the next sitting adds its own.
        sitting = {"wall_s": 0.0, "cpu_s": 0.0, "stages_run_s": {}, "finished": False}
        timing.setdefault(name, {"sittings": []})["sittings"].append(sitting)
        code = exp_run(argv, ws, env, sitting, lambda: write_json(timing_path, timing))
        if code:
            raise SystemExit(f"budget: {name}: dvc exp run failed ({code}); run again to continue")
    sh(ws, "git", "checkout", "HEAD", "--", "params.yaml")
    print("budget: every experiment is done; `python scripts/pretraining-budget.py publish` publishes them")


def read(ws: Path, ref: str, path: str) -> dict:
    return json.loads(sh(ws, "git", "show", f"{ref}:{path}"))


def curve(ws: Path, refs: dict[str, str], plan: dict) -> dict:
    """The numbers of the figure: per experiment, pretraining's and each transfer part's."""
    out = {}
    for name, ref in refs.items():
        epochs, recipe, _ = plan[name]
        pre = read(ws, ref, "details/pretrain/pacs_sources.json")
        # The sweep is on cartoon; pretraining has called its test numbers target_test_* since
        # data.domain, and budget.json keeps the names it was published with.
        pre = {k.replace("target_test", "cartoon_test"): v for k, v in pre.items()}
        entry = {"epochs": epochs, "recipe": recipe, "pretrain": {k: pre[k] for k in (
            "epoch", "val_acc", "val_acc_lo", "val_acc_hi", "cartoon_test_acc", "cartoon_test_acc_lo",
            "cartoon_test_acc_hi", "sec_per_epoch")}}  # fmt: skip
        details = {part: read(ws, ref, f"details/{part}.json") for part in PARTS + list(SCRATCH.values())}
        for part, d in details.items():
            entry[part] = {
                opt: {k: d[opt][k] for k in ("test_acc", "test_acc_lo", "test_acc_hi", "val_acc")} for opt in d
            }
        entry["vs_scratch"] = {part: versus_scratch(details, part) for part in PARTS}
        out[name] = entry
    return out


def versus_scratch(details: dict, part: str) -> dict:
    """A transfer part's selected model against its subset's scratch one: the paired t-test over
    seeds of their test accuracies (a seed fixes the data order and draws in both)."""
    from tlstudy.lib.uncertainty import paired_t

    scratch = SCRATCH["fewshot" if part.startswith("fewshot") else "full"]
    picked = {p: _selected(details[p]) for p in (part, scratch)}
    # One seed: details hold that run alone, no `seeds`.
    seeds = {p: m.get("seeds") or {"0": m} for p, (m, _) in picked.items()}
    common = sorted(set(seeds[part]) & set(seeds[scratch]), key=int)
    a, b = [seeds[part][k]["test_acc"] for k in common], [seeds[scratch][k]["test_acc"] for k in common]
    # One seed (the tiny test's settings) has a difference but no test.
    test = paired_t(a, b) if len(common) > 1 else {"test": None, "n": len(common), "diff": a[0] - b[0]}
    return {"optimizer": picked[part][1], "scratch": scratch, "scratch_optimizer": picked[scratch][1],
            **{k: test.get(k) for k in ("test", "n", "diff", "diff_lo", "diff_hi", "p")}}  # fmt: skip


def _selected(metrics: dict) -> tuple[dict, str]:
    """A part's model as `headline.json` selects it (the optimizer with the higher validation
    accuracy, SGD on a tie), with the optimizer's name."""
    from tlstudy.stages.report.headline import selected

    best = selected(metrics)
    return best, "SGD" if best is metrics.get("sgd") else "Adam"


def figure(numbers: dict, study: dict, path: Path) -> None:
    """Test accuracy against pretraining epochs (log axis): per part the selected model's mean
    with its interval, the strong recipe a star beside its budget, scratch's interval a band, the
    study's ImageNet value a thin line of the part's colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharey=True)
    colours = {"classifier": "#1f77b4", "finetune": "#d62728"}
    plain = [e for e in numbers.values() if e["recipe"] == "default recipe"]
    strong = [e for e in numbers.values() if e["recipe"] != "default recipe"]
    ticks = sorted({e["epochs"] for e in numbers.values()})
    for ax, subset in zip(axes, ("full", "fewshot")):
        scratch, opt = _selected(next(iter(numbers.values()))[SCRATCH[subset]])
        ax.axhspan(100 * scratch["test_acc_lo"], 100 * scratch["test_acc_hi"], color="0.87", zorder=0)
        ax.axhline(100 * scratch["test_acc"], color="0.55", lw=1, zorder=0)
        ax.text(ticks[0] * 0.93, 100 * scratch["test_acc_hi"] + 0.6, f"{SCRATCH[subset]} ({opt}), 95 % interval",
                fontsize=8, color="0.35")  # fmt: skip
        for part in [p for p in PARTS if p.startswith("fewshot") == (subset == "fewshot")]:
            colour = colours[part.removeprefix("fewshot_")]
            for entries, marker, ms, dx, ls in ((plain, "o", 5, 1.0, "-"), (strong, "*", 13, 1.07, "none")):
                if not entries:
                    continue
                points = [_selected(e[part]) for e in entries]
                ys = [100 * m["test_acc"] for m, _ in points]
                yerr = [[y - 100 * m["test_acc_lo"] for y, (m, _) in zip(ys, points)],
                        [100 * m["test_acc_hi"] - y for y, (m, _) in zip(ys, points)]]  # fmt: skip
                xs = [e["epochs"] * dx for e in entries]
                ax.errorbar(xs, ys, yerr=yerr, color=colour, marker=marker, ms=ms, capsize=3, ls=ls, lw=1.8)
                for x, y, (_, name) in zip(xs, ys, points):
                    if name == "SGD":
                        ax.annotate(name, (x, y), xytext=(5, -9), textcoords="offset points", fontsize=7, color=colour)
            ref = _selected(study["parts"][part])[0]["test_acc"] if part in study["parts"] else None
            if ref is not None:
                ax.axhline(100 * ref, color=colour, ls=":", lw=1.2)
                ax.text(ticks[-1] * 1.12, 100 * ref - 0.4, f"{COLUMNS[part]}, ImageNet (study)", fontsize=8,
                        color=colour, ha="right", va="top")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlim(ticks[0] * 0.85, ticks[-1] * 1.18)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("pretraining epochs on art_painting, photo, sketch (log scale)")
        ax.set_title(f"{'full subset (3 seeds)' if subset == 'full' else 'few-shot subset (5 seeds)'}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cartoon test accuracy (%): mean over seeds, 95 % interval")
    handles = [
        plt.Line2D([], [], color=colours["classifier"], marker="o", label="head-only (backbone frozen)"),
        plt.Line2D([], [], color=colours["finetune"], marker="o", label="fine-tuning (all layers)"),
        *(plt.Line2D([], [], color="0.3", marker="*", ms=11, ls="none", label=f"{e['epochs']} epochs, {e['recipe']}")
          for e in strong[:1]),
        plt.Line2D([], [], color="0.3", ls=":", label="the study's ImageNet value"),
        matplotlib.patches.Patch(color="0.87", label="from scratch, 95 % interval"),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(
        "Does more pretraining on PACS's other domains transfer to cartoon? Each point: the optimizer with the "
        "higher validation accuracy (Adam unless labelled SGD)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, path, dpi=110)


COLUMNS = {"classifier": "head-only", "finetune": "fine-tuning",
           "fewshot_classifier": "few-shot head-only", "fewshot_finetune": "few-shot fine-tuning"}  # fmt: skip


def _cell(metrics: dict, interval: bool = True) -> str:
    """The selected model's test accuracy, its interval, its optimizer."""
    best, opt = _selected(metrics)
    spread = f" [{100 * best['test_acc_lo']:.1f}, {100 * best['test_acc_hi']:.1f}]" if interval else ""
    return f"{100 * best['test_acc']:.1f}{spread} {opt}"


def _mark(test: dict) -> str:
    """▲ / ▼: above / below scratch at p < 0.05 (paired t over seeds); nothing otherwise."""
    return "" if test["p"] is None or test["p"] >= 0.05 else " ▲" if test["diff"] > 0 else " ▼"


def table(numbers: dict, study: dict) -> str:
    """summary.md: the curve as a table, scratch and the study's ImageNet values beside it."""
    head = ["pretraining on PACS's other domains", "backbone val", "cartoon, no cartoon training", *COLUMNS.values()]
    rows = [head, ["---"] * len(head)]
    for e in numbers.values():
        pre = e["pretrain"]
        rows.append([
            f"{e['epochs']} epoch{'s' * (e['epochs'] != 1)}"
            + ("" if e["recipe"] == "default recipe" else f", {e['recipe']}"),
            f"{100 * pre['val_acc']:.1f} (epoch {pre['epoch']})",
            f"{100 * pre['cartoon_test_acc']:.1f} [{100 * pre['cartoon_test_acc_lo']:.1f}, "
            f"{100 * pre['cartoon_test_acc_hi']:.1f}]",
            *(_cell(e[part]) + _mark(e["vs_scratch"][part]) for part in COLUMNS),
        ])  # fmt: skip
    first = next(iter(numbers.values()))
    scratch = {p: _cell(first[SCRATCH["fewshot" if p.startswith("fewshot") else "full"]]) for p in COLUMNS}
    rows.append(["none: scratch (fewshot_scratch)", "", "", *scratch.values()])
    rows.append(["ImageNet (the study)", "", "", *(_cell(study["parts"][p], interval=False) for p in COLUMNS)])
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    return (
        "Cartoon test accuracy (%) by pretraining budget: each part's optimizer with the higher validation "
        "accuracy (as in `headline.json`), mean over seeds [95 % interval]; ▲ / ▼: above / below scratch on the "
        "same subset at p < 0.05 (paired t-test over seeds, `vs_scratch` in `budget.json`).\n\n"
        + "\n".join(lines)
        + "\n"
    )


def publish(ws: Path, out: Path, plan: dict) -> None:
    from tlstudy.stages.report import study as S
    from tlstudy.tools.machine import machine, summary

    found = experiments(ws)
    refs = {n: found[n] for n in plan if n in found}  # the plan's order, not git's
    missing = [n for n in plan if n not in refs]
    if missing:
        raise SystemExit(f"budget: not run yet: {', '.join(missing)}; run `python scripts/pretraining-budget.py run`")
    numbers, study = curve(ws, refs, plan), S.numbers()
    timing = json.loads((ws / "work/budget-timing.json").read_text())
    dropped = without_sweeps(ws)
    for name, ref in refs.items():
        folder = out / name
        write_json(folder / "overrides.json", plan[name][2] + dropped)
        # The experiment's params and lock: what it ran, for the check that it ran today's code.
        for file in ("params.yaml", "dvc.lock", "headline.json"):
            write_text(folder / file, sh(ws, "git", "show", f"{ref}:{file}"))
        for sub in ("metrics", "details"):
            for path in [f"{sub}/pretrain/pacs_sources.json", *(f"{sub}/{p}.json" for p in PARTS)]:
                write_json(folder / path, read(ws, ref, path))
    write_json(out / "budget.json", numbers)
    write_text(out / "summary.md", table(numbers, study))
    details = machine()
    spent = {n: {**totals(timing[n]), "by_sitting": timing[n]["sittings"]} for n in refs if n in timing}
    write_json(out / "timing.json", {
        "machine": summary(details), "machine_details": details,
        "total": {k: round(sum(t[k] for t in spent.values()), 1) for k in ("wall_s", "cpu_s")},
        "experiments": spent})  # fmt: skip
    figure(numbers, study, out / "budget.png")
    print(f"budget: published {len(refs)} experiments to {out}")


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", nargs="?", default="run", choices=["run", "publish"])
    ap.add_argument("--workspace", type=Path, default=WORKSPACE, help="the offline workspace (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=OUT, help="where publish writes (default: %(default)s)")
    ap.add_argument("--epochs", type=int, nargs="+", default=DEFAULT_EPOCHS, help="the default recipe's budgets")
    ap.add_argument("--strong", type=int, default=DEFAULT_STRONG, help="the strong recipe's budget; 0: none")
    args = ap.parse_args(argv)
    plan = budgets(args.epochs, args.strong)
    ws = args.workspace.resolve()
    if args.command == "run":
        run(ws, plan)
    else:
        out = args.out.resolve()
        out.mkdir(parents=True, exist_ok=True)
        publish(ws, out, plan)


if __name__ == "__main__":
    main()
