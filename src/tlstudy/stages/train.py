"""Stage `train@<part>`: the part's grid of runs, once per seed, per-epoch curves, and its
selected models.

Outputs, per part:
- `plots/train/<part>.csv` — one row per (run, epoch), long format for `dvc plots`.
- `models/<part>/runs.json` — every run's outcome (seed, best epoch, accuracy, divergence, timing).
- `models/<part>/seed<k>/<group>.pt` — per seed, the selection of each optimizer (of each
  variant for a part with several augmentation variants): the best (lr, epoch) by validation
  accuracy. Each seed selects on its own, so the seeds measure the whole procedure's noise.
  The file holds the selected model's weights where a person reuses them — the first seed of a
  part that is not an augmentation sweep — and otherwise only that model's logits on the test
  images, which is all evaluate needs to score it: a model is 45 MB, a sweep selects 28 per
  seed, and DVC would cache every one of them for every experiment. Selection never sees the
  test images; they are scored here only because the weights are not kept.

Finished runs, and the checkpoints of the run in progress, are kept in `work/runs/<part>/` until
the stage ends (resume.py): a stage killed mid-run and re-run continues after the last finished
run, inside it from its last checkpoint, and ends with the same outputs.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch

from tlstudy import params as P
from tlstudy.data import images as data
from tlstudy.data.normalisation import load_stats
from tlstudy.lib import memory
from tlstudy.lib.atomic import torch_save, write_json
from tlstudy.lib.progress import Progress
from tlstudy.training import augment, engine, models, placement, resume
from tlstudy.training.curves import plot_rows, write_curves


def group_key(run: engine.Run, optimizers: tuple[str, ...], variants: tuple[str, ...]) -> str:
    if len(variants) == 1:
        return run.optimizer
    return run.variant if len(optimizers) == 1 else f"{run.variant}-{run.optimizer}"


def run_name(run: engine.Run, variants: tuple[str, ...], seed: int | None = None) -> str:
    """`sgd lr=0.01`, with the variant in front when there are several and `seed=k` behind
    when there are several seeds (one line per seed in `dvc plots`)."""
    prefix = f"{run.variant} " if len(variants) > 1 else ""
    suffix = f" seed={seed}" if seed is not None else ""
    return f"{prefix}{run.optimizer} lr={run.lr:g}{suffix}"


def load_split(dataset: data.Dataset, subset: str, dev: torch.device) -> engine.Split:
    mean, std = load_stats()
    x_train, y_train = dataset.part(subset, "train")
    x_val, y_val = dataset.part(subset, "val")
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        # Leave room for the model, activations and the optimiser beside the images.
        data.check_fits(x_train.nbytes + x_val.nbytes, free // 2, f"the {subset} images", str(dev))
    as_col = lambda v: torch.tensor(v, dtype=torch.float32, device=dev).view(1, 3, 1, 1)  # noqa: E731
    return engine.Split(x_train.to(dev), y_train.to(dev), x_val.to(dev), y_val.to(dev), as_col(mean), as_col(std))


def check_memory(params: dict, images: Path, speed: engine.Speed) -> None:
    """Refuse a stage whose images and steps would not fit, before loading anything."""
    size, batch = params["data"]["image_size"], params["batch_size"]
    need = memory.training_bytes(size, batch, speed.eval_batch, images.stat().st_size, speed.device.type == "cpu")
    memory.check(
        need, f"data.image_size = {size} with batch_size = {batch}", "training on these images",
        "lower data.image_size or batch_size",
    )  # fmt: skip


def better(result: engine.Result, current: engine.Result | None) -> bool:
    """Whether a run beats the group's current pick: higher validation accuracy, then the
    earlier epoch; a full tie keeps the current pick, i.e. the earlier grid entry."""
    if result.best_epoch == 0:  # diverged before finishing an epoch
        return False
    if current is None:
        return True
    return (result.best_val_acc, -result.best_epoch) > (current.best_val_acc, -current.best_epoch)


def record(result: engine.Result, name: str, group: str, n_train: int, seed: int) -> dict:
    r = result.run
    return {
        "run": name,
        "seed": seed,
        "group": group,
        "optimizer": r.optimizer,
        "lr": r.lr,
        "variant": r.variant,
        "best_epoch": result.best_epoch,
        "best_val_acc": result.best_val_acc,
        "epochs_run": len(result.history),
        "diverged_epoch": result.diverged_epoch,
        "sec_per_epoch": result.sec_per_epoch,
        "ms_per_example": 1000 * result.sec_per_epoch / n_train,
        "checkpoint_s": round(result.checkpoint_s, 4),
    }


def transform_for(params: dict, variant: str, where: str, split: engine.Split, seed: int):
    """(training transform, split) of one variant under the part's placement: `pixels` augments
    the uint8 images and validates on clean ones; `study` augments after normalisation and
    validates on images augmented like the training ones (placement.py)."""
    compose = augment.build(params["augmentations"][variant], where=f"augmentations.{variant}")
    if compose is None or where == "pixels":
        return augment.batched(compose), split
    transform = placement.StudyPlacement(compose, split.mean, split.std)
    x_val = placement.augmented_validation(transform, split.x_val, seed + 1_000_003)
    return transform, engine.Split(split.x_train, split.y_train, x_val, split.y_val, split.mean, split.std)


def save_selected(out: Path, part: P.Part, params: dict, classes: list[str], seed: int, best: dict,
                  store: resume.RunStore, initial, test: tuple | None, speed: engine.Speed) -> None:  # fmt: skip
    """The selection of each group for one seed: models/<part>/seed<k>/<group>.pt, with the
    model's weights, or, where `test` = (images, mean, std) is given, its test logits instead."""
    for key, result in best.items():
        if result is None:
            print(f"train@{part.name}: seed {seed}: {key}: every run diverged")
            continue
        r = result.run
        state = result.best_state if result.best_state is not None else store.state(r)
        kept = {"state": state}
        if test is not None:
            model = copy.deepcopy(initial)
            models.restore(model, part.trainable, state)
            kept = {"test_logits": engine.predict(speed.prepare(model), *test, speed).cpu()}
        torch_save(
            out / f"seed{seed}" / f"{key}.pt",
            {
                "part": part.name, "group": key, "trainable": part.trainable, "init": part.init,
                "imagenet_weights": params["imagenet_weights"], "seed": seed,
                "classes": classes, "optimizer": r.optimizer, "lr": r.lr, "variant": r.variant,
                "epoch": result.best_epoch, "val_acc": result.best_val_acc, **kept,
            },
        )  # fmt: skip
        picked = f"lr {r.lr:g}, epoch {result.best_epoch}, val_acc {result.best_val_acc:.4f}"
        print(f"train@{part.name}: seed {seed}: {key}: {picked}")


def keeps_weights(variants: tuple[str, ...], seeds: tuple[int, ...], seed: int) -> bool:
    """Whether a seed's selected models are kept as weights (see the module's docstring)."""
    return len(variants) == 1 and seed == seeds[0]


def run(params: dict, name: str) -> None:
    part = P.part(params, name)
    seeds, where, variants = part.seeds, part.placement, part.variants
    dev = engine.device()
    speed = engine.speed_for(dev, params["precision"], params["data"]["image_size"])
    inputs = [Path("work/images.pt"), Path("manifest.csv"), Path("metrics/stats.json")]
    if part.backbone is not None:
        inputs.append(Path(part.init))
    check_memory(params, inputs[0], speed)
    dataset = data.load(*inputs[:2])
    split = load_split(dataset, part.subset, dev)
    n_train = len(split.x_train)
    x_test = dataset.part(part.subset, "test")[0].to(dev)
    base = resume.fingerprint(params, part.shape(), inputs, "train", speed)
    print(
        f"train@{name}: {len(seeds)} seed(s) x {part.runs} runs on {dev} "
        f"({speed.precision}), {n_train} train / {len(split.x_val)} val images, init {part.described}"
        + (", augmentation placed as the study placed it" if where == "study" else "")
    )

    out = Path("models") / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    records, rows, stores = [], [], []
    epochs = part.epochs
    progress = Progress(f"train@{name}", len(seeds) * part.runs * epochs)
    for seed in seeds:
        store = resume.RunStore(f"{name}/seed{seed}", f"{base}|seed={seed}")
        stores.append(store)
        tag = seed if len(seeds) > 1 else None
        # Every run of a seed starts from this model; copying it is much cheaper than initialising anew.
        initial = models.build(len(dataset.classes), part.init, params["imagenet_weights"], seed)
        features: engine.Split | None = None  # head-only runs without augmentation share these
        best: dict[str, engine.Result | None] = {}
        for variant in variants:
            transform, run_split = transform_for(params, variant, where, split, seed)
            fam = augment.family(params["augmentations"][variant])
            if part.trainable == "head" and transform is None:
                if features is None:
                    features = engine.head_features(speed.prepare(copy.deepcopy(initial)), split, speed)
                run_split = features
            for optimizer, lrs in part.grid.items():
                for lr in lrs:
                    r = engine.Run(optimizer, lr, variant)
                    label, key = run_name(r, variants, tag), group_key(r, part.optimizers, variants)
                    result = store.load(r)
                    if result is None:
                        said = f"train@{name}: {label}"
                        result = engine.fit(
                            copy.deepcopy(initial), part.trainable, r, transform, run_split, epochs,
                            params["batch_size"], params, seed, f"{name} {label}", speed, progress=progress,
                            checkpoints=store.checkpoints(r, said, progress.write),
                        )  # fmt: skip
                        store.save(result, keep_state=better(result, best.get(key)))
                    else:
                        progress.advance(epochs)
                        progress.write(f"train@{name}: {label}: finished before the stage was interrupted; kept")
                    records.append(record(result, label, key, n_train, seed))
                    rows += plot_rows(result, label, seed, fam)
                    if better(result, best.get(key)):
                        if best.get(key) is not None:
                            store.drop_state(best[key].run)
                        best[key] = result
                    else:
                        best.setdefault(key, None)
        # Written per seed, so that only one seed's selected weights are ever held in memory.
        test = None if keeps_weights(variants, seeds, seed) else (x_test, split.mean, split.std)
        save_selected(out, part, params, dataset.classes, seed, best, store, initial, test, speed)
    progress.close()
    info = {"part": name, "init": part.described, "n_train": n_train, "seeds": list(seeds), "placement": where}
    info |= {"precision": speed.precision, "channels_last": speed.channels_last}
    write_json(out / "runs.json", {**info, "runs": records})
    write_curves(Path("plots/train") / f"{name}.csv", rows)
    shutil.rmtree(stores[0].dir.parent, ignore_errors=True)  # work/runs/<part>: every seed's store
