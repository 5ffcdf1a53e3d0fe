"""How sure a number is: 95 % intervals and the paired tests the report states.

- `wilson`: the interval of a proportion from its counts (an accuracy on n images). Unlike the
  normal approximation it stays inside [0, 1] and keeps its coverage near 0 % and 100 %, which
  few-shot validation sets of 47 images reach.
- `mean_ci`: Student's t interval of a mean over seeds (a handful of runs: t, not z).
- `paired_t`: SGD vs Adam over seeds, each seed a pair (same init, data order and draws).
  Chosen over a permutation test because with 5 seeds an exact sign-flip test has 2^5 = 32
  relabellings and a two-sided p-value of at least 2/32 = 0.0625: it could never reach 5 %.
- `mcnemar`: two models on the same test images (one seed): an exact binomial test on the
  images exactly one of them gets right. It says whether these two models differ, not whether
  the optimizers do (that needs seeds).

Student's t distribution is computed in closed form for integer degrees of freedom (Abramowitz
& Stegun 26.7.3–4), which is all that n − 1 seeds ever needs; no SciPy.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of the proportion correct / n."""
    if n <= 0:
        raise ValueError(f"wilson: n must be positive, got {n}")
    if not 0 <= correct <= n:
        raise ValueError(f"wilson: correct must be in [0, {n}], got {correct}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def with_wilson(name: str, acc: float, n: int) -> dict:
    """`name`, `name_lo`, `name_hi`: an accuracy on n images and its 95 % Wilson interval, as the
    metrics files carry them."""
    lo, hi = wilson(round(acc * n), n)
    return {name: round(acc, 6), f"{name}_lo": round(lo, 6), f"{name}_hi": round(hi, 6)}


def t_within(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with `df` (integer >= 1) degrees of freedom."""
    if df < 1 or int(df) != df:
        raise ValueError(f"t distribution: df must be a positive integer, got {df}")
    t = abs(t)
    if math.isinf(t):
        return 1.0
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return min(1.0, 2 / math.pi * (theta + math.sin(theta) * total)) if df > 1 else 2 * theta / math.pi
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return min(1.0, math.sin(theta) * total)


def t_quantile(p: float, df: int) -> float:
    """The two-sided critical value: t with P(|T| <= t) = p (bisection on `t_within`)."""
    lo, hi = 0.0, 1.0
    while t_within(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_within(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean; one value has no interval (nan)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci: no values")
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(level, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_t(a: list[float], b: list[float]) -> dict:
    """Paired t-test of a − b: mean difference, its 95 % interval and the two-sided p-value."""
    if len(a) != len(b):
        raise ValueError(f"paired_t: {len(a)} values against {len(b)}; pairs need both")
    if len(a) < 2:
        raise ValueError("paired_t: needs at least 2 pairs (seeds)")
    diffs = [x - y for x, y in zip(a, b)]
    mean, lo, hi = mean_ci(diffs)
    n = len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0:
        t, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    else:
        t = mean / (sd / math.sqrt(n))
        p = 1 - t_within(t, n - 1)
    return {"test": "paired t", "n": n, "diff": mean, "diff_lo": lo, "diff_hi": hi, "t": t, "p": max(p, 0.0)}


def mcnemar(only_a: int, only_b: int) -> dict:
    """Exact McNemar test: `only_a` images right by model A alone, `only_b` by B alone."""
    n = only_a + only_b
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 1.0
    return {"test": "McNemar exact", "only_a": only_a, "only_b": only_b, "p": min(1.0, 2 * tail)}
