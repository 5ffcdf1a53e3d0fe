"""The interval and test arithmetic against published values (tables of Student's t, worked examples)."""

import math
import re

import pytest

from tlstudy import uncertainty as U


@pytest.mark.parametrize(
    "df, t975", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (5, 2.5706), (9, 2.2622), (30, 2.0423)]
)
def test_t_quantiles_match_the_tables(df, t975):
    assert U.t_quantile(0.95, df) == pytest.approx(t975, abs=1e-4)


def test_wilson_interval_from_counts():
    # Newcombe (1998), example: 81 of 263 -> 0.2553 to 0.3662.
    lo, hi = U.wilson(81, 263)
    assert (lo, hi) == (pytest.approx(0.2553, abs=1e-4), pytest.approx(0.3662, abs=1e-4))
    assert U.wilson(0, 47)[0] == 0.0 and U.wilson(47, 47)[1] == 1.0
    with pytest.raises(ValueError, match="correct must be in"):
        U.wilson(48, 47)


def test_mean_interval_and_paired_t():
    mean, lo, hi = U.mean_ci([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and hi - mean == pytest.approx(4.3027 * 0.1 / math.sqrt(3), abs=1e-4)
    t = U.paired_t([0.5, 0.6, 0.55, 0.52, 0.58], [0.45, 0.5, 0.56, 0.47, 0.5])
    # Differences 0.05, 0.10, -0.01, 0.05, 0.08: mean 0.054, sd 0.0416, t = 2.903 on 4 df, p = 0.0440.
    assert t["t"] == pytest.approx(2.903, abs=1e-3) and t["p"] == pytest.approx(0.0440, abs=1e-3)
    assert t["diff_lo"] < t["diff"] < t["diff_hi"] and t["diff_lo"] > 0  # significant: interval excludes 0


def test_mcnemar_exact():
    # 10 vs 2 discordant pairs: 2 * P(X <= 2 | n = 12, p = 1/2) = 2 * 79 / 4096.
    assert U.mcnemar(10, 2)["p"] == pytest.approx(2 * 79 / 4096)
    assert U.mcnemar(0, 0)["p"] == 1.0 and U.mcnemar(5, 5)["p"] == 1.0


@pytest.mark.parametrize("t", [1e3, 1e6, 1e9])
def test_tiny_p_values_are_computed_not_rounded_to_zero(t):
    """The tail is computed directly: against closed forms for 1 and 2 degrees of freedom
    (Cauchy: 2/π·atan(1/t); df = 2: 2 / (√(2+t²)·(√(2+t²)+t))), to 1e-9 relative error."""
    cauchy = 2 / math.pi * math.atan(1 / t)
    two = 2 / (math.sqrt(2 + t * t) * (math.sqrt(2 + t * t) + t))
    assert U.t_tail(t, 1) == pytest.approx(cauchy, rel=1e-9)
    assert U.t_tail(t, 2) == pytest.approx(two, rel=1e-9)
    assert U.t_within(2.7764, 4) == pytest.approx(0.95, abs=1e-5)


def test_a_p_value_below_1e_16_prints_as_a_bound_not_as_zero():
    t = U.paired_t([0.1, 0.1000001, 0.0999999, 0.1, 0.1], [0.0] * 5)
    assert 0 < t["p"] < 1e-16
    assert U.p_text(t["p"]) == "p < 10⁻⁶"
    assert [U.p_text(p) for p in (0.43, 0.0051, 0.00099, 1e-4, 4.2e-5)] == [
        "p = 0.43", "p = 0.0051", "p < 10⁻³", "p < 10⁻³", "p < 10⁻⁴",
    ]  # fmt: skip


def coverage(p: float, n: int) -> float:
    """The probability that Wilson's interval from Binomial(n, p) counts holds p."""
    return sum(
        math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1) if U.wilson(k, n)[0] <= p <= U.wilson(k, n)[1]
    )


def test_the_wilson_docstring_states_its_coverage_near_100_percent_as_it_is():
    """Its coverage near 0 and 1 is not 95 %: the docstring gives the lowest at n = 237 (the
    cartoon test set), and that number is what the interval does."""
    # Coverage jumps where p crosses an interval's end, so its infimum is just beside one.
    ends = [e for k in range(238) for e in U.wilson(k, 237) if 0.99 < e < 1]
    worst, at = min((coverage(p, 237), p) for e in ends for p in (e - 1e-12, e + 1e-12))
    stated = re.search(r"the lowest at n = 237 is ([\d.]+) %, at a true accuracy of ([\d.]+) %", U.__doc__)
    assert stated, "uncertainty's docstring must state Wilson's lowest coverage at n = 237"
    assert float(stated[1]) == round(100 * worst, 1) and float(stated[2]) == round(100 * at, 2)
    assert worst < 0.9 and coverage(0.5, 237) > 0.94
