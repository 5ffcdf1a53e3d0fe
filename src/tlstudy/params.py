"""params.yaml: loading, validation, and each part resolved once into a `Part` that stages read.

Every stage validates the whole file before doing any work, so a typo fails `fetch` at once
instead of `train@augment` an hour later. The optimizers and their settings sections come from
the registry in optimizers.py.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlstudy.lib import yamlio
from tlstudy.lib.errors import ParamsError  # noqa: F401  (callers catch it as params.ParamsError)
from tlstudy.training import optimizers

OPTIMIZERS = optimizers.NAMES
SOURCES = ("pacs", "local", "synthetic")
# PACS's domains: `data.domain` is the target, the other three are what pretraining learns from.
DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
SUBSETS = ("full", "fewshot")
TRAINABLE = ("all", "head")
IMAGENET_WEIGHTS = ("imagenet", "random")
ON_BAD_IMAGE = ("error", "skip")
PRECISIONS = ("auto", "fp32", "bf16")  # engine.speed_for reads it

TOP_KEYS = {
    "seed",
    "seeds",
    "lr",
    "optimizer",
    "epochs",
    "batch_size",
    "precision",
    "imagenet_weights",
    "inspect",
    "data",
    "fewshot",
    "parts",
    "pretrain",
    "transfer",
    "augmentations",
} | set(OPTIMIZERS)  # each optimizer's settings section
DATA_KEYS = {
    "source",
    "path",
    "url",
    "sha256",
    "image_size",
    "val_fraction",
    "test_fraction",
    "on_bad_image",
    "synthetic_per_class",
    "domain",
}
PART_KEYS = {"subset", "init", "trainable", "optimizer", "lr", "augment", "epochs", "seeds", "placement"}
# Where a part's augmentation acts: `pixels` (ours: on the uint8 images before normalisation,
# validation images clean) or `study` (the study's: after Normalize, on float tensors with
# torchvision's float semantics, validation images augmented like the training images).
PLACEMENTS = ("pixels", "study")
PRETRAIN_KEYS = {
    "source",
    "path",
    "epochs",
    "optimizer",
    "lr",
    "schedule",
    "batch_size",
    "augment",
    "val_fraction",
}
# A backbone's optimizer settings sit in its own section: those of its optimizer are required.
PRETRAIN_SETTINGS = {key for o in optimizers.REGISTRY.values() for key in o.settings}
SCHEDULES = ("constant", "cosine")
BACKBONES = Path("backbones")  # pretrain@<name> writes backbones/<name>.pt


def load(path: str | Path = "params.yaml", transforms: bool = True) -> dict[str, Any]:
    """params.yaml, validated (`validate`; `transforms`: every augmentation variant built)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found (run from the project root, where params.yaml is)")
    try:
        params = yamlio.load(path.read_text())
    except yamlio.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    validate(params, source=str(path), transforms=transforms)
    return params


def as_list(value: Any) -> list:
    """`lr` and `optimizer` may be a scalar (what `dvc exp run -S lr=0.01` writes) or a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def describe_init(init: str, imagenet_weights: str) -> str:
    """How a backbone is initialised, in words for logs, run records and the report."""
    if init == "imagenet" and imagenet_weights == "random":
        return "random (stand-in for imagenet: offline)"
    return init


def backbone_file(name: str) -> Path:
    return BACKBONES / f"{name}.pt"


def target_domain(params: dict) -> str:
    """The PACS domain the study trains and tests on; params from before `data.domain` existed
    (published ones among them) were cartoon's."""
    return params["data"].get("domain", "cartoon")


def source_domains(params: dict) -> list[str]:
    """What pretraining learns from: PACS's other three domains, in DOMAINS' order."""
    return [d for d in DOMAINS if d != target_domain(params)]


def data_path(params: dict) -> Path:
    """`data.path` with `{domain}` as data.domain: each target domain unpacks to its own folder,
    so a change of domain never finds another domain's images complete."""
    return Path(params["data"]["path"].replace("{domain}", target_domain(params)))


@dataclass(frozen=True)
class Part:
    """One part of the study as it trains: its own settings, else the top level's, resolved and
    validated once (`part`, `parts`)."""

    name: str
    subset: str  # full | fewshot
    init: str  # random | imagenet | a state dict's path (a part under `transfer`: its backbone's file)
    backbone: str | None  # the backbone pretrained here it starts from, by name
    described: str  # its init in words (describe_init), for logs, run records and the report
    trainable: str  # all | head
    grid: dict[str, tuple[float, ...]]  # optimizer -> its learning rates, in params order
    variants: tuple[str, ...]  # augmentation variants, in params order
    seeds: tuple[int, ...]
    epochs: int
    placement: str  # pixels | study (PLACEMENTS)

    @property
    def optimizers(self) -> tuple[str, ...]:
        return tuple(self.grid)

    @property
    def sweep(self) -> bool:
        """A part over several augmentation variants (Table VIII): evaluated and reported per variant
        and family, its selections kept as test logits, not models."""
        return len(self.variants) > 1

    @property
    def runs(self) -> int:
        """Its runs per seed."""
        return len(self.variants) * sum(len(rates) for rates in self.grid.values())

    def shape(self) -> dict:
        """What every run of the part shares, beside the run's own optimizer, lr, variant and seed
        (the resume key holds it)."""
        keys = ("subset", "init", "trainable", "epochs", "placement")
        return {k: getattr(self, k) for k in keys}


def all_parts(params: dict) -> list[str]:
    """Every part, those under `parts` first, then those under `transfer`."""
    return [*params["parts"], *params["transfer"]]


def part(params: dict, name: str) -> Part:
    for group in ("parts", "transfer"):
        if name in params[group]:
            return _part(params, group, name)
    raise ParamsError(f"params: no part {name!r} under 'parts' or 'transfer'; known: {', '.join(all_parts(params))}")


def parts(params: dict) -> dict[str, Part]:
    """Every part by name, in all_parts' order."""
    return {name: part(params, name) for name in all_parts(params)}


# --- validation -------------------------------------------------------------------------


def _unknown(keys, allowed, where: str) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ParamsError(f"params: unknown key '{where}{key}'{hint}; accepted: {', '.join(sorted(allowed))}")


def _number(value, key: str, *, integer=False, minimum=None, strict_min=False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        kind = "an integer" if integer else "a number"
        raise ParamsError(f"params: '{key}' must be {kind}, got {value!r}")
    if minimum is not None and (value <= minimum if strict_min else value < minimum):
        bound = f"> {minimum}" if strict_min else f">= {minimum}"
        raise ParamsError(f"params: '{key}' must be {bound}, got {value!r}")


def _choice(value, choices, key: str) -> None:
    if value not in choices:
        raise ParamsError(f"params: '{key}' is {value!r}; accepted: {', '.join(choices)}")


def _lr_list(value, key: str) -> None:
    values = as_list(value)
    if not values:
        raise ParamsError(f"params: '{key}' is empty; give at least one learning rate")
    for v in values:
        _number(v, key, minimum=0, strict_min=True)


def _lr_grid(value, key: str) -> None:
    """`lr`: one list for every optimizer, or a mapping optimizer -> its own list."""
    if not isinstance(value, dict):
        return _lr_list(value, key)
    if not value:
        raise ParamsError(f"params: '{key}' is empty; give a list of learning rates or one per optimizer")
    _unknown(value, OPTIMIZERS, f"{key}.")
    for name, rates in value.items():
        _lr_list(rates, f"{key}.{name}")


def _rates(lr, optimizer: str, key: str, where: str) -> tuple[float, ...]:
    """The learning rates `optimizer` trains at, from an `lr` that _lr_grid accepted."""
    if isinstance(lr, dict):
        if optimizer not in lr:
            raise ParamsError(
                f"params: '{key}' gives no learning rates for {optimizer}, which '{where}' trains with; "
                f"accepted: a list for every optimizer, or one under '{key}.{optimizer}'"
            )
        lr = lr[optimizer]
    return tuple(float(x) for x in as_list(lr))


def _optimizer_list(value, key: str) -> None:
    values = as_list(value)
    if not values:
        raise ParamsError(f"params: '{key}' is empty; accepted: {', '.join(OPTIMIZERS)}")
    for v in values:
        _choice(v, OPTIMIZERS, key)
    if len(set(values)) != len(values):
        raise ParamsError(f"params: '{key}' repeats an optimizer ({values}); each must be listed once")


def validate(params: dict, source: str = "params.yaml", transforms: bool = True) -> None:
    """Refuse what the study cannot run, naming the key and what it accepts. Every augmentation
    variant's steps are checked by name; with `transforms`, each is also built by torchvision,
    whose own checks then judge its arguments (the stages that build none skip its import)."""
    missing = sorted(TOP_KEYS - set(params))
    if missing:
        raise ParamsError(f"{source}: missing section(s): {', '.join(missing)}")
    _unknown(params, TOP_KEYS, "")
    _number(params["seed"], "seed", integer=True, minimum=0)
    _seeds(params["seeds"], "seeds")
    _lr_grid(params["lr"], "lr")
    _optimizer_list(params["optimizer"], "optimizer")
    _number(params["epochs"], "epochs", integer=True, minimum=1)
    _number(params["batch_size"], "batch_size", integer=True, minimum=1)
    _choice(params["imagenet_weights"], IMAGENET_WEIGHTS, "imagenet_weights")
    _choice(params["precision"], PRECISIONS, "precision")
    for opt, spec in optimizers.REGISTRY.items():
        keys = set(spec.settings)
        if not isinstance(params[opt], dict):
            raise ParamsError(f"params: '{opt}' must be a mapping with keys {sorted(keys)}")
        _unknown(params[opt], keys, f"{opt}.")
        for key, value in params[opt].items():
            _number(value, f"{opt}.{key}", minimum=0)

    inspect = params["inspect"]
    if not isinstance(inspect, dict):
        raise ParamsError("params: 'inspect' must be a mapping with keys image, weights")
    _unknown(inspect, {"image", "weights"}, "inspect.")
    for key in ("image", "weights"):
        if not isinstance(inspect.get(key), str) or not inspect[key]:
            raise ParamsError(f"params: 'inspect.{key}' must be a path (weights: also imagenet or random)")

    data = params["data"]
    _unknown(data, DATA_KEYS, "data.")
    _choice(data.get("source"), SOURCES, "data.source")
    _choice(target_domain(params), DOMAINS, "data.domain")
    _number(data.get("image_size"), "data.image_size", integer=True, minimum=8)
    for key in ("val_fraction", "test_fraction"):
        value = data.get(key)
        _number(value, f"data.{key}", minimum=0, strict_min=True)
        if value >= 1:
            raise ParamsError(f"params: 'data.{key}' must be < 1, got {value!r}")
    _choice(data.get("on_bad_image", "error"), ON_BAD_IMAGE, "data.on_bad_image")
    _number(data.get("synthetic_per_class"), "data.synthetic_per_class", integer=True, minimum=4)
    if data["source"] in ("pacs", "local") and not data.get("path"):
        raise ParamsError(f"params: 'data.path' is required for data.source: {data['source']}")

    if not isinstance(params["fewshot"], dict):
        raise ParamsError("params: 'fewshot' must be a mapping with key per_class")
    _unknown(params["fewshot"], {"per_class"}, "fewshot.")
    _number(params["fewshot"].get("per_class"), "fewshot.per_class", integer=True, minimum=2)

    augmentations = params["augmentations"]
    if not isinstance(augmentations, dict) or not augmentations:
        raise ParamsError("params: 'augmentations' must map variant names to transform lists")
    from tlstudy.training import transforms as T  # late: keeps torchvision off the import path of params

    for name, spec in augmentations.items():
        (T.build if transforms else T.check)(spec, where=f"augmentations.{name}")

    parts = params["parts"]
    if not isinstance(parts, dict) or not parts:
        raise ParamsError("params: 'parts' must map part names to their settings")
    pretrain = params["pretrain"]
    if not isinstance(pretrain, dict):
        raise ParamsError("params: 'pretrain' must map backbone names to their settings ({} trains none)")
    for name, spec in pretrain.items():
        _pretrain(name, spec, augmentations)
    transfer = params["transfer"]
    if not isinstance(transfer, dict):
        raise ParamsError("params: 'transfer' must map part names to their settings ({} for none)")
    for group, entries in (("parts", parts), ("transfer", transfer)):
        for name in entries:
            _part(params, group, name)
    for name in set(parts) & set(transfer):
        raise ParamsError(f"params: part {name!r} is under both 'parts' and 'transfer'; a part name must be unique")
    for name, spec in transfer.items():
        if spec["init"] not in pretrain:
            raise ParamsError(
                f"params: 'transfer.{name}.init' is {spec['init']!r}; accepted: a backbone under 'pretrain' "
                f"({', '.join(pretrain) or 'none declared'})"
            )
    used = {spec["init"] for spec in transfer.values()}
    for name in pretrain:
        if name not in used:
            # A declared backbone is a DVC stage: it would train for nothing.
            raise ParamsError(
                f"params: 'pretrain.{name}' is the init of no part under 'transfer'; remove it "
                "(or set pretrain: {}) so that pretraining does not run for nothing"
            )


def _seeds(value, key: str) -> None:
    values = as_list(value)
    if not values:
        raise ParamsError(f"params: '{key}' is empty; give at least one seed, e.g. [0] or [0, 1, 2, 3, 4]")
    for v in values:
        _number(v, key, integer=True, minimum=0)
    if len(set(values)) != len(values):
        raise ParamsError(f"params: '{key}' repeats a seed ({values}); each seed must be listed once")


def _variant(name, augmentations: dict, where: str) -> None:
    if name not in augmentations:
        close = difflib.get_close_matches(str(name), list(augmentations), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ParamsError(
            f"params: '{where}' names unknown variant {name!r}{hint}; accepted: 'all' or names under 'augmentations'"
        )


def _part(params: dict, group: str, name: str) -> Part:
    """A part's section validated and resolved against the top level (whose own keys `validate`
    checked first)."""
    where, spec = f"{group}.{name}", params[group][name]
    if not isinstance(spec, dict):
        raise ParamsError(f"params: '{where}' must be a mapping with {sorted(PART_KEYS)}")
    _unknown(spec, PART_KEYS, f"{where}.")
    _choice(spec.get("subset"), SUBSETS, f"{where}.subset")
    _choice(spec.get("trainable"), TRAINABLE, f"{where}.trainable")
    init = spec.get("init")
    if not isinstance(init, str) or not init:
        raise ParamsError(f"params: '{where}.init' must be random, imagenet or a path to a state dict")
    if "optimizer" in spec:
        _optimizer_list(spec["optimizer"], f"{where}.optimizer")
    if "lr" in spec:
        _lr_grid(spec["lr"], f"{where}.lr")
    if "epochs" in spec:
        _number(spec["epochs"], f"{where}.epochs", integer=True, minimum=1)
    if "seeds" in spec:
        _seeds(spec["seeds"], f"{where}.seeds")
    placement = spec.get("placement", "pixels")
    _choice(placement, PLACEMENTS, f"{where}.placement")
    augment = spec.get("augment", ["none"])
    variants = list(params["augmentations"]) if augment == "all" else as_list(augment)
    for variant in variants:
        _variant(variant, params["augmentations"], f"{where}.augment")
    lr_key = f"{where}.lr" if "lr" in spec else "lr"
    lr = spec.get("lr", params["lr"])
    grid = {o: _rates(lr, o, lr_key, where) for o in dict.fromkeys(as_list(spec.get("optimizer", params["optimizer"])))}
    backbone = init if group == "transfer" else None
    if backbone is not None:
        init = str(backbone_file(backbone))
        described = f"pretrained here: {backbone} ({', '.join(source_domains(params))})"
    else:
        described = describe_init(init, params["imagenet_weights"])
    return Part(
        name=name, subset=spec["subset"], init=init, backbone=backbone, described=described,
        trainable=spec["trainable"], grid=grid, variants=tuple(variants),
        seeds=tuple(as_list(spec.get("seeds", params["seeds"]))), epochs=spec.get("epochs", params["epochs"]),
        placement=placement,
    )  # fmt: skip


def _pretrain(name: str, spec, augmentations: dict) -> None:
    where = f"pretrain.{name}"
    if not isinstance(spec, dict):
        raise ParamsError(f"params: '{where}' must be a mapping with {sorted(PRETRAIN_KEYS)}")
    if "domains" in spec:
        raise ParamsError(
            f"params: '{where}.domains' is no longer read: a backbone pretrains on PACS's domains other than "
            "data.domain; remove the key and set data.domain"
        )
    _unknown(spec, PRETRAIN_KEYS | PRETRAIN_SETTINGS, f"{where}.")
    missing = sorted(PRETRAIN_KEYS - set(spec))
    if missing:
        raise ParamsError(f"params: '{where}' lacks {', '.join(missing)}")
    _choice(spec["optimizer"], OPTIMIZERS, f"{where}.optimizer")
    settings = optimizers.REGISTRY[spec["optimizer"]].settings
    missing = [key for key in settings if key not in spec]
    if missing:
        raise ParamsError(f"params: '{where}' lacks {', '.join(missing)}, which {spec['optimizer']} needs")
    _choice(spec["source"], SOURCES, f"{where}.source")
    if not isinstance(spec["path"], str) or not spec["path"]:
        raise ParamsError(f"params: '{where}.path' must be a folder path")
    _number(spec["epochs"], f"{where}.epochs", integer=True, minimum=1)
    _number(spec["batch_size"], f"{where}.batch_size", integer=True, minimum=2)
    _number(spec["lr"], f"{where}.lr", minimum=0, strict_min=True)
    for key in sorted(PRETRAIN_SETTINGS & set(spec)):
        _number(spec[key], f"{where}.{key}", minimum=0)
    _choice(spec["schedule"], SCHEDULES, f"{where}.schedule")
    _variant(spec["augment"], augmentations, f"{where}.augment")
    _number(spec["val_fraction"], f"{where}.val_fraction", minimum=0, strict_min=True)
    if spec["val_fraction"] >= 1:
        raise ParamsError(f"params: '{where}.val_fraction' must be < 1, got {spec['val_fraction']!r}")
