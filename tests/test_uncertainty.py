"""The interval and test arithmetic against published values (tables of Student's t, worked examples)."""

import math

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
