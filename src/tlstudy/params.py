"""params.yaml: loading, validation and the few normalisations every stage relies on.

Every stage validates the whole file before doing any work, so a typo fails `fetch` at once
instead of `train@augment` an hour later.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from tlstudy import yamlio
from tlstudy.errors import ParamsError  # noqa: F401  (callers catch it as params.ParamsError)

OPTIMIZERS = ("sgd", "adam")
SOURCES = ("pacs", "local", "synthetic")
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
    "sgd",
    "adam",
    "imagenet_weights",
    "inspect",
    "data",
    "fewshot",
    "parts",
    "pretrain",
    "transfer",
    "augmentations",
}
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
}
PART_KEYS = {"subset", "init", "trainable", "optimizer", "lr", "augment", "epochs", "seeds", "placement"}
# Where a part's augmentation acts: `pixels` (ours: on the uint8 images before normalisation,
# validation images clean) or `study` (the study's: after Normalize, on float tensors with
# torchvision's float semantics, validation images augmented like the training images).
PLACEMENTS = ("pixels", "study")
PRETRAIN_KEYS = {
    "source",
    "path",
    "domains",
    "epochs",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "batch_size",
    "augment",
    "val_fraction",
}
SCHEDULES = ("constant", "cosine")
BACKBONES = Path("backbones")  # pretrain@<name> writes backbones/<name>.pt


def load(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found (run from the project root, where params.yaml is)")
    try:
        params = yamlio.load(path.read_text())
    except yamlio.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    validate(params, source=str(path))
    return params


def as_list(value: Any) -> list:
    """`lr` and `optimizer` may be a scalar (what `dvc exp run -S lr=0.01` writes) or a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def describe_init(init: str, imagenet_weights: str, params: dict | None = None, part: str | None = None) -> str:
    """How a part's backbone is initialised, in words for logs, run records and the report."""
    if params is not None and part is not None and (name := backbone_of(params, part)) is not None:
        domains = ", ".join(as_list(params["pretrain"][name]["domains"]))
        return f"pretrained here: {name} ({domains})"
    if init == "imagenet" and imagenet_weights == "random":
        return "random (stand-in for imagenet: offline)"
    return init


def all_parts(params: dict) -> list[str]:
    """Every part, those under `parts` first, then those under `transfer`."""
    return [*params["parts"], *params["transfer"]]


def backbone_file(name: str) -> Path:
    return BACKBONES / f"{name}.pt"


def part_spec(params: dict, part: str) -> dict:
    """A part's settings; a `transfer` part's init names its pretrained backbone's file."""
    if part in params["parts"]:
        return params["parts"][part]
    if part in params["transfer"]:
        spec = params["transfer"][part]
        return {**spec, "init": str(backbone_file(spec["init"]))}
    raise ParamsError(f"params: no part {part!r} under 'parts' or 'transfer'; known: {', '.join(all_parts(params))}")


def backbone_of(params: dict, part: str) -> str | None:
    """The name of the pretrained backbone a part starts from, if any."""
    return params["transfer"][part]["init"] if part in params["transfer"] else None


def part_epochs(params: dict, part: str) -> int:
    return part_spec(params, part).get("epochs", params["epochs"])


def part_seeds(params: dict, part: str) -> list[int]:
    """The training seeds of a part: its own `seeds`, else the top-level list."""
    return as_list(part_spec(params, part).get("seeds", params["seeds"]))


def part_placement(params: dict, part: str) -> str:
    return part_spec(params, part).get("placement", "pixels")


def part_grid(params: dict, part: str) -> tuple[list[str], list[float], list[str]]:
    """The (optimizers, learning rates, augmentation variants) one part trains over."""
    spec = part_spec(params, part)
    optimizers = as_list(spec.get("optimizer", params["optimizer"]))
    lrs = [float(x) for x in as_list(spec.get("lr", params["lr"]))]
    augment = spec.get("augment", ["none"])
    variants = list(params["augmentations"]) if augment == "all" else as_list(augment)
    return optimizers, lrs, variants


def is_sweep(params: dict, part: str) -> bool:
    """A part over several augmentation variants (Table VIII): evaluated and reported per variant
    and family, its selections kept as test logits, not models."""
    return len(part_grid(params, part)[2]) > 1


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


def _optimizer_list(value, key: str) -> None:
    values = as_list(value)
    if not values:
        raise ParamsError(f"params: '{key}' is empty; accepted: {', '.join(OPTIMIZERS)}")
    for v in values:
        _choice(v, OPTIMIZERS, key)


def validate(params: dict, source: str = "params.yaml") -> None:
    missing = sorted(TOP_KEYS - set(params))
    if missing:
        raise ParamsError(f"{source}: missing section(s): {', '.join(missing)}")
    _unknown(params, TOP_KEYS, "")
    _number(params["seed"], "seed", integer=True, minimum=0)
    _seeds(params["seeds"], "seeds")
    _lr_list(params["lr"], "lr")
    _optimizer_list(params["optimizer"], "optimizer")
    _number(params["epochs"], "epochs", integer=True, minimum=1)
    _number(params["batch_size"], "batch_size", integer=True, minimum=1)
    _choice(params["imagenet_weights"], IMAGENET_WEIGHTS, "imagenet_weights")
    _choice(params["precision"], PRECISIONS, "precision")
    for opt, keys in (("sgd", {"momentum", "weight_decay"}), ("adam", {"weight_decay"})):
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
    from tlstudy.augment import build  # late: keeps torchvision off the import path of params

    for name, spec in augmentations.items():
        build(spec, where=f"augmentations.{name}")

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
        for name, spec in entries.items():
            _part(f"{group}.{name}", spec, augmentations)
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


def _part(where: str, spec, augmentations: dict) -> None:
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
        _lr_list(spec["lr"], f"{where}.lr")
    if "epochs" in spec:
        _number(spec["epochs"], f"{where}.epochs", integer=True, minimum=1)
    if "seeds" in spec:
        _seeds(spec["seeds"], f"{where}.seeds")
    _choice(spec.get("placement", "pixels"), PLACEMENTS, f"{where}.placement")
    augment = spec.get("augment", ["none"])
    if augment != "all":
        for variant in as_list(augment):
            _variant(variant, augmentations, f"{where}.augment")


def _pretrain(name: str, spec, augmentations: dict) -> None:
    where = f"pretrain.{name}"
    if not isinstance(spec, dict):
        raise ParamsError(f"params: '{where}' must be a mapping with {sorted(PRETRAIN_KEYS)}")
    _unknown(spec, PRETRAIN_KEYS, f"{where}.")
    missing = sorted(PRETRAIN_KEYS - set(spec))
    if missing:
        raise ParamsError(f"params: '{where}' lacks {', '.join(missing)}")
    _choice(spec["source"], SOURCES, f"{where}.source")
    if not isinstance(spec["path"], str) or not spec["path"]:
        raise ParamsError(f"params: '{where}.path' must be a folder path")
    domains = spec["domains"]
    if not isinstance(domains, list) or not domains or not all(isinstance(d, str) and d for d in domains):
        raise ParamsError(f"params: '{where}.domains' must be a non-empty list of domain folder names")
    _number(spec["epochs"], f"{where}.epochs", integer=True, minimum=1)
    _number(spec["batch_size"], f"{where}.batch_size", integer=True, minimum=2)
    _choice(spec["optimizer"], OPTIMIZERS, f"{where}.optimizer")
    _number(spec["lr"], f"{where}.lr", minimum=0, strict_min=True)
    for key in ("momentum", "weight_decay"):
        _number(spec[key], f"{where}.{key}", minimum=0)
    _choice(spec["schedule"], SCHEDULES, f"{where}.schedule")
    _variant(spec["augment"], augmentations, f"{where}.augment")
    _number(spec["val_fraction"], f"{where}.val_fraction", minimum=0, strict_min=True)
    if spec["val_fraction"] >= 1:
        raise ParamsError(f"params: '{where}.val_fraction' must be < 1, got {spec['val_fraction']!r}")
