"""Conditional purchase distributions of the BTYD models: ``P(X(T, T+t] = k | x, t_x, T)``.

For BG/NBD, MBG/NBD and Pareto/NBD a customer with history ``(x, t_x, T)`` is either inactive
(no more purchases) or active, and an active customer's future is that of a *fresh* customer of the
same model with updated parameters (the posteriors of her purchase and dropout processes given that
she is still active at ``T``). So, for ``k = 0, 1, ...``::

    P(X(T, T+t] = k | x, t_x, T) = P(alive) * P_fresh(X(t) = k) + (1 - P(alive)) * [k == 0]

with the fresh-customer parameters

* BG/NBD: ``(r + x, alpha + T, a, b + x)``; MBG/NBD: ``(r + x, alpha + T, a, b + x + 1)`` (the
  customer has survived ``x + 1`` dropout chances there);
* Pareto/NBD: ``(r + x, alpha + T, s, beta + T)``.

The conditional PMF is derived in Fader, P. S. & Hardie, B. G. S. (2006), "Deriving the Conditional
PMF of the Pareto/NBD Model"; the decomposition above follows from the models' assumptions (the
purchase and dropout processes are memoryless given the rates), and the BG/NBD fresh-customer PMF is
eq. 8 of Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way". The note's own equation
numbers could not be consulted here; the implementation is checked instead against a direct mpmath
integration of the model definition (``tests/test_purchase_distribution.py``). ``P(alive)`` is the model's own
(BG/NBD eq. 13, Pareto/NBD eqs. 36-37 of Fader & Hardie (2005), "A Note on Deriving the Pareto/NBD
Model and Related Expressions"). Summing the PMF times ``k`` gives the models' conditional
expectations (BG/NBD eq. 10, Pareto/NBD eq. 41); ``k = 0`` is their P(no purchase).

Fresh-customer PMFs
-------------------
With ``N(t)`` the NBD count (Poisson purchases at a ``Gamma(r, alpha)`` rate), ``z = t / (alpha + t)``,
``NB_k = Gamma(r+k) / (Gamma(r) k!) (1-z)^r z^k`` and its survival ``S_k = P(N(t) >= k) = I_z(k, r)``
(regularised incomplete beta):

* BG/NBD (Fader, Hardie & Lee 2005, eq. 8)::

      P(X(t) = k) = B(a, b+k)/B(a, b) NB_k + [k > 0] B(a+1, b+k-1)/B(a, b) S_k

  (alive after ``k`` purchases, or dropped out right after the ``k``-th, which came before ``t``).
* Pareto/NBD: the ``k``-th purchase happens at the ``k``-th arrival ``A_k`` of the NBD process if the
  customer is still alive then, so ``P(X(t) >= k) = int_0^t f_{A_k}(u) G(u) du`` with
  ``G(u) = (beta/(beta+u))^s`` (the lifetime's survival, eq. 8 of Fader & Hardie 2005). In the variable
  ``p = u/(alpha+u)`` the density of ``A_k`` is the ``Beta(k, r)`` density and
  ``G = ((1-p)/(1-w p))^s`` with ``w = 1 - rho``, ``rho = alpha/beta``. Expanding ``(1 - w p)^-s``
  binomially gives two exact series (the hypergeometric series behind Fader & Hardie's expressions)::

      (A) |w| z < 1:   S_k = sum_n (s)_n/n! w^n  B(k+n, r+s)/B(k, r)  I_z(k+n, r+s)
      (B) rho > 1:     S_k = rho^-s sum_n (s)_n/n! w'^n  B(k, r+s+n)/B(k, r)  I_z(k, r+s+n),  w' = 1 - 1/rho

  Each row takes the faster of the two (its ratio is ``|w| z`` or ``w'``); ``P(X = k) = S_k - S_{k+1}``.
  Rows where both converge slowly (``alpha`` and ``beta`` orders of magnitude apart) are integrated
  adaptively instead (:func:`scipy.integrate.quad_vec`).

Numerics
--------
Everything is in log space: ``NB_k`` from ``gammaln``, the beta ratios from ``betaln``, so nothing
overflows for large ``k`` or long histories (``r + x`` in the thousands). The survival functions are
computed with one :func:`scipy.special.betainc` call per row at the largest index and the exact
recurrences ``I_z(k, b) = I_z(k+1, b) + NB_k`` (downwards) and
``I_z(k, b+1) = I_z(k, b) + z^k (1-z)^b / (b B(k, b))`` (upwards), which only add positive terms.
The PMF is evaluated once per distinct ``(x, T)`` pair (the active part) and ``P(alive)`` once per
distinct ``(x, t_x, T)`` row (:func:`crmml.models.base.unique_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import integrate, special

from crmml.models.base import check_horizon, unique_rows
from crmml.models.beta_geo import BetaGeo
from crmml.models.pareto_nbd import ParetoNBD, no_purchase_if_alive as pareto_no_purchase_if_alive

__all__ = [
    "PurchaseDistribution",
    "beta_geo_pmf_if_alive",
    "conditional_purchase_pmf",
    "pareto_nbd_pmf_if_alive",
    "purchase_distribution",
    "purchase_interval",
    "purchase_pmf",
    "randomized_pit",
]

#: Tail mass ``P(N(t) > K)`` of the active customer's NBD count left out when ``K`` is chosen automatically.
DEFAULT_TAIL = 1e-7
#: Relative size of the last series term kept.
_SERIES_TOLERANCE = 1e-17
#: Largest ``rows * draws * (K + 1)`` evaluated at once (bounds the working memory, ~30 MB).
_CHUNK_ELEMENTS = 4_000_000
#: Most series terms before a row is integrated adaptively instead.
_MAX_SERIES_TERMS = 400


def supported(model) -> bool:
    """True for the models with a conditional PMF here: BG/NBD, MBG/NBD and Pareto/NBD (not their covariate
    versions, whose parameters differ by customer)."""
    return isinstance(model, (BetaGeo, ParetoNBD))


def _check_model(model) -> None:
    if not supported(model):
        covariate = " (a covariate model: its parameters differ by customer, which the PMF here does not take)" \
            if hasattr(model, "design_") else ""
        raise TypeError(
            f"Purchase distributions exist for BetaGeo, ModifiedBetaGeo and ParetoNBD; got {type(model).__name__}"
            f"{covariate}."
        )


# --------------------------------------------------------------------------------------------------
# NBD building blocks
def _log_z_terms(alpha, t):
    """``log z`` and ``log(1 - z)`` for ``z = t/(alpha + t)`` (``-inf`` and 0 at ``t = 0``)."""
    with np.errstate(divide="ignore"):
        log_z = np.log(t) - np.log(alpha + t)
    return log_z, -np.log1p(t / alpha)


def _nbd_pmf_and_survival(r, alpha, t: float, K: int) -> tuple[np.ndarray, np.ndarray]:
    """NBD ``P(N(t) = k)`` for ``k = 0..K`` and ``P(N(t) >= k)`` for ``k = 0..K+1``, per row.

    ``r`` and ``alpha`` are arrays of shape ``(m,)``. The survival is ``betainc(K+1, r, z)`` at the top
    and the downward sum of the PMF below it (no subtraction).
    """
    r = np.asarray(r, dtype=float)[:, None]
    alpha = np.asarray(alpha, dtype=float)[:, None]
    log_z, log_1mz = _log_z_terms(alpha, t)
    # log NB_k = r log(1-z) + sum_{j<k} log((r+j)/(j+1) z): one logarithm per entry, not three gammaln.
    steps = np.empty((len(r), K + 1))
    steps[:, 0] = r[:, 0] * log_1mz[:, 0]
    if K > 0:
        j = np.arange(K, dtype=float)[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            steps[:, 1:] = np.log(r + j) - np.log1p(j) + log_z
    log_pmf = np.cumsum(steps, axis=1)
    pmf = np.exp(log_pmf)
    z = np.exp(log_z[:, 0]) if t > 0 else np.zeros(len(r))
    top = special.betainc(K + 1.0, r[:, 0], z)
    survival = np.empty((len(r), K + 2))
    survival[:, K + 1] = top
    survival[:, : K + 1] = top[:, None] + np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]
    return pmf, np.minimum(survival, 1.0)


def _nbd_upper_count(r, alpha, t: float, tail: float) -> np.ndarray:
    """Smallest ``K`` with ``P(N(t) > K) <= tail`` for the NBD count of each row."""
    if t == 0:
        return np.zeros(len(np.atleast_1d(r)), dtype=np.int64)
    p = np.asarray(alpha, dtype=float) / (np.asarray(alpha, dtype=float) + t)
    # The continuous inverse of the NBD CDF in k (scipy.special.nbdtrik, the ufunc behind
    # scipy.stats.nbinom's quantiles without its per-call overhead), rounded up, plus one for safety.
    upper = np.ceil(special.nbdtrik(1.0 - tail, np.asarray(r, dtype=float), p)) + 1.0
    return np.nan_to_num(np.maximum(upper, 0.0), nan=0.0, posinf=1e6).astype(np.int64)


#: Below this many rows, every row is taken as distinct (finding the distinct rows costs more).
_SMALL = 32


def _distinct(columns) -> tuple[np.ndarray, np.ndarray]:
    """:func:`crmml.models.base.unique_rows`, or every row as its own for tiny inputs (single requests)."""
    n = len(columns[0])
    if n <= _SMALL:
        return np.arange(n), np.arange(n)
    return unique_rows(columns)


# --------------------------------------------------------------------------------------------------
# Fresh-customer ("alive at T") PMFs, per row
def beta_geo_pmf_if_alive(params, x, T, t: float, K: int, shift: int = 0) -> np.ndarray:
    """P(X(T, T+t] = k | active at T, x, T), ``k = 0..K``, for BG/NBD (``shift=0``) or MBG/NBD (``shift=1``).

    Fader, Hardie & Lee (2005) eq. 8 with the parameters ``(r+x, alpha+T, a, b+x+shift)``.

    Parameters
    ----------
    params : sequence of 4 floats or of 4 arrays of shape (m,)
        ``r, alpha, a, b``, the same for every row or one set per row.
    x, T : arrays of shape (m,)
        Repeat purchases and observation length.
    t : float
        Horizon.
    K : int
        Largest count.

    Returns
    -------
    ndarray of shape (m, K+1)
    """
    x, T = np.asarray(x, dtype=float), np.asarray(T, dtype=float)
    # Parameters may be scalars or one per row (draws of the parameters stacked as rows).
    r, alpha, a, b = (np.broadcast_to(np.asarray(v, dtype=float), x.shape) for v in params)
    nb, survival = _nbd_pmf_and_survival(r + x, alpha + T, t, K)
    b_post = (b + x + shift)[:, None]
    a = a[:, None]
    # log B(a, b'+k)/B(a, b') = sum_{j<k} log((b'+j)/(a+b'+j)), by cumulative sums (no betaln).
    log_survive = np.zeros((len(x), K + 1))
    if K > 0:
        log_survive[:, 1:] = np.cumsum(-np.log1p(a / (b_post + np.arange(K, dtype=float)[None, :])), axis=1)
    alive = np.exp(log_survive) * nb
    if K > 0:
        # B(a+1, b'+k-1)/B(a, b') = a/(a+b'+k-1) B(a, b'+k-1)/B(a, b'), k >= 1.
        k = np.arange(1, K + 1, dtype=float)[None, :]
        alive[:, 1:] += np.exp(log_survive[:, :-1] + np.log(a / (a + b_post + k - 1.0))) * survival[:, 1 : K + 1]
    return alive


def _pareto_survival_series(r, alpha, s: float, beta, t: float, K: int):
    """``P(X(t) >= k)``, ``k = 1..K+1``, of fresh Pareto/NBD customers by the series (A)/(B) of the
    module docstring. Returns the survival (m, K+1) and a mask of rows whose series did not converge."""
    m = len(r)
    rho = alpha / beta
    z = t / (alpha + t)
    rate_a = np.abs(1.0 - rho) * z
    rate_b = np.where(rho > 1.0, 1.0 - 1.0 / rho, np.inf)
    use_b = rate_b < rate_a
    rate = np.where(use_b, rate_b, rate_a)
    with np.errstate(divide="ignore"):
        needed = np.where(rate > 0, np.ceil(np.log(_SERIES_TOLERANCE) / np.log(rate)), 0.0)
    slow = needed > _MAX_SERIES_TERMS
    # The rate bounds the terms' decay only roughly: leave a margin (rows that still have not
    # converged at the end go to the adaptive quadrature).
    n_terms = int(min(1.5 * np.max(np.where(slow, 0.0, needed), initial=0.0) + 10, _MAX_SERIES_TERMS))
    k = np.arange(1, K + 2, dtype=float)[None, :]  # k = 1..K+1
    rs = (r + s)[:, None]
    survival = np.zeros((m, K + 1))
    log_beta_k_r = special.betaln(k, r[:, None])
    log_z, log_1mz = (v[:, None] for v in _log_z_terms(alpha, t))

    rows_a = np.flatnonzero(~use_b & ~slow)
    if rows_a.size:
        w = (1.0 - rho[rows_a])[:, None]
        with np.errstate(divide="ignore"):
            log_abs_w = np.log(np.abs(w))
        # I_z(j, r+s) for j = 0..K+1+n_terms (the NBD survival with shape r+s).
        _, upper = _nbd_pmf_and_survival(r[rows_a] + s, alpha[rows_a], t, K + n_terms)
        total = np.zeros((rows_a.size, K + 1))
        converged = np.zeros(rows_a.size, dtype=bool)
        log_coefficient = 0.0  # log of (s)_n / n!
        for n in range(n_terms):
            with np.errstate(invalid="ignore"):
                log_term = log_coefficient + (n * log_abs_w if n else 0.0)
                log_term = log_term + special.betaln(k + n, rs[rows_a]) - log_beta_k_r[rows_a]
            term = np.exp(log_term) * upper[:, 1 + n : K + 2 + n]
            if n % 2 == 1:
                term *= np.sign(w)
            total += term
            converged = np.all(np.abs(term) <= _SERIES_TOLERANCE * np.abs(total), axis=1)
            if converged.all():
                break
            log_coefficient += np.log((s + n) / (n + 1.0))
        survival[rows_a] = total
        slow[rows_a[~converged]] = True

    rows_b = np.flatnonzero(use_b & ~slow)
    if rows_b.size:
        log_w_prime = np.log1p(-1.0 / rho[rows_b])[:, None]
        _, upper = _nbd_pmf_and_survival(r[rows_b] + s, alpha[rows_b], t, K)
        incomplete = upper[:, 1:]  # I_z(k, r+s), k = 1..K+1
        total = np.zeros((rows_b.size, K + 1))
        converged = np.zeros(rows_b.size, dtype=bool)
        log_coefficient = 0.0
        lz, l1z = log_z[rows_b], log_1mz[rows_b]
        for n in range(n_terms):
            b_n = rs[rows_b] + n
            log_beta_k_b = special.betaln(k, b_n)
            term = np.exp(log_coefficient + n * log_w_prime + log_beta_k_b - log_beta_k_r[rows_b]) * incomplete
            total += term
            converged = np.all(term <= _SERIES_TOLERANCE * total, axis=1)
            if converged.all():
                break
            # I_z(k, b+1) = I_z(k, b) + z^k (1-z)^b / (b B(k, b))
            incomplete = np.minimum(incomplete + np.exp(k * lz + b_n * l1z - np.log(b_n) - log_beta_k_b), 1.0)
            log_coefficient += np.log((s + n) / (n + 1.0))
        survival[rows_b] = total * np.exp(-s * np.log(rho[rows_b]))[:, None]
        slow[rows_b[~converged]] = True
    return survival, slow


def _pareto_survival_adaptive(r: float, alpha: float, s: float, beta: float, t: float, K: int) -> np.ndarray:
    """``P(X(t) >= k)``, ``k = 1..K+1``, of one fresh Pareto/NBD customer by adaptive quadrature over
    ``p = u/(alpha+u)`` (the fallback for rows whose series converge slowly)."""
    k = np.arange(1, K + 2, dtype=float)
    log_beta = special.betaln(k, r)

    def integrand(p):
        log_density = (k - 1.0) * np.log(p) + (r - 1.0) * np.log1p(-p) - log_beta
        u = alpha * p / (1.0 - p)
        return np.exp(log_density - s * np.log1p(u / beta))

    z = t / (alpha + t)
    value, _ = integrate.quad_vec(integrand, 0.0, z, epsabs=1e-14, epsrel=1e-12, limit=2000)
    return np.clip(value, 0.0, 1.0)


def pareto_nbd_pmf_if_alive(params, x, T, t: float, K: int, rate_scale: float = 1.0) -> np.ndarray:
    """P(X(T, T+t] = k | alive at T, x, T), ``k = 0..K``, for Pareto/NBD.

    A fresh Pareto/NBD customer with parameters ``(r+x, alpha+T, s, beta+T)``; the survival series of
    the module docstring, and ``k = 0`` from
    :func:`crmml.models.pareto_nbd.no_purchase_if_alive` (the quadrature behind P(no purchase)).
    ``rate_scale`` multiplies the purchase rates from ``T`` on (``alpha + T`` becomes
    ``(alpha + T) / rate_scale``; the lifetimes are unchanged); then ``k = 0`` is ``1 - P(X >= 1)``.
    """
    r, alpha, s, beta = (float(v) for v in params)
    x, T = np.asarray(x, dtype=float), np.asarray(T, dtype=float)
    pmf = np.zeros((len(x), K + 1))
    if t == 0:
        pmf[:, 0] = 1.0
        return pmf
    alpha_post = (alpha + T) / rate_scale
    survival, slow = _pareto_survival_series(r + x, alpha_post, s, beta + T, t, K)
    for row in np.flatnonzero(slow):
        survival[row] = _pareto_survival_adaptive(r + x[row], alpha_post[row], s, beta + T[row], t, K)
    survival = np.minimum.accumulate(np.clip(survival, 0.0, 1.0), axis=1)  # S_k is non-increasing
    pmf[:, 1:] = survival[:, :-1] - survival[:, 1:]
    if rate_scale == 1.0:
        pmf[:, 0] = pareto_no_purchase_if_alive((r, alpha, s, beta), x, T, t)
    else:
        pmf[:, 0] = 1.0 - survival[:, 0]
    return pmf


def _pmf_if_alive(model, params, x, T, t: float, K: int, rate_scale: float = 1.0) -> np.ndarray:
    """The active customer's PMF; ``rate_scale`` multiplies her purchase rate over the horizon.

    For BG/NBD and MBG/NBD, where dropout is tied to purchases, that is exactly a horizon
    ``rate_scale * t``.
    """
    if isinstance(model, ParetoNBD):
        return pareto_nbd_pmf_if_alive(params, x, T, t, K, rate_scale)
    return beta_geo_pmf_if_alive(params, x, T, rate_scale * t, K, model._dropout_shift)


def _upper_count(model, params, x, T, t: float, tail: float) -> np.ndarray:
    """Per row, a count ``K`` beyond which the active customer's PMF holds at most ``tail``.

    The purchases of an active customer in ``(T, T+t]`` never exceed her NBD count (dropout only
    stops purchasing), so the NBD quantile bounds them.
    """
    r, alpha = float(params[0]), float(params[1])
    return _nbd_upper_count(r + np.asarray(x, float), alpha + np.asarray(T, float), t, tail)


# --------------------------------------------------------------------------------------------------
# Conditional PMFs of customers
def conditional_purchase_pmf(model, params, x, t_x, T, horizon: float, max_purchases: int, *,
                             rate_scale: float = 1.0) -> np.ndarray:
    """``P(X(T, T+horizon] = k | x, t_x, T)``, ``k = 0..max_purchases``, from arrays and given parameters.

    ``P(alive)`` per distinct ``(x, t_x, T)`` row and the active part per distinct ``(x, T)`` pair.
    ``params`` are the model's natural parameters (``model.params_`` or a draw of them).
    ``rate_scale`` multiplies every active customer's purchase rate over the horizon (a level
    correction, e.g. for a season the calibration period did not hold); 1 is the model.

    Returns
    -------
    ndarray of shape (n, max_purchases + 1)
    """
    _check_model(model)
    t = check_horizon(horizon)
    K = int(max_purchases)
    if K < 0:
        raise ValueError(f"max_purchases must be a non-negative whole number; got {max_purchases!r}.")
    params = np.asarray(params, dtype=float)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    first, inverse = _distinct([x, t_x, T])
    p_alive = model._probability_alive(params, x[first], t_x[first], T[first])
    pair_first, pair_inverse = _distinct([x[first], T[first]])
    if not (np.isfinite(rate_scale) and rate_scale > 0):
        raise ValueError(f"rate_scale must be a positive finite number; got {rate_scale!r}.")
    alive = _pmf_if_alive(model, params, x[first][pair_first], T[first][pair_first], t, K, rate_scale)[pair_inverse]
    alive *= p_alive[:, None]
    alive[:, 0] += 1.0 - p_alive
    return alive[inverse]


def _summary_arrays(model, summary: pd.DataFrame):
    _check_model(model)
    data = model._extract(summary, ("frequency", "recency", "T"))
    return data["frequency"], data["recency"], data["T"]


def purchase_pmf(model, summary: pd.DataFrame, horizon: float, max_purchases: int | None = None, *,
                 tail: float = DEFAULT_TAIL) -> np.ndarray:
    """Each customer's distribution of purchases in the next ``horizon`` time units.

    Parameters
    ----------
    model : BetaGeo, ModifiedBetaGeo or ParetoNBD
        A fitted model.
    summary : pandas.DataFrame
        Columns ``frequency``, ``recency`` and ``T`` (as for the model's predictions).
    horizon : float
        In the model's time units.
    max_purchases : int, optional
        Largest count ``K``. By default the smallest that leaves at most ``tail`` of every customer's
        probability beyond it.
    tail : float
        See ``max_purchases``.

    Returns
    -------
    ndarray of shape (n, K + 1)
        Row ``i``, column ``k``: ``P(X(T, T+horizon] = k | history_i)``. Rows sum to 1 up to the mass
        beyond ``K``; column 0 is :meth:`probability_no_purchase`; ``pmf @ arange(K+1)`` is
        :meth:`expected_purchases` up to the mass beyond ``K``.
    """
    x, t_x, T = _summary_arrays(model, summary)
    params = model._params()
    t = check_horizon(horizon)
    if max_purchases is None:
        first, _ = _distinct([x, T])
        max_purchases = int(np.max(_upper_count(model, params, x[first], T[first], t, tail), initial=0))
    return conditional_purchase_pmf(model, params, x, t_x, T, t, max_purchases)


def _mixture_pmf(model, draws: np.ndarray, x, t_x, T, t: float, K: int, rate_scale: float = 1.0) -> np.ndarray:
    """``mean_d P(X = k | x, t_x, T, theta_d)`` for distinct rows, ``k = 0..K``, over parameter draws
    (one row of ``draws`` per draw; a single row is the model's own PMF).

    BG/NBD and MBG/NBD evaluate the draws at once (stacked as rows); Pareto/NBD, whose quadrature
    takes scalar parameters, one draw at a time.
    """
    n_draws = draws.shape[0]
    if isinstance(model, ParetoNBD) or n_draws == 1:
        total = conditional_purchase_pmf(model, draws[0], x, t_x, T, t, K, rate_scale=rate_scale)
        for params in draws[1:]:
            total += conditional_purchase_pmf(model, params, x, t_x, T, t, K, rate_scale=rate_scale)
        return total / n_draws if n_draws > 1 else total
    pair_first, pair_inverse = _distinct([x, T])
    n_pairs = len(pair_first)
    stacked = np.repeat(draws, n_pairs, axis=0).T  # (n_params, n_draws * n_pairs), draw-major
    alive = _pmf_if_alive(model, stacked, np.tile(x[pair_first], n_draws), np.tile(T[pair_first], n_draws), t, K,
                          rate_scale).reshape(n_draws, n_pairs, K + 1)
    p_alive = model._probability_alive(np.repeat(draws, len(x), axis=0).T, np.tile(x, n_draws), np.tile(t_x, n_draws),
                                       np.tile(T, n_draws)).reshape(n_draws, len(x))
    mixture = np.zeros((len(x), K + 1))
    for d in range(n_draws):
        mixture += p_alive[d][:, None] * alive[d][pair_inverse]
    mixture /= n_draws
    mixture[:, 0] += 1.0 - p_alive.mean(axis=0)
    return mixture


def _upper_counts(draws: np.ndarray, x, T, t: float, tail: float) -> np.ndarray:
    """Per row a count beyond which every draw's active PMF holds at most ``tail`` (largest ``r``,
    smallest ``alpha`` over the draws: the NBD count grows with ``r`` and falls with ``alpha``)."""
    return _nbd_upper_count(draws[:, 0].max() + x, draws[:, 1].min() + T, t, tail)


def _chunks(model, draws: np.ndarray, x, t_x, T, t: float, max_purchases: int | None, tail: float,
            rate_scale: float = 1.0):
    """Yield ``(rows, pmf)`` over distinct rows: the mixture PMF over ``draws`` (:func:`_mixture_pmf`).

    Chunks are sets of whole ``(x, T)`` pairs (so each pair's active PMF is computed once), of similar
    ``K`` (pairs sorted by their upper count, a chunk ending before ``K`` doubles), with at most about
    ``_CHUNK_ELEMENTS`` entries ``rows * draws * (K + 1)``.
    """
    pair_first, pair_inverse = _distinct([x, T])
    if max_purchases is None:
        pair_upper = _upper_counts(draws, x[pair_first], T[pair_first], rate_scale * t, tail)
    else:
        pair_upper = np.full(len(pair_first), int(max_purchases))
    pair_order = np.argsort(pair_upper, kind="stable")
    rank = np.empty(len(pair_order), dtype=np.int64)
    rank[pair_order] = np.arange(len(pair_order))
    row_order = np.argsort(rank[pair_inverse], kind="stable")  # rows grouped by pair, pairs by K
    rows_per_pair = np.bincount(rank[pair_inverse], minlength=len(pair_order))
    row_end = np.cumsum(rows_per_pair)  # rows of the pairs ranked < i+1 end here
    sorted_upper = pair_upper[pair_order]
    start = 0
    while start < len(pair_order):
        K = int(sorted_upper[start])
        budget = max(1, _CHUNK_ELEMENTS // (draws.shape[0] * (K + 1)))
        row_start = row_end[start - 1] if start else 0
        stop = int(np.searchsorted(row_end, row_start + budget, side="right"))
        stop = min(max(stop, start + 1), int(np.searchsorted(sorted_upper, 2 * K + 8, side="right")))
        stop = max(stop, start + 1)
        rows = row_order[row_start : row_end[stop - 1]]
        yield rows, _mixture_pmf(model, draws, x[rows], t_x[rows], T[rows], t, int(sorted_upper[stop - 1]), rate_scale)
        start = stop


# --------------------------------------------------------------------------------------------------
# Summaries of count distributions
def _cdf(pmf: np.ndarray) -> np.ndarray:
    return np.minimum(np.cumsum(pmf, axis=-1), 1.0)


def purchase_interval(pmf: np.ndarray, level: float = 0.8, kind: str = "shortest") -> tuple[np.ndarray, np.ndarray]:
    """A ``level`` interval ``[lower, upper]`` of each row's count distribution.

    Counts are discrete, so an interval holds at least ``level`` and usually more:

    * ``kind="shortest"`` (default): of the intervals holding at least ``level``, the one holding
      least (then the shortest, then the lowest). For the typical customer, whose distribution falls
      from a mode at 0, it is ``[0, q]`` with ``q`` the ``level`` quantile. It exceeds ``level`` by
      the least a non-randomised interval can.
    * ``kind="equal-tailed"``: ``lower`` the smallest ``k`` with ``F(k) > (1 - level)/2`` and ``upper``
      the smallest with ``F(k) >= (1 + level)/2`` (at most ``(1 - level)/2`` below and above).

    Where the mass up to the last column never reaches a quantile, ``upper`` is the last column's ``k``.

    Parameters
    ----------
    pmf : ndarray of shape (n, K+1)
    level : float in (0, 1)
    kind : {"shortest", "equal-tailed"}

    Returns
    -------
    lower, upper : int arrays of shape (n,)
    """
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1; got {level!r}.")
    if kind not in ("shortest", "equal-tailed"):
        raise ValueError(f"kind must be 'shortest' or 'equal-tailed'; got {kind!r}.")
    cdf = _cdf(np.asarray(pmf, dtype=float))
    last = cdf.shape[-1] - 1
    # Small slack so that a CDF landing on a quantile up to rounding counts as reaching it.
    slack = 1e-12
    if kind == "equal-tailed":
        lower = np.sum(cdf <= 0.5 * (1.0 - level) + slack, axis=-1)
        upper = np.sum(cdf < 0.5 * (1.0 + level) - slack, axis=-1)
        return np.minimum(lower, last), np.minimum(upper, last)
    n = cdf.shape[0]
    best_lower, best_upper = np.zeros(n, dtype=np.int64), np.full(n, last, dtype=np.int64)
    best_mass, best_width = np.full(n, np.inf), np.full(n, np.inf)
    # F(lower - 1) for every lower bound; a lower bound is a candidate while at least `level` lies at
    # or above it. Most customers have one candidate (0), so each pass only visits the rows left.
    before = np.concatenate([np.zeros((n, 1)), cdf[:, :-1]], axis=1)
    lower = 0
    rows = np.flatnonzero(1.0 - before[:, 0] >= level - slack)
    while rows.size and lower <= last:
        below = before[rows, lower]
        upper = np.maximum(np.sum(cdf[rows] < below[:, None] + level - slack, axis=-1), lower)
        reached = upper <= last
        upper = np.minimum(upper, last)
        mass = np.where(reached, cdf[rows, upper] - below, np.inf)
        width = upper - lower
        better = (mass < best_mass[rows] - slack) | ((np.abs(mass - best_mass[rows]) <= slack) & (width < best_width[rows]))
        chosen = rows[better]
        best_lower[chosen], best_upper[chosen] = lower, upper[better]
        best_mass[chosen], best_width[chosen] = mass[better], width[better]
        lower += 1
        if lower <= last:
            rows = rows[1.0 - before[rows, lower] >= level - slack]
    # Rows whose listed mass never reaches `level` (all of it beyond the last column): the whole range.
    unreached = ~np.isfinite(best_mass)
    best_lower[unreached], best_upper[unreached] = 0, last
    return best_lower, best_upper


def randomized_pit(pmf: np.ndarray, observed, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Randomised probability integral transform of observed counts: ``F(y-1) + V P(y)``, ``V ~ U(0, 1)``.

    For a discrete outcome the randomised PIT is uniform on (0, 1) exactly when the predictive
    distribution is the true one (Brockwell 2007; Czado, Gneiting & Held 2009, section 2.1).

    Parameters
    ----------
    pmf : ndarray of shape (n, K+1)
        Predictive distributions; ``K`` must be at least the largest observed count.
    observed : array of n non-negative whole numbers
    seed : int or numpy.random.Generator
        Seed of the uniforms ``V``.
    """
    pmf = np.asarray(pmf, dtype=float)
    y = np.asarray(observed)
    if y.shape != (pmf.shape[0],):
        raise ValueError(f"observed must hold one count per row of pmf ({pmf.shape[0]}); got shape {y.shape}.")
    if np.any(y < 0) or np.any(y != np.round(y)):
        raise ValueError("observed counts must be non-negative whole numbers.")
    y = y.astype(np.int64)
    if y.size and y.max() >= pmf.shape[1]:
        raise ValueError(f"an observed count ({y.max()}) exceeds the distributions' largest count ({pmf.shape[1] - 1}).")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rows = np.arange(len(y))
    cdf = _cdf(pmf)
    below = np.where(y > 0, cdf[rows, np.maximum(y - 1, 0)], 0.0)
    return below + rng.uniform(size=len(y)) * pmf[rows, y]


@dataclass(frozen=True)
class PurchaseDistribution:
    """Per-customer summaries of a purchase distribution (see :func:`purchase_distribution`)."""

    expected: np.ndarray
    p_no_purchase: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float


def purchase_distribution(model, summary: pd.DataFrame, horizon: float, level: float = 0.8, *,
                          kind: str = "shortest", tail: float = DEFAULT_TAIL) -> PurchaseDistribution:
    """Mean, P(no purchase) and the ``level`` interval (:func:`purchase_interval` of ``kind``) of each
    customer's purchases.

    The PMF is built per distinct history and never for all customers at once, so memory stays at
    ``O(distinct histories * K)``. See :mod:`crmml.models.parameter_uncertainty` for the same with
    the uncertainty of the fitted parameters.
    """
    x, t_x, T = _summary_arrays(model, summary)
    first, inverse = _distinct([x, t_x, T])
    t = check_horizon(horizon)
    n_unique = len(first)
    expected, p_none = np.empty(n_unique), np.empty(n_unique)
    lower, upper = np.empty(n_unique, dtype=np.int64), np.empty(n_unique, dtype=np.int64)
    for rows, pmf in _chunks(model, model._params()[None, :], x[first], t_x[first], T[first], t, None, tail):
        expected[rows] = pmf @ np.arange(pmf.shape[1], dtype=float)
        p_none[rows] = pmf[:, 0]
        lower[rows], upper[rows] = purchase_interval(pmf, level, kind)
    return PurchaseDistribution(expected[inverse], p_none[inverse], lower[inverse], upper[inverse], float(level))
