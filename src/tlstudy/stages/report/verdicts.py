"""The report's tested statements, in declared families corrected together (findings.py): one
optimizer against another across parts (SGD vs Adam in the study), each transfer part against
training from scratch; and the verdict on the hypothesis for the study's colour-jitter collapse
(its augmentation placement), by rules fixed before the runs."""

from __future__ import annotations

import dataclasses

from tlstudy import params as P
from tlstudy.lib import findings, resampling
from tlstudy.stages.report import headline
from tlstudy.stages.report import study as S
from tlstudy.training import optimizers, transforms

# The verdict compares colour jitter with the variants that leave the value range alone: flips,
# rotations and blurs together ("geometric and blur"), as the rule was written before the runs.
VERDICT_GROUPS = ("colour jitter", "grayscale / invert", "geometric and blur", "none")
_GROUP_OF = {"flip / rotation": "geometric and blur", "blur": "geometric and blur"}


def verdict_group(spec: list) -> str:
    fam = transforms.family(spec)
    return _GROUP_OF.get(fam, fam)


def seed_picks(m: dict) -> dict[str, dict]:
    """Each seed's selection of a group: under `seeds` for several, the entry itself for one."""
    return m.get("seeds") or {"0": m}


def difference(a: dict[str, dict[str, bool]] | None, b: dict[str, dict[str, bool]] | None) -> dict | None:
    """a − b test accuracy from two groups' per-image results (seed -> image -> right), over the
    seeds both ran, paired by seed and image: a bootstrap over the test images and the seeds
    (resampling.paired_image_seed_difference). None where they share no seed or not the same images."""
    seeds = [s for s in a or {} if s in (b or {})]
    if not seeds:
        return None
    images = sorted(a[seeds[0]])
    if any(sorted(x[s]) != images for x in (a, b) for s in seeds):
        return None
    return resampling.paired_image_seed_difference(
        [[a[s][i] for i in images] for s in seeds], [[b[s][i] for i in images] for s in seeds]
    )


def optimizer_family(inp, first: str, second: str) -> dict | None:
    """`first` − `second` in every part that ran both (a seed is a pair: same initialisation, data
    order and draws), one declared family corrected together (Holm): findings.judge's result."""
    tests = {}
    for part in inp.parts:
        if not inp.sweep(part) and (d := difference(inp.correct[part].get(first), inp.correct[part].get(second))):
            tests[part] = d
    name = f"{optimizers.label(first)} vs {optimizers.label(second)} across parts"
    return findings.judge(name, tests) if tests else None


def baseline(inp, part: str) -> str | None:
    """The part a transfer part is measured against: the same subset, random init, all layers
    trained (scratch for the full training split, fewshot_scratch for the few-shot subset)."""
    own = inp.resolved[part]
    if own.init == "random" or own.sweep:
        return None
    return next((name for name, other in inp.resolved.items() if not other.sweep and other.init == "random"
                 and other.trainable == "all" and other.subset == own.subset), None)  # fmt: skip


def transfer_family(inp) -> dict | None:
    """Each transfer part's selected model − its baseline's, one declared family (Holm)."""
    tests = {}
    for part in inp.parts:
        base = baseline(inp, part)
        if base is None:
            continue
        ours, theirs = headline.selected_group(inp.details.get(part)), headline.selected_group(inp.details.get(base))
        d = difference(inp.correct[part].get(ours), inp.correct[base].get(theirs))
        if d:
            tests[part] = {**d, "baseline": base, "groups": [ours, theirs]}
    return findings.judge("each transfer part vs scratch", tests) if tests else None


def families(inp) -> dict[str, dict]:
    """Every declared family of the report's tests, judged: raw and adjusted p, verdict words."""
    out = {}
    for pair in inp.pairs():
        if got := optimizer_family(inp, *pair):
            out[got["family"]] = got
    if got := transfer_family(inp):
        out[got["family"]] = got
    return out


def placement_pairs(params: dict) -> list[tuple[str, str]]:
    """(ours, study's) sweep parts that differ only in their augmentation placement (and perhaps
    in which variants they sweep: the tables show each variant that either ran)."""

    def rest(part: P.Part) -> P.Part:
        return dataclasses.replace(part, name="", placement="", variants=())

    parts = P.parts(params)
    return [
        (ours, theirs)
        for theirs, b in parts.items()
        if b.placement == "study"
        for ours, a in parts.items()
        if a.placement == "pixels" and rest(a) == rest(b)
    ]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def family_means(params: dict, ours: dict, placed: dict, study: dict) -> dict[str, dict]:
    """Per verdict group of variants: how many, and the mean validation and test accuracy of the
    study, of ours and of the study's placement (None where none ran)."""
    augmentations = params["augmentations"]
    variants = [v for v in augmentations if v in ours or v in placed]
    tables = {"study": {v: S.variant(study, v) for v in variants}, "ours": ours, "placed": placed}
    means = {}
    for group in VERDICT_GROUPS:
        members = [v for v in variants if verdict_group(augmentations[v]) == group]
        means[group] = {"n": len(members)}
        for label, table in tables.items():
            for key in ("val", "test"):
                got = [table[v][f"{key}_acc"] for v in members if (table.get(v) or {}).get(f"{key}_acc") is not None]
                means[group][f"{label}_{key}"] = _mean(got)
    return means


def hypothesis(means: dict) -> dict | None:
    """The verdict on the hypothesis, by a rule fixed before the runs: the study's placement must
    (1) make the colour-jitter variants lose at least 10 points of test accuracy against the
    geometric and blur ones beyond what they lose under ours, and (2) hide it from validation:
    their validation-minus-test gap must exceed that of the geometric and blur ones by at least 10
    points. Both: confirmed; one: partly; neither: not confirmed."""
    colour, geo = means["colour jitter"], means["geometric and blur"]
    needed = ("ours_test", "placed_test", "placed_val")
    if not colour["n"] or not geo["n"] or any(colour[k] is None or geo[k] is None for k in needed):
        return None
    drop = (geo["placed_test"] - colour["placed_test"]) - (geo["ours_test"] - colour["ours_test"])
    hidden = (colour["placed_val"] - colour["placed_test"]) - (geo["placed_val"] - geo["placed_test"])
    held = [drop >= 0.10, hidden >= 0.10]
    return {"verdict": {2: "confirmed", 1: "partly confirmed", 0: "not confirmed"}[sum(held)],
            "drop": drop, "hidden": hidden, "held": held}  # fmt: skip
