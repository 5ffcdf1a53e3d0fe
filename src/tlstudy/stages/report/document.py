"""The report document, section by section: `report/README.md` with its figures, and
`report/summary.md` (the one results table, quoted verbatim by the project's README)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tlstudy.lib.atomic import write_text
from tlstudy.lib.uncertainty import p_value
from tlstudy.params import source_domains, target_domain
from tlstudy.stages.report import figures, headline, tables, verdicts
from tlstudy.stages.report import study as S
from tlstudy.stages.report.inputs import Inputs, predictions, pretrain_curves, read_json, target_test
from tlstudy.stages.report.tables import DASH, md_table, pct, pct_ci, wilson_cell
from tlstudy.training.optimizers import REGISTRY, label

OUT = Path("report")


def how_to_read(params: dict, inp: Inputs) -> list[str]:
    seeds = sorted({tables.n_seeds(m) for d in inp.details.values() for m in (d or {}).values()}) or [1]
    prov = inp.provenance
    domain = target_domain(params)
    study_domain = "" if domain == "cartoon" else f" (the study's target was cartoon, this one's is {domain})"
    split = f"the split: **{prov['split']}** (top of this report)" if prov else "the split's origin was not recorded"
    return [
        "## How to read this",
        "",
        "- **Every number is a percentage**: of the test images for test accuracy, of the validation images for "
        "validation accuracy, and the predicted probability in Table I.",
        "- **Brackets hold 95 % intervals.** For one run: Wilson's interval from the number of images (one test "
        "image of 237 is 0.42 points). For a mean over seeds: Student's t interval over the seeds, i.e. how much "
        "the whole procedure — training and the selection of (lr, epoch) by validation accuracy — moves with the "
        f"seed. Seeds per part here: {', '.join(str(n) for n in seeds)}.",
        "- **Seeds**: a training seed fixes the initialisation (the head's, for a pretrained backbone), the data "
        f"order and the augmentation draws; `seed` ({params['seed']}) fixes the data: the train/validation split "
        f"and the few-shot subset. Data: `{params['data']['source']}`, target domain {domain}, at "
        f"{params['data']['image_size']} px; "
        f"{split}.",
        "- **Backbones**: every heading and row names the backbone that part started from. The study started its "
        "head-only and fine-tuned parts from ImageNet; a part here may start from a random init or from a "
        "ResNet-18 pretrained here on PACS's other domains instead, so compare directions, not decimals.",
        f"- **The study's numbers** stand beside ours{study_domain}; {DASH} marks one it does not give. Loss axes are "
        "on a log "
        "scale, so a diverged run cannot flatten the rest.",
        "",
    ]


def split_line(prov: dict | None) -> list[str]:
    """Where the train/validation/test split came from, first thing: a split derived from the
    archive's own columns is not the study's, and every number below rests on it."""
    if prov is None:
        return []
    how = f" — {prov['how']}" if prov.get("how") else ""
    if prov["split"].startswith("derived") and "synthetic" not in prov["split"]:
        return [f"> **Split: {prov['split']}{how}.** Not the official PACS split: compare with the study's numbers "
                "with that in mind.", ""]  # fmt: skip
    return [f"**Split:** {prov['split']}{how}.", ""]


def glance_rows(inp: Inputs, study: dict) -> list[dict]:
    rows = []
    for part in inp.parts:
        if inp.sweep(part):
            continue
        m = inp.details.get(part) or {}
        if not m:
            continue
        rows.append({"label": f"{part}\n({inp.backbone_short(part)})",
                     "ours": {o: m[o] for o in inp.optimizers if m.get(o)},
                     "study": {o: S.pick(study, part, o) for o in inp.optimizers}})  # fmt: skip
    for name, m in inp.pretrain.items():
        if m:
            # In the colour of the optimizer it pretrained with.
            t = target_test(m)
            rows.append({"label": f"pretrain@{name} on {t['domain']}\n(no {t['domain']} training)",
                         "ours": {inp.params["pretrain"][name]["optimizer"]: {"test_acc": t["acc"],
                                  "test_acc_lo": t["lo"], "test_acc_hi": t["hi"]}}})  # fmt: skip
    return rows


def inspect_section(study: dict, fig_dir: Path) -> list[str]:
    inspect = read_json(Path("metrics/inspect.json"))
    md = ["## Part 1: SqueezeNet 1.0 on a Samoyed", ""]
    if not inspect:
        return md + ["Not run (`metrics/inspect.json` is missing).", ""]
    if inspect["weights"] == "random":
        md += ["> Random weights (demo or offline): the classes below are not a prediction.", ""]
    md += ["Table I: top-5 classes", "", tables.inspect_table(inspect, study), ""]
    for name, title in (("photo", "Input photo"), ("kernels", "First-layer kernels"),
                        ("features_before_relu", "First 16 channels before ReLU"),
                        ("features_after_relu", "First 16 channels after ReLU")):  # fmt: skip
        src = Path("plots/inspect") / f"{name}.png"
        if src.exists():
            shutil.copy2(src, fig_dir / f"inspect_{name}.png")
            md += [f"**{title}**", "", f"![{title}](figures/inspect_{name}.png)", ""]
    return md


def pretrain_section(params: dict, inp: Inputs, fig_dir: Path) -> list[str]:
    """Each pretrained backbone: validation accuracy overall and per domain, and the
    leave-one-domain-out figure (the pretrained 7-way model on the target domain's test set)."""
    md = []
    for name, spec in params["pretrain"].items():
        m = inp.pretrain.get(name)
        # What it pretrained on as it recorded it; params' sources where it has not run.
        domains = (m or {}).get("domains") or source_domains(params)
        md += [f"## Pretraining `{name}` on {', '.join(domains)}", ""]
        if m is None:
            md += ["Not run.", ""]
            continue
        rows = [[d, m["images"][d]["train"], m["images"][d]["val"],
                 wilson_cell(m["val_acc_per_domain"][d], m["images"][d]["val"])] for d in domains]  # fmt: skip
        n_val, t = sum(v["val"] for v in m["images"].values()), target_test(m)
        rows.append(["**all**", sum(v["train"] for v in m["images"].values()), n_val, wilson_cell(m["val_acc"], n_val)])
        settings = "".join(f"{k.replace('_', ' ')} {spec[k]:g}, " for k in REGISTRY[spec["optimizer"]].settings)
        md += [
            f"ResNet-18 from random init, {spec['optimizer']} lr {spec['lr']:g} ({settings}{spec['schedule']} "
            f"schedule), batch {spec['batch_size']}, augmentation "
            f"`{spec['augment']}`, {m['epochs']} epochs; best epoch {m['epoch']} by validation accuracy; "
            f"{m['sec_per_epoch']:.1f} s/epoch.",
            "",
            md_table(["domain", "train images", "validation images", "validation accuracy [95 % CI]"], rows),
            "",
            f"**Leave-one-domain-out:** this 7-way model on the {t['domain']} test set, with no {t['domain']} training "
            f"at all: **{wilson_cell(t['acc'], t['n'])}** ({t['n']} images).",
            "",
        ]
        rows_csv = pretrain_curves(name)
        if rows_csv:
            runs = [{"run": rows_csv[0]["run"], "optimizer": spec["optimizer"], "lr": spec["lr"],
                     "variant": spec["augment"], "diverged_epoch": None}]  # fmt: skip
            fig = figures.curves_figure(f"pretrain {name}", rows_csv, runs, fig_dir / f"curves_pretrain_{name}.png")
            md += [f"![pretraining curves](figures/{fig.name})", ""]
    return md


def parts_section(inp: Inputs, study: dict, fig_dir: Path) -> list[str]:
    md = ["## Tables II–VII: the selected run per optimizer", ""]
    for part in inp.parts:
        if inp.sweep(part):
            continue
        s = S.part(study, part)
        title = s.get("title", f"`{part}`")
        theirs = f"; the study's: {s['backbone']}" if s.get("backbone") else ""
        md += [f"### {title} (`{part}`) — backbone: {inp.backbone(part)}", "",
               f"*Backbone here: {inp.backbone(part)}{theirs}.*", "",
               tables.part_table(inp.details[part], s, inp.optimizers), ""]  # fmt: skip
        fig = figures.curves_figure(part, inp.curves[part], inp.runs[part], fig_dir / f"curves_{part}.png")
        if fig:
            md += [f"![{part} curves](figures/{fig.name})", ""]
    return md


def sweeps_section(params: dict, inp: Inputs, study: dict, fig_dir: Path) -> list[str]:
    md = []
    study_aug = study.get("augment", {})
    pairs = verdicts.placement_pairs(params)
    placed = {theirs for _, theirs in pairs}
    for part in [p for p in inp.parts if inp.sweep(p)]:
        where = " under the study's augmentation placement" if inp.resolved[part].placement == "study" else ""
        heading = f"## Table VIII: few-shot full fine-tuning per augmentation variant (`{part}`{where})"
        table = tables.augment_table(inp.details[part], study, inp.families)
        md += [f"{heading} — backbone: {inp.backbone(part)}", "", table, ""]
        if part not in placed and not any(part == ours for ours, _ in pairs):
            ours = inp.details[part] or {}
            series = [(f"ours ({part})", ours)]
            fig = figures.table8_figure(list(ours), inp.families, series, study_aug, fig_dir / f"table8_{part}.png")
            if fig:
                md += [f"![Table VIII, {part}](figures/{fig.name})", ""]
        fig = figures.sweep_figure(part, inp.curves[part], inp.runs[part], inp.details[part] or {}, inp.families,
                                   fig_dir / f"curves_{part}.png")  # fmt: skip
        if fig:
            md += [f"![{part} curves by family](figures/{fig.name})", ""]
    return md


def placement_section(params: dict, inp: Inputs, study: dict, fig_dir: Path) -> list[str]:
    """Each variant's accuracy under our placement and the study's, beside Table VIII, and what
    that says about the hypothesis for the study's colour-jitter collapse."""
    md = []
    for ours, theirs in verdicts.placement_pairs(params):
        if not (inp.sweep(ours) and inp.sweep(theirs)):
            continue
        a, b = inp.details.get(ours) or {}, inp.details.get(theirs) or {}
        variants = [v for v in params["augmentations"] if v in a or v in b]
        rows = [[f"`{v}`", inp.families[v], pct(S.variant(study, v).get("val_acc")),
                 pct(S.variant(study, v).get("test_acc")), pct_ci(a.get(v), "val_acc"), pct_ci(a.get(v), "test_acc"),
                 pct_ci(b.get(v), "val_acc"), pct_ci(b.get(v), "test_acc")] for v in variants]  # fmt: skip
        means = verdicts.family_means(params, a, b, study)
        fam_rows = [[g, m["n"], pct(m["study_val"]), pct(m["study_test"]), pct(m["ours_val"]), pct(m["ours_test"]),
                     pct(m["placed_val"]), pct(m["placed_test"])] for g, m in means.items() if m["n"]]  # fmt: skip
        series = [(f"ours ({ours})", a), (f"study's placement ({theirs})", b)]
        fig = figures.table8_figure(variants, inp.families, series, study.get("augment", {}),
                                    fig_dir / "table8_placements.png")  # fmt: skip
        md += [
            f"## Table VIII under both augmentation placements (`{ours}` and `{theirs}`)",
            "",
            "Ours: the uint8 images are augmented, then normalised; validation images are clean. The study's "
            "(`placement: study`): torchvision's transforms on the normalised float tensors, where colour "
            "operations clamp to [0, 1] and so wipe every below-mean value, while flips, affine and blur leave "
            "the value range alone; validation images augmented like the training ones (one draw per image). The "
            "test images are clean under both. Same seeds, grid and epochs for both.",
            "",
            *([f"![Table VIII under both placements](figures/{fig.name})", ""] if fig else []),
            md_table(
                [
                    "variant",
                    "family",
                    "study val",
                    "study test",
                    f"ours (`{ours}`) val",
                    "ours test",
                    f"study's placement (`{theirs}`) val",
                    "study's placement test",
                ],
                rows,
            ),  # fmt: skip
            "",
            "Means per group of variants (flips, rotations and blurs together, as the rule below has them):",
            "",
            md_table(
                [
                    "group",
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


def hypothesis_paragraph(means: dict) -> list[str]:
    h = verdicts.hypothesis(means)
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
        f"hidden from validation: at least 10, {'met' if h['held'][1] else 'not met'}). Both criteria: confirmed; "
        "one: partly; neither: not confirmed (a rule fixed before the runs).",
        "",
    ]


def optimizer_pair(inp: Inputs, first: str, second: str) -> tuple[str, str] | None:
    """One pair of optimizers tested in every part that ran both: (its table, its verdict)."""
    a, b = label(first), label(second)
    rows, tested = [], []
    for part in inp.parts:
        m = inp.details.get(part) or {}
        t = verdicts.optimizer_test(part, m, first, second)
        if t is None:
            continue
        tested.append((part, t))
        diff = f"{100 * t['diff']:+.2f}"
        if t["test"] == "paired t":
            diff += f" [{100 * t['diff_lo']:+.1f}, {100 * t['diff_hi']:+.1f}]"
            how = f"paired t-test, {t['n']} seeds (t = {t['t']:.2f}, {t['n'] - 1} df)"
        else:
            how = f"McNemar exact, one seed: {t['only_a']} images right by {a} alone, {t['only_b']} by {b} alone"
        rows.append([f"`{part}`", inp.backbone(part), pct_ci(m[first], "test_acc"), pct_ci(m[second], "test_acc"),
                     diff, how, f"**{p_value(t['p'])}**" if t["p"] < 0.05 else p_value(t["p"])])  # fmt: skip
    if not rows:
        return None
    significant = [f"`{part}`" for part, t in tested if t["p"] < 0.05]
    verdict = (
        f"p < 0.05 in {len(significant)} of {len(tested)} parts ({', '.join(significant)})"
        if significant
        else f"p ≥ 0.05 in all {len(tested)} parts: no difference between {a} and {b} is established"
    )
    header = ["part", "backbone", f"{a} test acc", f"{b} test acc", f"{a} − {b}, points [95 % CI]", "test",
              "p (two-sided)"]  # fmt: skip
    return md_table(header, rows), verdict


def optimizer_section(inp: Inputs) -> list[str]:
    """Each pair of the optimizers compared, tested part by part (SGD vs Adam in the study)."""
    pairs = {pair: got for pair in inp.pairs() if (got := optimizer_pair(inp, *pair)) is not None}
    if not pairs:
        return []
    md = [f"## {' vs '.join(label(o) for o in inp.optimizers)}: tested", ""]
    for (first, second), (table, _) in pairs.items():
        md += [f"### {label(first)} vs {label(second)}", ""] if len(pairs) > 1 else []
        md += [table, ""]
    verdicts_ = [(f"{label(a)} vs {label(b)}: " if len(pairs) > 1 else "") + v for (a, b), (_, v) in pairs.items()]
    return md + [
        "Where a part ran several seeds, a **paired t-test over seeds**: each seed trains both optimizers from the "
        "same initialisation, data order and augmentation draws, so its two test accuracies form a pair, and each "
        "seed selects its own (lr, epoch) by validation accuracy, so the test covers the whole procedure. Not a "
        "permutation test: with 5 seeds an exact sign-flip test has 2⁵ = 32 relabellings and a two-sided p of at "
        "least 0.0625, so it could never reach 5 %. With one seed, **McNemar's exact test** on the test images "
        "only asks whether these two selected models differ; it cannot separate the optimizers from training noise "
        f"(that needs seeds: `dvc exp run -S 'seeds=[0,1,2,3,4]'`). Result: {'; '.join(verdicts_)}.",
        "",
    ]


def backbones_section(params: dict, inp: Inputs) -> list[str]:
    """Parts that differ only in their backbone, side by side (e.g. ImageNet vs PACS sources)."""
    rows = []
    for part in params["transfer"]:
        spec = {k: v for k, v in params["transfer"][part].items() if k != "init"}
        for other, other_spec in params["parts"].items():
            if {k: v for k, v in other_spec.items() if k != "init"} != spec:
                continue
            for name in (other, part):
                m = inp.details.get(name) or {}
                rows.append([f"`{name}`", inp.backbone(name), *[pct_ci(m.get(o), "test_acc") for o in inp.optimizers]])
    if not rows:
        return []
    header = ["part", "backbone", *[f"{label(o)} test acc" for o in inp.optimizers]]
    return ["## Backbones side by side", "", md_table(header, rows), ""]


def confusion_matrices(inp: Inputs) -> list[tuple[str, list[str], list[list[int]]]]:
    """Per part that is not a sweep, the confusion matrix of its selected model (the optimizer
    headline.json reports: the higher validation accuracy), from the predictions `dvc plots`
    draws too."""
    out = []
    for part in inp.parts:
        if inp.sweep(part):
            continue
        metrics = {g: m for g, m in (inp.details.get(part) or {}).items() if isinstance(m, dict)}
        best = headline.selected(metrics)
        group = next((g for g, m in metrics.items() if m is best), None)
        rows = predictions(part, group) if group else []
        if not rows:
            continue
        classes = sorted({r["label"] for r in rows} | {r["predicted"] for r in rows})
        index = {c: i for i, c in enumerate(classes)}
        counts = [[0] * len(classes) for _ in classes]
        for r in rows:
            counts[index[r["label"]]][index[r["predicted"]]] += 1
        name = label(group)
        acc = 100 * sum(counts[i][i] for i in range(len(classes))) / len(rows)
        out.append((f"{part} ({name}): {acc:.1f} %", classes, counts))
    return out


def misclassified(parts: list[str], inp: Inputs, images_path: Path) -> list:
    """Three misclassified test images per part, from its optimizer with the best test accuracy."""
    if not images_path.exists():
        return []
    import torch

    cache = torch.load(images_path, weights_only=True)
    index = {p: i for i, p in enumerate(cache["paths"])}
    out = []
    for part in parts:
        tested = {g: m for g, m in (inp.details.get(part) or {}).items() if "test_acc" in m}
        if not tested:
            continue
        group = max(tested, key=lambda g: tested[g]["test_acc"])
        wrong = [r for r in predictions(part, group) if r["predicted"] != r["label"]]
        out += [(f"{part} ({group})", r, cache["images"][index[r["path"]]]) for r in wrong[:3] if r["path"] in index]
    return out


def run(params: dict) -> Path:
    study = S.numbers()
    inp = Inputs(params, study)
    fig_dir = OUT / "figures"
    shutil.rmtree(OUT, ignore_errors=True)
    fig_dir.mkdir(parents=True)

    md = ["# Transfer-learning study: report", ""]
    if params["data"]["source"] == "synthetic":
        md += ["> **Demo.** Synthetic images (7 classes of shapes), small images, few epochs, a reduced grid; "
               "a seeded random backbone stands in for ImageNet weights. The numbers show that the pipeline "
               "works, not what transfer learning achieves.", ""]  # fmt: skip
    md += split_line(inp.provenance)
    md += how_to_read(params, inp)
    table = tables.summary(params, inp, study)
    write_text(OUT / "summary.md", table)
    md += ["## Summary", "", table]
    fig = figures.glance_figure(glance_rows(inp, study), fig_dir / "results_at_a_glance.png")
    if fig:
        md += ["![Results at a glance](figures/results_at_a_glance.png)", ""]

    md += inspect_section(study, fig_dir)
    md += ["## Dataset statistics (training images)", "",
           tables.stats_table(read_json(Path("metrics/stats.json")), study), ""]  # fmt: skip
    md += pretrain_section(params, inp, fig_dir)
    md += parts_section(inp, study, fig_dir)
    md += sweeps_section(params, inp, study, fig_dir)
    md += placement_section(params, inp, study, fig_dir)
    md += optimizer_section(inp)
    md += backbones_section(params, inp)

    t = study["timing"]
    md += ["## Training time", "", tables.timing_table(inp.parts, inp.details, study, inp.optimizers), "",
           f"The study: about {t['sgd_ms_per_example']:g} ms per training image with SGD from scratch and for full "
           f"fine-tuning, about {100 * t['head_only_ms_per_example_reduction']:.0f} % less per image head-only.",
           ""]  # fmt: skip

    fig = figures.confusion_figure(confusion_matrices(inp), fig_dir / "confusion.png")
    if fig:
        labels = [label(o) for o in inp.optimizers]
        which = " and ".join([", ".join(labels[:-1]), labels[-1]] if len(labels) > 1 else labels)
        every = "both optimizers" if len(labels) == 2 else "every optimizer"
        md += ["## Confusion matrices (test images)", "",
               "Rows are the true classes, columns the predictions; a cell's shade is its share of the row. "
               f"Each part's selected model: of {which}, the higher validation accuracy, first seed "
               f"(`dvc plots show` draws the same predictions for {every}).", "",
               "![Confusion matrices](figures/confusion.png)", ""]  # fmt: skip

    shown = [p for p in ("scratch", "classifier", "finetune") if p in inp.parts]
    fig = figures.misclassified_figure(misclassified(shown, inp, Path("work/images.pt")), fig_dir / "misclassified.png")
    md += ["## Misclassified test images (true label, top-3 predictions)", ""]
    md += ["![misclassified](figures/misclassified.png)", ""] if fig else ["None to show.", ""]

    diverged = [(p, r) for p in inp.parts for r in inp.runs[p] if r["diverged_epoch"] is not None]
    md += ["## Diverged runs", ""]
    rows = [[f"`{p}`", r["run"], r["diverged_epoch"]] for p, r in diverged]
    md += [md_table(["part", "run", "diverged at epoch"], rows)] if diverged else ["None."]
    write_text(OUT / "README.md", "\n".join(md) + "\n")
    headline.write(params)
    print(f"report: {OUT / 'README.md'} with {len(list(fig_dir.glob('*.png')))} figures")
    return OUT
