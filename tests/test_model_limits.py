"""BTYD fits and predictions at the limits of the models: they degrade (warn, NaN standard errors), never crash.

Simulated logs (``crmml.data.simulate``, fixed seeds) where the maximum-likelihood optimum is at a
limit: a single cohort observed 4, 10 and 40 weeks, a log without dropout, one where everyone leaves
after their first repeat purchase, and one where nobody repeats. Predictions are checked finite (and
probabilities in [0, 1]) for extreme parameters, against mpmath where the expectation is an integral,
and against the analytic limits.
"""

from __future__ import annotations

import itertools
import warnings

import mpmath as mp
import numpy as np
import pandas as pd
import pytest

from crmml.data import rfm_summary
from crmml.data.simulate import SimulationParams, simulate_transactions
from crmml.models import BetaGeo, FitWarning, GammaGamma, ModifiedBetaGeo, ParetoNBD
from crmml.models.beta_geo import expected_purchases_if_alive

TRANSACTION_MODELS = (BetaGeo, ModifiedBetaGeo, ParetoNBD)
START = pd.Timestamp("2024-01-01")


def cohort_summary(weeks: int, params: SimulationParams = SimulationParams(), n: int = 600, seed: int = 1):
    """A single cohort acquired on one day, observed ``weeks`` weeks (the summary in weeks)."""
    end = START + pd.Timedelta(weeks=weeks)
    log = simulate_transactions(n, params=params, start=START, end=end, acquisition_end=START, seed=seed)
    return rfm_summary(log.transactions, as_of=end, freq="D", freq_multiplier=7)


def assert_predictions_sane(model, summary):
    out = model.predict_horizons(summary, horizons=(1.0, 52.0), sums={"year": ([13, 26, 39, 52], [1, 1, 1, 1])})
    for key, values in out.items():
        assert np.all(np.isfinite(values)), (type(model).__name__, key)
        assert np.all(values >= 0), (type(model).__name__, key)
    assert np.all(out["p_alive"] <= 1)
    assert np.all(out["p_no_purchase", 52.0] <= 1)
    assert np.all(np.isfinite(model.unconditional_expected_purchases([1.0, 52.0, 520.0])))
    np.testing.assert_array_equal(out["expected_purchases", 52.0], model.expected_purchases(summary, 52.0))
    table = model.param_table()
    assert list(table.index) == list(model.param_names)
    assert table.loc[list(model.unidentified_params_)].drop(columns="estimate").isna().all().all()
    identified = [p for p in model.param_names if p not in model.unidentified_params_]
    assert np.all(np.isfinite(model.standard_errors_[identified]))


SHAPES = {
    "cohort_4_weeks": lambda: cohort_summary(4),
    "cohort_10_weeks": lambda: cohort_summary(10),
    "cohort_40_weeks": lambda: cohort_summary(40),
    "no_dropout": lambda: cohort_summary(40, SimulationParams(a=1e-3, b=1e3)),
    "everyone_leaves": lambda: cohort_summary(40, SimulationParams(a=50.0, b=0.05)),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("model_class", TRANSACTION_MODELS, ids=lambda c: c.__name__)
def test_fits_at_the_limits_finish_and_predict_finite_values(shape, model_class):
    summary = SHAPES[shape]()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = model_class().fit(summary)
    fit_warnings = [w for w in caught if issubclass(w.category, FitWarning)]
    # The warning is issued exactly when the fit records one, and names the model.
    assert (model.fit_warning_ is None) == (not fit_warnings)
    if model.fit_warning_ is not None:
        assert str(fit_warnings[0].message) == model.fit_warning_
        assert model.fit_warning_.startswith(f"{model_class.__name__}: ")
    assert_predictions_sane(model, summary)


def test_no_dropout_leaves_pareto_nbd_death_rate_unidentified_and_warns():
    """Nobody has dropped out: (s, beta) are not identified (the crash of issue 15); the fit warns,
    s, beta have NaN standard errors, r, alpha do not, and P(alive) is ~1 for everyone."""
    summary = SHAPES["no_dropout"]()
    with pytest.warns(FitWarning, match="ParetoNBD: .*s, beta"):
        model = ParetoNBD().fit(summary)
    assert {"s", "beta"} <= set(model.unidentified_params_)
    assert model.standard_errors_[["s", "beta"]].isna().all()
    assert np.all(np.isfinite(model.standard_errors_[["r", "alpha"]]))
    assert model.probability_alive(summary).min() > 0.99


def test_everyone_leaving_sends_bg_nbd_to_a_finite_limit():
    """The 40-week cohort where everyone leaves: BG/NBD's a, b grow huge (1e5 and more) and its
    expected purchases used to be NaN (0 * inf); now they are finite and match the limit."""
    summary = SHAPES["everyone_leaves"]()
    model = BetaGeo().fit(summary)
    r, alpha, a, b = model.params_
    assert a > 1e4
    expected = model.expected_purchases(summary, 52.0)
    assert np.all(np.isfinite(expected))


def test_nobody_repeating_drives_the_purchase_rate_to_zero():
    summary = pd.DataFrame({"frequency": 0.0, "recency": 0.0, "T": np.linspace(1, 40, 300)})
    for model_class in TRANSACTION_MODELS:
        with pytest.warns(FitWarning):
            model = model_class().fit(summary)
        assert model.expected_purchases(summary, 52.0).max() < 1e-3, model_class.__name__
        assert_predictions_sane(model, summary)


def _with_params(model_class, params):
    model = model_class()
    model.params_ = pd.Series(params, index=list(model_class.param_names), dtype=float)
    model.unidentified_params_ = ()
    model.standard_errors_ = pd.Series(np.nan, index=list(model_class.param_names))
    return model


EXTREME = (1e-8, 1.0, 1e6, 1e12)
#: The corners of the slow grids (the full EXTREME grid takes minutes per model).
CORNERS = (1e-8, 1.0, 1e12)
HISTORIES = pd.DataFrame(
    {
        "frequency": [0.0, 0.0, 1.0, 2.0, 5.0, 40.0, 300.0, 3.0],
        "recency": [0.0, 0.0, 20.0, 39.0, 5.0, 38.0, 39.0, 0.01],
        "T": [1e-3, 39.0, 39.0, 39.0, 39.0, 39.0, 39.0, 5.0],
    }
)


def _bg_grid(alphas):
    return [(r, alpha, a, b) for r, alpha, a, b in itertools.product(CORNERS, alphas, CORNERS, CORNERS)]


@pytest.mark.slow
@pytest.mark.parametrize("model_class", (BetaGeo, ModifiedBetaGeo), ids=lambda c: c.__name__)
def test_bg_predictions_are_finite_for_any_parameters(model_class):
    """r, a, b anywhere in 1e-8..1e12; alpha from 1 up (alpha -> 0 is the slow test below)."""
    for params in _bg_grid(CORNERS[1:]):
        out = _with_params(model_class, params).predict_horizons(HISTORIES, horizons=(1.0, 52.0))
        for key, values in out.items():
            assert np.all(np.isfinite(values)) and np.all(values >= 0), (params, key)
        assert np.all(out["p_alive"] <= 1) and np.all(out["p_no_purchase", 52.0] <= 1), params


@pytest.mark.slow
@pytest.mark.parametrize("model_class", (BetaGeo, ModifiedBetaGeo), ids=lambda c: c.__name__)
def test_bg_predictions_are_finite_with_a_tiny_alpha(model_class):
    """alpha = 1e-8 next to T = 1e-3 puts z within 2e-5 of 1, where the series runs to its term limit
    (seconds per call): finite, inside the exact bounds."""
    for params in _bg_grid(CORNERS[:1])[::4]:
        out = _with_params(model_class, params).predict_horizons(HISTORIES, horizons=(1.0, 52.0))
        for key, values in out.items():
            assert np.all(np.isfinite(values)) and np.all(values >= 0), (params, key)
        assert np.all(out["p_alive"] <= 1) and np.all(out["p_no_purchase", 52.0] <= 1), params


@pytest.mark.slow
def test_pareto_nbd_predictions_are_finite_for_any_parameters():
    for params in itertools.product(CORNERS, repeat=4):
        out = _with_params(ParetoNBD, params).predict_horizons(HISTORIES, horizons=(1.0, 52.0))
        for key, values in out.items():
            assert np.all(np.isfinite(values)) and np.all(values >= 0), (params, key)
        assert np.all(out["p_alive"] <= 1) and np.all(out["p_no_purchase", 52.0] <= 1), params


def _bg_expected_if_alive_mpmath(r, alpha, a, b, x, T, t, shift):
    """E[(1 - (1 + p u)^-(r+x)) / p] over p ~ Beta(a, b + x + shift), u = t / (alpha + T): the
    expectation of an active customer (Fader, Hardie & Lee 2005, eq. 7 averaged over the posterior),
    integrated with mpmath at 30 digits."""
    mp.mp.dps = 30
    r, alpha, a, b, x, T, t = map(mp.mpf, (r, alpha, a, b, x, T, t))
    bp, rp, u = b + x + shift, r + x, t / (alpha + T)
    log_norm = mp.log(mp.beta(a, bp))

    def integrand(p):
        return (1 - (1 + p * u) ** (-rp)) / p * mp.exp((a - 1) * mp.log(p) + (bp - 1) * mp.log(1 - p) - log_norm)

    mode = (a - 1) / (a + bp - 2) if a > 1 and bp > 1 else mp.mpf("0.5")
    spread = mp.sqrt(a * bp / ((a + bp) ** 2 * (a + bp + 1)))
    points = sorted({mp.mpf(0), max(mp.mpf(0), mode - 10 * spread), mode, min(mp.mpf(1), mode + 10 * spread), mp.mpf(1)})
    return float(mp.quad(integrand, points))


@pytest.mark.parametrize(
    "r, alpha, a, b, x, T, t, shift",
    [
        (0.23, 4.09, 3.2e5, 1.5e6, 0, 1.0, 10.0, 0),  # the young-cohort fit that returned NaN
        (0.23, 4.09, 3.2e5, 1.5e6, 5, 39.0, 39.0, 0),
        (0.26, 5.66, 1e5, 577.0, 2, 39.0, 39.0, 0),
        (0.26, 5.66, 1e5, 577.0, 2, 39.0, 39.0, 1),
        (2.0, 0.5, 5e4, 3.0, 30, 10.0, 400.0, 1),
        (0.24, 4.4, 0.79, 2.4, 3, 39.0, 39.0, 0),  # CDNOW-like: the Euler form
    ],
)
def test_bg_expectation_at_large_a_matches_mpmath(r, alpha, a, b, x, T, t, shift):
    got = expected_purchases_if_alive((r, alpha, a, b), np.array([float(x)]), np.array([T]), t, shift)[0]
    assert got == pytest.approx(_bg_expected_if_alive_mpmath(r, alpha, a, b, x, T, t, shift), rel=1e-10)


@pytest.mark.parametrize("shift", [0, 1])
def test_bg_expectation_tends_to_the_fixed_dropout_limit(shift):
    """a, b -> inf with a / (a + b) = p fixed: every customer drops out with probability p, so
    E[X(t) | alive, x, T] -> (1 - (1 + p t / (alpha + T))^-(r + x)) / p."""
    r, alpha, p = 0.3, 2.0, 0.25
    x, T, t = np.array([0.0, 1.0, 7.0, 300.0]), np.array([5.0, 39.0, 39.0, 39.0]), 39.0
    limit = (1 - (1 + p * t / (alpha + T)) ** -(r + x)) / p
    for size in (1e9, 1e12):
        got = expected_purchases_if_alive((r, alpha, p * size, (1 - p) * size), x, T, t, shift)
        np.testing.assert_allclose(got, limit, rtol=1e-6)


@pytest.mark.parametrize("model_class", TRANSACTION_MODELS, ids=lambda c: c.__name__)
def test_no_dropout_limit_is_the_nbd(model_class):
    """Dropout probability (BG) or death rate (Pareto) -> 0: the NBD, alive for sure, with
    E[X(t) | x, T] = (r + x) / (alpha + T) t (Poisson-gamma posterior mean rate times t)."""
    r, alpha = 0.4, 3.0
    dropout = (1e-10, 1e6) if model_class is not ParetoNBD else (1e-12, 1e6)  # (a, b) or (s, beta)
    model = _with_params(model_class, (r, alpha, *dropout))
    t = 13.0
    expected = model.expected_purchases(HISTORIES, t)
    nbd = (r + HISTORIES["frequency"]) / (alpha + HISTORIES["T"]) * t
    np.testing.assert_allclose(expected, nbd, rtol=1e-5)
    np.testing.assert_allclose(model.probability_alive(HISTORIES), 1.0, atol=1e-6)


def test_gamma_gamma_spend_is_finite_near_q_one_and_at_large_parameters():
    summary = pd.DataFrame({"frequency": [0.0, 1.0, 5.0, 300.0], "monetary_value": [0.0, 20.0, 35.5, 1e4]})
    for params in [(6.25, 1 + 1e-9, 15.0), (1e12, 1e12, 1e12), (1e-8, 1e12, 1e12), (1e6, 2.0, 1e-8)]:
        model = _with_params(GammaGamma, params)
        spend = model.expected_spend(summary)
        assert np.all(np.isfinite(spend)) and np.all(spend >= 0), params


def test_gamma_gamma_on_identical_spends_degrades_to_a_limit():
    """Every customer spends the same on every transaction: no heterogeneity, the optimum is at
    p, q, gamma -> inf; the fit warns and predicts that common value."""
    summary = pd.DataFrame({"frequency": np.tile([1.0, 2.0, 5.0], 100), "monetary_value": 25.0})
    with pytest.warns(FitWarning, match="GammaGamma"):
        model = GammaGamma().fit(summary)
    np.testing.assert_allclose(model.expected_spend(summary), 25.0, rtol=1e-3)


def test_fit_btyd_models_keeps_the_limit_fit_and_records_its_warning():
    """The young-cohort crash of issue 15: no penalised refit, the warning is on BTYDModels."""
    from crmml.data.transactions import as_transactions
    from crmml.timetravel import fit_btyd_models

    end = START + pd.Timedelta(weeks=40)
    log = simulate_transactions(600, params=SimulationParams(a=1e-3, b=1e3), start=START, end=end,
                                acquisition_end=START, seed=1)
    with pytest.warns(FitWarning, match="ParetoNBD"):
        models = fit_btyd_models(as_transactions(log.transactions), end, kind="pareto_nbd")
    assert models.penalizer == 0.0
    assert models.fit_warning == models.transaction_model.fit_warning_
    assert "s, beta" in models.fit_warning
