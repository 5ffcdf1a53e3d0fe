"""Augmentation variants declared in params.yaml, built from torchvision.transforms.v2.

A variant is a list of `[ClassName, {kwargs}]`; it is applied to each uint8 training image on
its own, so every image gets its own random draw (flip or not, its own angle, its own jitter).
"""

from __future__ import annotations

import torch
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


def build(spec, where: str = "augmentation") -> v2.Compose | None:
    """The composed transform of one variant, or None for the empty (identity) variant."""
    from tlstudy.params import ParamsError

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
        try:
            steps.append(getattr(v2, name)(**kwargs))
        except (TypeError, ValueError) as exc:
            raise ParamsError(f"params: '{where}[{i}]' {name}({kwargs}): {exc}") from exc
    return v2.Compose(steps) if steps else None


def apply(transform: v2.Compose | None, images: torch.Tensor) -> torch.Tensor:
    """Each uint8 image of the batch through the transform, with its own random parameters."""
    if transform is None:
        return images
    return torch.stack([transform(img) for img in images])
