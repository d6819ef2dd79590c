"""Customer lifetime value: lifetimes as oracle, discounting and margin invariants, argument errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crmml.clv import customer_lifetime_value
from crmml.models.beta_geo import BetaGeo
from crmml.models.beta_geo_beta_binom import BetaGeoBetaBinom
from crmml.models.gamma_gamma import GammaGamma

lifetimes = pytest.importorskip("lifetimes")

WEEKS_PER_MONTH = 4.345  # lifetimes' factor for freq="W"


def with_params(cls, **params):
    model = cls()
    model.params_ = pd.Series(params, dtype=float)[list(cls.param_names)]
    return model


@pytest.fixture(scope="module")
def cdnow():
    from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value

    return load_cdnow_summary_data_with_monetary_value().astype(float)


@pytest.fixture(scope="module")
def models():
    """Published CDNOW estimates (Fader, Hardie & Lee 2005 a and b), set directly: no fitting needed."""
    transactions = with_params(BetaGeo, r=0.243, alpha=4.414, a=0.793, b=2.426)
    spend = with_params(GammaGamma, p=6.25, q=3.74, gamma=15.44)
    return transactions, spend


@pytest.mark.parametrize("discount_rate", [0.01, 0.0, 0.15])
def test_same_as_lifetimes_customer_lifetime_value(cdnow, models, discount_rate):
    """lifetimes' GammaGammaFitter.customer_lifetime_value(bgf, ..., time=12, freq="W") is 12 monthly steps
    of 4.345 weeks, discounted per month."""
    transactions, spend = models
    bgf = lifetimes.BetaGeoFitter()
    bgf.params_ = transactions.params_.copy()
    bgf.predict = bgf.conditional_expected_number_of_purchases_up_to_time  # what lifetimes' fit() attaches
    ggf = lifetimes.GammaGammaFitter()
    ggf.params_ = pd.Series(spend.params_.to_numpy(), index=["p", "q", "v"])
    theirs = ggf.customer_lifetime_value(
        bgf,
        cdnow["frequency"],
        cdnow["recency"],
        cdnow["T"],
        cdnow["monetary_value"],
        time=12,
        discount_rate=discount_rate,
        freq="W",
    )
    ours = customer_lifetime_value(
        transactions, spend, cdnow, horizon=12 * WEEKS_PER_MONTH, n_steps=12, discount_rate=discount_rate
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert ours.index.equals(cdnow.index) and ours.name == "clv"


def test_higher_discount_rate_gives_lower_value(cdnow, models):
    values = [
        customer_lifetime_value(*models, cdnow, horizon=52, discount_rate=rate).to_numpy()
        for rate in (0.0, 0.001, 0.01, 0.1)
    ]
    for higher, lower in zip(values, values[1:]):
        assert np.all(lower < higher)


def test_value_is_linear_in_margin(cdnow, models):
    revenue = customer_lifetime_value(*models, cdnow, horizon=52, discount_rate=0.01)
    np.testing.assert_allclose(
        customer_lifetime_value(*models, cdnow, horizon=52, discount_rate=0.01, margin=0.3), 0.3 * revenue, rtol=1e-14
    )
    assert np.all(customer_lifetime_value(*models, cdnow, horizon=52, margin=0.0) == 0)


@pytest.mark.parametrize("n_steps", [1, 7, 52])
def test_without_discounting_value_is_spend_times_expected_purchases(cdnow, models, n_steps):
    transactions, spend = models
    value = customer_lifetime_value(transactions, spend, cdnow, horizon=52, n_steps=n_steps)
    expected = spend.expected_spend(cdnow) * transactions.expected_purchases(cdnow, 52)
    np.testing.assert_allclose(value, expected, rtol=1e-12)


def test_default_is_one_step_per_time_unit(cdnow, models):
    default = customer_lifetime_value(*models, cdnow, horizon=26, discount_rate=0.01)
    explicit = customer_lifetime_value(*models, cdnow, horizon=26, n_steps=26, discount_rate=0.01)
    np.testing.assert_array_equal(default, explicit)
    # A fractional horizon rounds the number of steps up, so no step is longer than one time unit.
    np.testing.assert_array_equal(
        customer_lifetime_value(*models, cdnow, horizon=2.5, discount_rate=0.01),
        customer_lifetime_value(*models, cdnow, horizon=2.5, n_steps=3, discount_rate=0.01),
    )
    assert np.all(customer_lifetime_value(*models, cdnow, horizon=0.0) == 0)


def test_works_with_the_discrete_time_model():
    """BG/BB with Gamma-Gamma: value is spend times transactions over the next opportunities, discounted."""
    transactions = with_params(BetaGeoBetaBinom, alpha=1.204, beta=0.750, gamma=0.657, delta=2.783)
    spend = with_params(GammaGamma, p=6.25, q=3.74, gamma=15.44)
    summary = pd.DataFrame(
        {"frequency": [0.0, 3.0, 6.0], "recency": [0.0, 5.0, 6.0], "n_periods": 6.0, "monetary_value": [0.0, 20.0, 50.0]},
        index=["a", "b", "c"],
    )
    value = customer_lifetime_value(transactions, spend, summary, horizon=5, discount_rate=0.1)
    per_period = np.diff(
        np.column_stack([np.zeros(3)] + [transactions.expected_purchases(summary, k) for k in range(1, 6)]), axis=1
    )
    expected = spend.expected_spend(summary).to_numpy() * (per_period / 1.1 ** np.arange(1, 6)).sum(axis=1)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert list(value.index) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"horizon": -1.0}, "'horizon' argument of customer_lifetime_value must be a finite number"),
        ({"horizon": np.inf}, "'horizon'"),
        ({"horizon": 12, "discount_rate": -0.01}, "'discount_rate' argument .* must be a finite rate per step >= 0"),
        ({"horizon": 12, "discount_rate": "1%"}, "'discount_rate'"),
        ({"horizon": 12, "margin": -0.5}, "'margin' argument .* must be a finite fraction >= 0. Got -0.5"),
        ({"horizon": 12, "n_steps": 0}, "'n_steps' argument .* must be a positive int. Got 0"),
        ({"horizon": 12, "n_steps": 2.5}, "'n_steps'"),
    ],
)
def test_bad_arguments_get_clear_errors(cdnow, models, arguments, message):
    with pytest.raises(ValueError, match=message):
        customer_lifetime_value(*models, cdnow, **arguments)


def test_models_without_the_needed_method_are_rejected(cdnow, models):
    transactions, spend = models
    with pytest.raises(TypeError, match="expected_spend"):
        customer_lifetime_value(transactions, transactions, cdnow, horizon=12)
    with pytest.raises(TypeError, match="expected_purchases"):
        customer_lifetime_value(spend, spend, cdnow, horizon=12)
