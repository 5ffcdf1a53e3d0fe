"""The report's sections on the augmentation sweeps: Table VIII per sweep, what its accuracies
hide (variants that predicted alike, one-class predictors), and the two placements side by side
with the verdict on the hypothesis for the study's colour-jitter collapse. `majority` is the test
set's majority-class rate, drawn beside chance."""

from __future__ import annotations

from pathlib import Path

from tlstudy.stages.report import figures, tables, verdicts
from tlstudy.stages.report import study as S
from tlstudy.stages.report.inputs import Inputs, alike, one_class, seed_predictions
from tlstudy.stages.report.tables import md_table, pct, pct_ci


def sweeps_section(params: dict, inp: Inputs, study: dict, fig_dir: Path, majority: float | None) -> list[str]:
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
            fig = figures.table8_figure(list(ours), inp.families, series, study_aug, fig_dir / f"table8_{part}.png",
                                        majority=majority, backbone=inp.backbone(part))  # fmt: skip
            if fig:
                md += [f"![Table VIII, {part}](figures/{fig.name})", ""]
        md += prediction_notes(part)
        fig = figures.sweep_figure(part, inp.curves[part], inp.runs[part], inp.details[part] or {}, inp.families,
                                   fig_dir / f"curves_{part}.png", backbone=inp.backbone(part))  # fmt: skip
        if fig:
            md += [f"![{part} curves by family](figures/{fig.name})", ""]
    return md


def prediction_notes(part: str) -> list[str]:
    """What the accuracies alone hide: variants whose models predicted alike on every test image
    (each still counts once in its family's mean), and one-class predictors."""
    md = []
    predicted = seed_predictions(part)
    for groups in alike(predicted):
        md += [f"*Identical predictions on every test image:* {' = '.join(f'`{g}`' for g in groups)} — one result, "
               f"counted {len(groups)} times in the family means.", ""]  # fmt: skip
    single = one_class(predicted)
    by_class: dict[str, list[str]] = {}
    for group, cls in single.items():
        by_class.setdefault(cls, []).append(f"`{group}`")
    for cls, groups in by_class.items():
        md += [f"*One-class predictors:* {', '.join(groups)} predict `{cls}` for every test image, so their test "
               f"accuracy is the share of `{cls}` among the test images: the model has collapsed, it does not "
               "classify.", ""]  # fmt: skip
    return md


def placement_section(params: dict, inp: Inputs, study: dict, fig_dir: Path, majority: float | None) -> list[str]:
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
                                    fig_dir / "table8_placements.png", majority=majority,
                                    backbone=inp.backbone(ours))  # fmt: skip
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
