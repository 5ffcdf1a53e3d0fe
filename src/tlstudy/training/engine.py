"""The one training loop: a ResNet-18 run at one (optimizer, lr, augmentation) on one subset.

Images stay uint8 on the device, are augmented a batch at a time there (augment.Batched) and
normalised per batch; the data order and the augmentation draws come from the run's seed, so a
run is reproducible on the CPU. On CUDA the engine trains under bf16 autocast with channels_last
tensors and cuDNN autotuning; on a CPU that computes bf16 natively (AMX-BF16 or AVX512-BF16) under
bf16 autocast with channels_last too; on other CPUs in fp32, channels_last from mid-sized images on
(`speed_for`). `fit` hands its whole state to a checkpoint store at the end of an epoch when the
store asks for it, and continues from the store's newest one: a killed run resumes at its last
saved epoch and ends as it would have uninterrupted. A head-only run
without augmentation trains its head on backbone features computed once (`head_features`): the
frozen backbone in eval mode is a fixed function, so every epoch of every run would compute the
same features again."""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from tlstudy.lib import cpu
from tlstudy.lib.progress import Progress
from tlstudy.training import augment, models, optimizers

GPUS_ENV = "TLSTUDY_GPUS"  # e.g. "0,1,2,3": the GPUs that parallel experiments share
_held: dict[str, object] = {}  # the lock file of the GPU this process claimed, open until it exits


def device() -> torch.device:
    """CUDA when there is a GPU, else the CPU. With TLSTUDY_GPUS set, the process claims one of
    those GPUs that no other stage holds (waiting for one to free up), so `dvc queue start -j N`
    spreads N experiments over N GPUs."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    ids = [i.strip() for i in os.environ.get(GPUS_ENV, "").split(",") if i.strip()]
    return torch.device(f"cuda:{claim_gpu(ids)}" if ids else "cuda")


def claim_gpu(ids: list[str], lock_dir: Path | None = None, poll_s: float = 2.0, log=print) -> str:
    """The first of `ids` whose lock no other process holds; the lock is held until this process
    ends (the OS releases it even after a kill). The lock files are shared by every user of the
    GPUs (locks.py); one this user may not open is a LockError naming it."""
    from tlstudy.lib import locks

    if "gpu" in _held:
        return _held["gpu"]
    lock_dir = Path(lock_dir or os.environ.get("TLSTUDY_LOCK_DIR") or tempfile.gettempdir())
    instead = "or set TLSTUDY_LOCK_DIR to a folder that every user of these GPUs can write"
    told = False
    while True:
        for gpu in ids:
            fd = locks.open_lock(lock_dir / f"tlstudy-gpu-{gpu}.lock", instead)
            if not locks.try_lock(fd):
                os.close(fd)
                continue
            _held.update(gpu=gpu, file=fd)  # kept open: it is the claim
            log(f"device: claimed GPU {gpu} of {','.join(ids)} ({GPUS_ENV})")
            return gpu
        if not told:
            log(f"device: every GPU of {GPUS_ENV}={','.join(ids)} is claimed by another stage; waiting")
            told = True
        time.sleep(poll_s)


@dataclass(frozen=True)
class Speed:
    """How the engine computes on its device: bf16 autocast or fp32, channels_last or not
    (speed_for decides)."""

    device: torch.device
    bf16: bool
    channels_last: bool

    @property
    def eval_batch(self) -> int:
        return 1024 if self.device.type == "cuda" else 256

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @property
    def precision(self) -> str:
        """What a run was computed in, as its records say: `bf16` (autocast) or `fp32`."""
        return "bf16" if self.bf16 else "fp32"

    @property
    def kind(self) -> dict:
        """What decides a run's numbers beyond its params: the device kind, the precision and the
        layout the engine chose (the run store keys runs by it, so that `auto` resolved on one
        kind of node never continues on another)."""
        return {"device": self.device.type, "precision": self.precision, "channels_last": self.channels_last}


# A ResNet-18 training step on our 2-core CPU (AMD EPYC, AVX-512), channels_last against the
# default layout, batch 32: 64 px 0.92-1.33x (noise: no gain), 96 px 1.16x, 128 px 1.23-1.31x,
# 160 px 1.21x, 227 px 1.19-1.40x; bench.json records the 64 and 227 px cases. Below this size
# an fp32 CPU run keeps the default layout, so the 64 px fp32 results do not move.
CPU_CHANNELS_LAST_MIN_PX = 96


def speed_for(dev: torch.device, precision: str = "auto", image_size: int | None = None) -> Speed:
    """`precision: auto` is bf16 autocast on CUDA and on the kinds of CPU where bf16 was measured
    faster than fp32 (cpu.bf16_rule: AMX-BF16, or AVX512-BF16 on AMD), fp32 on any other CPU;
    fp32 / bf16 force it. channels_last on CUDA and in bf16 (oneDNN's bf16 kernels want it), and
    for fp32 on the CPU from CPU_CHANNELS_LAST_MIN_PX on."""
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: autotuned kernels pay off
    fast_bf16 = dev.type == "cuda" or (dev.type == "cpu" and cpu.auto_bf16()[0])
    bf16 = fast_bf16 if precision == "auto" else precision == "bf16"
    large = image_size is not None and image_size >= CPU_CHANNELS_LAST_MIN_PX
    return Speed(dev, bf16=bf16, channels_last=dev.type == "cuda" or bf16 or large)


@dataclass
class Split:
    """Training and validation tensors of one subset, already on the device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    mean: torch.Tensor  # 1×3×1×1, in [0, 1] units
    std: torch.Tensor
    features: bool = False  # x_train / x_val hold backbone features, not images (head_features)


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
    checkpoint_s: float = 0.0  # time this process spent saving the run's checkpoints
    checkpoints: int = 0

    @property
    def sec_per_epoch(self) -> float:
        secs = [h["seconds"] for h in self.history]
        return sum(secs) / len(secs) if secs else float("nan")


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - mean) / std


def make_optimizer(name: str, params, lr: float, settings: dict) -> torch.optim.Optimizer:
    """The registry's optimizer `name` (optimizers.py) with its section of `settings` (params)."""
    return optimizers.build(name, params, lr, settings)


def batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Index batches of one epoch; a trailing batch of one joins the previous one, since
    BatchNorm cannot train on a single image whose feature maps are 1×1."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, speed: Speed | None = None):
    """Logits (float32) for uint8 images, in large batches with the model in eval mode."""
    speed = speed or speed_for(x.device, image_size=x.shape[-1])
    model.eval()
    outs = []
    for i in range(0, len(x), speed.eval_batch):
        with speed.autocast():
            outs.append(model(speed.layout(normalise(x[i : i + speed.eval_batch], mean, std))).float())
    return torch.cat(outs) if outs else torch.empty(0)


def backbone(model: nn.Module) -> nn.Module:
    """ResNet-18 without its head: everything up to the pooled, flattened 512 features."""
    return nn.Sequential(*list(model.children())[:-1], nn.Flatten(1))


def head_features(model: nn.Module, split: Split, speed: Speed | None = None) -> Split:
    """The split with each image replaced by the frozen backbone's features (eval mode)."""
    net = backbone(model)
    return Split(
        predict(net, split.x_train, split.mean, split.std, speed),
        split.y_train,
        predict(net, split.x_val, split.mean, split.std, speed),
        split.y_val,
        split.mean,
        split.std,
        features=True,
    )


def evaluate(model: nn.Module, x, y, mean, std, speed: Speed | None = None, features: bool = False):
    """(loss, accuracy) on a labelled set; with `features`, x holds backbone features for the head."""
    if features:
        with torch.inference_mode(), (speed or speed_for(x.device)).autocast():
            model.eval()
            logits = model.fc(x).float()
    else:
        logits = predict(model, x, mean, std, speed)
    loss = nn.functional.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return loss, acc


def train_steps(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    split: Split,
    transform: augment.Batched | None,
    batch_size: int,
    order_gen: torch.Generator,
    aug_gen: torch.Generator,
    speed: Speed,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over the training images, a step at a time: yields each batch's summed loss and
    correct count as device tensors (reading them would synchronise a CUDA stream)."""
    net = model.fc if split.features else model
    for idx in batches(len(split.x_train), batch_size, order_gen):
        idx = idx.to(split.x_train.device, non_blocking=True)
        x, y = split.x_train[idx], split.y_train[idx]
        if not split.features:
            if transform is not None:
                x = transform(x, aug_gen)
            x = speed.layout(normalise(x, split.mean, split.std))
        with speed.autocast():
            logits = net(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        yield loss.detach() * len(idx), (logits.argmax(1) == y).sum()


def train_epoch(model, opt, split, transform, batch_size, order_gen, aug_gen, speed) -> tuple[float, int, bool]:
    """(summed loss, correct count, whether the loss stayed finite) of one epoch; a CUDA epoch
    synchronises once, at its end."""
    loss_sum, correct = 0, 0
    for loss, right in train_steps(model, opt, split, transform, batch_size, order_gen, aug_gen, speed):
        loss_sum, correct = loss + loss_sum, right + correct
    loss_total = float(loss_sum)
    return loss_total, int(correct), math.isfinite(loss_total)


class Checkpoints(Protocol):
    """Where a run in progress keeps its state (resume.Checkpoints): its newest sound state, if
    any; whether a save is due now (the store keeps their cost a small share of the run); a save
    (its seconds, or None where it could not be written: the run goes on without it)."""

    def latest(self) -> dict | None: ...

    def due(self) -> bool: ...

    def save(self, epoch: int, state: dict) -> float | None: ...


def run_state(epoch, model, trainable, opt, scheduler, order_gen, aug_gen, result: Result, speed: Speed) -> dict:
    """Everything the next epoch depends on: weights (the head alone when the backbone is frozen),
    optimiser and schedule, the data-order and augmentation generators and the global one (which
    torchvision's per-image transforms draw from), and the history with the best epoch's weights.
    Nothing else draws random numbers in a run (no dropout in ResNet-18; Python's and NumPy's
    generators are never used), so continuing from this state gives the same bits."""
    return {
        "epoch": epoch,
        "kind": speed.kind,
        "model": models.kept_state(model, trainable),
        "optimizer": opt.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "order_gen": order_gen.get_state(),
        "aug_gen": aug_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(speed.device) if speed.device.type == "cuda" else None,
        "history": list(result.history),
        "best_epoch": result.best_epoch,
        "best_val_acc": result.best_val_acc,
        "best_state": result.best_state,
    }


def restore_state(state: dict, model, trainable, opt, scheduler, order_gen, aug_gen, result: Result, speed) -> int:
    """Put a run back where run_state found it; returns the epoch to train next."""
    if state["kind"] != speed.kind:  # the store's key holds the kind, so this is a bug, not a user error
        raise RuntimeError(f"a checkpoint computed as {state['kind']} cannot continue as {speed.kind}")
    models.restore(model, trainable, state["model"])
    opt.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    order_gen.set_state(state["order_gen"])
    aug_gen.set_state(state["aug_gen"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], speed.device)
    result.history = list(state["history"])
    result.best_epoch, result.best_val_acc = state["best_epoch"], state["best_val_acc"]
    result.best_state = state["best_state"]
    return state["epoch"] + 1


def fit(
    model: nn.Module,
    trainable: str,
    run: Run,
    transform: augment.Batched | None,
    split: Split,
    epochs: int,
    batch_size: int,
    settings: dict,
    seed: int,
    label: str,
    speed: Speed | None = None,
    schedule: str = "constant",
    progress: Progress | None = None,
    checkpoints: Checkpoints | None = None,
) -> Result:
    """Train one run; keeps the weights of the best epoch by validation accuracy (earliest on
    ties); an epoch whose loss turns non-finite ends the run, recorded as diverged. `schedule`
    cosine anneals the learning rate to 0 over the epochs (pretraining); the study's parts keep
    it constant. `progress` is the stage's (one over all its runs); without one, the run
    reports on its own. With `checkpoints`, the run starts from the newest state saved there and
    saves its state after an epoch whenever the store says a save is due."""
    if split.features and (trainable != "head" or transform is not None):
        raise ValueError("a features split trains the head alone, without augmentation")
    speed = speed or speed_for(split.x_train.device, image_size=None if split.features else split.x_train.shape[-1])
    model = speed.prepare(model)
    params = models.set_trainable(model, trainable)
    opt = make_optimizer(run.optimizer, params, run.lr, settings)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs) if schedule == "cosine" else None
    order_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)  # not the order's stream: independent draws
    torch.manual_seed(seed)  # transforms run per image by torchvision draw from the global generator
    result = Result(run)
    first = 1
    saved = checkpoints.latest() if checkpoints is not None else None
    if saved is not None:
        first = restore_state(saved, model, trainable, opt, scheduler, order_gen, aug_gen, result, speed)
    n = len(split.x_train)
    own = progress is None
    progress = progress or Progress(label, epochs)
    progress.start(label, epochs)
    if first > 1:
        progress.resumed(first - 1)
    for epoch in range(first, epochs + 1):
        models.train_mode(model, trainable)
        start = time.perf_counter()
        loss_sum, correct, finite = train_epoch(model, opt, split, transform, batch_size, order_gen, aug_gen, speed)
        seconds = time.perf_counter() - start
        if scheduler is not None:
            scheduler.step()
        val_loss, val_acc = (
            evaluate(model, split.x_val, split.y_val, split.mean, split.std, speed, split.features)
            if finite
            else (math.nan, 0.0)
        )
        if not finite or not math.isfinite(val_loss):
            result.diverged_epoch = epoch
            progress.write(f"{label}: loss turned non-finite at epoch {epoch}; run recorded as diverged")
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
        progress.epoch(epoch, loss_sum / n, val_acc)
        if checkpoints is not None and epoch < epochs and checkpoints.due():
            state = run_state(epoch, model, trainable, opt, scheduler, order_gen, aug_gen, result, speed)
            cost = checkpoints.save(epoch, state)
            del state  # its copy of the weights is not carried through the next epoch
            if cost is not None:  # None: not saved, and the store said why
                result.checkpoint_s += cost
                result.checkpoints += 1
    progress.end()
    if own:
        progress.close()
    return result
