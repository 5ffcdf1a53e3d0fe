"""`make bench`: the engine against the study's own style of training loop, same model, batch
size, image size and device, with interleaved repeats; prints the figures and writes
metrics/bench.json.

Baseline (the study's style): torchvision ImageFolder + DataLoader decoding the JPEGs every
epoch, per-image torchvision transforms (resize, augmentation, to float, normalise), fp32, NCHW.
Ours: the engine as train@<part> runs it: images decoded once and kept uint8 on the device,
batched augmentation, bf16 + channels_last on CUDA, head-only grids on features computed once.

Measured: train images/s of full fine-tuning per (augmentation variant, optimizer), one epoch
per repeat after a warm-up epoch that is not counted, the two loops taking turns batch by batch
on the CPU (see side_by_side); and the wall time of a head-only grid of 10 runs (lr x optimizer,
validation every epoch), the two grids alternating, once each per repeat.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets
from torchvision.transforms import v2

from tlstudy.data import images as data
from tlstudy.data import synthetic
from tlstudy.lib.atomic import write_json
from tlstudy.lib.progress import Progress
from tlstudy.training import augment, engine, models, optimizers

STUDY_IMG_S = 330.0  # the study: 5.57 s per SGD epoch of 1,686 images (~3 ms per image)
# PyTorch's defaults for every optimizer of the registry, as the study used them.
SETTINGS = {name: {} for name in optimizers.NAMES}
# The study's head-only grid, timed as the study ran it.
GRID = [(opt, lr) for opt in ("sgd", "adam") for lr in (0.03, 0.01, 0.003, 0.001, 0.0001)]
# Full training's rate: speed does not depend on it, and it trains stably with every optimizer.
FULL_LR = 0.001


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model}, {torch.get_num_threads()} threads"


def image_tree(source: Path, per_class: int, n_val: int, dest: Path) -> tuple[Path, Path]:
    """train/ and val/ ImageFolder trees of links to the first images of each class folder."""
    classes = sorted(p.name for p in source.iterdir() if p.is_dir() and any(p.glob("*.jpg")))
    if not classes:
        raise data.DataError(f"{source}: no class folders of .jpg images")
    for cls in classes:
        files = sorted((source / cls).glob("*.jpg"))
        if len(files) < per_class + n_val:
            raise data.DataError(f"{source / cls}: {len(files)} images, the benchmark needs {per_class + n_val}")
        for role, chosen in (("train", files[:per_class]), ("val", files[per_class : per_class + n_val])):
            (dest / role / cls).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                (dest / role / cls / f.name).symlink_to(f.resolve())
    return dest / "train", dest / "val"


def decoded(folder: Path, size: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """What fetch caches: every image decoded once to uint8 at `size`, on the device."""
    ds = datasets.ImageFolder(folder)
    x = torch.stack([data.decode(Path(p), size) for p, _ in ds.samples])
    return x.to(dev), torch.tensor(ds.targets, device=dev)


def baseline_loader(folder: Path, size: int, aug: list, mean, std, batch: int, workers: int, shuffle: bool):
    tf = v2.Compose(
        [v2.Resize([size, size]), *aug, v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    )
    return torch.utils.data.DataLoader(
        datasets.ImageFolder(folder, transform=tf),
        batch_size=batch,
        shuffle=shuffle,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def study_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """PyTorch's defaults, as the study used them (the engine's make_optimizer fuses Adam)."""
    return getattr(torch.optim, optimizers.REGISTRY[name].torch_class)(params, lr=lr)


def baseline_steps(model, opt, loader, dev) -> Iterator[None]:
    """One training epoch the study's way, a batch at a time."""
    for x, y in loader:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        yield


def side_by_side(epochs: dict[str, Iterator], dev: torch.device) -> dict[str, float]:
    """Seconds each side's epoch took. On the CPU the sides take turns a batch at a time (who
    goes first alternates), so the drift of a shared machine's speed, tens of percent over a
    minute here, costs both alike. On a GPU each epoch runs whole, synchronised at its end
    (a sync per batch would stall the engine's asynchronous queue)."""
    spent = dict.fromkeys(epochs, 0.0)
    if dev.type == "cuda":
        for name, steps in epochs.items():
            start = time.perf_counter()
            for _ in steps:
                pass
            sync(dev)
            spent[name] = time.perf_counter() - start
        return spent
    live, turn = dict(epochs), 0
    while live:
        for name in list(live) if turn % 2 == 0 else list(live)[::-1]:
            start = time.perf_counter()
            if next(live[name], StopIteration) is StopIteration:
                del live[name]
            spent[name] += time.perf_counter() - start
        turn += 1
    return spent


@torch.no_grad()
def baseline_validate(model, loader, dev) -> float:
    model.eval()
    correct = n = 0
    for x, y in loader:
        out = model(x.to(dev, non_blocking=True))
        correct += (out.argmax(1).cpu() == y).sum().item()
        n += len(y)
    return correct / n


def baseline_head_grid(initial, train_loader, val_loader, epochs: int, dev) -> float:
    start = time.perf_counter()
    for opt_name, lr in GRID:
        model = copy.deepcopy(initial).to(dev)
        opt = study_optimizer(opt_name, models.set_trainable(model, "head"), lr)
        for _ in range(epochs):
            models.train_mode(model, "head")
            for _ in baseline_steps(model, opt, train_loader, dev):
                pass
            baseline_validate(model, val_loader, dev)
    sync(dev)
    return time.perf_counter() - start


def ours_head_grid(initial, split: engine.Split, epochs: int, batch: int, speed: engine.Speed) -> float:
    start = time.perf_counter()
    features = engine.head_features(speed.prepare(copy.deepcopy(initial)), split, speed)
    progress = Progress("bench head-only grid", len(GRID) * epochs)
    for opt_name, lr in GRID:
        engine.fit(
            copy.deepcopy(initial), "head", engine.Run(opt_name, lr), None, features, epochs, batch, SETTINGS, 0,
            f"bench head {opt_name} {lr:g}", speed, progress=progress,
        )  # fmt: skip
    progress.close()
    sync(speed.device)
    return time.perf_counter() - start


def interleaved(sides: dict, repeats: int) -> dict[str, list[float]]:
    """Each side's seconds over `repeats` rounds; who goes first alternates every round, so
    drift in the machine's speed hits both alike."""
    times = {side: [] for side in sides}
    for r in range(repeats):
        for side, fn in sides.items() if r % 2 == 0 else reversed(sides.items()):
            times[side].append(fn())
    return times


def full_training(name, opt, compose, initial, split, train_dir, size, norm, batch, workers, repeats, speed) -> dict:
    dev = speed.device
    loader = baseline_loader(train_dir, size, list(compose.transforms) if compose else [], *norm, batch, workers, True)
    lr = FULL_LR
    base_model = copy.deepcopy(initial).to(dev).train()
    base_opt = study_optimizer(opt, base_model.parameters(), lr)
    our_model = speed.prepare(copy.deepcopy(initial)).train()
    our_opt = engine.make_optimizer(opt, our_model.parameters(), lr, SETTINGS)
    transform = augment.batched(compose)
    gens = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    times = {"baseline": [], "ours": []}
    for r in range(repeats + 1):  # the first round warms up and is not counted
        epochs = {
            "baseline": baseline_steps(base_model, base_opt, loader, dev),
            "ours": engine.train_steps(our_model, our_opt, split, transform, batch, *gens, speed),
        }
        if r % 2:
            epochs = dict(reversed(epochs.items()))
        for side, seconds in side_by_side(epochs, dev).items():
            if r > 0:
                times[side].append(seconds)
    med = {side: statistics.median(t) for side, t in times.items()}
    n = len(split.x_train)
    return {
        "variant": name,
        "optimizer": opt,
        "baseline_s_epoch": round(med["baseline"], 4),
        "ours_s_epoch": round(med["ours"], 4),
        "baseline_img_s": round(n / med["baseline"], 2),
        "ours_img_s": round(n / med["ours"], 2),
        "ratio": round(med["baseline"] / med["ours"], 3),
        "baseline_samples_s": [round(t, 4) for t in times["baseline"]],
        "ours_samples_s": [round(t, 4) for t in times["ours"]],
    }


def head_grid(initial, split, train_dir, val_dir, size, norm, batch, workers, repeats, epochs, speed) -> dict:
    dev = speed.device
    train_loader = baseline_loader(train_dir, size, [], *norm, batch, workers, True)
    val_loader = baseline_loader(val_dir, size, [], *norm, 256, workers, False)
    times = interleaved(
        {
            "baseline": lambda: baseline_head_grid(initial, train_loader, val_loader, epochs, dev),
            "ours": lambda: ours_head_grid(initial, split, epochs, batch, speed),
        },
        repeats,  # no warm-up round: each grid is tens of epochs, its first ones warm it up
    )
    med = {side: statistics.median(t) for side, t in times.items()}
    return {
        "head_grid_runs": len(GRID),
        "head_grid_epochs": epochs,
        "head_grid_baseline_s": round(med["baseline"], 3),
        "head_grid_ours_s": round(med["ours"], 3),
        "head_grid_ratio": round(med["baseline"] / med["ours"], 2),
        "head_grid_samples_s": {side: [round(t, 3) for t in ts] for side, ts in times.items()},
    }


CPU_SIDES = {  # name -> (bf16, channels_last)
    "fp32_nchw": (False, False),
    "fp32_channels_last": (False, True),
    "bf16_nchw": (True, False),
    "bf16_channels_last": (True, True),
}


def cpu_case(size: int, n: int, batch: int, repeats: int) -> dict:
    """A training step of the engine on the CPU at one image size, in fp32 and under bf16
    autocast, each in the default layout and channels_last: the evidence for speed_for's choices
    (engine.CPU_CHANNELS_LAST_MIN_PX, and bf16 where the CPU computes it natively). Random pixels (the
    speed does not depend on them), the four sides taking turns batch by batch (side_by_side)."""
    here = torch.device("cpu")
    gen = torch.Generator().manual_seed(size)
    x = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 7, (n,), generator=gen)
    col = torch.full((1, 3, 1, 1), 0.5)
    split = engine.Split(x, y, x[:batch], y[:batch], col, col / 2)
    sides = {}
    for name, (bf16, last) in CPU_SIDES.items():
        speed = engine.Speed(here, bf16=bf16, channels_last=last)
        model = speed.prepare(models.build(7, "random", "random", seed=0)).train()
        sides[name] = (model, engine.make_optimizer("sgd", model.parameters(), 0.01, SETTINGS), speed)
    times = {name: [] for name in sides}
    for r in range(repeats + 1):  # the first round warms up and is not counted
        epochs = {
            name: engine.train_steps(m, opt, split, None, batch, torch.Generator().manual_seed(r), None, speed)
            for name, (m, opt, speed) in (sides.items() if r % 2 == 0 else reversed(sides.items()))
        }
        for name, seconds in side_by_side(epochs, here).items():
            if r > 0:
                times[name].append(seconds)
    img_s = {name: round(n / statistics.median(t), 2) for name, t in times.items()}
    auto = engine.speed_for(here, "auto", size)
    fp32 = engine.speed_for(here, "fp32", size)
    name_of = {v: k for k, v in CPU_SIDES.items()}
    return {
        "image_size": size,
        "images": n,
        "img_s": img_s,
        "samples_s": {name: [round(s, 4) for s in t] for name, t in times.items()},
        # The layout case: fp32, channels_last against the default layout.
        "layout_ratio": round(img_s["fp32_channels_last"] / img_s["fp32_nchw"], 3),
        # The precision case: bf16 (its faster layout) against fp32 as the engine runs it.
        "fp32_engine": name_of[(False, fp32.channels_last)],
        "bf16_ratio": round(
            max(img_s["bf16_nchw"], img_s["bf16_channels_last"]) / img_s[name_of[(False, fp32.channels_last)]], 3
        ),
        "engine_auto": name_of[(auto.bf16, auto.channels_last)],
        # What precision auto gains here: its choice against fp32 as the engine runs it.
        "auto_ratio": round(
            img_s[name_of[(auto.bf16, auto.channels_last)]] / img_s[name_of[(False, fp32.channels_last)]], 3
        ),
        # Whether auto chose well here: its choice against the fastest of the four measured.
        "fastest": max(img_s, key=img_s.get),
        "auto_vs_fastest": round(img_s[name_of[(auto.bf16, auto.channels_last)]] / max(img_s.values()), 3),
    }


def run(
    source: Path | None,
    size: int,
    per_class: int,
    n_val: int,
    batch: int,
    repeats: int,
    workers: int,
    head_epochs: int,
    configs: list[tuple[str, str, list]],
    out: Path,
    precision: str = "auto",
    cpu_sizes: tuple[int, ...] = (),
) -> dict:
    dev = engine.device()
    speed = engine.speed_for(dev, precision)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="tlstudy-bench-") as tmp:
        described = str(source) if source is not None else "synthetic JPEGs (the demo's shapes), 227 px"
        if source is None:  # no images given: the demo's synthetic JPEGs at PACS's size
            source = synthetic.generate(Path(tmp) / "synthetic", per_class + n_val, 227, seed=0)
        train_dir, val_dir = image_tree(source, per_class, n_val, Path(tmp) / "tree")
        x_train, y_train = decoded(train_dir, size, dev)
        x_val, y_val = decoded(val_dir, size, dev)
        # Statistics of these training images, as the stats stage computes them for a study.
        mean = (x_train.float() / 255).mean(dim=(0, 2, 3))
        std = (x_train.float() / 255).std(dim=(0, 2, 3))
        split = engine.Split(x_train, y_train, x_val, y_val, mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1))
        norm = (mean.tolist(), std.tolist())
        initial = models.build(int(y_train.max()) + 1, "random", "random", seed=0)
        print(
            f"bench: {device_name(dev)}; {described}: {len(x_train)} train / {len(x_val)} val images at {size} px, "
            f"batch {batch}, {repeats} repeats, baseline DataLoader workers {workers}, "
            f"ours in {'bf16' if speed.bf16 else 'fp32'}"
        )
        results = []
        for name, opt, spec in configs:
            compose = augment.build(spec, where=f"bench variant {name}")
            c = full_training(name, opt, compose, initial, split, train_dir, size, norm, batch, workers, repeats, speed)
            results.append(c)
            print(
                f"bench: full training, {name:>12} {opt:>4}: baseline {c['baseline_img_s']:8.1f} img/s "
                f"({c['baseline_s_epoch']:.2f} s/epoch), ours {c['ours_img_s']:8.1f} img/s "
                f"({c['ours_s_epoch']:.2f} s/epoch), ratio {c['ratio']:.3f}"
            )
        grid = head_grid(initial, split, train_dir, val_dir, size, norm, batch, workers, repeats, head_epochs, speed)
    cases = []
    if cpu_sizes and dev.type == "cpu":
        from tlstudy.lib import cpu

        print(f"bench: precision auto on this CPU: {cpu.auto_bf16()[1]} (cpu.bf16_rule)")
    for cpu_size in cpu_sizes if dev.type == "cpu" else ():
        # Two batches at 227 px take seconds on 2 cores; more at small sizes, where a step is short.
        c = cpu_case(cpu_size, batch * (2 if cpu_size >= 128 else 6), batch, repeats)
        cases.append(c)
        s = c["img_s"]
        print(
            f"bench: CPU at {cpu_size:>3} px, img/s: fp32 {s['fp32_nchw']:.1f} (channels_last "
            f"{s['fp32_channels_last']:.1f}, x{c['layout_ratio']:.2f}), bf16 {s['bf16_nchw']:.1f} (channels_last "
            f"{s['bf16_channels_last']:.1f}): bf16 x{c['bf16_ratio']:.2f} fp32's {c['fp32_engine']}; "
            f"precision auto runs {c['engine_auto']} here, x{c['auto_ratio']:.2f} fp32's, "
            f"x{c['auto_vs_fastest']:.2f} the fastest ({c['fastest']})"
        )
    # The headline is the study's own timing case: SGD without augmentation.
    plain = next((c for c in results if (c["variant"], c["optimizer"]) == ("none", "sgd")), results[0])
    result = {
        "device": device_name(dev),
        "torch": torch.__version__,
        "data": described,
        "image_size": size,
        "batch_size": batch,
        "n_train": len(x_train),
        "n_val": len(x_val),
        "repeats": repeats,
        "baseline_workers": workers,
        "precision": "bf16" if speed.bf16 else "fp32",
        "baseline_img_s": plain["baseline_img_s"],
        "ours_img_s": plain["ours_img_s"],
        "ratio": plain["ratio"],
        "ratio_min": min(c["ratio"] for c in results),
        "ours_vs_study": round(plain["ours_img_s"] / STUDY_IMG_S, 3),
        "full_training": results,
        **grid,
    }
    if cases:
        from tlstudy.lib import cpu

        result["cpu_speed"] = {
            "channels_last_from_px_fp32": engine.CPU_CHANNELS_LAST_MIN_PX,
            "amx_bf16": cpu.amx_bf16(),
            "auto_precision": dict(zip(("bf16", "why"), cpu.auto_bf16())),
            "cases": cases,
        }
    print(
        f"bench: head-only grid of {len(GRID)} runs x {head_epochs} epochs: baseline "
        f"{result['head_grid_baseline_s']:.1f} s, ours {result['head_grid_ours_s']:.2f} s, "
        f"ratio {result['head_grid_ratio']:.1f}"
    )
    print(
        f"bench: full training (SGD, no augmentation) ratio {result['ratio']:.3f}, lowest over configurations "
        f"{result['ratio_min']:.3f}; ours {result['ours_img_s']:.0f} img/s = {result['ours_vs_study']:.2f}x the "
        f"study's ~{STUDY_IMG_S:.0f} img/s"
    )
    write_json(out, result)
    print(f"bench: wrote {out}")
    return result


def defaults(dev: torch.device) -> dict:
    """CPU: the 64 px setting the issue fixes, sized to finish in minutes on 2 cores. GPU: the
    study's 227 px, as many images per class as PACS cartoon's smallest class (guitar, 135)
    allows, a DataLoader worker per core, and a head grid short enough for a 15-minute GPU lease
    (its baseline decodes every image every epoch of every run)."""
    if dev.type == "cuda":
        return {
            "size": 227,
            "per_class": 105,
            "n_val": 30,
            "repeats": 5,
            "workers": os.cpu_count() or 1,
            "head_epochs": 10,
        }
    return {"size": 64, "per_class": 32, "n_val": 8, "repeats": 3, "workers": 0, "head_epochs": 3}
