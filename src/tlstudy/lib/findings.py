"""Declared families of tests, their corrected p-values, and the words every finding uses.

A family is the set of tests a finding is picked from — SGD vs Adam across parts; one transfer
part vs scratch across budgets or target domains — and its p-values are corrected together
(`adjust`, statsmodels' `multipletests`): Holm by default, which bounds the chance of any false
finding in the family whatever the tests' dependence; "fdr_bh" (Benjamini–Hochberg) bounds the
expected share of false ones instead. Raw and adjusted p are both kept, to publish both.

`verdict` is the one rule from a comparison to its words, the effect and its interval first:
"▲ passes" when the difference and its whole interval are above 0 and the adjusted p is below
alpha, "▼ below" the same below 0, "no difference shown" otherwise (absence of evidence, not
evidence of no difference). `problems` checks a sentence of prose against that rule.
"""

from __future__ import annotations

import math
import re

from statsmodels.stats.multitest import multipletests

METHODS = {"holm": "Holm", "fdr_bh": "Benjamini–Hochberg", "bonferroni": "Bonferroni"}
PASSES, BELOW, NO_DIFFERENCE = "▲ passes", "▼ below", "no difference shown"
VERDICTS = (PASSES, BELOW, NO_DIFFERENCE)


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def adjust(family: str, tests: dict[str, float | None], method: str = "holm") -> dict:
    """{family, method, method_name, m, tests: {name: {p, p_adjusted}}}: each test's p corrected in the
    family. A test with no p (None or nan: it could not run) has none adjusted and does not count
    in m, the family's size."""
    if method not in METHODS:
        raise ValueError(f"adjust: family {family!r}: method {method!r} unknown; use one of {', '.join(METHODS)}")
    for name, p in tests.items():
        if not _missing(p) and not 0 <= p <= 1:
            raise ValueError(f"adjust: family {family!r}: test {name!r} has p = {p}; a p-value is in [0, 1]")
    ran = [name for name, p in tests.items() if not _missing(p)]
    adjusted = multipletests([tests[n] for n in ran], method=method)[1] if ran else []
    corrected = dict(zip(ran, (float(q) for q in adjusted)))
    return {"family": family, "method": method, "method_name": METHODS[method], "m": len(ran),
            "tests": {n: {"p": tests[n], "p_adjusted": corrected.get(n)} for n in tests}}  # fmt: skip


def verdict(
    diff: float | None, lo: float | None, hi: float | None, p_adjusted: float | None, alpha: float = 0.05
) -> str:
    """The finding's words for a − b = `diff` with interval [lo, hi] and its family-adjusted p.
    Both the interval and the adjusted p must agree: an interval that leaves 0 out while the
    family's correction keeps p above alpha is no difference shown."""
    if not 0 < alpha < 1:
        raise ValueError(f"verdict: alpha must be in (0, 1), got {alpha}")
    if any(_missing(x) for x in (diff, lo, hi, p_adjusted)):
        return NO_DIFFERENCE  # one seed without an interval, or a test that could not run
    if lo > hi:
        raise ValueError(f"verdict: interval [{lo}, {hi}] has its low end above its high end")
    if p_adjusted < alpha and diff > 0 and lo > 0:
        return PASSES
    if p_adjusted < alpha and diff < 0 and hi < 0:
        return BELOW
    return NO_DIFFERENCE


def judge(family: str, comparisons: dict[str, dict], method: str = "holm", alpha: float = 0.05) -> dict:
    """`adjust` and `verdict` for a family of comparisons, each a dict with diff, its interval
    (lo/hi, or diff_lo/diff_hi as `uncertainty.paired_t` gives) and p, or None where none could
    be made: {family, method, method_name, m, alpha, tests: {name: comparison + p_adjusted +
    verdict}}."""
    comparisons = {name: c or {} for name, c in comparisons.items()}
    out = adjust(family, {name: c.get("p") for name, c in comparisons.items()}, method)
    for name, c in comparisons.items():
        lo, hi = c.get("lo", c.get("diff_lo")), c.get("hi", c.get("diff_hi"))
        q = out["tests"][name]["p_adjusted"]
        out["tests"][name] = {**c, "p_adjusted": q, "verdict": verdict(c.get("diff"), lo, hi, q, alpha)}
    return {**out, "alpha": alpha}


# How prose states each verdict, and words no single test carries.
STATED = {
    PASSES: re.compile(r"▲|\b(pass|passes|passed|beat|beats|above|outperforms?)\b", re.I),
    BELOW: re.compile(r"▼|\b(below|trails?|behind)\b", re.I),
    NO_DIFFERENCE: re.compile(r"\bno (significant )?difference\b", re.I),
}
OVERREACH = re.compile(r"\b(never|always|clearly|reproduced|reproduces|proves?|proven)\b", re.I)


def problems(sentence: str, expected: str) -> list[str]:
    """Why a finding's sentence disagrees with the rule's verdict `expected` (empty: it agrees):
    it states another verdict, none, or uses a word no single test carries."""
    if expected not in VERDICTS:
        raise ValueError(f"problems: verdict {expected!r} unknown; one of {', '.join(VERDICTS)}")
    stated = {v for v, words in STATED.items() if words.search(sentence)}
    found = [f"states {v!r} where the rule gives {expected!r}" for v in VERDICTS if v in stated and v != expected]
    if expected not in stated:
        found.append(f"does not state the rule's verdict {expected!r}")
    found += [f"uses {w!r}, which no test carries" for w in dict.fromkeys(OVERREACH.findall(sentence))]
    return found
