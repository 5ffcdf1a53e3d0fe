"""What the report reads: the pipeline's details, run records, curves and predictions, and the
params that say which parts ran from which backbone. No model is loaded."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tlstudy import params as P
from tlstudy.training import optimizers, transforms


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:  # as written, whatever this machine's locale
        return list(csv.DictReader(f))


def details(part: str) -> dict | None:
    return read_json(Path("details") / f"{part}.json")


def pretrain_details(name: str) -> dict | None:
    return read_json(Path("details/pretrain") / f"{name}.json")


def target_test(m: dict) -> dict:
    """A pretrained backbone on the target domain's test set: domain, acc, lo, hi, n. Details
    made before data.domain existed (those published under results/, until republished) name
    the target nowhere and call the numbers cartoon_test_*."""
    key = "target_test" if "target_test_acc" in m else "cartoon_test"
    return {"domain": m.get("target", "cartoon"), "acc": m[f"{key}_acc"], "lo": m.get(f"{key}_acc_lo"),
            "hi": m.get(f"{key}_acc_hi"), "n": m.get(f"{key}_n")}  # fmt: skip


def runs(part: str) -> list[dict]:
    return (read_json(Path("models") / part / "runs.json") or {}).get("runs", [])


def curves(part: str) -> list[dict]:
    return read_csv(Path("plots/train") / f"{part}.csv")


def pretrain_curves(name: str) -> list[dict]:
    return read_csv(Path("plots/pretrain") / f"{name}.csv")


def predictions(part: str, group: str) -> list[dict]:
    return read_csv(Path("plots/predictions") / part / f"{group}.csv")


def seed_correct(part: str) -> dict[str, dict[str, dict[str, bool]]]:
    """group -> seed -> test image -> whether that seed's selected model got it right, from the
    per-image predictions evaluate@ writes ({} where the part has none: not run, or published
    before they existed)."""
    path = Path("details/predictions") / f"{part}.csv"
    return seed_correct_text(path.read_text(encoding="utf-8")) if path.exists() else {}


def seed_columns(rows: list[dict]) -> dict[str, dict[str, str]]:
    """group -> seed -> its column of a per-image predictions file (`<group>:seed<k>`)."""
    out: dict[str, dict[str, str]] = {}
    for column in rows[0] if rows else {}:
        group, sep, seed = column.rpartition(":seed")
        if sep:
            out.setdefault(group, {})[seed] = column
    return out


def seed_correct_text(text: str) -> dict[str, dict[str, dict[str, bool]]]:
    """seed_correct from a per-image predictions file's text (as `git show` gives it)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    return {group: {seed: {r["path"]: r[column] == r["label"] for r in rows} for seed, column in seeds.items()}
            for group, seeds in seed_columns(rows).items()}  # fmt: skip


def seed_predictions(part: str) -> dict[str, tuple[str, ...]]:
    """group -> its predicted classes, every seed's columns in a row (details/predictions)."""
    rows = read_csv(Path("details/predictions") / f"{part}.csv")
    return {group: tuple(r[column] for column in seeds.values() for r in rows)
            for group, seeds in seed_columns(rows).items()}  # fmt: skip


def alike(predicted: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Groups whose models made the very same prediction on every test image, every seed (a blur
    wider than the image, say): they are one result, however many variants they count as."""
    same: dict[tuple[str, ...], list[str]] = {}
    for group, classes in predicted.items():
        same.setdefault(classes, []).append(group)
    return [groups for groups in same.values() if len(groups) > 1]


def one_class(predicted: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """group -> the one class its models predict for every test image, for the groups that do."""
    return {g: p[0] for g, p in predicted.items() if p and len(set(p)) == 1}


def provenance() -> dict | None:
    """Where the split came from (fetch: official lists, matched by name, or derived), with its
    counts when fetch recorded them."""
    label = read_json(Path("metrics/data.json"))
    if label is None:
        return None
    return {**(read_json(Path("details/data.json")) or {}), **label}


def families(params: dict) -> dict[str, str]:
    return {v: transforms.family(spec) for v, spec in params["augmentations"].items()}


def backbone(part: P.Part) -> str:
    """The backbone a part started from, in words for headings and tables."""
    init = part.described
    if init == "random":
        return "random init"
    if init == "imagenet":
        return "ImageNet"
    if init.startswith("random (stand-in"):
        return "random, standing in for ImageNet (offline)"
    if init.startswith("pretrained here: "):
        return init
    return f"state dict {init}"


class Inputs:
    """Everything the report reads, read once: per part its details, run records and curves,
    per pretrained backbone its details, the optimizers compared, and the facts about each part
    the sections ask for."""

    def __init__(self, params: dict, study: dict | None = None):
        self.params = params
        self.resolved = P.parts(params)
        self.parts = list(self.resolved)
        self.details = {p: details(p) for p in self.parts}
        self.runs = {p: runs(p) for p in self.parts}
        self.correct = {p: seed_correct(p) for p in self.parts}
        self.curves = {p: curves(p) for p in self.parts}
        self.pretrain = {name: pretrain_details(name) for name in params["pretrain"]}
        self.families = families(params)
        self.provenance = provenance()
        # The optimizers compared: those that trained a part, and those the study reports.
        ran = {g for p in self.parts if not self.sweep(p) for g in (self.details[p] or {})}
        ran |= {r["optimizer"] for p in self.parts for r in self.runs[p]}
        theirs = {o for s in (study or {}).get("parts", {}).values() for o in s if o in optimizers.REGISTRY}
        self.optimizers = [o for o in optimizers.NAMES if o in ran | theirs]

    def sweep(self, part: str) -> bool:
        return self.resolved[part].sweep

    def backbone(self, part: str) -> str:
        return backbone(self.resolved[part])

    def pairs(self) -> list[tuple[str, str]]:
        """Every pair of the optimizers compared, in registry order: (sgd, adam) for the study."""
        return [(a, b) for i, a in enumerate(self.optimizers) for b in self.optimizers[i + 1 :]]

    def backbone_short(self, part: str) -> str:
        """The backbone in a few words, for a figure's labels."""
        words = self.backbone(part)
        if words.startswith("pretrained here: "):
            return f"{words.split()[2]}, pretrained here"
        return "ImageNet stand-in: random" if words.startswith("random, standing in") else words
