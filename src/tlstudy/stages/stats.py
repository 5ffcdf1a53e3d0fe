"""Stage `stats`: per-channel mean and σ of the training images in one pass (data/normalisation.py),
written to metrics/stats.json, which every training and evaluation stage normalises with."""

from __future__ import annotations

from pathlib import Path

from tlstudy.data import images as D
from tlstudy.data.normalisation import STATS, channel_stats
from tlstudy.lib.atomic import write_json


def run(params: dict) -> dict:
    dataset = D.load(Path("work/images.pt"), Path("manifest.csv"))
    images, _ = dataset.part("full", "train")
    s = channel_stats(images)
    channels = ("r", "g", "b")
    result = {
        "images": len(images),
        "mean": {c: round(float(v), 8) for c, v in zip(channels, s.mean)},
        "std": {c: round(float(v), 8) for c, v in zip(channels, s.var.sqrt())},
    }
    write_json(STATS, result)
    print(f"stats: {len(images)} training images, mean {result['mean']}, std {result['std']}")
    return result
