"""Holdout checks of the purchase distributions (crmml.holdout_intervals, issue 20 item 4): the PIT
and intervals against the dense PMF of crmml.models.purchase_distribution, a Monte Carlo of counts
drawn from the customers' own distributions, hand-counted coverage, and the cohort band's moments
against the sum of the per-customer PMFs' moments and a Monte Carlo of the cohort's total."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crmml.errors import DataValidationError
from crmml.holdout_intervals import (
    cohort_band,
    frequency_groups,
    holdout_pit,
    interval_coverage,
    pit_bins,
)
from crmml.holdout_intervals import _pareto_active_moments  # the closed form, checked against the PMF
from crmml.models import BetaGeo, ModifiedBetaGeo, ParetoNBD
from crmml.models.purchase_distribution import _pmf_if_alive, purchase_interval, purchase_pmf, randomized_pit

# CDNOW estimates (README's model table), set directly: no fit needed.
PARAMS = {
    BetaGeo: {"r": 0.2426, "alpha": 4.4135, "a": 0.7929, "b": 2.4258},
    ModifiedBetaGeo: {"r": 0.5248, "alpha": 6.1830, "a": 0.8914, "b": 1.6140},
    ParetoNBD: {"r": 0.5533, "alpha": 10.5776, "s": 0.6062, "beta": 11.6679},
}


def fitted_model(cls):
    model = cls()
    model.params_ = pd.Series(PARAMS[cls])
    return model


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    """3,000 CDNOW-like histories in weeks (many repeated rows, as in real data)."""
    rng = np.random.default_rng(11)
    T = rng.integers(27, 40, 3000).astype(float) * 1.0
    x = np.minimum(rng.negative_binomial(0.3, 0.15, 3000), 60).astype(float)
    t_x = np.where(x > 0, np.round(T * rng.uniform(0.2, 1.0, 3000)), 0.0)
    return pd.DataFrame({"frequency": x, "recency": t_x, "T": T})


def draw_counts(pmf: np.ndarray, seed: int) -> np.ndarray:
    """One count per row drawn from its PMF (inverse CDF)."""
    cdf = np.cumsum(pmf, axis=1)
    u = np.random.default_rng(seed).uniform(size=len(pmf)) * cdf[:, -1]
    return (cdf < u[:, None]).sum(axis=1)


@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo, ParetoNBD])
def test_pit_and_intervals_match_the_dense_pmf(cls, summary):
    """Same seed, same uniforms: holdout_pit equals randomized_pit and purchase_interval on the full PMF,
    including a count far beyond every batch's largest count (evaluated again up to it)."""
    model = fitted_model(cls)
    observed = draw_counts(purchase_pmf(model, summary, 39.0), seed=1)
    observed[5] = 400  # a count no batch reaches (tail 1e-7)
    dense = purchase_pmf(model, summary, 39.0, max_purchases=401)
    frame = holdout_pit(model, summary, observed, 39.0, levels=(0.5, 0.8), seed=3)
    np.testing.assert_allclose(frame["pit"], randomized_pit(dense, observed, seed=3), rtol=0, atol=1e-9)
    assert 1 - 1e-6 < frame["pit"].iloc[5] <= 1.0
    for level in (0.5, 0.8):
        lower, upper = purchase_interval(dense, level)
        name = f"{100 * level:g}"
        np.testing.assert_array_equal(frame[f"covered_{name}"], (lower <= observed) & (observed <= upper))
        assert (frame[f"interval_mass_{name}"] >= level - 1e-9).all()


def test_counts_drawn_from_the_model_are_calibrated(summary):
    """Monte Carlo: counts drawn from each customer's own PMF give a uniform PIT (10 bins within 1.5
    points on 12,000 customers, about 5 binomial SEs), randomized coverage at the nominal level and
    integer-interval coverage at the intervals' own probability."""
    model = fitted_model(BetaGeo)
    big = pd.concat([summary] * 4, ignore_index=True)
    observed = draw_counts(purchase_pmf(model, big, 39.0), seed=2)
    frame = holdout_pit(model, big, observed, 39.0, seed=4)
    shares = 100 * np.histogram(frame["pit"], bins=np.linspace(0, 1, 11))[0] / len(frame)
    assert np.abs(shares - 10).max() < 1.5
    coverage = interval_coverage(frame, frequency_groups(big["frequency"]))
    overall = coverage.loc["all"]
    assert np.abs(overall["randomized"] - overall["nominal"]).max() < 1.5
    assert np.abs(overall["observed"] - overall["expected"]).max() < 1.5
    assert (overall["observed"] >= overall["nominal"] - 1.5).all()


def test_interval_coverage_counts_by_hand():
    """Four customers in two groups: shares counted by hand."""
    frame = pd.DataFrame({"pit": [0.05, 0.3, 0.5, 0.95], "covered_50": [False, True, True, False],
                          "interval_mass_50": [0.6, 0.7, 0.8, 0.9]})
    table = interval_coverage(frame, np.array(["0", "0", "1", "1"], dtype=object), levels=(0.5,))
    assert list(table.index) == [("all", "50"), ("0", "50"), ("1", "50")]
    assert table.loc[("all", "50"), "randomized"] == pytest.approx(50.0)  # 0.3 and 0.5 in [0.25, 0.75]
    assert table.loc[("0", "50"), "observed"] == pytest.approx(50.0)
    assert table.loc[("1", "50"), "expected"] == pytest.approx(85.0)
    assert table.loc[("1", "50"), "customers"] == 2
    assert interval_coverage(frame, np.array(["0", "0", "1", "1"]), levels=(0.5,), min_group=3).index.tolist() == [
        ("all", "50")]


def test_pit_bins_counts_by_hand():
    table = pit_bins([0.05, 0.15, 0.12, 0.95], np.array(["1", "0", "0", "1"], dtype=object), bins=2)
    assert list(table.index) == ["all", "0", "1"]  # the frequency groups in their own order
    assert table.loc["all", ["pit_1", "pit_2"]].tolist() == [75.0, 25.0]
    assert table.loc["0", "pit_max_error"] == 50.0 and table.loc["1", "pit_max_error"] == 0.0


def test_frequency_groups():
    assert list(frequency_groups([0, 1, 2, 3, 4, 5, 9, 10, 250])) == ["0", "1", "2", "3-4", "3-4", "5-9", "5-9",
                                                                       "10+", "10+"]


@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo, ParetoNBD])
def test_band_moments_are_the_sum_of_the_customers(cls, summary):
    """The band's mean is the sum of expected purchases (the model's unconditional-by-cohort
    forecast); its variance is the sum of the per-customer PMF variances."""
    model = fitted_model(cls)
    band = cohort_band(model, summary, [4.0, 39.0])
    for horizon, row in zip((4.0, 39.0), band.itertuples(), strict=True):
        assert row.expected == pytest.approx(model.expected_purchases(summary, horizon).sum(), rel=1e-10)
        pmf = purchase_pmf(model, summary, horizon, tail=1e-12)
        k = np.arange(pmf.shape[1])
        variance = (pmf @ (k * k) - (pmf @ k) ** 2).sum()
        assert row.sd == pytest.approx(np.sqrt(variance), rel=1e-6)
    assert (band["lower_95"] < band["lower_80"]).all() and (band["upper_80"] < band["upper_95"]).all()


def test_pareto_active_moments_closed_form_matches_the_pmf():
    """E[X] and E[X^2] of active Pareto/NBD customers, closed form against the PMF, including s near 1
    and 2 (the integrals' removable singularities)."""
    x, T = np.array([0.0, 3.0, 40.0]), np.array([30.0, 35.0, 39.0])
    for s in (0.6062, 1.0, 1.0 + 1e-9, 2.0, 3.5):
        params = (0.5533, 10.5776, s, 11.6679)
        pmf = _pmf_if_alive(ParetoNBD(), params, x, T, 26.0, 400)
        k = np.arange(401)
        first, second = _pareto_active_moments(params, x, T, 26.0)
        np.testing.assert_allclose(first, pmf @ k, rtol=1e-8)
        np.testing.assert_allclose(second, pmf @ (k * k), rtol=1e-8)


def test_band_covers_a_monte_carlo_of_the_cohort_total(summary):
    """20,000 cohort totals drawn from the customers' PMFs: the normal band's 80 % and 95 % bounds sit
    at the Monte Carlo quantiles to within 0.1 standard deviation of the total (the normal
    approximation of a sum of 3,000 independent counts)."""
    model = fitted_model(BetaGeo)
    cdf = np.cumsum(purchase_pmf(model, summary, 39.0), axis=1)
    uniforms = np.random.default_rng(5).uniform(size=(len(cdf), 20_000))
    totals = np.zeros(20_000)
    for row, u in zip(cdf, uniforms, strict=True):
        totals += np.searchsorted(row, u * row[-1])
    band = cohort_band(model, summary, [39.0]).iloc[0]
    assert totals.mean() == pytest.approx(band["expected"], abs=0.05 * band["sd"])
    assert totals.std() == pytest.approx(band["sd"], rel=0.03)
    for level, name in ((0.8, "80"), (0.95, "95")):
        low, high = np.quantile(totals, [0.5 - level / 2, 0.5 + level / 2])
        assert abs(low - band[f"lower_{name}"]) < 0.1 * band["sd"]
        assert abs(high - band[f"upper_{name}"]) < 0.1 * band["sd"]


def test_empty_cohort_and_bad_inputs(summary):
    """An empty cohort is refused as the models refuse it (the backtest skips an empty holdout)."""
    model = fitted_model(BetaGeo)
    empty = summary.iloc[:0]
    with pytest.raises(DataValidationError, match="the summary frame has no rows"):
        holdout_pit(model, empty, np.zeros(0), 39.0)
    with pytest.raises(DataValidationError, match="the summary frame has no rows"):
        cohort_band(model, empty, [1.0, 39.0])
    with pytest.raises(ValueError, match="observed must hold one holdout count per customer"):
        holdout_pit(model, summary, np.zeros(3), 39.0)
    with pytest.raises(ValueError, match="non-negative whole numbers"):
        holdout_pit(model, summary, np.full(len(summary), 0.5), 39.0)
    with pytest.raises(ValueError, match="levels must be"):
        holdout_pit(model, summary, np.zeros(len(summary)), 39.0, levels=(1.2,))
    with pytest.raises(TypeError, match="Purchase distributions exist for"):
        cohort_band(object(), summary, [1.0])
