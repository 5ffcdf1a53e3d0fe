"""The transforms an augmentation variant in params.yaml may name, building one, and its family.

A variant is a list of `[ClassName, {kwargs}]` naming torchvision.transforms.v2 classes; `build`
makes the transform objects with torchvision itself (so its argument checks and defaults hold).
Params validation checks every variant's shape and names (`check`) in every stage, and builds every
variant in the stages that use them (stage.py); torchvision is imported by `build` alone, so the
stages that build none (fetch, stats, report) do without its import. The batched kernels that apply
a variant to images (augment.py) stay off the stages that train nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlstudy.lib.errors import ParamsError

if TYPE_CHECKING:
    from torchvision.transforms import v2

# The transforms a variant may use: photometric and geometric ones that keep the image size.
ALLOWED = (
    "ColorJitter",
    "Grayscale",
    "RandomGrayscale",
    "RandomInvert",
    "RandomHorizontalFlip",
    "RandomVerticalFlip",
    "RandomAffine",
    "RandomRotation",
    "GaussianBlur",
    "RandomAutocontrast",
    "RandomEqualize",
    "RandomPosterize",
    "RandomSolarize",
    "RandomAdjustSharpness",
)


# Families of variants, as the report and the plots group a sweep: what a variant does to the
# image decides its family, not its name, so a variant added to params.yaml finds its place.
GEOMETRIC = {"RandomHorizontalFlip", "RandomVerticalFlip", "RandomAffine", "RandomRotation"}
FAMILIES = ("none", "colour jitter", "grayscale / invert", "flip / rotation", "blur")


def family(spec: list) -> str:
    """A variant's family: colour jitter (any ColorJitter), blur (geometric steps and a blur),
    flip / rotation (geometric steps only), grayscale / invert (any other photometric step)."""
    names = {step[0] for step in spec}
    if not names:
        return "none"
    if "ColorJitter" in names:
        return "colour jitter"
    if names <= GEOMETRIC | {"GaussianBlur"}:
        return "blur" if "GaussianBlur" in names else "flip / rotation"
    return "grayscale / invert"


def check(spec, where: str = "augmentation") -> list[tuple[str, dict]]:
    """A variant's steps as (transform name, kwargs), refused where it is not a list of
    [Transform, {kwargs}] pairs naming ALLOWED transforms; their arguments are `build`'s to check."""
    if not isinstance(spec, list):
        raise ParamsError(f"params: '{where}' must be a list of [Transform, {{kwargs}}] pairs")
    steps = []
    for i, step in enumerate(spec):
        if (
            not isinstance(step, list)
            or len(step) not in (1, 2)
            or not isinstance(step[0], str)
            or (len(step) == 2 and not isinstance(step[1], dict))
        ):
            raise ParamsError(f"params: '{where}[{i}]' must be [Transform, {{kwargs}}], got {step!r}")
        name, kwargs = step[0], (step[1] if len(step) == 2 else {})
        if name not in ALLOWED:
            raise ParamsError(
                f"params: '{where}[{i}]' names unknown transform {name!r}; accepted: {', '.join(ALLOWED)}"
            )
        steps.append((name, kwargs))
    return steps


def build(spec, where: str = "augmentation") -> v2.Compose | None:
    """The composed transform of one variant, or None for the empty (identity) variant."""
    from torchvision.transforms import v2

    steps = []
    for i, (name, kwargs) in enumerate(check(spec, where)):
        try:
            steps.append(getattr(v2, name)(**kwargs))
        except (TypeError, ValueError) as exc:
            raise ParamsError(f"params: '{where}[{i}]' {name}({kwargs}): {exc}") from exc
        if name == "Grayscale" and steps[-1].num_output_channels != 3:
            raise ParamsError(
                f"params: '{where}[{i}]' Grayscale must keep 3 channels for the RGB model; "
                "write [Grayscale, {num_output_channels: 3}]"
            )
    return v2.Compose(steps) if steps else None
