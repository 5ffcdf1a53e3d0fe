"""The study's augmentation placement (`placement: study`), to test why its Table VIII collapsed.

The study composed its augmentation after `Normalize`, so torchvision's transforms met float
tensors of mean 0 and unit variance. There, float semantics apply: the colour operations
(ColorJitter's brightness, contrast, saturation and hue) clamp their result to [0, 1], wiping
every below-mean value, RandomInvert computes 1 − x, Grayscale mixes channels normalised each
with its own statistics, while flips, affine (filling with 0, i.e. the mean) and blur change
nothing of the value range. Its validation images came from the augmented training set.

`StudyPlacement` reproduces that with torchvision's own transforms, image by image, on the
normalised images. The engine normalises every batch it trains on, so the result is handed back
in the engine's pixel units, (y · std + mean) · 255 as floats, unclamped: the engine's own
normalisation then gives the model exactly torchvision's output y (to float rounding), and the
engine stays the one training loop for both placements.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


class StudyPlacement:
    """A variant's transforms applied after normalisation; `__call__` has augment.Batched's
    signature (images, generator) -> images in pixel units."""

    def __init__(self, compose: v2.Compose, mean: torch.Tensor, std: torch.Tensor):
        self.compose = compose
        self.mean, self.std = mean, std  # 1×3×1×1, in [0, 1] units, on the images' device

    def normalised(self, images: torch.Tensor) -> torch.Tensor:
        """torchvision's transforms on each normalised image: the tensor the study's model saw."""
        y = (images.float() / 255.0 - self.mean) / self.std
        # torchvision's transforms draw from torch's global generator, which engine.fit seeds.
        return torch.stack([self.compose(img) for img in y])

    def __call__(self, images: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        return (self.normalised(images) * self.std + self.mean) * 255.0


def augmented_validation(transform: StudyPlacement, x_val: torch.Tensor, seed: int) -> torch.Tensor:
    """The validation images augmented like the training ones, one draw each from `seed`; the
    global generator is restored afterwards, so training draws the same as without this."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(x_val)
