"""Intervals over test images and training seeds at once: a two-way bootstrap of the per-image
correctness of every seed's selected model (`correct[seed, image]`, 0/1).

Why two-way: an accuracy varies with the training seed (initialisation, data order, draws) and
with which test images were drawn from the domain. A t interval over seeds holds the images
fixed (it speaks of this test set only); Wilson's holds the model fixed (one seed). Resampling
seeds and images independently, each with replacement, and taking the mean of the crossed cells
(Owen 2007, "The pigeonhole bootstrap") covers both: a new run judged on a new test set. It is
slightly conservative — it overstates the seed × image interaction's share — the safe side.
With one seed it is the image bootstrap; with 3–5 seeds the seed half rests on that many values,
a rough statement the label does not hide. The interval is the bootstrap's percentile interval
(`scipy.stats.bootstrap`); the same rng seed gives the same interval on any machine.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

N_RESAMPLES = 9999
BATCH = 500  # resamples held at once: BATCH × seeds × images cells


def _matrix(name: str, correct) -> np.ndarray:
    m = np.asarray(correct, dtype=float)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"{name}: expected a 2-D array [seeds, images] of 0/1, got shape {m.shape}")
    if not np.isin(m, (0.0, 1.0)).all():
        raise ValueError(f"{name}: expected 0/1 (wrong/right) per seed and image, got other values")
    return m


def covers(n_seeds: int) -> str:
    """What an interval from `n_seeds` seeds' predictions covers."""
    return "images and seeds" if n_seeds > 1 else "images"


def _label(level: float, n_seeds: int) -> str:
    over = f"test images and {n_seeds} seeds" if n_seeds > 1 else "test images, one seed"
    return f"{100 * level:g} % CI over {over} (bootstrap)"


def _resample(cells: np.ndarray, level: float, n_resamples: int, seed: int):
    """Percentile bootstrap of the mean of `cells[seed, image]`, seeds and images resampled
    independently: (estimate, low, high, the resampled means)."""
    n_seeds, n_images = cells.shape

    def mean(*idx, axis=-1):
        s, i = idx if n_seeds > 1 else (np.zeros((*idx[0].shape[:-1], 1), dtype=int), idx[0])
        return cells[s[..., :, None], i[..., None, :]].mean(axis=(-2, -1))

    # SciPy resamples each index array on its own (paired=False): that is the two-way design. A
    # single seed cannot be resampled (SciPy wants two), and needs not be: it is always itself.
    data = (np.arange(n_seeds), np.arange(n_images)) if n_seeds > 1 else (np.arange(n_images),)
    res = stats.bootstrap(data, mean, n_resamples=n_resamples, batch=BATCH, vectorized=True, paired=False,
                          confidence_level=level, method="percentile", rng=np.random.default_rng(seed))  # fmt: skip
    dist = res.bootstrap_distribution
    lo, hi = res.confidence_interval
    if np.ptp(dist) == 0:  # every cell alike: SciPy gives nan, the interval is the point
        lo = hi = dist[0]
    return float(cells.mean()), float(lo), float(hi), dist


def image_seed_interval(correct, level: float = 0.95, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Accuracy over seeds and test images with its two-way bootstrap interval: `correct` is
    [seeds, images] of 0/1, every seed's model on the same images. Returns mean, lo, hi, level,
    covers, label, n_seeds, n_images, method."""
    cells = _matrix("image_seed_interval", correct)
    mean, lo, hi, _ = _resample(cells, level, n_resamples, seed)
    return {"mean": mean, "lo": lo, "hi": hi, "level": level, "covers": covers(len(cells)),
            "label": _label(level, len(cells)), "n_seeds": cells.shape[0], "n_images": cells.shape[1],
            "method": "two-way bootstrap" if len(cells) > 1 else "image bootstrap"}  # fmt: skip


def paired_image_seed_difference(
    correct_a, correct_b, level: float = 0.95, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> dict:
    """a − b accuracy, two models (parts, optimizers) run with the same seeds on the same test
    images: the same seeds and images are resampled for both, so what they share cancels.

    p is the bootstrap's own, the interval inverted: twice the smaller share of resampled
    differences at or beyond 0 on either side (+1 for the observed one), so it falls below
    1 − level as the interval leaves 0 out (up to the resampling's granularity), and never
    below 2 / (n_resamples + 1). Not a sign-flip test: over seeds it cannot go below 0.25 with 3
    seeds, and over images it would hold the seeds fixed.
    Returns diff, lo, hi, p, level, covers, label, n_seeds, n_images, method."""
    a = _matrix("paired_image_seed_difference: correct_a", correct_a)
    b = _matrix("paired_image_seed_difference: correct_b", correct_b)
    if a.shape != b.shape:
        raise ValueError(
            f"paired_image_seed_difference: correct_a is {a.shape} and correct_b {b.shape}; "
            "a pair needs the same seeds and images in the same order"
        )
    diff, lo, hi, dist = _resample(a - b, level, n_resamples, seed)
    below, above = int((dist <= 0).sum()), int((dist >= 0).sum())
    p = min(1.0, 2 * (min(below, above) + 1) / (len(dist) + 1))
    return {"diff": diff, "lo": lo, "hi": hi, "p": p, "level": level, "covers": covers(len(a)),
            "label": _label(level, len(a)), "n_seeds": a.shape[0], "n_images": a.shape[1],
            "method": "paired two-way bootstrap" if len(a) > 1 else "paired image bootstrap"}  # fmt: skip
