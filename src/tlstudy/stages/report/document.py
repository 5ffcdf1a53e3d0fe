"""The report document, section by section: `report/README.md` with its figures, and
`report/summary.md` (the one results table, quoted verbatim by the project's README)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tlstudy.lib import findings
from tlstudy.lib.atomic import write_json, write_text
from tlstudy.lib.uncertainty import p_value
from tlstudy.params import source_domains, target_domain
from tlstudy.stages.report import figures, headline, prediction_figures, sweeps, tables, verdicts
from tlstudy.stages.report import study as S
from tlstudy.stages.report.inputs import (
    Inputs,
    predictions,
    pretrain_curves,
    read_json,
    target_test,
)
from tlstudy.stages.report.tables import DASH, md_table, pct_ci, wilson_cell
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
        "- **Brackets hold 95 % intervals, and each says what it covers.** A test accuracy's interval is a "
        "bootstrap over the test images and the training seeds at once (over the images alone with one seed): how "
        "far a new run of the whole procedure — training and the selection of (lr, epoch) by validation accuracy — "
        "judged on new images of the domain could land. A validation accuracy's: Wilson's over the validation "
        "images for one seed, Student's t over the seeds for several. A figure from counts alone (the pretrained "
        "backbones): Wilson's over the images. The differences under *Tested comparisons* are bootstraps of the "
        f"same kind. Seeds per part here: {', '.join(str(n) for n in seeds)}.",
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


def majority(inp: Inputs) -> float | None:
    """The share of the test set's most frequent class: what predicting that class alone scores."""
    for part in inp.parts:
        for group in inp.details.get(part) or {}:
            if rows := predictions(part, group):
                return figures.majority_rate([r["label"] for r in rows])
    return None


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
                                  "test_acc_lo": t["lo"], "test_acc_hi": t["hi"],
                                  "interval": "95 % Wilson interval over test images"}}})  # fmt: skip
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
            fig = figures.curves_figure(f"pretrain {name}", rows_csv, runs, fig_dir / f"curves_pretrain_{name}.png",
                                        backbone="random init")  # fmt: skip
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
        fig = figures.curves_figure(part, inp.curves[part], inp.runs[part], fig_dir / f"curves_{part}.png",
                                    backbone=inp.backbone(part))  # fmt: skip
        if fig:
            md += [f"![{part} curves](figures/{fig.name})", ""]
    edges = tables.edges_table(inp)
    if edges:
        md += ["### Selections at the edge of the grid", "",
               "Every seed's selected (lr, epoch) in the parts above, counted where it sits at an edge of what was "
               "tried: a selection at the highest or lowest rate, or at the last epoch, says the optimum may lie "
               "beyond the grid, and the comparison between optimizers is only as fair as their grids.", "",
               edges, ""]  # fmt: skip
    return md


def family_table(inp: Inputs, family: dict) -> str:
    """A family's tests: each comparison's accuracies, difference with its interval, raw and
    adjusted p, and the rule's verdict."""
    rows = []
    for name, t in family["tests"].items():
        what = f"`{name}` − `{t['baseline']}`" if "baseline" in t else f"`{name}`"
        rows.append([what, inp.backbone(name), t["label"].removeprefix("95 % CI over "),
                     tables.points(t["diff"], t["lo"], t["hi"]), p_value(t["p"]), p_value(t["p_adjusted"]),
                     f"**{t['verdict']}**"])  # fmt: skip
    adjusted = f"p adjusted ({family['method_name']}, m = {family['m']})"
    return md_table(["part", "backbone", "over", "difference, points [95 % CI]", "p", adjusted, "verdict"], rows)


def findings_text(families: dict[str, dict]) -> str:
    """The findings in a few lines, every word from the rule (findings.verdict): per family, which
    tests passed, fell below and showed no difference. report/findings.md; the README quotes it."""
    lines = []
    for name, family in families.items():
        by = {v: [f"`{t}`" for t, r in family["tests"].items() if r["verdict"] == v] for v in findings.VERDICTS}
        said = "; ".join(f"{v}: {', '.join(tests)}" for v, tests in by.items() if tests)
        m = family["m"]
        lines.append(f"- **{name}** ({family['method_name']}-adjusted, {m} test{'s' * (m != 1)}): {said}.")
    return "\n".join(lines) + "\n" if lines else ""


def tests_section(inp: Inputs, families: dict[str, dict]) -> list[str]:
    """Every declared family of tests (verdicts.families), one table each, and the rule."""
    if not families:
        return []
    md = ["## Tested comparisons", ""]
    for name, family in families.items():
        counts = {v: sum(t["verdict"] == v for t in family["tests"].values()) for v in findings.VERDICTS}
        said = ", ".join(f"{v} in {n}" for v, n in counts.items() if n)
        md += [f"### {name}", "", family_table(inp, family), "", f"Of its {family['m']} tests: {said}.", ""]
    return md + [
        "Each difference is paired: the same test images, and the same seeds (for two optimizers of one part a "
        "seed fixes the same initialisation, data order and augmentation draws; across parts seed k meets seed k). "
        "Its interval and p come from one bootstrap that resamples the test images and the seeds at once, so they "
        "cover both sources of variation: a new training run judged on new images of the domain. The transfer "
        "family compares each part's selected model (its optimizer with the higher validation accuracy) with its "
        "baseline's: the part of the same subset trained from random init. Each family's p-values are corrected "
        "together (Holm: the chance of any false finding in the family stays below 5 %). The words follow one "
        f"rule: **{findings.PASSES}** when the adjusted p is below 0.05 and the whole interval is above 0, "
        f"**{findings.BELOW}** the same below 0, **{findings.NO_DIFFERENCE}** otherwise — which is not evidence "
        "that there is none. Per-image predictions of every seed: `details/predictions/<part>.csv`; all tests with "
        "raw and adjusted p: `report/tests.json`.",
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
        group = headline.selected_group(metrics)
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
    """The most confident mistake per true class of each part's selected model (the optimizer
    with the higher validation accuracy, as headline.json picks it; first seed)."""
    if not images_path.exists():
        return []
    import torch

    cache = torch.load(images_path, weights_only=True)
    index = {p: i for i, p in enumerate(cache["paths"])}
    out = []
    for part in parts:
        group = headline.selected_group(inp.details.get(part))
        if group is None:
            continue
        shown = [r for r in predictions(part, group) if r["path"] in index]
        picked = prediction_figures.confident_mistakes(shown, per_class=1)
        where = f"{part} ({label(group)}), {inp.backbone_short(part)}"
        out += [(where, r, cache["images"][index[r["path"]]]) for r in picked]
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
    families = verdicts.families(inp)
    write_json(OUT / "tests.json", families)
    write_text(OUT / "findings.md", findings_text(families))
    table = tables.summary(params, inp, study, families)
    write_text(OUT / "summary.md", table)
    md += ["## Summary", "", table]
    share = majority(inp)
    fig = figures.glance_figure(glance_rows(inp, study), fig_dir / "results_at_a_glance.png", majority=share)
    if fig:
        md += ["![Results at a glance](figures/results_at_a_glance.png)", ""]

    md += inspect_section(study, fig_dir)
    md += ["## Dataset statistics (training images)", "",
           tables.stats_table(read_json(Path("metrics/stats.json")), study), ""]  # fmt: skip
    md += pretrain_section(params, inp, fig_dir)
    md += parts_section(inp, study, fig_dir)
    md += sweeps.sweeps_section(params, inp, study, fig_dir, share)
    md += sweeps.placement_section(params, inp, study, fig_dir, share)
    md += tests_section(inp, families)
    md += backbones_section(params, inp)

    t = study["timing"]
    md += ["## Training time", "", tables.timing_table(inp.parts, inp.details, study, inp.optimizers), "",
           f"The study: about {t['sgd_ms_per_example']:g} ms per training image with SGD from scratch and for full "
           f"fine-tuning, about {100 * t['head_only_ms_per_example_reduction']:.0f} % less per image head-only.",
           ""]  # fmt: skip

    fig = prediction_figures.confusion_figure(confusion_matrices(inp), fig_dir / "confusion.png")
    if fig:
        labels = [label(o) for o in inp.optimizers]
        which = " and ".join([", ".join(labels[:-1]), labels[-1]] if len(labels) > 1 else labels)
        every = "both optimizers" if len(labels) == 2 else "every optimizer"
        md += ["## Confusion matrices (test images)", "",
               "Rows are the true classes, columns the predictions; a cell's shade is its share of the row. "
               f"Each part's selected model: of {which}, the higher validation accuracy, first seed "
               f"(`dvc plots show` draws the same predictions for {every}).", "",
               "![Confusion matrices](figures/confusion.png)", ""]  # fmt: skip

    # The parts on the full training split that are not sweeps (scratch, head-only, fine-tuned in the study).
    shown = [p for p in inp.parts if not inp.sweep(p) and inp.resolved[p].subset == "full"]
    examples = misclassified(shown, inp, Path("work/images.pt"))
    fig = prediction_figures.misclassified_figure(examples, fig_dir / "misclassified.png", per_class=1)
    md += ["## Misclassified test images: the most confident mistake per true class (top-3 predictions)", ""]
    md += ["![misclassified](figures/misclassified.png)", ""] if fig else ["None to show.", ""]

    diverged = [(p, r) for p in inp.parts for r in inp.runs[p] if r["diverged_epoch"] is not None]
    md += ["## Diverged runs", ""]
    rows = [[f"`{p}`", r["run"], r["diverged_epoch"]] for p, r in diverged]
    md += [md_table(["part", "run", "diverged at epoch"], rows)] if diverged else ["None."]
    write_text(OUT / "README.md", "\n".join(md) + "\n")
    headline.write(params)
    print(f"report: {OUT / 'README.md'} with {len(list(fig_dir.glob('*.png')))} figures")
    return OUT
