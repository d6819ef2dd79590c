"""BG/BB: published donations estimates, lifetimes as oracle, mpmath near gamma = 1, invariants."""

from __future__ import annotations

import warnings

import mpmath
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad
from scipy.special import beta as beta_function

from crmml.errors import DataValidationError
from crmml.models.beta_geo_beta_binom import BetaGeoBetaBinom, beta_geo_beta_binom_log_likelihood

lifetimes = pytest.importorskip("lifetimes")

COLUMNS = ["frequency", "recency", "n_periods"]


@pytest.fixture(scope="module")
def donations():
    """Fader, Hardie & Shang (2010) donations data: 11,104 donors, 6 opportunities, as 22 weighted rows."""
    from lifetimes.datasets import load_donations

    return load_donations().astype(float).rename(columns={"periods": "n_periods"})


@pytest.fixture(scope="module")
def fitted(donations):
    return BetaGeoBetaBinom().fit(donations, sample_weight=donations["weights"])


def with_params(alpha, beta, gamma, delta) -> BetaGeoBetaBinom:
    model = BetaGeoBetaBinom()
    model.params_ = pd.Series([alpha, beta, gamma, delta], index=list(BetaGeoBetaBinom.param_names), dtype=float)
    return model


def lifetimes_bgbb(params: pd.Series):
    oracle = lifetimes.BetaGeoBetaBinomFitter()
    oracle.params_ = params.copy()
    return oracle


def simulate_bgbb_summary(n, alpha, beta, gamma, delta, n_periods, seed):
    """(frequency, recency, n_periods) drawn from BG/BB.

    A customer is alive at opportunity t with probability (1 - theta)^t, so the number of opportunities
    she is alive for is Geometric(theta) - 1; at each of them she transacts with probability p.
    """
    rng = np.random.default_rng(seed)
    n_periods = np.broadcast_to(np.asarray(n_periods), (n,)).astype(int)
    p, theta = rng.beta(alpha, beta, n), rng.beta(gamma, delta, n)
    alive_for = rng.geometric(theta) - 1
    opportunity = np.arange(1, n_periods.max() + 1)
    transacts = (
        (rng.random((n, len(opportunity))) < p[:, None])
        & (opportunity <= alive_for[:, None])
        & (opportunity <= n_periods[:, None])
    )
    frequency = transacts.sum(axis=1)
    recency = np.max(transacts * opportunity, axis=1)
    return pd.DataFrame({"frequency": frequency, "recency": recency, "n_periods": n_periods}).astype(float)


def columns_of(frame):
    return tuple(frame[c].to_numpy() for c in COLUMNS)


def test_params_close_to_fader_hardie_shang_2010_donations(fitted):
    """Fader, Hardie & Shang (2010), Marketing Science 29(6), donations data: alpha=1.204 beta=0.750
    gamma=0.657 delta=2.783, printed to 3 decimals, so half a unit in the last place (5e-4)."""
    np.testing.assert_allclose(
        fitted.params_[["alpha", "beta", "gamma", "delta"]], [1.204, 0.750, 0.657, 2.783], atol=5e-4
    )
    assert fitted.n_customers_ == 11_104


def test_same_mle_as_lifetimes_on_donations_and_simulated(donations):
    simulated = simulate_bgbb_summary(3000, 0.8, 1.5, 1.2, 4.0, n_periods=np.arange(3000) % 8 + 3, seed=4)
    for data, weights in ((donations, donations["weights"]), (simulated, None)):
        ours = BetaGeoBetaBinom().fit(data, sample_weight=weights)
        oracle = lifetimes.BetaGeoBetaBinomFitter().fit(
            data["frequency"], data["recency"], data["n_periods"], weights=weights
        )
        np.testing.assert_allclose(ours.params_.to_numpy(), oracle.params_.to_numpy(), rtol=1e-4)
        row_weights = np.ones(len(data)) if weights is None else weights.to_numpy()
        ll_oracle = row_weights @ beta_geo_beta_binom_log_likelihood(oracle.params_.to_numpy(), columns_of(data))[0]
        assert ours.log_likelihood_ >= ll_oracle - 1e-9


def _log_likelihood_mpmath(params, x, t_x, n):
    """eq. 5 term by term at 50 digits."""
    mpmath.mp.dps = 50
    alpha, beta, gamma, delta = (mpmath.mpf(float(v)) for v in params)
    B = mpmath.beta
    survivor = B(alpha + x, beta + n - x) / B(alpha, beta) * B(gamma, delta + n) / B(gamma, delta)
    dropouts = sum(
        B(alpha + x, beta + t_x - x + i) / B(alpha, beta) * B(gamma + 1, delta + t_x + i) / B(gamma, delta)
        for i in range(n - t_x)
    )
    return float(mpmath.log(survivor + dropouts))


def test_log_likelihood_same_as_lifetimes_and_mpmath_at_random_params(donations):
    """lifetimes adds 1e-15 to its dropout sum before dividing by B(alpha, beta) B(gamma, delta) and works
    with beta functions in linear space: we add that offset and compare likelihoods to rtol 1e-11.
    mpmath (50 digits) checks ours to 1e-13."""
    data = simulate_bgbb_summary(500, 0.8, 1.5, 1.2, 4.0, n_periods=np.arange(500) % 12 + 1, seed=8)
    rng = np.random.default_rng(3)
    for frame in (donations, data):
        x, t_x, n = columns_of(frame)
        for _ in range(3):
            params = np.exp(rng.uniform(-1.5, 1.5, 4))
            ours = beta_geo_beta_binom_log_likelihood(params, (x, t_x, n))[0]
            theirs = lifetimes.BetaGeoBetaBinomFitter._loglikelihood(params, x, t_x, n)
            their_offset = 1e-15 / (beta_function(*params[:2]) * beta_function(*params[2:]))
            np.testing.assert_allclose(np.exp(ours) + their_offset, np.exp(theirs), rtol=1e-11)
            some = np.arange(0, len(x), max(1, len(x) // 12))
            exact = [_log_likelihood_mpmath(params, *map(int, (x[i], t_x[i], n[i]))) for i in some]
            np.testing.assert_allclose(ours[some], exact, rtol=1e-13)


def test_predictions_same_as_lifetimes_at_identical_params(fitted, donations):
    oracle = lifetimes_bgbb(fitted.params_)
    x, t_x, n = (donations[c] for c in COLUMNS)
    for horizon in (1.0, 5.0, 10.5, 30.0):
        np.testing.assert_allclose(
            fitted.expected_purchases(donations, horizon),
            oracle.conditional_expected_number_of_purchases_up_to_time(horizon, x, t_x, n),
            rtol=1e-6,
        )
    for ahead in (0, 1, 3):
        np.testing.assert_allclose(
            fitted.probability_alive(donations, periods_ahead=ahead),
            oracle.conditional_probability_alive(ahead, x, t_x, n),
            rtol=1e-6,
        )


def test_unconditional_expectation_equals_mean_of_lifetimes_pmf(fitted, donations):
    """E[X(6)] (eq. 7) against sum_x x P(X(6) = x) from lifetimes' eq. 8 (every x = 0..6 occurs in the data)."""
    oracle = lifetimes_bgbb(fitted.params_)
    oracle.data = donations.assign(frequency=donations["frequency"].astype(int))
    expected_counts = oracle.expected_number_of_transactions_in_first_n_periods(6)["model"]
    mean = np.sum(expected_counts.index * expected_counts) / expected_counts.sum()
    assert fitted.unconditional_expected_purchases(6)[0] == pytest.approx(mean, rel=1e-9)
    assert fitted.unconditional_expected_purchases([0])[0] == 0.0


def test_gradient_matches_finite_differences(donations):
    rng = np.random.default_rng(0)
    longer = simulate_bgbb_summary(300, 0.8, 1.5, 1.2, 4.0, n_periods=np.arange(300) % 20 + 1, seed=5)
    for frame in (donations, longer):
        data = columns_of(frame)
        for _ in range(4):
            point = np.exp(rng.uniform(-2, 2, 4))

            def total(params):
                return beta_geo_beta_binom_log_likelihood(params, data)[0].sum()

            def gradient(params):
                return beta_geo_beta_binom_log_likelihood(params, data)[1].sum(axis=0)

            assert check_grad(total, gradient, point) <= 1e-6 * max(1.0, np.linalg.norm(gradient(point)))


def test_weights_equal_duplicated_rows(donations):
    counts = donations["weights"].to_numpy().astype(int)
    weighted = BetaGeoBetaBinom().fit(donations, sample_weight=counts)
    repeated = BetaGeoBetaBinom().fit(donations.loc[donations.index.repeat(counts), COLUMNS])
    np.testing.assert_allclose(weighted.params_, repeated.params_, rtol=1e-8)
    assert weighted.log_likelihood_ == pytest.approx(repeated.log_likelihood_, rel=1e-10)


def test_probabilities_in_unit_interval_and_expectations_sensible(fitted):
    x, t_x, n = np.meshgrid(np.arange(0, 41), np.arange(0, 41), [0, 1, 6, 20, 40])
    grid = pd.DataFrame({"frequency": x.ravel(), "recency": t_x.ravel(), "n_periods": n.ravel()}).astype(float)
    grid = grid[(grid["frequency"] <= grid["recency"]) & (grid["recency"] <= grid["n_periods"])]
    grid = grid[(grid["frequency"] > 0) | (grid["recency"] == 0)]
    for ahead in (0, 1, 10):
        alive = fitted.probability_alive(grid, periods_ahead=ahead)
        assert np.all((alive >= 0) & (alive <= 1))
    short, long = fitted.expected_purchases(grid, 1), fitted.expected_purchases(grid, 10)
    assert np.all(np.isfinite(long)) and np.all(short >= 0) and np.all(long >= short)
    assert np.all(short <= fitted.probability_alive(grid, 1) + 1e-12)  # at most one transaction per opportunity
    # Alive at the next opportunity: never more likely than alive at the last observed one.
    assert np.all(fitted.probability_alive(grid, 1) <= fitted.probability_alive(grid, 0) + 1e-15)


def _expected_purchases_mpmath(params, x, t_x, n, horizon):
    """eq. 13 as a plain sum over the next opportunities, at 50 digits:
    (1/L) B(alpha+x+1, beta+n-x)/B(alpha, beta) sum_{k=1}^{horizon} B(gamma, delta+n+k)/B(gamma, delta)."""
    mpmath.mp.dps = 50
    alpha, beta, gamma, delta = (mpmath.mpf(float(v)) for v in params)
    B = mpmath.beta
    likelihood = B(alpha + x, beta + n - x) / B(alpha, beta) * B(gamma, delta + n) / B(gamma, delta) + sum(
        B(alpha + x, beta + t_x - x + i) / B(alpha, beta) * B(gamma + 1, delta + t_x + i) / B(gamma, delta)
        for i in range(n - t_x)
    )
    future = sum(B(gamma, delta + n + k) / B(gamma, delta) for k in range(1, horizon + 1))
    return float(B(alpha + x + 1, beta + n - x) / B(alpha, beta) * future / likelihood)


@pytest.mark.parametrize("gamma", [1.0, 1 + 1e-12, 1 - 1e-9, 1 + 3e-5, 1 - 0.249, 1 + 0.251, 0.657, 2.5])
def test_expected_purchases_accurate_at_and_near_gamma_one(gamma):
    """The printed eq. 13 is 0/0 at gamma = 1; lifetimes returns NaN there. We stay accurate."""
    params = (1.2, 0.75, gamma, 2.78)
    customers = [(0, 0, 0), (0, 0, 6), (3, 5, 6), (6, 6, 6), (10, 40, 200)]
    summary = pd.DataFrame(customers, columns=COLUMNS).astype(float)
    model = with_params(*params)
    for horizon in (1, 7, 50):
        ours = model.expected_purchases(summary, horizon).to_numpy()
        expected = [_expected_purchases_mpmath(params, *customer, horizon) for customer in customers]
        np.testing.assert_allclose(ours, expected, rtol=1e-9)
    if gamma == 1.0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = lifetimes_bgbb(model.params_).conditional_expected_number_of_purchases_up_to_time(
                7, summary["frequency"], summary["recency"], summary["n_periods"]
            )
        assert np.all(np.isnan(theirs))


def test_recovers_simulated_parameters_within_sampling_error():
    truth = np.array([0.8, 1.5, 1.2, 4.0])
    data = simulate_bgbb_summary(40_000, *truth, n_periods=np.arange(40_000) % 10 + 6, seed=7)
    model = BetaGeoBetaBinom().fit(data)
    z = (model.params_.to_numpy() - truth) / model.standard_errors_.to_numpy()
    assert np.all(np.abs(z) < 4), z


def test_expected_purchases_match_simulation_at_true_params():
    """Simulate n + n* opportunities; among customers with a given history count later transactions."""
    alpha, beta, gamma, delta = 0.8, 1.5, 1.2, 4.0
    n, future, size = 6, 5, 400_000
    full = simulate_bgbb_summary(size, alpha, beta, gamma, delta, n_periods=n + future, seed=12)
    rng = np.random.default_rng(12)  # the same draws again, to split transactions at opportunity n
    p, theta = rng.beta(alpha, beta, size), rng.beta(gamma, delta, size)
    alive_for = rng.geometric(theta) - 1
    opportunity = np.arange(1, n + future + 1)
    transacts = (rng.random((size, n + future)) < p[:, None]) & (opportunity <= alive_for[:, None])
    assert np.array_equal(transacts.sum(axis=1), full["frequency"].to_numpy())
    calibration, later = transacts[:, :n], transacts[:, n:].sum(axis=1)
    x, t_x = calibration.sum(axis=1), np.max(calibration * opportunity[:n], axis=1)
    model = with_params(alpha, beta, gamma, delta)
    for history in [(0, 0), (2, 4), (4, 6)]:
        chosen = (x == history[0]) & (t_x == history[1])
        summary = pd.DataFrame([[*history, n]], columns=COLUMNS, dtype=float)
        predicted = model.expected_purchases(summary, future).iloc[0]
        standard_error = later[chosen].std() / np.sqrt(chosen.sum())
        assert abs(later[chosen].mean() - predicted) < 4 * standard_error


def test_bad_summaries_get_clear_errors(donations, fitted):
    broken = donations.copy()
    broken.loc[4, "recency"] = 7.0
    with pytest.raises(DataValidationError, match="'recency' must not exceed n_periods.*row 4 "):
        fitted.probability_alive(broken)
    broken = donations.copy()
    broken.loc[5, "frequency"] = 6.0
    with pytest.raises(DataValidationError, match="'frequency' must not exceed recency.*row 5 "):
        BetaGeoBetaBinom().fit(broken)
    broken = donations.copy()
    broken.loc[2, "n_periods"] = 6.5
    with pytest.raises(DataValidationError, match="'n_periods' must be a non-negative whole number.*row 2 "):
        BetaGeoBetaBinom().fit(broken)
    with pytest.raises(DataValidationError, match="Required column 'n_periods' missing"):
        BetaGeoBetaBinom().fit(donations.rename(columns={"n_periods": "periods"}))
    with pytest.raises(ValueError, match="horizon must be a finite non-negative"):
        fitted.expected_purchases(donations, -1)
    with pytest.raises(ValueError, match="periods_ahead"):
        fitted.probability_alive(donations, periods_ahead=np.nan)
