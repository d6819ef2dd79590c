"""Gamma-Gamma spend model: published CDNOW estimates, lifetimes as oracle, invariants."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from crmml.errors import DataValidationError
from crmml.models.gamma_gamma import GammaGamma, gamma_gamma_log_likelihood

lifetimes = pytest.importorskip("lifetimes")

PUBLISHED = {"p": 6.25, "q": 3.74, "gamma": 15.44}


@pytest.fixture(scope="module")
def cdnow():
    """CDNOW 1/10th sample, 2,357 customers of which 946 repeat buyers, with mean repeat spend."""
    from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value

    return load_cdnow_summary_data_with_monetary_value().astype(float)


@pytest.fixture(scope="module")
def fitted(cdnow):
    return GammaGamma().fit(cdnow)


def with_params(**params) -> GammaGamma:
    model = GammaGamma()
    model.params_ = pd.Series(params, dtype=float)[list(GammaGamma.param_names)]
    return model


def simulate_gamma_gamma_summary(n, p, q, gamma, seed, mean_repeat=3.0):
    """(frequency, monetary_value) drawn from the model: x >= 1 repeat transactions of value Gamma(p, nu),
    nu ~ Gamma(q, gamma) per customer; the mean of x such values is Gamma(p x, rate x nu)."""
    rng = np.random.default_rng(seed)
    x = 1 + rng.poisson(mean_repeat - 1, n)
    nu = rng.gamma(q, 1.0 / gamma, n)
    m = rng.gamma(p * x, 1.0 / (x * nu))
    return pd.DataFrame({"frequency": x.astype(float), "monetary_value": m})


def lifetimes_gamma_gamma(params: pd.Series):
    oracle = lifetimes.GammaGammaFitter()
    oracle.params_ = pd.Series(params.to_numpy(), index=["p", "q", "v"])
    return oracle


def test_params_close_to_fader_hardie_lee_2005_rfm_clv(fitted):
    """Fader, Hardie & Lee (2005) JMR 42(4) / Hardie's Gamma-Gamma note: p=6.25, q=3.74, gamma=15.44.

    Printed to 2 decimals, so the tolerance is one unit in the last printed place (0.01): the MLE is
    gamma = 15.4477 (lifetimes agrees), which the note prints as 15.44, not 15.45.
    """
    np.testing.assert_allclose(fitted.params_[list(PUBLISHED)], list(PUBLISHED.values()), atol=0.01)
    assert fitted.n_customers_ == 946
    assert fitted.n_excluded_ == 2357 - 946


def test_same_mle_as_lifetimes_on_cdnow_and_simulated(cdnow):
    simulated = simulate_gamma_gamma_summary(3000, 4.0, 3.0, 20.0, seed=2)
    for data in (cdnow[cdnow["frequency"] > 0], simulated):
        ours = GammaGamma().fit(data)
        oracle = lifetimes.GammaGammaFitter().fit(data["frequency"], data["monetary_value"])
        np.testing.assert_allclose(ours.params_.to_numpy(), oracle.params_.to_numpy(), rtol=1e-4)
        columns = (data["frequency"].to_numpy(), data["monetary_value"].to_numpy())
        ll_oracle = gamma_gamma_log_likelihood(oracle.params_.to_numpy(), columns)[0]
        assert ours.log_likelihood_ >= ll_oracle - 1e-9


def test_log_likelihood_same_as_lifetimes(cdnow, fitted):
    repeat = cdnow[cdnow["frequency"] > 0]
    params = fitted.params_.to_numpy()
    theirs = -lifetimes.GammaGammaFitter._negative_log_likelihood(
        np.log(params), repeat["frequency"].to_numpy(), repeat["monetary_value"].to_numpy(), np.ones(len(repeat)), 0.0
    ) * len(repeat)
    assert fitted.log_likelihood_ == pytest.approx(theirs, rel=1e-12)


def test_predictions_same_as_lifetimes_at_identical_params(cdnow, fitted):
    oracle = lifetimes_gamma_gamma(fitted.params_)
    theirs = oracle.conditional_expected_average_profit(cdnow["frequency"], cdnow["monetary_value"])
    np.testing.assert_allclose(fitted.expected_spend(cdnow), theirs, rtol=1e-6)
    np.testing.assert_allclose(fitted.conditional_expected_average_profit(cdnow), theirs, rtol=1e-6)
    p, q, gamma = fitted.params_
    assert fitted.population_mean_spend() == pytest.approx(p * gamma / (q - 1), rel=1e-12)


def test_gradient_matches_finite_differences(cdnow):
    repeat = cdnow[cdnow["frequency"] > 0]
    data = (repeat["frequency"].to_numpy(), repeat["monetary_value"].to_numpy())
    rng = np.random.default_rng(0)
    for _ in range(5):
        point = np.exp(rng.uniform(-2, 2, 3))

        def total(params):
            return gamma_gamma_log_likelihood(params, data)[0]

        def gradient(params):
            return gamma_gamma_log_likelihood(params, data)[1]

        assert check_grad(total, gradient, point) <= 1e-6 * max(1.0, np.linalg.norm(gradient(point)))


def test_weights_equal_duplicated_rows(cdnow):
    part = cdnow.iloc[:900]
    counts = np.random.default_rng(1).integers(1, 4, len(part))
    weighted = GammaGamma().fit(part, sample_weight=counts)
    repeated = GammaGamma().fit(part.loc[part.index.repeat(counts)])
    np.testing.assert_allclose(weighted.params_, repeated.params_, rtol=1e-8)
    assert weighted.log_likelihood_ == pytest.approx(repeated.log_likelihood_, rel=1e-10)
    assert weighted.n_excluded_ == repeated.n_excluded_ == counts[part["frequency"].to_numpy() == 0].sum()


def test_zero_frequency_rows_are_excluded_and_counted(cdnow, fitted):
    repeat_only = GammaGamma().fit(cdnow[cdnow["frequency"] > 0])
    np.testing.assert_allclose(repeat_only.params_, fitted.params_, rtol=1e-10)
    assert repeat_only.n_excluded_ == 0
    assert fitted.n_excluded_ == (cdnow["frequency"] == 0).sum()


def test_expected_spend_between_observed_and_population_mean(cdnow, fitted):
    spend = fitted.expected_spend(cdnow)
    mean = fitted.population_mean_spend()
    repeat = cdnow["frequency"] > 0
    observed = cdnow["monetary_value"]
    lower, upper = np.minimum(observed, mean), np.maximum(observed, mean)
    assert np.all((spend[repeat] >= lower[repeat] * (1 - 1e-12)) & (spend[repeat] <= upper[repeat] * (1 + 1e-12)))
    np.testing.assert_allclose(spend[~repeat], mean, rtol=1e-12)
    # More transactions, more credibility: the estimate moves towards the customer's own mean.
    one = pd.DataFrame({"frequency": [1.0, 10.0, 1000.0], "monetary_value": [100.0, 100.0, 100.0]})
    moving = fitted.expected_spend(one).to_numpy()
    assert mean < moving[0] < moving[1] < moving[2] < 100.0


def test_rescaling_money_gives_same_shape_params_and_scaled_spend(cdnow, fitted):
    """Dollars to cents: p and q unchanged, gamma and every expected spend times 100."""
    in_cents = cdnow.assign(monetary_value=cdnow["monetary_value"] * 100)
    cents = GammaGamma().fit(in_cents)
    np.testing.assert_allclose(cents.params_[["p", "q"]], fitted.params_[["p", "q"]], rtol=1e-6)
    assert cents.params_["gamma"] == pytest.approx(100 * fitted.params_["gamma"], rel=1e-6)
    np.testing.assert_allclose(cents.expected_spend(in_cents), 100 * fitted.expected_spend(cdnow), rtol=1e-6)


def test_recovers_simulated_parameters_within_sampling_error():
    truth = np.array([3.0, 4.0, 25.0])
    data = simulate_gamma_gamma_summary(20_000, *truth, seed=7)
    model = GammaGamma().fit(data)
    z = (model.params_.to_numpy() - truth) / model.standard_errors_.to_numpy()
    assert np.all(np.abs(z) < 4), z


def test_expected_spend_needs_q_above_one(cdnow):
    model = with_params(p=2.0, q=0.8, gamma=10.0)
    with pytest.raises(ValueError, match="infinite for q <= 1; the fitted q is 0.8"):
        model.expected_spend(cdnow)
    with pytest.raises(ValueError, match="q <= 1"):
        model.population_mean_spend()


def test_zero_mean_spend_is_left_out_and_counted(cdnow):
    """A repeat buyer whose repeat purchases were all free (CDNOW master has one) is outside the
    gamma support: left out of the likelihood like the non-repeaters, counted, still predicted."""
    repeaters = cdnow[cdnow["frequency"] > 0]
    with_free = repeaters.copy()
    free = with_free.index[0]
    with_free.loc[free, "monetary_value"] = 0.0
    fitted = GammaGamma().fit(with_free)
    without = GammaGamma().fit(repeaters.drop(index=free))
    np.testing.assert_allclose(fitted.params_, without.params_, rtol=1e-9)
    assert fitted.n_excluded_ == 1
    spend = fitted.expected_spend(with_free.loc[[free]]).iloc[0]
    assert 0 < spend < fitted.population_mean_spend()


def test_bad_summaries_get_clear_errors(cdnow):
    broken = cdnow.copy()
    broken.loc[1, "monetary_value"] = -3.0
    with pytest.raises(DataValidationError, match="'monetary_value' must be >= 0 where frequency > 0.*row 1 "):
        GammaGamma().fit(broken)
    with pytest.raises(DataValidationError, match="Required column 'monetary_value' missing"):
        GammaGamma().fit(cdnow.drop(columns="monetary_value"))
    broken = cdnow.copy()
    broken.loc[2, "frequency"] = 1.5
    with pytest.raises(DataValidationError, match="'frequency' must be a non-negative whole number.*row 2 "):
        GammaGamma().fit(broken)
    nobody_repeats = cdnow[cdnow["frequency"] == 0]
    with pytest.raises(DataValidationError, match="at least one repeat transaction"):
        GammaGamma().fit(nobody_repeats)


def test_estimator_contract_clone_pickle_and_not_fitted(cdnow, fitted):
    with pytest.raises(NotFittedError):
        GammaGamma().expected_spend(cdnow)
    assert clone(fitted).get_params() == {"penalizer": 0.0, "initial_params": None, "max_iter": 2000, "n_jobs": None}
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.expected_spend(cdnow), fitted.expected_spend(cdnow))
