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

What each covers: `wilson` and `mcnemar` the test images (one model), `mean_ci` and `paired_t`
the training seeds (the test images held fixed); `tlstudy.lib.resampling` gives intervals over both,
`tlstudy.lib.findings` the corrected families and the verdict words. The distributions are SciPy's
and statsmodels' (Student's t, the binomial, Wilson's interval), not ours to maintain; SciPy
computes a tiny t tail as itself, not as 1 minus a number close to 1.
`p_text` prints p-values below 0.001 as bounds (`p < 10⁻⁴`), and none below 10⁻⁶: the tests'
assumptions do not hold to that many digits.
"""

from __future__ import annotations

import math

from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as _mcnemar
from statsmodels.stats.proportion import proportion_confint


def wilson(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion correct / n (95 % by default)."""
    if n <= 0:
        raise ValueError(f"wilson: n must be positive, got {n}")
    if not 0 <= correct <= n:
        raise ValueError(f"wilson: correct must be in [0, {n}], got {correct}")
    lo, hi = proportion_confint(correct, n, alpha=1 - level, method="wilson")
    # Rounding could leave an end a hair outside [0, 1] at 0 or n correct.
    return max(0.0, float(lo)), min(1.0, float(hi))


def with_wilson(name: str, acc: float, n: int) -> dict:
    """`name`, `name_lo`, `name_hi`: an accuracy on n images and its 95 % Wilson interval, as the
    metrics files carry them."""
    lo, hi = wilson(round(acc * n), n)
    return {name: round(acc, 6), f"{name}_lo": round(lo, 6), f"{name}_hi": round(hi, 6)}


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean; one value has no interval (nan)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci: no values")
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
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
    # t from the interval's own mean and sd, SciPy's tail for p: `stats.ttest_rel` would warn of
    # "catastrophic cancellation" whenever both optimizers move by the same count of images on
    # every seed (differences equal up to rounding), which three seeds often do.
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0:
        t, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    else:
        t = mean / (sd / math.sqrt(n))
        p = float(2 * stats.t.sf(abs(t), n - 1))
    return {"test": "paired t", "n": n, "diff": mean, "diff_lo": lo, "diff_hi": hi, "t": t, "p": p,
            "covers": "seeds"}  # fmt: skip


def mcnemar(only_a: int, only_b: int) -> dict:
    """Exact McNemar test: `only_a` images right by model A alone, `only_b` by B alone."""
    # Only the discordant cells enter the exact test; the concordant ones are left at 0.
    p = float(_mcnemar([[0, only_a], [only_b, 0]], exact=True).pvalue)
    return {"test": "McNemar exact", "only_a": only_a, "only_b": only_b, "p": min(1.0, p), "covers": "images"}


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
