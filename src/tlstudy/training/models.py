"""ResNet-18 with an n-class head: initialisation, freezing, and the state a part keeps.

`init` is `random`, `imagenet` (torchvision's IMAGENET1K_V1, downloaded and hash-checked by
torchvision) or a path to a ResNet-18 state dict. With `imagenet_weights: random` a seeded
random backbone stands in for ImageNet (the offline demo). Construction is seeded, so a
head-only part can store just its head: the backbone is rebuilt identically from `init`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from tlstudy.training.weights import WeightsError, state_dict  # noqa: F401  (WeightsError: callers catch it here)


def load_state_file(spec: str, key: str, architecture: str) -> dict[str, torch.Tensor]:
    """A state dict from a file named by params key `key`, or an error naming file and need."""
    path = Path(spec)
    if not path.is_file():
        raise WeightsError(f"{key}: {spec!r} is not random, imagenet, or an existing state-dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise WeightsError(f"{path}: cannot be read as a PyTorch state dict ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a {architecture} state dict, found {type(state).__name__}")
    return state


def _backbone_state(init: str) -> dict[str, torch.Tensor]:
    if init == "imagenet":
        return state_dict(ResNet18_Weights.IMAGENET1K_V1, "ResNet-18 ImageNet weights (IMAGENET1K_V1)", "init")
    return load_state_file(init, "init", "ResNet-18")


def _first_problem(exc: RuntimeError) -> str:
    """The first 'size mismatch for …' line of load_state_dict's error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("size mismatch")), lines[0] if lines else "")


def build(n_classes: int, init: str, imagenet_weights: str, seed: int) -> nn.Module:
    """A ResNet-18 whose weights depend only on (init, seed): same call, same model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = resnet18(weights=None)
        if init != "random" and not (init == "imagenet" and imagenet_weights == "random"):
            backbone = {k: v for k, v in _backbone_state(init).items() if not k.startswith("fc.")}
            try:  # the head is new; every other key must be there, with its shape
                loaded = model.load_state_dict(backbone, strict=False)
            except RuntimeError as exc:  # a tensor of another shape
                raise WeightsError(f"init {init!r}: not a ResNet-18 state dict ({_first_problem(exc)})") from None
            missing = [k for k in loaded.missing_keys if not k.startswith("fc.")]
            if missing or loaded.unexpected_keys:
                raise WeightsError(
                    f"init {init!r}: not a ResNet-18 state dict "
                    f"(missing {missing[:3]}, unexpected {loaded.unexpected_keys[:3]})"
                )
        model.fc = nn.Linear(model.fc.in_features, n_classes)
    return model


def set_trainable(model: nn.Module, trainable: str) -> list[nn.Parameter]:
    """Freeze the backbone for `head`; returns the parameters the optimiser updates."""
    for name, p in model.named_parameters():
        p.requires_grad = trainable == "all" or name.startswith("fc.")
    return [p for p in model.parameters() if p.requires_grad]


def train_mode(model: nn.Module, trainable: str) -> None:
    """Training mode, except that a frozen backbone keeps BatchNorm in eval (running stats fixed)."""
    if trainable == "all":
        model.train()
    else:
        model.eval()
        model.fc.train()


def kept_state(model: nn.Module, trainable: str) -> dict[str, torch.Tensor]:
    """What a part stores: everything, or just the head when the backbone never changed."""
    state = model.fc.state_dict() if trainable == "head" else model.state_dict()
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def restore(model: nn.Module, trainable: str, state: dict[str, torch.Tensor]) -> None:
    (model.fc if trainable == "head" else model).load_state_dict(state)
