"""How sure a number is: 95 % intervals and the paired tests the report states.

- `wilson`: the interval of a proportion from its counts (an accuracy on n images). Unlike the
  normal approximation it stays inside [0, 1] and is never empty at 0 or n correct. Its
  coverage is not 95 % everywhere: it swings around 95 % and dips well below it for proportions
  near 0 % or 100 % — the lowest at n = 237 is 83.8 %, at a true accuracy of 99.93 % (one error
  in ~1,350 images), and at n = 47 also about 84 %, near 99.6 %. Few-shot validation sets of 47
  images reach 100 %: an interval touching 0 or 1 is a rougher statement than one in between.
- `mean_ci`: Student's t interval of a mean over seeds (a handful of runs: t, not z).
- `paired_t`: SGD vs Adam over seeds, each seed a pair (same init, data order and draws).
  Chosen over a permutation test because with 5 seeds an exact sign-flip test has 2^5 = 32
  relabellings and a two-sided p-value of at least 2/32 = 0.0625: it could never reach 5 %.
- `mcnemar`: two models on the same test images (one seed): an exact binomial test on the
  images exactly one of them gets right. It says whether these two models differ, not whether
  the optimizers do (that needs seeds).

Student's t tail P(|T| > t) is the regularized incomplete beta function I_x(df/2, 1/2) at
x = df / (df + t²), computed by its continued fraction, so a tiny p-value is computed as itself
rather than as 1 minus a number close to 1 (which gave p = 0 below ~1e-16); no SciPy.
`p_text` prints p-values below 0.001 as bounds (`p < 10⁻⁴`), and none below 10⁻⁶: the tests'
assumptions do not hold to that many digits.
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


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), for x < (a+1)/(a+b+2)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def beta_inc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_tail(t: float, df: int) -> float:
    """P(|T| > t) for Student's t with `df` (> 0) degrees of freedom: the two-sided p-value."""
    if df <= 0:
        raise ValueError(f"t distribution: df must be positive, got {df}")
    t = abs(t)
    if math.isinf(t):
        return 0.0
    return beta_inc(df / 2, 0.5, df / (df + t * t))


def t_within(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with `df` degrees of freedom."""
    return 1.0 - t_tail(t, df)


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
        p = t_tail(t, n - 1)
    return {"test": "paired t", "n": n, "diff": mean, "diff_lo": lo, "diff_hi": hi, "t": t, "p": p}


def mcnemar(only_a: int, only_b: int) -> dict:
    """Exact McNemar test: `only_a` images right by model A alone, `only_b` by B alone."""
    n = only_a + only_b
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 1.0
    return {"test": "McNemar exact", "only_a": only_a, "only_b": only_b, "p": min(1.0, 2 * tail)}


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
P_FLOOR_EXPONENT = 6  # no bound below 10⁻⁶ is printed


def p_value(p: float) -> str:
    """`0.0051` (two significant digits) from 0.001 up; below it a bound, `< 10⁻⁴`, the
    tightest power of ten above p, never tighter than `< 10⁻⁶`."""
    if p >= 1e-3:
        return f"{p:.2g}"
    k = P_FLOOR_EXPONENT if p <= 0 else min(P_FLOOR_EXPONENT, math.ceil(-math.log10(p)) - 1)
    return "< 10" + f"-{k}".translate(SUPERSCRIPT)


def p_text(p: float) -> str:
    """`p = 0.0051` or `p < 10⁻⁴`."""
    shown = p_value(p)
    return f"p {shown}" if shown.startswith("<") else f"p = {shown}"
