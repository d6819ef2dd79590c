"""Pareto/NBD: published CDNOW estimates, lifetimes and mpmath as oracles, simulation, invariants."""

from __future__ import annotations

import warnings

import mpmath
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad

from crmml.models.pareto_nbd import ParetoNBD, log_pareto_integral, pareto_nbd_log_likelihood

lifetimes = pytest.importorskip("lifetimes")

COLUMNS = ("frequency", "recency", "T")


@pytest.fixture(scope="module")
def cdnow():
    from lifetimes.datasets import load_cdnow_summary

    return load_cdnow_summary(index_col=[0]).astype(float)


@pytest.fixture(scope="module")
def fitted(cdnow):
    return ParetoNBD().fit(cdnow)


def columns(frame):
    return tuple(frame[c].to_numpy(dtype=float) for c in COLUMNS)


def with_params(params):
    model = ParetoNBD()
    model.params_ = pd.Series(np.asarray(params, dtype=float), index=["r", "alpha", "s", "beta"])
    return model


def simulate_pareto_nbd_summary(n, r, alpha, s, beta, T, seed):
    """(frequency, recency, T) drawn from Pareto/NBD.

    ``lambda ~ Gamma(r, alpha)``, ``mu ~ Gamma(s, beta)`` (rates), lifetime ``tau ~ Exp(mu)``. The
    customer buys at rate ``lambda`` on ``(0, min(tau, T)]``: given their number, purchase times are
    uniform there, so the last of ``x > 0`` is ``min(tau, T) * Beta(x, 1)``.
    """
    rng = np.random.default_rng(seed)
    T = np.broadcast_to(np.asarray(T, dtype=float), (n,)).copy()
    lam = rng.gamma(r, 1.0 / alpha, n)
    mu = rng.gamma(s, 1.0 / beta, n)
    active = np.minimum(rng.exponential(1.0 / mu), T)
    x = rng.poisson(lam * active)
    t_x = np.where(x > 0, active * rng.beta(np.maximum(x, 1), 1.0), 0.0)
    return pd.DataFrame({"frequency": x.astype(float), "recency": t_x, "T": T})


def mp_hypergeometric_tail(b, k, z):
    """``2F1(b, k; k+1; z)`` for ``-1 < z < 1`` and ``0 < b < k+1``, in mpmath.

    Transformed to ``factor * 2F1(p, 1; k+1; w) = factor * sum_n (p)_n / (k+1)_n w^n`` with positive
    terms whose ratio is below ``max(w, 1/2)``: Euler's ``(1-z)^(1-b) 2F1(k+1-b, 1; k+1; z)`` for
    ``z >= 0`` and Pfaff's ``(1-z)^-b 2F1(b, 1; k+1; z/(z-1))`` for ``z < 0`` (Abramowitz & Stegun
    15.3.3-15.3.4). ``mpmath.hyp2f1`` itself takes seconds when ``k`` is near 1e4.
    """
    if z < 0:
        p, w, factor = b, z / (z - 1), (1 - z) ** (-b)
    else:
        p, w, factor = k + 1 - b, z, (1 - z) ** (1 - b)
    eps = mpmath.mpf(10) ** (-mpmath.mp.dps - 5)
    term, total, n = mpmath.mpf(1), mpmath.mpf(1), 0
    while term > eps * total:
        term *= (p + n) / (k + 1 + n) * w
        total += term
        n += 1
    return factor * total


def mp_log_likelihood(params, x, t_x, T):
    """Fader & Hardie (2005) eqs. 18-20 in mpmath: ``I = J(t_x) - J(T)`` with the hypergeometric tail

    ``J(y) = int_y^inf (alpha+u)^-(r+x) (beta+u)^-(s+1) du = (alpha+y)^-k / k 2F1(s+1, k; k+1; (alpha-beta)/(alpha+y))``
    (``k = r+s+x``; roles of ``alpha`` and ``beta`` swapped where that argument would be below -1).
    Evaluated at the working precision set by the caller, which absorbs the cancellation.
    """
    values = (*params, x, t_x, T)
    r, alpha, s, beta, x, t_x, T = (v if isinstance(v, mpmath.mpf) else mpmath.mpf(float(v)) for v in values)
    k = r + s + x

    def tail(y):
        if beta < 2 * alpha + y:
            return (alpha + y) ** (-k) / k * mp_hypergeometric_tail(s + 1, k, (alpha - beta) / (alpha + y))
        return (beta + y) ** (-k) / k * mp_hypergeometric_tail(r + x, k, (beta - alpha) / (beta + y))

    survived = (alpha + T) ** (-(r + x)) * (beta + T) ** (-s)
    constant = mpmath.loggamma(r + x) - mpmath.loggamma(r) + r * mpmath.log(alpha) + s * mpmath.log(beta)
    return constant + mpmath.log(survived + s * (tail(t_x) - tail(T)))


def test_hypergeometric_oracle_agrees_with_mpmath_hyp2f1():
    """The test oracle's series against ``mpmath.hyp2f1`` where the latter is quick."""
    mpmath.mp.dps = 40
    for b, k, z in ((1.6, 301.2, 0.3), (21.0, 40.5, -0.9), (1.05, 12.0, 0.99), (300.5, 301.2, 0.7), (3.0, 1e3, -0.5)):
        b, k, z = (mpmath.mpf(v) for v in (b, k, z))
        assert abs(mp_hypergeometric_tail(b, k, z) / mpmath.hyp2f1(b, k, k + 1, z) - 1) < mpmath.mpf(10) ** -35


def random_grid(n, seed):
    """Customers and parameters over the ranges the quadrature is specified for.

    ``x`` up to 10,000; ``t_x`` at 0, anywhere in ``(0, T)``, within ``1e-10 T`` of ``T`` and at ``T``;
    ``alpha/beta`` from 1e-2 to 1e2; ``r, s`` from 0.05 to 20.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        T = float(np.exp(rng.uniform(np.log(0.5), np.log(100))))
        x = float(rng.choice([0, 1, 2, 5, 10, 30, 100, 300, 1000, 3000, 10000]))
        share = [0.0, rng.uniform(), 1 - 10 ** rng.uniform(-10, -1), 1.0][rng.integers(4)]
        t_x = 0.0 if x == 0 else T * share
        alpha = float(np.exp(rng.uniform(np.log(0.1), np.log(50))))
        beta = alpha * 10 ** rng.uniform(-2, 2)
        r, s = np.exp(rng.uniform(np.log(0.05), np.log(20), 2))
        rows.append((np.array([r, alpha, s, beta]), x, t_x, T))
    return rows


def test_params_close_to_fader_hardie_2005_cdnow(fitted):
    """Fader, Hardie & Lee (2005), Marketing Science 24(2), Pareto/NBD benchmark on CDNOW:
    r=0.553 alpha=10.578 s=0.606 beta=11.669, LL -9595.0.

    r, alpha and s agree to the printed 3 decimals. The likelihood is flat along beta (standard error
    about 6): the printed 11.669 is 0.0011 from the maximum (11.6679, also lifetimes' answer with a
    tight tolerance), a 2e-4 standard-error difference, so beta is checked to 1.5e-3.
    """
    np.testing.assert_allclose(fitted.params_[["r", "alpha", "s"]], [0.553, 10.578, 0.606], atol=5e-4)
    assert fitted.params_["beta"] == pytest.approx(11.669, abs=1.5e-3)
    assert fitted.log_likelihood_ == pytest.approx(-9595.0, abs=0.05)


def test_same_mle_as_lifetimes_on_cdnow_and_simulated(cdnow):
    simulated = simulate_pareto_nbd_summary(4000, 0.6, 8.0, 0.8, 12.0, T=np.linspace(20, 52, 4000), seed=3)
    for data in (cdnow, simulated):
        ours = ParetoNBD().fit(data)
        oracle = lifetimes.ParetoNBDFitter().fit(data["frequency"], data["recency"], data["T"], tol=1e-9)
        np.testing.assert_allclose(ours.params_.to_numpy(), oracle.params_.to_numpy(), rtol=1e-4)
        ll_oracle = pareto_nbd_log_likelihood(oracle.params_.to_numpy(), columns(data))[0].sum()
        assert ours.log_likelihood_ >= ll_oracle - 1e-9


def test_predictions_same_as_lifetimes_at_identical_params(fitted, cdnow):
    oracle = lifetimes.ParetoNBDFitter()
    oracle.params_ = fitted.params_.copy()
    f, r, T = cdnow["frequency"], cdnow["recency"], cdnow["T"]
    np.testing.assert_allclose(
        fitted.probability_alive(cdnow), oracle.conditional_probability_alive(f, r, T), rtol=1e-6
    )
    for horizon in (1.0, 10.0, 39.0, 104.0):
        np.testing.assert_allclose(
            fitted.expected_purchases(cdnow, horizon),
            oracle.conditional_expected_number_of_purchases_up_to_time(horizon, f, r, T),
            rtol=1e-6,
        )
    times = np.array([1.0, 10.0, 39.0, 78.0])
    np.testing.assert_allclose(
        fitted.unconditional_expected_purchases(times), oracle.expected_number_of_purchases_up_to_time(times), rtol=1e-6
    )
    ll_oracle = oracle._conditional_log_likelihood(fitted.params_.to_numpy(), f.to_numpy(), r.to_numpy(), T.to_numpy())
    ours = pareto_nbd_log_likelihood(fitted.params_.to_numpy(), columns(cdnow))[0]
    np.testing.assert_allclose(ours, ll_oracle, rtol=1e-9)


def test_finite_and_correct_where_lifetimes_returns_nan(fitted):
    """lifetimes 0.11.3 returns NaN for a CDNOW-fitted customer with x=300, t_x=T=39 (2F1 overflow)."""
    params = fitted.params_.to_numpy()
    oracle = lifetimes.ParetoNBDFitter()
    oracle.params_ = fitted.params_.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = [
            oracle._conditional_log_likelihood(params, np.array([300.0]), np.array([39.0]), np.array([39.0]))[0],
            oracle.conditional_probability_alive(300.0, 39.0, 39.0),
            oracle.conditional_expected_number_of_purchases_up_to_time(39.0, 300.0, 39.0, 39.0),
        ]
    assert np.all(np.isnan(theirs))
    customers = pd.DataFrame({"frequency": [300.0, 300.0, 3000.0], "recency": [39.0, 38.5, 38.99], "T": 39.0})
    ours = pareto_nbd_log_likelihood(params, columns(customers))[0]
    assert np.all(np.isfinite(ours))
    mpmath.mp.dps = 60
    expected = [float(mp_log_likelihood(params, *row)) for row in customers.to_numpy()]
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    assert fitted.probability_alive(customers).iloc[0] == 1.0
    # Alive for sure: the expectation is that of a fresh customer with (r+x, alpha+T, s, beta+T), eq. 41.
    r, alpha, s, beta = (mpmath.mpf(float(v)) for v in params)
    fresh = (r + 300) * (beta + 39) / ((alpha + 39) * (s - 1)) * (1 - ((beta + 39) / (beta + 78)) ** (s - 1))
    assert fitted.expected_purchases(customers, 39.0).iloc[0] == pytest.approx(float(fresh), rel=1e-12)


def test_log_likelihood_and_gradient_match_mpmath_on_wide_grid():
    """Quadrature vs the hypergeometric closed form at 50 digits: LL to 1e-10, gradient to 1e-8.

    Errors are relative to ``max(1, |value|)``. The gradient reference is a central difference of the
    mpmath log-likelihood with step 1e-18 (truncation error ~1e-36).
    """
    mpmath.mp.dps = 50
    step = mpmath.mpf("1e-18")
    for i, (params, x, t_x, T) in enumerate(random_grid(240, seed=0)):
        data = (np.array([x]), np.array([t_x]), np.array([T]))
        value, gradient = pareto_nbd_log_likelihood(params, data)
        reference = float(mp_log_likelihood(params, x, t_x, T))
        assert abs(value[0] - reference) <= 1e-10 * max(1.0, abs(reference)), (params, x, t_x, T)
        if i % 4:
            continue
        mp_params = [mpmath.mpf(float(v)) for v in params]
        for j in range(4):
            up, down = list(mp_params), list(mp_params)
            up[j] += step
            down[j] -= step
            derivative = float((mp_log_likelihood(up, x, t_x, T) - mp_log_likelihood(down, x, t_x, T)) / (2 * step))
            assert abs(gradient[0, j] - derivative) <= 1e-8 * max(1.0, abs(derivative)), (params, x, t_x, T, j)


def test_integral_stays_accurate_when_recency_is_next_to_T():
    """No cancellation: ``I(T - h, T)`` for tiny ``h`` matches the midpoint rule ``h f(T - h/2)``.

    ``h`` is a power of two so that ``T - h`` is exact in floating point.
    """
    a, b, alpha, beta, T = 300.6, 1.6, 10.6, 11.7, 39.0
    h = 2.0 ** -np.array([40.0, 30.0, 20.0])
    log_f = lambda y: -a * np.log(alpha + y) - b * np.log(beta + y)  # noqa: E731
    midpoint = np.log(h) + log_f(T - h / 2)  # relative error about (h a / (alpha + T))**2 / 24 < 1e-14
    np.testing.assert_allclose(log_pareto_integral(T - h, T, a, b, alpha, beta), midpoint, atol=1e-11, rtol=0)


def test_gradient_matches_finite_differences(cdnow):
    rng = np.random.default_rng(0)
    data = columns(cdnow)
    for _ in range(5):
        point = np.exp(rng.uniform(-2, 2, 4))

        def total(p):
            return pareto_nbd_log_likelihood(p, data)[0].sum()

        def gradient(p):
            return pareto_nbd_log_likelihood(p, data)[1].sum(axis=0)

        assert check_grad(total, gradient, point) <= 1e-4 * max(1.0, np.linalg.norm(gradient(point)))


def test_weights_equal_duplicated_rows(cdnow):
    part = cdnow.iloc[:800]
    counts = np.random.default_rng(1).integers(1, 4, len(part))
    duplicated = part.loc[part.index.repeat(counts)]
    weighted = ParetoNBD().fit(part, sample_weight=counts)
    repeated = ParetoNBD().fit(duplicated)
    np.testing.assert_allclose(weighted.params_, repeated.params_, rtol=1e-8)
    assert weighted.log_likelihood_ == pytest.approx(repeated.log_likelihood_, rel=1e-10)


def test_probabilities_in_unit_interval_and_expectations_finite(fitted):
    x, tx_share, T = np.meshgrid([0, 1, 5, 50, 500, 5000, 50000], [0.0, 0.3, 0.9, 1.0], [0.5, 10, 39, 500])
    grid = pd.DataFrame({"frequency": x.ravel() * 1.0, "recency": (tx_share * T).ravel(), "T": T.ravel()})
    grid.loc[grid["frequency"] == 0, "recency"] = 0.0
    for params in (fitted.params_, [0.05, 0.2, 20.0, 20.0], [20.0, 50.0, 0.05, 0.5], [1.0, 1.0, 1.0, 1.0]):
        model = with_params(params)
        alive = model.probability_alive(grid)
        for horizon in (0.0, 1.0, 39.0, 1000.0):
            no_purchase = model.probability_no_purchase(grid, horizon)
            assert np.all((no_purchase >= 0) & (no_purchase <= 1))
            # Not buying is at least as likely as being dead already.
            assert np.all(no_purchase >= 1 - alive - 1e-12)
            expected = model.expected_purchases(grid, horizon)
            assert np.all(np.isfinite(expected)) and np.all(expected >= 0)
        assert np.all((alive >= 0) & (alive <= 1))
        np.testing.assert_array_equal(model.probability_no_purchase(grid, 0.0), 1.0)


def test_rescaling_time_gives_same_predictions(cdnow):
    weeks = ParetoNBD().fit(cdnow)
    in_days = cdnow.assign(recency=cdnow["recency"] * 7, T=cdnow["T"] * 7)
    days = ParetoNBD().fit(in_days)
    np.testing.assert_allclose(days.params_[["alpha", "beta"]], 7 * weeks.params_[["alpha", "beta"]], rtol=1e-6)
    np.testing.assert_allclose(days.params_[["r", "s"]], weeks.params_[["r", "s"]], rtol=1e-6)
    np.testing.assert_allclose(days.expected_purchases(in_days, 39 * 7), weeks.expected_purchases(cdnow, 39), rtol=1e-6)
    np.testing.assert_allclose(days.probability_alive(in_days), weeks.probability_alive(cdnow), rtol=1e-6)
    np.testing.assert_allclose(
        days.probability_no_purchase(in_days, 13 * 7), weeks.probability_no_purchase(cdnow, 13), rtol=1e-6
    )


def test_recovers_simulated_parameters_within_sampling_error():
    truth = np.array([0.55, 10.5, 0.6, 11.7])
    data = simulate_pareto_nbd_summary(60_000, *truth, T=np.random.default_rng(5).uniform(30, 60, 60_000), seed=7)
    model = ParetoNBD().fit(data)
    z = (model.params_.to_numpy() - truth) / model.standard_errors_.to_numpy()
    assert np.all(np.abs(z) < 4), z


def test_probability_alive_and_no_purchase_match_simulation():
    """Simulate customers past T: compare P(alive) and P(no purchase in (T, T+t]) for x = 0 customers."""
    r, alpha, s, beta = 0.5, 5.0, 0.8, 10.0
    n, T, t = 400_000, 30.0, 20.0
    rng = np.random.default_rng(11)
    lam, mu = rng.gamma(r, 1 / alpha, n), rng.gamma(s, 1 / beta, n)
    lifetime = rng.exponential(1 / mu)
    active_total = np.minimum(lifetime, T + t)
    arrivals = rng.poisson(lam * active_total)
    # Arrivals are uniform over (0, active_total]: those in (0, T] are a binomial thinning.
    in_calibration = rng.binomial(arrivals, np.minimum(lifetime, T) / active_total)
    zero_repeaters = in_calibration == 0
    model = with_params([r, alpha, s, beta])
    summary = pd.DataFrame({"frequency": [0.0], "recency": [0.0], "T": [T]})
    for predicted, happened in (
        (model.probability_alive(summary).iloc[0], lifetime > T),
        (model.probability_no_purchase(summary, t).iloc[0], arrivals == in_calibration),
    ):
        observed = happened[zero_repeaters].mean()
        standard_error = np.sqrt(observed * (1 - observed) / zero_repeaters.sum())
        assert abs(predicted - observed) < 4 * standard_error


def test_expectations_continuous_at_s_equal_one():
    """E[X(t)] = r beta / (alpha (s-1)) [1 - (beta/(beta+t))^(s-1)] -> r beta/alpha log(1 + t/beta) at s = 1."""
    r, alpha, beta, t = 0.7, 4.0, 9.0, np.array([0.5, 10.0, 400.0])
    limit = r * beta / alpha * np.log1p(t / beta)
    at_one = with_params([r, alpha, 1.0, beta]).unconditional_expected_purchases(t)
    np.testing.assert_allclose(at_one, limit, rtol=1e-14)
    for s in (1 - 1e-9, 1 + 1e-9):
        near_one = with_params([r, alpha, s, beta]).unconditional_expected_purchases(t)
        np.testing.assert_allclose(near_one, limit, rtol=1e-8)
    # A customer with x = t_x = T = 0 is a new customer: conditional and unconditional agree.
    model = with_params([r, alpha, 1.3, beta])
    new = pd.DataFrame({"frequency": [0.0], "recency": [0.0], "T": [0.0]})
    expected = [model.expected_purchases(new, ti).iloc[0] for ti in t]
    np.testing.assert_allclose(expected, model.unconditional_expected_purchases(t), rtol=1e-14)
