"""BG/NBD and MBG/NBD: published CDNOW estimates, lifetimes as oracle, invariants."""

from __future__ import annotations

import pickle
import warnings

import joblib
import mpmath
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from crmml.errors import DataValidationError
from crmml.models.base import FitWarning
from crmml.models.beta_geo import BetaGeo, beta_geometric_log_likelihood
from crmml.models.modified_beta_geo import ModifiedBetaGeo

lifetimes = pytest.importorskip("lifetimes")

MODELS = {"bgnbd": (BetaGeo, "BetaGeoFitter", 0), "mbgnbd": (ModifiedBetaGeo, "ModifiedBetaGeoFitter", 1)}


@pytest.fixture(scope="module")
def cdnow():
    from lifetimes.datasets import load_cdnow_summary

    return load_cdnow_summary(index_col=[0]).astype(float)


@pytest.fixture(scope="module")
def fitted(cdnow):
    return {key: cls().fit(cdnow) for key, (cls, _, _) in MODELS.items()}


def simulate_bgnbd_summary(n, r, alpha, a, b, T, seed, shift=0):
    """(frequency, recency, T) drawn from BG/NBD (shift=0) or MBG/NBD (shift=1).

    Repeat purchases are the first min(J, N) of N ~ Poisson(lambda T) uniform arrival times, J the
    number of purchases before dropout (geometric; MBG can also drop at time 0). The k-th smallest
    of N uniforms is Beta(k, N-k+1).
    """
    rng = np.random.default_rng(seed)
    T = np.broadcast_to(np.asarray(T, dtype=float), (n,)).copy()
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    n_arrivals = rng.poisson(lam * T)
    purchases_before_dropout = rng.geometric(p) - shift
    x = np.minimum(purchases_before_dropout, n_arrivals)
    t_x = np.zeros(n)
    some = x > 0
    t_x[some] = T[some] * rng.beta(x[some], n_arrivals[some] - x[some] + 1)
    return pd.DataFrame({"frequency": x.astype(float), "recency": t_x, "T": T})


def test_bgnbd_params_close_to_fader_hardie_lee_2005_cdnow(fitted):
    """Fader, Hardie & Lee (2005), Marketing Science 24(2): r=.243 alpha=4.414 a=.793 b=2.426, LL -9582.4."""
    model = fitted["bgnbd"]
    np.testing.assert_allclose(model.params_[["r", "alpha", "a", "b"]], [0.243, 4.414, 0.793, 2.426], atol=5e-4)
    assert model.log_likelihood_ == pytest.approx(-9582.4, abs=0.05)


def test_mbgnbd_params_close_to_batislam_2007_cdnow(fitted):
    """Batislam, Denizel & Filiztekin (2007) / BTYDplus: r=.525 alpha=6.183 a=.891 b=1.614, LL about -9582.1."""
    model = fitted["mbgnbd"]
    np.testing.assert_allclose(model.params_[["r", "alpha", "a", "b"]], [0.525, 6.183, 0.891, 1.614], atol=5e-4)
    assert model.log_likelihood_ == pytest.approx(-9582.1, abs=0.05)


@pytest.mark.parametrize("key", MODELS)
def test_same_mle_as_lifetimes_on_cdnow_and_simulated(key, cdnow):
    cls, oracle_name, shift = MODELS[key]
    simulated = simulate_bgnbd_summary(4000, 0.5, 5.0, 0.8, 3.0, T=np.linspace(20, 52, 4000), seed=3, shift=shift)
    for data in (cdnow, simulated):
        ours = cls().fit(data)
        oracle = getattr(lifetimes, oracle_name)().fit(data["frequency"], data["recency"], data["T"])
        np.testing.assert_allclose(ours.params_.to_numpy(), oracle.params_.to_numpy(), rtol=1e-4)
        # lifetimes stops at tol 1e-7; our optimum is at least as good.
        ll_oracle = beta_geometric_log_likelihood(
            oracle.params_.to_numpy(), tuple(data[c].to_numpy() for c in ("frequency", "recency", "T")), shift=shift
        )[0]
        assert ours.log_likelihood_ >= ll_oracle - 1e-9


@pytest.mark.parametrize("key", MODELS)
def test_predictions_same_as_lifetimes_at_identical_params(key, fitted, cdnow):
    cls, oracle_name, _ = MODELS[key]
    ours = fitted[key]
    oracle = getattr(lifetimes, oracle_name)()
    oracle.params_ = ours.params_.copy()
    f, r, T = cdnow["frequency"], cdnow["recency"], cdnow["T"]
    for horizon in (1.0, 10.0, 39.0, 104.0):
        np.testing.assert_allclose(
            ours.expected_purchases(cdnow, horizon),
            oracle.conditional_expected_number_of_purchases_up_to_time(horizon, f, r, T),
            rtol=1e-6,
        )
    np.testing.assert_allclose(ours.probability_alive(cdnow), oracle.conditional_probability_alive(f, r, T), rtol=1e-6)
    times = np.array([1.0, 10.0, 39.0, 78.0])
    np.testing.assert_allclose(
        ours.unconditional_expected_purchases(times), oracle.expected_number_of_purchases_up_to_time(times), rtol=1e-6
    )


def _mbgnbd_expectation_mpmath(params, x, t_x, T, t):
    """Wagner & Hoppe (2008) MBG/NBD conditional expectation, untransformed 2F1 at 150 digits (it cancels badly)."""
    mpmath.mp.dps = 150
    r, alpha, a, b = (mpmath.mpf(float(v)) for v in params)
    x, t_x, T, t = (mpmath.mpf(v) for v in (x, t_x, T, t))
    hyp = mpmath.hyp2f1(r + x, b + x + 1, a + b + x, t / (alpha + T + t))
    numerator = (a + b + x) / (a - 1) * (1 - hyp * ((alpha + T) / (alpha + t + T)) ** (r + x))
    denominator = 1 + a / (b + x) * ((alpha + T) / (alpha + t_x)) ** (r + x)
    return float(numerator / denominator)


def test_mbgnbd_finite_and_correct_where_lifetimes_returns_nan(fitted):
    """lifetimes 0.11.3 returns NaN for an MBG/NBD customer with 3,000 repeat purchases (2F1 overflow)."""
    model = fitted["mbgnbd"]
    oracle = lifetimes.ModifiedBetaGeoFitter()
    oracle.params_ = model.params_.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = oracle.conditional_expected_number_of_purchases_up_to_time(39.0, 3000.0, 39.0, 39.0)
    assert np.isnan(theirs)
    customer = pd.DataFrame({"frequency": [3000.0, 10000.0], "recency": [39.0, 38.5], "T": [39.0, 39.0]})
    ours = model.expected_purchases(customer, 39.0).to_numpy()
    assert np.all(np.isfinite(ours))
    expected = [_mbgnbd_expectation_mpmath(model.params_, x, tx, T, 39.0) for x, tx, T in customer.to_numpy()]
    np.testing.assert_allclose(ours, expected, rtol=1e-9)


@pytest.mark.parametrize("key", MODELS)
def test_gradient_matches_finite_differences(key, cdnow):
    shift = MODELS[key][2]
    rng = np.random.default_rng(0)
    data = tuple(cdnow[c].to_numpy() for c in ("frequency", "recency", "T"))
    for _ in range(5):
        point = np.exp(rng.uniform(-2, 2, 4))

        def total(p):
            return beta_geometric_log_likelihood(p, data, shift=shift)[0]

        def gradient(p):
            return beta_geometric_log_likelihood(p, data, shift=shift)[1]

        assert check_grad(total, gradient, point) <= 1e-4 * max(1.0, np.linalg.norm(gradient(point)))


@pytest.mark.parametrize("key", MODELS)
def test_weights_equal_duplicated_rows(key, cdnow):
    cls = MODELS[key][0]
    part = cdnow.iloc[:800]
    counts = np.random.default_rng(1).integers(1, 4, len(part))
    duplicated = part.loc[part.index.repeat(counts)]
    weighted = cls().fit(part, sample_weight=counts)
    repeated = cls().fit(duplicated)
    np.testing.assert_allclose(weighted.params_, repeated.params_, rtol=1e-8)
    assert weighted.log_likelihood_ == pytest.approx(repeated.log_likelihood_, rel=1e-10)


@pytest.mark.parametrize("key", MODELS)
def test_probabilities_in_unit_interval_and_expectations_finite(key, fitted):
    model = fitted[key]
    x, tx_share, T = np.meshgrid([0, 1, 5, 50, 500, 5000, 50000], [0.0, 0.3, 0.9, 1.0], [0.5, 10, 39, 500])
    grid = pd.DataFrame({"frequency": x.ravel() * 1.0, "recency": (tx_share * T).ravel(), "T": T.ravel()})
    grid.loc[grid["frequency"] == 0, "recency"] = 0.0
    for values in (model.probability_alive(grid), model.probability_no_purchase(grid, 39.0)):
        assert np.all((values >= 0) & (values <= 1))
    expected = model.expected_purchases(grid, 39.0)
    assert np.all(np.isfinite(expected)) and np.all(expected >= 0)


@pytest.mark.parametrize("key", MODELS)
def test_rescaling_time_gives_same_predictions(key, cdnow):
    cls = MODELS[key][0]
    weeks = cls().fit(cdnow)
    in_days = cdnow.assign(recency=cdnow["recency"] * 7, T=cdnow["T"] * 7)
    days = cls().fit(in_days)
    assert days.params_["alpha"] == pytest.approx(7 * weeks.params_["alpha"], rel=1e-6)
    np.testing.assert_allclose(days.expected_purchases(in_days, 39 * 7), weeks.expected_purchases(cdnow, 39), rtol=1e-6)
    np.testing.assert_allclose(days.probability_alive(in_days), weeks.probability_alive(cdnow), rtol=1e-6)


@pytest.mark.parametrize("key", MODELS)
def test_recovers_simulated_parameters_within_sampling_error(key):
    cls, _, shift = MODELS[key]
    truth = np.array([0.6, 4.0, 0.9, 2.5])
    data = simulate_bgnbd_summary(60_000, *truth, T=np.random.default_rng(5).uniform(30, 60, 60_000), seed=7, shift=shift)
    model = cls().fit(data)
    z = (model.params_.to_numpy() - truth) / model.standard_errors_.to_numpy()
    assert np.all(np.abs(z) < 4), z


@pytest.mark.parametrize("key", MODELS)
def test_probability_no_purchase_matches_simulation(key):
    """Simulate customers past T and count who buys in (T, T+t]: compare with the model at the true params."""
    cls, _, shift = MODELS[key]
    r, alpha, a, b = 0.5, 5.0, 0.8, 2.0
    n, T, t = 400_000, 30.0, 20.0
    rng = np.random.default_rng(11)
    lam, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    n_arrivals = rng.poisson(lam * (T + t))
    before_dropout = rng.geometric(p) - shift
    in_calibration = rng.binomial(n_arrivals, T / (T + t))  # arrivals split uniformly over [0, T+t]
    x = np.minimum(before_dropout, in_calibration)
    bought_later = (before_dropout > in_calibration) & (n_arrivals > in_calibration)
    model = cls()
    model.params_ = pd.Series([r, alpha, a, b], index=["r", "alpha", "a", "b"])
    zero_repeaters = x == 0
    summary = pd.DataFrame({"frequency": [0.0], "recency": [0.0], "T": [T]})
    predicted = model.probability_no_purchase(summary, t).iloc[0]
    observed = 1 - bought_later[zero_repeaters].mean()
    standard_error = np.sqrt(observed * (1 - observed) / zero_repeaters.sum())
    assert abs(predicted - observed) < 4 * standard_error


@pytest.mark.parametrize("key", MODELS)
def test_standard_errors_close_to_lifetimes(key, fitted, cdnow):
    cls, oracle_name, _ = MODELS[key]
    oracle = getattr(lifetimes, oracle_name)().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    np.testing.assert_allclose(fitted[key].standard_errors_, oracle.summary["se(coef)"], rtol=2e-2)


def test_estimator_contract_pickle_clone_and_not_fitted(fitted, cdnow, tmp_path):
    model = fitted["bgnbd"]
    with pytest.raises(NotFittedError):
        BetaGeo().probability_alive(cdnow)
    assert clone(model).get_params() == {"penalizer": 0.0, "initial_params": None, "max_iter": 2000, "n_jobs": None}
    path = tmp_path / "bg.joblib"
    joblib.dump(model, path)
    for restored in (joblib.load(path), pickle.loads(pickle.dumps(model))):
        np.testing.assert_array_equal(restored.expected_purchases(cdnow, 10), model.expected_purchases(cdnow, 10))
    assert BetaGeo().fit(cdnow) is not None and isinstance(BetaGeo().fit(cdnow), BetaGeo)


def test_penalizer_shrinks_parameters(cdnow):
    plain = BetaGeo().fit(cdnow)
    penalised = BetaGeo(penalizer=0.1).fit(cdnow)
    scale = 10 / cdnow["T"].max()
    plain_size = np.sum(plain._rescale_params(plain.params_.to_numpy(), scale) ** 2)
    penalised_size = np.sum(penalised._rescale_params(penalised.params_.to_numpy(), scale) ** 2)
    assert penalised_size < plain_size
    assert penalised.log_likelihood_ < plain.log_likelihood_


def test_bad_hyperparameters_and_summaries_get_clear_errors(cdnow):
    with pytest.raises(ValueError, match="'penalizer' parameter of BetaGeo must be a float in \\[0, inf\\). Got -1"):
        BetaGeo(penalizer=-1).fit(cdnow)
    with pytest.raises(ValueError, match="'n_jobs' parameter of BetaGeo must be None, -1 or a positive int. Got 0"):
        BetaGeo(n_jobs=0).fit(cdnow)
    with pytest.raises(DataValidationError, match="Required column 'T' missing"):
        BetaGeo().fit(cdnow.drop(columns="T"))
    broken = cdnow.copy()
    broken.loc[7, "recency"] = 99.0
    with pytest.raises(DataValidationError, match="'recency' must not exceed T.*row 7 "):
        BetaGeo().fit(broken)
    broken = cdnow.copy()
    broken.loc[12, "frequency"] = 1.5
    with pytest.raises(DataValidationError, match="'frequency' must be a non-negative whole number.*row 12 "):
        BetaGeo().fit(broken)
    broken = cdnow.copy()
    broken.loc[3, "T"] = np.nan
    with pytest.raises(DataValidationError, match="'T' must be a finite number.*row 3 "):
        BetaGeo().fit(broken)
    with pytest.raises(ValueError, match="horizon"):
        BetaGeo().fit(cdnow).expected_purchases(cdnow, -1)


def test_no_repeat_buyers_degrade_to_a_warned_limit():
    """Nobody ever repeats: the likelihood has no interior optimum (purchase rate -> 0). The fit keeps
    its best point, says why, has NaN standard errors where unidentified, and predicts ~0 purchases."""
    no_repeats = pd.DataFrame({"frequency": 0.0, "recency": 0.0, "T": np.linspace(5, 40, 200)})
    with pytest.warns(FitWarning, match="BetaGeo: .*NaN standard errors"):
        model = BetaGeo().fit(no_repeats)
    assert model.fit_warning_.startswith("BetaGeo: ")
    assert model.unidentified_params_
    assert model.standard_errors_[list(model.unidentified_params_)].isna().all()
    expected = model.expected_purchases(no_repeats, 52)
    assert np.all(np.isfinite(expected)) and expected.max() < 1e-3
    assert model.param_table().loc[list(model.unidentified_params_), "lower_95"].isna().all()


def test_thread_count_does_not_change_the_estimates():
    """Rows are cut into fixed-size chunks whatever n_jobs is, so the sums, and the fit, are identical."""
    data = simulate_bgnbd_summary(300_000, 0.6, 4.0, 0.9, 2.5, T=np.random.default_rng(2).uniform(30, 60, 300_000), seed=4)
    one_thread = BetaGeo(n_jobs=1).fit(data)
    two_threads = BetaGeo(n_jobs=2).fit(data)
    assert one_thread.n_unique_rows_ > 2 * (1 << 17)  # several chunks
    np.testing.assert_array_equal(one_thread.params_, two_threads.params_)
    assert one_thread.log_likelihood_ == two_threads.log_likelihood_
