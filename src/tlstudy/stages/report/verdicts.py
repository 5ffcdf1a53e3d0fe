"""The report's tested statements: one optimizer against another per part (SGD vs Adam in the
study), and the verdict on the hypothesis for the study's colour-jitter collapse (its augmentation
placement), by rules fixed before the runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tlstudy import params as P
from tlstudy.lib import uncertainty
from tlstudy.stages.report import study as S
from tlstudy.stages.report.inputs import read_csv
from tlstudy.training import transforms

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


def optimizer_test(part: str, m: dict | None, first: str, second: str) -> dict | None:
    """`first` − `second` test accuracy of one part, tested: a paired t-test over the seeds both
    ran (a seed is a pair: same initialisation, data order and draws), else, with one seed,
    McNemar's exact test on the two selected models' test predictions."""
    one, two = (m or {}).get(first), (m or {}).get(second)
    if not one or not two or "test_acc" not in one or "test_acc" not in two:
        return None
    a, b = seed_picks(one), seed_picks(two)
    common = [k for k in a if k in b]
    if len(common) >= 2:
        return uncertainty.paired_t([a[k]["test_acc"] for k in common], [b[k]["test_acc"] for k in common])
    folder = Path("plots/predictions") / part
    right = {
        opt: {r["path"]: r["predicted"] == r["label"] for r in read_csv(folder / f"{opt}.csv")}
        for opt in (first, second)
    }
    if not right[first] or right[first].keys() != right[second].keys():
        return None
    only_first = sum(ok and not right[second][p] for p, ok in right[first].items())
    only_second = sum(ok and not right[first][p] for p, ok in right[second].items())
    return {**uncertainty.mcnemar(only_first, only_second), "n": 1, "diff": one["test_acc"] - two["test_acc"]}


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
