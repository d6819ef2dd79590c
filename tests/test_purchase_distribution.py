"""Conditional purchase distributions (issue 20): exactness against mpmath, agreement with the models'
own predictions, and a Monte Carlo of the models."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pandas as pd
import pytest

from crmml.models import BetaGeo, ModifiedBetaGeo, ParetoNBD
from crmml.models.parameter_uncertainty import (
    draw_parameters,
    log_parameter_covariance,
    predictive_intervals,
    predictive_pmf,
)
from crmml.models.purchase_distribution import (
    beta_geo_pmf_if_alive,
    conditional_purchase_pmf,
    pareto_nbd_pmf_if_alive,
    purchase_distribution,
    purchase_interval,
    purchase_pmf,
    randomized_pit,
)

# --------------------------------------------------------------------------------------------------
# Model simulators (vectorised), used to fit models and as the Monte Carlo truth.


def simulate_btyd(kind: str, params, T, horizon: float, seed: int, rate_scale: float = 1.0) -> pd.DataFrame:
    """Histories ``(frequency, recency, T)`` in ``(0, T]`` and the purchases in ``(T, T + horizon]``.

    ``kind`` is ``"bg"`` (BG/NBD: dropout after each repeat purchase), ``"mbg"`` (also right after the
    first purchase) or ``"pareto"`` (exponential lifetime). ``T`` is an array, one per customer.
    ``rate_scale`` multiplies the purchase rates in the future window.
    """
    rng = np.random.default_rng(seed)
    T = np.asarray(T, dtype=float)
    n = len(T)
    end = T + horizon
    if kind == "pareto":
        r, alpha, s, beta = params
        rate = rng.gamma(r, 1.0 / alpha, n)
        lifetime = rng.exponential(1.0 / rng.gamma(s, 1.0 / beta, n))
        window = np.minimum(lifetime, T)
        x = rng.poisson(rate * window)
        future = rng.poisson(rate_scale * rate * np.clip(np.minimum(lifetime, end) - T, 0.0, None))
        last = np.where(x > 0, window * rng.uniform(size=n) ** (1.0 / np.maximum(x, 1)), 0.0)
    else:
        r, alpha, a, b = params
        rate = rng.gamma(r, 1.0 / alpha, n)
        dropout = rng.beta(a, b, n)
        # Repeat purchases made, the one after which the customer leaves included.
        kept = rng.geometric(dropout) - (1 if kind == "mbg" else 0)
        inside = rng.poisson(rate * T)
        total = inside + rng.poisson(rate_scale * rate * horizon)
        x = np.minimum(kept, inside)
        future = np.clip(np.minimum(kept - inside, total - inside), 0, None)
        # The last purchase in (0, T]: the x-th of `inside` uniform points there.
        last = np.where(x > 0, T * rng.beta(np.maximum(x, 1), np.maximum(inside - x, 0) + 1), 0.0)
    return pd.DataFrame({"frequency": x.astype(float), "recency": last, "T": T, "future": future})


PARAMS = {"bg": (0.243, 4.414, 0.793, 2.426), "mbg": (0.243, 4.414, 0.793, 2.426), "pareto": (0.55, 10.58, 0.61, 11.67)}
MODELS = {"bg": BetaGeo, "mbg": ModifiedBetaGeo, "pareto": ParetoNBD}


@pytest.fixture(scope="module", params=["bg", "mbg", "pareto"])
def fitted(request):
    """A model fitted to 6,000 simulated customers (T uniform on 13..78 weeks), with holdout purchases."""
    kind = request.param
    rng = np.random.default_rng(11)
    T = np.round(rng.uniform(13, 78, 6000) * 7) / 7
    data = simulate_btyd(kind, PARAMS[kind], T, 39.0, seed=12)
    model = MODELS[kind]().fit(data[["frequency", "recency", "T"]])
    return kind, model, data


# --------------------------------------------------------------------------------------------------
# Exactness against mpmath


def _pareto_fresh_mp(r, alpha, s, beta, t, k):
    """Fresh Pareto/NBD customer: alive through t with k purchases, or dead at u < t after k (model definition)."""
    nb = lambda u: mp.gamma(r + k) / (mp.gamma(r) * mp.factorial(k)) * (alpha / (alpha + u)) ** r * (u / (alpha + u)) ** k
    death = lambda u: s * beta**s * (beta + u) ** (-(s + 1)) * nb(u)
    return (beta / (beta + t)) ** s * nb(t) + mp.quad(death, [0, t / 4, t / 2, t])


def _bg_fresh_mp(r, alpha, a, b, t, k):
    """Fader, Hardie & Lee (2005) eq. 8 in mpmath."""
    z = mp.mpf(t) / (alpha + t)
    nb = mp.gamma(r + k) / (mp.gamma(r) * mp.factorial(k)) * (1 - z) ** r * z**k
    value = mp.beta(a, b + k) / mp.beta(a, b) * nb
    if k > 0:
        value += mp.beta(a + 1, b + k - 1) / mp.beta(a, b) * mp.betainc(k, r, 0, z, regularized=True)
    return value


@pytest.mark.parametrize("params", [(0.55, 10.58, 0.61, 11.67), (0.55, 10.58, 0.61, 0.8), (0.55, 0.9, 0.61, 11.67),
                                    (2.0, 5.0, 1.5, 50.0), (0.3, 40.0, 0.2, 5.0)])
def test_pareto_fresh_pmf_matches_mpmath(params):
    mp.mp.dps = 20
    r, alpha, s, beta = params
    histories = [(0, 0.0), (2, 30.0), (30, 78.0), (400, 78.0)]
    for t in (1.0, 250.0) if params[0] != 0.55 else (39.0,):
        pmf = pareto_nbd_pmf_if_alive(params, np.array([h[0] for h in histories]), np.array([h[1] for h in histories]),
                                      t, 80)
        for row, (x, T) in enumerate(histories):
            for k in (0, 1, 7, 80):
                expected = float(_pareto_fresh_mp(r + x, alpha + T, s, beta + T, t, k))
                assert pmf[row, k] == pytest.approx(expected, abs=1e-11, rel=1e-6), (x, T, t, k)


@pytest.mark.parametrize("shift", [0, 1])
def test_beta_geo_fresh_pmf_matches_mpmath(shift):
    mp.mp.dps = 30
    for r, alpha, a, b in [(0.243, 4.414, 0.793, 2.426), (2.0, 1.0, 0.5, 5.0)]:
        histories = [(0, 0.0), (2, 30.0), (400, 78.0)]
        for t in (1.0, 39.0, 250.0):
            pmf = beta_geo_pmf_if_alive((r, alpha, a, b), np.array([h[0] for h in histories]),
                                        np.array([h[1] for h in histories]), t, 80, shift)
            for row, (x, T) in enumerate(histories):
                for k in (0, 1, 2, 7, 30, 80):
                    expected = float(_bg_fresh_mp(r + x, alpha + T, a, b + x + shift, t, k))
                    assert pmf[row, k] == pytest.approx(expected, abs=1e-12, rel=1e-8), (x, T, t, k)


def test_long_histories_and_large_counts_stay_finite():
    """r + x in the tens of thousands, counts up to 5,000: finite, non-negative, summing to 1."""
    x = np.array([0.0, 50.0, 5000.0, 20000.0])
    T = np.array([0.0, 100.0, 300.0, 400.0])
    for pmf in (pareto_nbd_pmf_if_alive((0.55, 10.58, 0.61, 11.67), x, T, 39.0, 6000),
                beta_geo_pmf_if_alive((0.243, 4.414, 0.793, 2.426), x, T, 39.0, 6000)):
        assert np.all(np.isfinite(pmf)) and np.all(pmf >= 0)
        np.testing.assert_allclose(pmf.sum(axis=1), 1.0, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# Agreement with the models' own predictions


def test_zero_count_is_probability_no_purchase(fitted):
    kind, model, data = fitted
    summary = data[["frequency", "recency", "T"]]
    pmf = purchase_pmf(model, summary, 39.0, 5)
    np.testing.assert_allclose(pmf[:, 0], model.probability_no_purchase(summary, 39.0).to_numpy(), rtol=0, atol=1e-10)


def test_mean_is_expected_purchases(fitted):
    kind, model, data = fitted
    summary = data[["frequency", "recency", "T"]]
    pmf = purchase_pmf(model, summary, 39.0, tail=1e-13)
    mean = pmf @ np.arange(pmf.shape[1])
    np.testing.assert_allclose(mean, model.expected_purchases(summary, 39.0).to_numpy(), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(pmf.sum(axis=1), 1.0, atol=1e-10)


def test_cohort_mean_is_unconditional_forecast(fitted):
    """A cohort acquired at 0 (x = t_x = T = 0): the PMF's mean is the tracking-plot forecast."""
    kind, model, _ = fitted
    zero = pd.DataFrame({"frequency": [0.0], "recency": [0.0], "T": [0.0]})
    for t in (13.0, 52.0, 104.0):
        pmf = purchase_pmf(model, zero, t, tail=1e-13)
        assert pmf[0] @ np.arange(pmf.shape[1]) == pytest.approx(model.unconditional_expected_purchases(t)[0], rel=1e-7)


def test_distribution_summary_matches_dense_pmf(fitted):
    kind, model, data = fitted
    summary = data[["frequency", "recency", "T"]]
    dense = purchase_pmf(model, summary, 39.0)
    lower, upper = purchase_interval(dense, 0.8)
    result = purchase_distribution(model, summary, 39.0, 0.8)
    np.testing.assert_array_equal(result.lower, lower)
    np.testing.assert_array_equal(result.upper, upper)
    np.testing.assert_allclose(result.p_no_purchase, dense[:, 0], atol=1e-15)
    np.testing.assert_allclose(result.expected, model.expected_purchases(summary, 39.0).to_numpy(), rtol=1e-5)


def test_evaluated_per_distinct_history():
    """Duplicated rows give identical distributions; the order of rows does not matter."""
    model = BetaGeo()
    model.params_ = pd.Series(PARAMS["bg"], index=model.param_names)
    x, t_x, T = np.array([3.0, 0.0, 3.0, 1.0]), np.array([20.0, 0.0, 20.0, 5.0]), np.array([40.0, 40.0, 40.0, 30.0])
    pmf = conditional_purchase_pmf(model, model._params(), x, t_x, T, 39.0, 30)
    np.testing.assert_array_equal(pmf[0], pmf[2])
    reversed_pmf = conditional_purchase_pmf(model, model._params(), x[::-1], t_x[::-1], T[::-1], 39.0, 30)
    np.testing.assert_array_equal(reversed_pmf[::-1], pmf)


# --------------------------------------------------------------------------------------------------
# Monte Carlo of the fitted models


@pytest.mark.parametrize("rate_scale", [1.0, 1.3])
def test_monte_carlo_of_the_fitted_model(fitted, rate_scale):
    """Customers drawn from the fitted parameters: within each frequency group, the summed predicted
    PMFs match the histogram of the simulated future purchases (binomial noise, 4.5 standard deviations).
    With ``rate_scale``, the future purchase rates are scaled in the simulation and the prediction."""
    kind, model, _ = fitted
    rng = np.random.default_rng(5)
    T = rng.uniform(20, 60, 60_000)
    data = simulate_btyd(kind, tuple(model.params_), T, 26.0, seed=6, rate_scale=rate_scale)
    x, t_x, T = (data[c].to_numpy() for c in ("frequency", "recency", "T"))
    pmf = conditional_purchase_pmf(model, model._params(), x, t_x, T, 26.0, 12, rate_scale=rate_scale)
    group = np.minimum(data["frequency"].to_numpy(), 4)
    future = np.minimum(data["future"].to_numpy(), 12)
    for g in np.unique(group):
        rows = group == g
        for k in range(6):
            predicted = pmf[rows, k].sum()
            observed = np.sum(future[rows] == k)
            assert abs(observed - predicted) <= 4.5 * np.sqrt(predicted * (1 - predicted / rows.sum())) + 1, (g, k)


# --------------------------------------------------------------------------------------------------
# Intervals and the randomised PIT


def test_interval_holds_at_least_its_level():
    pmf = np.array([[0.95, 0.04, 0.01, 0.0], [0.1, 0.2, 0.4, 0.3], [0.05, 0.05, 0.05, 0.85], [0.7, 0.15, 0.1, 0.05]])
    rows = np.arange(len(pmf))
    cdf = np.cumsum(pmf, axis=1)

    def held(lower, upper):
        return cdf[rows, upper] - np.where(lower > 0, cdf[rows, np.maximum(lower - 1, 0)], 0.0)

    lower, upper = purchase_interval(pmf, 0.8, "equal-tailed")
    np.testing.assert_array_equal(lower, [0, 1, 2, 0])  # F(0) = 0.1 is not above the lower 10 %
    np.testing.assert_array_equal(upper, [0, 3, 3, 2])
    assert np.all(held(lower, upper) >= 0.8 - 1e-12)
    lower, upper = purchase_interval(pmf, 0.8)  # shortest: least mass at or above 80 %
    np.testing.assert_array_equal(lower, [0, 1, 3, 0])
    np.testing.assert_array_equal(upper, [0, 3, 3, 1])
    np.testing.assert_allclose(held(lower, upper), [0.95, 0.9, 0.85, 0.85])
    # Brute force over every interval: none holds at least 80 % with less mass.
    for i, row in enumerate(cdf):
        masses = [row[u] - (row[l - 1] if l else 0.0) for l in range(4) for u in range(l, 4)]
        assert min(m for m in masses if m >= 0.8 - 1e-12) == pytest.approx(held(lower, upper)[i])
    with pytest.raises(ValueError, match="level"):
        purchase_interval(pmf, 1.0)


def test_randomized_pit_is_uniform_for_draws_from_the_distribution():
    rng = np.random.default_rng(3)
    pmf = rng.dirichlet(np.ones(6) * 0.5, size=40_000)
    observed = np.array([rng.choice(6, p=row) for row in pmf[:40_000]])
    pit = randomized_pit(pmf, observed, seed=4)
    counts = np.histogram(pit, bins=10, range=(0, 1))[0] / len(pit)
    assert np.all(np.abs(counts - 0.1) < 0.01)
    with pytest.raises(ValueError, match="exceeds"):
        randomized_pit(pmf[:2], np.array([0, 6]))


# --------------------------------------------------------------------------------------------------
# Parameter uncertainty


def test_parameter_draws_follow_the_fitted_covariance(fitted):
    kind, model, _ = fitted
    draws = draw_parameters(model, n_draws=20_000, seed=1)
    assert draws.reason is None and draws.params.shape == (20_000, 4)
    # The delta method: the spread of the log draws is the stored standard errors over the estimates.
    relative_errors = (model.standard_errors_ / model.params_).to_numpy()
    np.testing.assert_allclose(np.log(draws.params).std(axis=0), relative_errors, rtol=0.03)
    np.testing.assert_allclose(np.median(draws.params, axis=0), model.params_.to_numpy(), rtol=0.03)
    log_covariance, _ = log_parameter_covariance(model)
    np.testing.assert_allclose(np.cov(np.log(draws.params).T), log_covariance, atol=0.03 * np.max(np.diag(log_covariance)))
    again = draw_parameters(model, n_draws=20_000, seed=1)
    np.testing.assert_array_equal(draws.params, again.params)


def test_degenerate_covariance_falls_back_to_the_point_estimate(fitted):
    kind, model, data = fitted
    summary = data[["frequency", "recency", "T"]].head(200)
    degenerate = MODELS[kind]()
    degenerate.params_ = model.params_.copy()
    degenerate.covariance_ = model.covariance_ * np.nan
    draws = draw_parameters(degenerate, n_draws=30, seed=0)
    assert draws.n_draws == 1 and "not finite" in draws.reason
    np.testing.assert_array_equal(draws.params[0], model.params_.to_numpy())
    mixture = predictive_pmf(degenerate, summary, 39.0, draws, 20)
    np.testing.assert_allclose(mixture, purchase_pmf(model, summary, 39.0, 20), atol=1e-15)


def test_mixture_over_draws(fitted):
    """The predictive PMF is the mean of the per-draw PMFs (BG/NBD stacks the draws as rows)."""
    kind, model, data = fitted
    summary = data[["frequency", "recency", "T"]].head(300)
    draws = draw_parameters(model, n_draws=5, seed=2)
    mixture = predictive_pmf(model, summary, 39.0, draws, 25)
    x, t_x, T = (summary[c].to_numpy() for c in ("frequency", "recency", "T"))
    by_draw = np.mean([conditional_purchase_pmf(model, p, x, t_x, T, 39.0, 25) for p in draws.params], axis=0)
    np.testing.assert_allclose(mixture, by_draw, atol=1e-13)
    table = predictive_intervals(model, summary, 39.0, draws, level=0.8, spend=np.full(len(summary), 30.0))
    lower, upper = purchase_interval(predictive_pmf(model, summary, 39.0, draws, 400), 0.8)
    np.testing.assert_array_equal(table["purchases_lower"], lower)
    np.testing.assert_array_equal(table["purchases_upper"], upper)
    np.testing.assert_allclose(table["value_upper"], 30.0 * upper)
    np.testing.assert_allclose(table["p_no_purchase"], mixture[:, 0], atol=1e-13)


# --------------------------------------------------------------------------------------------------
# Calibration on a simulated log (issue 20, acceptance 1)


def test_calibrated_on_a_simulated_log():
    """A BG/NBD log (CDNOW estimates) through the real pipeline (daily periods in weeks, calibration
    to 2024-06-30, 39-week holdout); BG/NBD fitted with 10 parameter draws. The randomised PIT is
    uniform within 3 points in each of 10 bins, overall and per calibration-frequency group of at least
    500 customers. The randomised 80 % and 50 % intervals cover their level within sampling noise and
    at most 6 points more. The intervals themselves (discrete counts) hold at least their level, and
    what they hold matches what the model says they hold within 1.5 points."""
    from crmml.data import calibration_holdout
    from crmml.data.simulate import simulate_transactions
    from crmml.models.purchase_calibration import calibration_table

    log = simulate_transactions(30_000, start="2023-04-01", end="2025-03-30", acquisition_end="2024-06-30",
                                seed=3).transactions
    split = calibration_holdout(log, calibration_end="2024-06-30", holdout_end="2025-03-30", freq="D",
                                freq_multiplier=7)
    summary = pd.DataFrame({"frequency": split["frequency_cal"], "recency": split["recency_cal"], "T": split["T_cal"]})
    observed = split["frequency_holdout"].to_numpy()
    model = BetaGeo().fit(summary)
    draws = draw_parameters(model, 10, seed=0)
    pmf = predictive_pmf(model, summary, 39.0, draws, int(observed.max()) + 1)
    bands = np.select([summary["frequency"] <= 2, summary["frequency"] <= 4, summary["frequency"] <= 9],
                      [summary["frequency"].astype(int).astype(str), "3-4", "5-9"], "10+")
    table = calibration_table(pmf, observed, bands, seed=0)
    assert len(table) >= 5  # all, 0, 1, 2, 3-4 at least
    assert (table["pit_max_error"] <= 3.0).all(), table["pit_max_error"]
    for level in (80, 50):
        overall = table.loc["all"]
        assert level - 1.0 <= overall[f"pit_coverage_{level}"] <= level + 6.0
        assert (table[f"pit_coverage_{level}"] >= level - 3.0).all() and (table[f"pit_coverage_{level}"] <= level + 6).all()
        assert overall[f"coverage_{level}"] >= level
        assert abs(overall[f"coverage_{level}"] - overall[f"expected_coverage_{level}"]) <= 1.5
