"""Stage `pretrain@<name>`: a ResNet-18 trained from random init on PACS's domains other than the
target (`data.domain`), the backbone that `transfer` parts start from (leave-one-domain-out: the
target is never seen).

Sources (params `pretrain.<name>`): `pacs` — the archive `fetch` downloads holds all four
domains; the three others are unpacked to `path` (pacs.get_sources: by the archive's own domain
and label columns, under their official names where the bytes are the reference ones), and a
folder already complete there is used as it is; `local` — a folder `<domain>/<class>/<image>`;
`synthetic` — the demo's shapes in one style per domain.

One run of the engine on all source images but a validation share stratified by domain × class,
which picks the best epoch. Writes `backbones/<name>.pt` (the state dict and its normalisation),
`metrics/pretrain/<name>.json` (what a comparison needs: validation accuracy, the selected
epoch, and `target_test_acc`, the model's accuracy on the target's test set with no training on
the target at all, with the target domain beside it),
`details/pretrain/<name>.json` (those with their 95 % intervals, accuracy per domain, images
per domain, s/epoch: what the report reads) and `plots/pretrain/<name>.csv` (curves, as the parts
write them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from tlstudy import params as P
from tlstudy.data import images as data
from tlstudy.data import pacs, synthetic
from tlstudy.data.normalisation import channel_stats
from tlstudy.lib import memory, uncertainty
from tlstudy.lib.atomic import torch_save, write_json
from tlstudy.lib.progress import Progress
from tlstudy.training import augment, engine, models, optimizers, resume
from tlstudy.training.curves import plot_rows, write_curves

SYNTHETIC_ROOT = Path("work/synthetic_sources")


def source_root(params: dict, name: str) -> Path:
    spec = params["pretrain"][name]
    root = Path(spec["path"])
    domains = P.source_domains(params)
    if spec["source"] == "local":
        return root
    if spec["source"] == "synthetic":
        shutil.rmtree(SYNTHETIC_ROOT, ignore_errors=True)
        size = max(64, params["data"]["image_size"])
        per_class = params["data"]["synthetic_per_class"]
        for domain, style in zip(domains, synthetic.STYLES):
            synthetic.generate(SYNTHETIC_ROOT / domain, per_class, size, params["seed"], style)
        return SYNTHETIC_ROOT
    return pacs.get_sources(params, root, domains, f"pretrain@{name}")


def scan(root: Path, domains: list[str], classes: list[str], target: str = "cartoon") -> list[data.Entry]:
    """Images of the chosen domains; each domain must hold exactly the target domain's classes."""
    entries = []
    for domain in domains:
        found, domain_entries = data.scan(root / domain)
        if found != classes:
            raise data.DataError(
                f"{root / domain}: class folders {found}; the {target} data has {classes} and the pretrained "
                "head must predict the same classes"
            )
        entries += [data.Entry(f"{domain}/{e.path}", e.cls) for e in domain_entries]
    return entries


def stratified_val(keys: list[tuple[str, str]], fraction: float, seed: int) -> torch.Tensor:
    """A boolean mask: `fraction` of each (domain, class) group, at least one, seeded."""
    rng = np.random.default_rng([seed, 3])
    mask = np.zeros(len(keys), dtype=bool)
    for key in sorted(set(keys)):
        members = [i for i, k in enumerate(keys) if k == key]
        take = max(1, int(fraction * len(members))) if len(members) > 1 else 0
        mask[[members[j] for j in rng.permutation(len(members))[:take]]] = True
    return torch.from_numpy(mask)


def target_accuracy(model, mean, std, speed) -> tuple[float, int]:
    """The pretrained 7-way model on the target domain's test set, normalised as it was trained."""
    dataset = data.load(Path("work/images.pt"), Path("manifest.csv"))
    x, y = dataset.part("full", "test")
    logits = engine.predict(model, x.to(speed.device), mean, std, speed)
    return (logits.argmax(1).cpu() == y).float().mean().item(), len(y)


def store_key(params: dict, name: str, speed: engine.Speed, root: Path, paths: list[str]) -> str:
    """The resume key of backbone `name`'s run; it holds the source images it trains on (`paths`
    under `root`) by name and content, since they are no dep of the stage that DVC hashes."""
    inputs = [Path("work/images.pt"), Path("manifest.csv")]
    spec = params["pretrain"][name]
    return resume.fingerprint(params, spec, inputs, "pretrain", speed, images=(root, paths))


def run(params: dict, name: str) -> dict:
    if name not in params["pretrain"]:
        raise P.ParamsError(f"params: no backbone {name!r} under 'pretrain'; known: {', '.join(params['pretrain'])}")
    spec = params["pretrain"][name]
    size = params["data"]["image_size"]
    dev = engine.device()
    speed = engine.speed_for(dev, params["precision"], size)
    classes = torch.load("work/images.pt", weights_only=True)["classes"]

    root = source_root(params, name)
    sources, target = P.source_domains(params), P.target_domain(params)
    entries = scan(root, sources, classes, target)
    need = memory.training_bytes(
        size, spec["batch_size"], speed.eval_batch, len(entries) * 3 * size * size, dev.type == "cpu"
    )
    memory.check(
        need, f"data.image_size = {size} with pretrain.{name}.batch_size = {spec['batch_size']}",
        f"pretraining on {len(entries)} images", "lower data.image_size or the batch size",
    )  # fmt: skip
    cache, _ = data.build_cache(root, entries, classes, size, "error")
    domains = [p.split("/")[0] for p in cache["paths"]]
    keys = list(zip(domains, [p.split("/")[1] for p in cache["paths"]]))
    is_val = stratified_val(keys, spec["val_fraction"], params["seed"])
    x, y = cache["images"], cache["labels"]
    stats = channel_stats(x[~is_val])
    col = lambda v: v.float().view(1, 3, 1, 1).to(dev)  # noqa: E731
    x_train, y_train, x_val, y_val = (t.to(dev) for t in (x[~is_val], y[~is_val], x[is_val], y[is_val]))
    split = engine.Split(x_train, y_train, x_val, y_val, col(stats.mean), col(stats.var.sqrt()))
    counts = {d: {"train": 0, "val": 0} for d in sources}
    for d, v in zip(domains, is_val.tolist()):
        counts[d]["val" if v else "train"] += 1
    print(
        f"pretrain@{name}: {len(split.x_train)} train / {len(split.x_val)} val images from "
        f"{', '.join(sources)} at {size} px on {dev}; target {target}"
    )

    r = engine.Run(spec["optimizer"], float(spec["lr"]), spec["augment"])
    # A backbone's optimizer settings sit in its own section: the keys its optimizer takes.
    settings = {r.optimizer: {k: spec[k] for k in optimizers.REGISTRY[r.optimizer].settings}}
    store = resume.RunStore(f"pretrain_{name}", store_key(params, name, speed, root, cache["paths"]))
    result = store.load(r)
    if result is None:
        transform = augment.batched(augment.build(params["augmentations"][spec["augment"]], where=spec["augment"]))
        model = models.build(len(classes), "random", params["imagenet_weights"], params["seed"])
        progress = Progress(f"pretrain@{name}", spec["epochs"])
        result = engine.fit(
            model, "all", r, transform, split, spec["epochs"], spec["batch_size"], settings, params["seed"],
            f"pretrain {name}", speed, schedule=spec["schedule"], progress=progress,
            checkpoints=store.checkpoints(r, f"pretrain@{name}", progress.write),
        )  # fmt: skip
        progress.close()
        store.save(result, keep_state=True)
    else:
        print(f"pretrain@{name}: finished before the stage was interrupted; kept")
    if result.best_epoch == 0:
        raise P.ParamsError(
            f"pretrain@{name}: the run diverged at epoch {result.diverged_epoch}; lower 'pretrain.{name}.lr' "
            f"(now {spec['lr']:g})"
        )
    state = result.best_state if result.best_state is not None else store.state(r)

    model = models.build(len(classes), "random", params["imagenet_weights"], params["seed"])
    model.load_state_dict(state)
    model = speed.prepare(model)
    val_pred = engine.predict(model, split.x_val, split.mean, split.std, speed).argmax(1).cpu()
    val_right = (val_pred == y[is_val]).numpy()
    val_domains = np.array([d for d, v in zip(domains, is_val.tolist()) if v])
    bounds = {  # each domain's validation accuracy: its 95 % Wilson interval
        d: [
            round(x, 6)
            for x in uncertainty.wilson(int(val_right[val_domains == d].sum()), int((val_domains == d).sum()))
        ]
        for d in sources
    }
    target_acc, n_target = target_accuracy(model, split.mean, split.std, speed)

    torch_save(
        P.backbone_file(name),
        {
            "state_dict": state, "classes": classes, "domains": sources, "target": target, "image_size": size,
            "mean": stats.mean.tolist(), "std": stats.var.sqrt().tolist(), "epoch": result.best_epoch,
            "val_acc": result.best_val_acc,
        },
    )  # fmt: skip
    metrics = {
        "domains": sources,
        "target": target,
        "images": counts,
        "epoch": result.best_epoch,
        "epochs": spec["epochs"],
        **uncertainty.with_wilson("val_acc", result.best_val_acc, int(is_val.sum())),
        "val_n": int(is_val.sum()),
        "val_acc_per_domain": {d: round(float(val_right[val_domains == d].mean()), 6) for d in sources},
        **{f"val_acc_per_domain{end}": {d: bounds[d][i] for d in sources} for i, end in enumerate(("_lo", "_hi"))},
        **uncertainty.with_wilson("target_test_acc", target_acc, n_target),
        "target_test_n": n_target,
        "sec_per_epoch": round(result.sec_per_epoch, 4),
        "checkpoint_s": round(result.checkpoint_s, 4),
        "precision": speed.precision,
    }
    write_json(Path("details/pretrain") / f"{name}.json", metrics)
    headline = {k: metrics[k] for k in ("val_acc", "target_test_acc", "epoch", "target")}
    write_json(Path("metrics/pretrain") / f"{name}.json", headline)
    fam = augment.family(params["augmentations"][r.variant])
    rows = plot_rows(result, f"{name} {r.optimizer} lr={r.lr:g}", params["seed"], fam)
    write_curves(Path("plots/pretrain") / f"{name}.csv", rows)
    store.clear()
    print(
        f"pretrain@{name}: epoch {result.best_epoch}, val_acc {result.best_val_acc:.4f} "
        f"({', '.join(f'{d} {a:.3f}' for d, a in metrics['val_acc_per_domain'].items())}); "
        f"{target} test with no {target} training {target_acc:.4f}"
    )
    return metrics
