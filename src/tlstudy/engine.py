"""The one training loop: a ResNet-18 run at one (optimizer, lr, augmentation) on one subset.

Images stay uint8 on the device and are normalised per batch; the data order and the
augmentation draws come from the run's seed, so a run is reproducible on the CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from tlstudy import augment, models

EVAL_BATCH = 256


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Split:
    """Training and validation tensors of one subset, already on the device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    mean: torch.Tensor  # 1×3×1×1, in [0, 1] units
    std: torch.Tensor


@dataclass
class Run:
    optimizer: str
    lr: float
    variant: str = "none"


@dataclass
class Result:
    run: Run
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = -1.0
    best_state: dict | None = None
    diverged_epoch: int | None = None

    @property
    def sec_per_epoch(self) -> float:
        secs = [h["seconds"] for h in self.history]
        return sum(secs) / len(secs) if secs else float("nan")


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - mean) / std


def make_optimizer(name: str, params, lr: float, settings: dict) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, **settings["sgd"])
    return torch.optim.Adam(params, lr=lr, **settings["adam"])


def batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Index batches of one epoch; a trailing batch of one joins the previous one, since
    BatchNorm cannot train on a single image whose feature maps are 1×1."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Logits for uint8 images, in large batches with the model in eval mode."""
    model.eval()
    outs = [model(normalise(x[i : i + EVAL_BATCH], mean, std)) for i in range(0, len(x), EVAL_BATCH)]
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, x, y, mean, std) -> tuple[float, float]:
    logits = predict(model, x, mean, std)
    loss = nn.functional.cross_entropy(logits.float(), y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return loss, acc


def fit(
    model: nn.Module,
    trainable: str,
    run: Run,
    transform,
    split: Split,
    epochs: int,
    batch_size: int,
    settings: dict,
    seed: int,
    label: str,
) -> Result:
    """Train one run; keeps the weights of the best epoch by validation accuracy (earliest on
    ties) and stops at the first non-finite loss, recording the epoch as diverged."""
    params = models.set_trainable(model, trainable)
    opt = make_optimizer(run.optimizer, params, run.lr, settings)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # augmentation draws come from the global generator
    result = Result(run)
    n = len(split.x_train)
    bar = tqdm(range(1, epochs + 1), desc=label, unit="epoch", leave=False, dynamic_ncols=True)
    for epoch in bar:
        models.train_mode(model, trainable)
        start = time.perf_counter()
        loss_sum, correct, finite = 0.0, 0, True
        for idx in batches(n, batch_size, gen):
            idx = idx.to(split.x_train.device)
            x = normalise(augment.apply(transform, split.x_train[idx]), split.mean, split.std)
            y = split.y_train[idx]
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                finite = False
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
        if split.x_train.is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        val_loss, val_acc = (
            evaluate(model, split.x_val, split.y_val, split.mean, split.std) if finite else (math.nan, 0.0)
        )
        if not finite or not math.isfinite(val_loss):
            result.diverged_epoch = epoch
            bar.write(f"{label}: loss turned non-finite at epoch {epoch}; run recorded as diverged")
            break
        result.history.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / n,
                "train_acc": correct / n,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "seconds": seconds,
            }
        )
        if val_acc > result.best_val_acc:
            result.best_val_acc, result.best_epoch = val_acc, epoch
            result.best_state = models.kept_state(model, trainable)
        bar.set_postfix(val_acc=f"{val_acc:.3f}")
    bar.close()
    return result
