"""What the report reads: the pipeline's details, run records, curves and predictions, and the
params that say which parts ran from which backbone. No model is loaded."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tlstudy import augment
from tlstudy.params import all_parts, describe_init, is_sweep, part_spec


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


def runs(part: str) -> list[dict]:
    return (read_json(Path("models") / part / "runs.json") or {}).get("runs", [])


def curves(part: str) -> list[dict]:
    return read_csv(Path("plots/train") / f"{part}.csv")


def pretrain_curves(name: str) -> list[dict]:
    return read_csv(Path("plots/pretrain") / f"{name}.csv")


def predictions(part: str, group: str) -> list[dict]:
    return read_csv(Path("plots/predictions") / part / f"{group}.csv")


def provenance() -> dict | None:
    """Where the split came from (fetch: official lists, matched by name, or derived), with its
    counts when fetch recorded them."""
    label = read_json(Path("metrics/data.json"))
    if label is None:
        return None
    return {**(read_json(Path("details/data.json")) or {}), **label}


def families(params: dict) -> dict[str, str]:
    return {v: augment.family(spec) for v, spec in params["augmentations"].items()}


def backbone(params: dict, part: str) -> str:
    """The backbone a part started from, in words for headings and tables."""
    init = describe_init(part_spec(params, part)["init"], params["imagenet_weights"], params, part)
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
    per pretrained backbone its details, and the facts about each part the sections ask for."""

    def __init__(self, params: dict):
        self.params = params
        self.parts = all_parts(params)
        self.details = {p: details(p) for p in self.parts}
        self.runs = {p: runs(p) for p in self.parts}
        self.curves = {p: curves(p) for p in self.parts}
        self.pretrain = {name: pretrain_details(name) for name in params["pretrain"]}
        self.families = families(params)
        self.provenance = provenance()

    def sweep(self, part: str) -> bool:
        return is_sweep(self.params, part)

    def backbone(self, part: str) -> str:
        return backbone(self.params, part)

    def backbone_short(self, part: str) -> str:
        """The backbone in a few words, for a figure's labels."""
        words = self.backbone(part)
        if words.startswith("pretrained here: "):
            return f"{words.split()[2]}, pretrained here"
        return "ImageNet stand-in: random" if words.startswith("random, standing in") else words
