"""Stage `inspect` (study part 1): SqueezeNet 1.0 on the Samoyed photo.

Writes `metrics/inspect.json` (the top-5 classes with probabilities) and, under
`plots/inspect/`, the input photo, the 96 first-layer kernels and the first 16 output channels of
that layer before and after its ReLU. `inspect.weights` is `imagenet` (torchvision's
SqueezeNet1_0_Weights.IMAGENET1K_V1, downloaded and hash-checked), `random` (seeded; the demo)
or a path to a SqueezeNet 1.0 state dict. The photo is preprocessed as the weights' own
transforms say, and class names come from the weights' metadata either way.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models import SqueezeNet1_0_Weights, squeezenet1_0

from tlstudy.lib.atomic import save_figure, write_json
from tlstudy.training.models import WeightsError, load_state_file
from tlstudy.training.weights import state_dict

OUT = Path("plots/inspect")
METRICS = Path("metrics/inspect.json")
WEIGHTS = SqueezeNet1_0_Weights.IMAGENET1K_V1


def build(weights: str, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = squeezenet1_0(weights=None)
    if weights == "random":
        return model.eval()
    if weights == "imagenet":
        state = state_dict(WEIGHTS, "SqueezeNet 1.0 ImageNet weights (IMAGENET1K_V1)", "inspect.weights")
    else:
        state = load_state_file(weights, "inspect.weights", "SqueezeNet 1.0")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise WeightsError(f"{weights}: not a SqueezeNet 1.0 state dict ({str(exc).splitlines()[0]})") from exc
    return model.eval()


def load_photo(path: Path) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    with Image.open(path) as im:
        return F.pil_to_tensor(im.convert("RGB"))


@torch.inference_mode()
def classify(model: torch.nn.Module, photo: torch.Tensor, k: int = 5):
    """Top-k (class, probability), and the first layer's output before and after its ReLU."""
    x = WEIGHTS.transforms()(photo).unsqueeze(0)
    probs = model(x).softmax(1)[0]
    top = probs.topk(k)
    names = WEIGHTS.meta["categories"]
    conv = model.features[0](x)[0]
    return [(names[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist())], conv, conv.relu()


def kernel_grid(weight: torch.Tensor, cols: int = 12) -> torch.Tensor:
    """The kernels as RGB tiles, each min-max scaled on its own, in a grid with 1-px white gaps."""
    from torchvision.utils import make_grid

    return make_grid(weight, nrow=cols, padding=1, normalize=True, scale_each=True, pad_value=1.0)


def save_figures(photo, kernels, before, after, folder: Path, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, name):
        save_figure(fig, folder / name, dpi=100, bbox_inches="tight")

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.imshow(photo.permute(1, 2, 0).numpy())
    ax.set_title("input photo")
    ax.axis("off")
    save(fig, "photo.png")

    grid = kernel_grid(kernels)
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(f"first-layer kernels ({len(kernels)}, each min-max scaled){note}")
    ax.axis("off")
    save(fig, "kernels.png")

    for name, maps, title in (
        ("features_before_relu.png", before, "before ReLU"),
        ("features_after_relu.png", after, "after ReLU"),
    ):
        fig, axes = plt.subplots(2, 8, figsize=(12, 3.4))
        for i, ax in enumerate(axes.flat):
            ax.imshow(maps[i].numpy(), cmap="viridis")
            ax.set_title(f"ch {i}", fontsize=8)
            ax.axis("off")
        fig.suptitle(f"first 16 output channels of the first layer, {title}{note}")
        save(fig, name)


def run(params: dict) -> dict:
    cfg = params["inspect"]
    model = build(cfg["weights"], params["seed"])
    photo = load_photo(Path(cfg["image"]))
    top, before, after = classify(model, photo, k=5)
    note = " — random weights (demo)" if cfg["weights"] == "random" else ""
    save_figures(photo, model.features[0].weight.detach(), before[:16], after[:16], OUT, note)
    result = {"weights": cfg["weights"], "top5": {name: round(p, 6) for name, p in top}}
    write_json(METRICS, result)
    for name, p in top:
        print(f"inspect: {name:<30} {p:.4f}")
    return result
