"""Per-channel mean and σ of uint8 images in one pass, and the normalisation the stats stage
writes, as every training and evaluation stage reads it.

Each batch contributes its own (n, μ, M2) with M2 = n·σ²; two summaries merge exactly
(Chan, Golub & LeVeque). Batches merge pairwise like a binary counter, so every value is
combined with one of similar weight — the numerically stable order — while keeping only
O(log n) summaries in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

STATS = Path("metrics/stats.json")


@dataclass
class Summary:
    n: int
    mean: torch.Tensor  # per channel, float64
    m2: torch.Tensor  # per channel sum of squared deviations, float64

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / self.n

    @staticmethod
    def of(batch: torch.Tensor) -> Summary:
        """A B×C×H×W batch (values in [0, 1]) summarised per channel."""
        x = batch.to(torch.float64).transpose(0, 1).reshape(batch.shape[1], -1)
        mean = x.mean(dim=1)
        return Summary(x.shape[1], mean, ((x - mean[:, None]) ** 2).sum(dim=1))

    def merge(self, other: Summary) -> Summary:
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        return Summary(n, mean, m2)


def channel_stats(images: torch.Tensor, batch_size: int = 256) -> Summary:
    """One pass over uint8 images; merges batch summaries pairwise."""
    if len(images) == 0:
        raise ValueError("no images to compute statistics over")
    stack: list[tuple[int, Summary]] = []  # (level, summary), levels strictly decreasing
    for start in range(0, len(images), batch_size):
        item = (0, Summary.of(images[start : start + batch_size].to(torch.float64) / 255.0))
        while stack and stack[-1][0] == item[0]:
            level, left = stack.pop()
            item = (level + 1, left.merge(item[1]))
        stack.append(item)
    total = stack.pop()[1]
    while stack:
        total = stack.pop()[1].merge(total)
    return total


def load_stats(path: Path = STATS) -> tuple[list[float], list[float]]:
    import json

    s = json.loads(Path(path).read_text())
    return list(s["mean"].values()), list(s["std"].values())
