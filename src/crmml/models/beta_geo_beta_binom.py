"""BG/BB: the beta-geometric/beta-Bernoulli model of discrete-time repeat transactions.

Fader, P. S., Hardie, B. G. S. & Shang, J. (2010), "Customer-Base Analysis in a Discrete-Time
Noncontractual Setting", *Marketing Science* 29(6), 1086-1108. Equation numbers below refer to that
paper.

Transactions can only happen at discrete opportunities ``1, 2, ..., n`` (a yearly event, a weekly
newsletter). While alive, a customer transacts at each opportunity with probability
``p ~ Beta(alpha, beta)``; before each opportunity she drops out for good with probability
``theta ~ Beta(gamma, delta)``, so she is alive at opportunity ``t`` with probability
``(1 - theta)^t``. The data of a customer are ``x`` (opportunities with a transaction), ``t_x`` (the
last of them, 0 if none) and ``n`` (opportunities observed).

All four parameters are dimensionless, so nothing is rescaled before fitting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from crmml.models.base import Data, rows_error
from crmml.models.btyd import TransactionModel

__all__ = [
    "BetaGeoBetaBinom",
    "beta_geo_beta_binom_log_likelihood",
    "probability_alive",
    "expected_purchases",
]

#: Below this ``|gamma - 1|`` the conditional expectation uses a Taylor series in ``gamma - 1``, with
#: terms up to this order (truncation error below ``threshold^(order+1) / (order+2)``, about 1e-16).
_TAYLOR_THRESHOLD = 0.25
_TAYLOR_ORDER = 24


def _term_layout(x: np.ndarray, t_x: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, ...]:
    """Integer indices of the padded matrix of likelihood terms; they do not depend on the parameters.

    Row ``r`` of the matrix holds, in column 0, the "still alive after opportunity ``n``" term and, in
    columns ``1 + i`` for ``i = 0 .. n - t_x - 1``, the "dropped out just before opportunity
    ``t_x + i + 1``" terms of eq. 5; the other columns are padding. Returns ``x``, ``n`` and ``n - x``
    as integers, the matrices ``j = t_x + i`` (opportunities survived) and ``k = j - x``
    (opportunities survived without a transaction), both clipped into range on the padding, and the
    mask of real terms.
    """
    x, t_x, n = (np.asarray(v).astype(np.int64) for v in (x, t_x, n))
    width = int(np.max(n - t_x)) if len(n) else 0
    i = np.arange(width)
    real = i[None, :] < (n - t_x)[:, None]
    survived = np.where(real, t_x[:, None] + i[None, :], 0)
    without_transaction = np.where(real, survived - x[:, None], 0)
    return x, n, n - x, survived, without_transaction, real


def _log_terms(params: np.ndarray, layout: tuple[np.ndarray, ...]) -> np.ndarray:
    """Log of every term of eq. 5 as a padded matrix, ``-inf`` on the padding.

    With ``j`` opportunities survived and ``k = j - x`` of them without a transaction, a term is
    ``B(alpha + x, beta + k)/B(alpha, beta) * B(c, delta + j)/B(gamma, delta)`` with ``c = gamma`` for the
    survivor term (``j = n``) and ``c = gamma + 1`` for a dropout term. Each beta function splits into
    log-gammas of ``alpha + x`` (one per row) and of ``beta + k``, ``alpha + beta + j`` (tables over
    ``0 .. max n``), so the matrix itself is only gathered from tables.
    """
    alpha, beta, gamma, delta = params
    x, n, n_minus_x, survived, without_transaction, real = layout
    top = int(np.max(n)) if len(n) else 0
    counts = np.arange(top + 1, dtype=float)
    gammaln_beta = special.gammaln(beta + counts)  # indexed by k
    gammaln_alpha_beta = special.gammaln(alpha + beta + counts)  # indexed by j
    betaln_dropout = special.betaln(gamma + 1, delta + counts)  # indexed by j
    betaln_survivor = special.betaln(gamma, delta + counts)  # indexed by n
    row_constant = special.gammaln(alpha + x) - special.betaln(alpha, beta) - special.betaln(gamma, delta)
    survivor = row_constant + gammaln_beta[n_minus_x] - gammaln_alpha_beta[n] + betaln_survivor[n]
    dropout = (
        row_constant[:, None]
        + gammaln_beta[without_transaction]
        - gammaln_alpha_beta[survived]
        + betaln_dropout[survived]
    )
    return np.concatenate([survivor[:, None], np.where(real, dropout, -np.inf)], axis=1)


def beta_geo_beta_binom_log_likelihood(params: np.ndarray, data: Data) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer log-likelihood and its gradient in ``(alpha, beta, gamma, delta)``, eq. 5.

    ``L = B(alpha+x, beta+n-x)/B(alpha, beta) * B(gamma, delta+n)/B(gamma, delta)
    + sum_{i=0}^{n-t_x-1} B(alpha+x, beta+t_x-x+i)/B(alpha, beta) * B(gamma+1, delta+t_x+i)/B(gamma, delta)``.

    The terms are combined with log-sum-exp over a padded matrix; the gradient is the softmax-weighted
    average of the terms' gradients. For a term with ``j`` opportunities survived, ``k = j - x`` of them
    without a transaction and ``c = gamma`` (survivor, ``j = n``) or ``gamma + 1`` (dropout), writing
    ``psi`` for the digamma function:

    * ``d/d alpha = psi(alpha+x) - psi(alpha+beta+j) - psi(alpha) + psi(alpha+beta)``
    * ``d/d beta  = psi(beta+k) - psi(alpha+beta+j) - psi(beta) + psi(alpha+beta)``
    * ``d/d gamma = psi(c) - psi(c+delta+j) - psi(gamma) + psi(gamma+delta)``
    * ``d/d delta = psi(delta+j) - psi(c+delta+j) - psi(delta) + psi(gamma+delta)``

    Parameters
    ----------
    params : ndarray
        ``(alpha, beta, gamma, delta)``.
    data : tuple of ndarray
        ``(x, t_x, n)`` as whole numbers with ``0 <= x <= t_x <= n``; optionally followed by the
        output of :func:`_term_layout` (precomputed once per fit).

    Returns
    -------
    log_likelihood : ndarray, shape (rows,)
    gradient : ndarray, shape (rows, 4)
    """
    alpha, beta, gamma, delta = params
    layout = data[3:] if len(data) > 3 else _term_layout(*data[:3])
    x, n, n_minus_x, survived, without_transaction, real = layout
    terms = _log_terms(params, layout)
    log_likelihood = special.logsumexp(terms, axis=1)
    weights = np.exp(terms - log_likelihood[:, None])  # softmax; 0 on the padding
    survivor_weight, dropout_weights = weights[:, 0], weights[:, 1:]

    top = int(np.max(n)) if len(n) else 0
    counts = np.arange(top + 1, dtype=float)
    digamma_beta = special.digamma(beta + counts)
    digamma_alpha_beta = special.digamma(alpha + beta + counts)
    digamma_delta = special.digamma(delta + counts)
    digamma_gamma_delta = special.digamma(gamma + delta + counts)  # survivor: psi(gamma + delta + n)
    digamma_gamma1_delta = special.digamma(gamma + 1 + delta + counts)  # dropout: psi(gamma + 1 + delta + j)

    def averaged(survivor_values: np.ndarray, dropout_table: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Softmax-weighted average of a per-term quantity (survivor value, dropout table lookup)."""
        return survivor_weight * survivor_values + np.sum(dropout_weights * dropout_table[index], axis=1)

    digamma_ab = special.digamma(alpha + beta)
    digamma_gd = special.digamma(gamma + delta)
    gradient = np.empty((len(x), 4))
    gradient[:, 0] = (
        special.digamma(alpha + x)
        - special.digamma(alpha)
        + digamma_ab
        - averaged(digamma_alpha_beta[n], digamma_alpha_beta, survived)
    )
    # A term's beta derivative reads two tables at different indices (k for beta, j for alpha + beta).
    gradient[:, 1] = (
        digamma_ab
        - special.digamma(beta)
        + survivor_weight * (digamma_beta[n_minus_x] - digamma_alpha_beta[n])
        + np.sum(dropout_weights * (digamma_beta[without_transaction] - digamma_alpha_beta[survived]), axis=1)
    )
    gradient[:, 2] = (
        digamma_gd
        - special.digamma(gamma)
        + survivor_weight * (special.digamma(gamma) - digamma_gamma_delta[n])
        + (1 - survivor_weight) * special.digamma(gamma + 1)
        - np.sum(dropout_weights * digamma_gamma1_delta[survived], axis=1)
    )
    gradient[:, 3] = (
        digamma_gd
        - special.digamma(delta)
        + averaged(digamma_delta[n] - digamma_gamma_delta[n], digamma_delta - digamma_gamma1_delta, survived)
    )
    return log_likelihood, gradient


def probability_alive(params, x, t_x, n, periods_ahead: int = 1) -> np.ndarray:
    """P(alive at opportunity ``n + periods_ahead`` | x, t_x, n), eq. 11 for ``periods_ahead = 1``.

    ``B(alpha+x, beta+n-x)/B(alpha, beta) * B(gamma, delta+n+periods_ahead)/B(gamma, delta) / L``.
    """
    alpha, beta, gamma, delta = params
    log_likelihood, _ = beta_geo_beta_binom_log_likelihood(params, (x, t_x, n))
    log_alive = (
        special.betaln(alpha + x, beta + n - x)
        - special.betaln(alpha, beta)
        + special.betaln(gamma, delta + n + periods_ahead)
        - special.betaln(gamma, delta)
    )
    return np.minimum(np.exp(log_alive - log_likelihood), 1.0)


def _gamma_ratio_difference_over_eps(start: np.ndarray, length: float, eps: float) -> np.ndarray:
    """``[G(s) - G(s + length)] / (eps G(s))`` with ``G(s) = Gamma(s) / Gamma(s + eps)``, for ``s >= 1``.

    The bracket of eq. 13 divided by ``gamma - 1``, relative to its first ratio. Written as
    ``(D/eps) * exprel(-D)`` with ``D = log G(s) - log G(s + length)``, it has no cancellation and no
    singularity at ``eps = gamma - 1 = 0``. For ``|eps| < 1/4``, ``D/eps`` comes from its Taylor series
    ``sum_k eps^k / (k+1)! [psi^(k)(s + length) - psi^(k)(s)]`` (it converges for ``|eps| < s``);
    differencing log-gammas there would lose ``log10(s log s / |eps D|)`` digits.
    """
    end = start + length
    if abs(eps) < _TAYLOR_THRESHOLD:
        d_over_eps = np.zeros_like(start)
        for order in range(_TAYLOR_ORDER + 1):
            d_over_eps += (
                eps**order
                / special.factorial(order + 1)
                * (special.polygamma(order, end) - special.polygamma(order, start))
            )
    else:
        d_over_eps = (
            special.gammaln(end + eps) - special.gammaln(end) - special.gammaln(start + eps) + special.gammaln(start)
        ) / eps
    return d_over_eps * special.exprel(-eps * d_over_eps)


def expected_purchases(params, x, t_x, n, horizon: float) -> np.ndarray:
    """E[X(n, n + horizon) | x, t_x, n]: expected transactions in the next ``horizon`` opportunities, eq. 13.

    ``1/L * B(alpha+x+1, beta+n-x)/B(alpha, beta) * delta/(gamma-1) * Gamma(gamma+delta)/Gamma(1+delta)
    * [Gamma(1+delta+n)/Gamma(gamma+delta+n) - Gamma(1+delta+n+horizon)/Gamma(gamma+delta+n+horizon)]``.

    The bracket over ``gamma - 1`` is evaluated by :func:`_gamma_ratio_difference_over_eps`, which is
    accurate at and near ``gamma = 1`` (where the printed formula is 0/0). Non-integer horizons use
    the gamma functions' continuation, as the formula does.
    """
    alpha, beta, gamma, delta = params
    log_likelihood, _ = beta_geo_beta_binom_log_likelihood(params, (x, t_x, n))
    start = 1.0 + delta + n
    log_factor = (
        special.betaln(alpha + x + 1, beta + n - x)
        - special.betaln(alpha, beta)
        - log_likelihood
        + np.log(delta)
        + special.gammaln(gamma + delta)
        - special.gammaln(1.0 + delta)
        + special.gammaln(start)
        - special.gammaln(start + gamma - 1.0)
    )
    return np.exp(log_factor) * _gamma_ratio_difference_over_eps(start, horizon, gamma - 1.0)


def _check_periods(value, name: str) -> float:
    number = float(value)
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite non-negative number of transaction opportunities; got {value!r}.")
    return number


class BetaGeoBetaBinom(TransactionModel):
    """BG/BB model for discrete-time noncontractual data (Fader, Hardie & Shang 2010).

    Parameters
    ----------
    penalizer, initial_params, max_iter, n_jobs
        Fitting options, see :class:`~crmml.models.base.BaseModel`; ``initial_params`` gives
        ``alpha, beta, gamma, delta``.

    Attributes
    ----------
    params_ : Series
        ``alpha, beta`` (beta distribution of the transaction probability ``p``) and
        ``gamma, delta`` (beta distribution of the dropout probability ``theta``).
    standard_errors_, covariance_ : Series, DataFrame
        From the observed information (Hessian) at the optimum.
    log_likelihood_ : float
        Total log-likelihood.

    Notes
    -----
    The summary holds ``frequency`` (``x``, opportunities with a transaction, not counting the first
    purchase that made the customer), ``recency`` (``t_x``, the last such opportunity, 0 if none) and
    ``n_periods`` (``n``, opportunities observed), all whole numbers with ``x <= t_x <= n``. The
    likelihood sums ``n - t_x`` terms per distinct row, so it is meant for tens or hundreds of
    opportunities, not thousands. Horizons are numbers of opportunities.

    Examples
    --------
    >>> from crmml.models.beta_geo_beta_binom import BetaGeoBetaBinom
    >>> model = BetaGeoBetaBinom().fit(summary, sample_weight=counts)   # doctest: +SKIP
    >>> model.expected_purchases(summary, horizon=5)                     # doctest: +SKIP
    """

    param_names = ("alpha", "beta", "gamma", "delta")
    data_columns = ("frequency", "recency", "n_periods")

    @staticmethod
    def _log_likelihood(params, data):
        return beta_geo_beta_binom_log_likelihood(params, data)

    def _check_data(self, data, index):
        frequency, recency, n_periods = data["frequency"], data["recency"], data["n_periods"]
        for name, values in data.items():
            if np.any(bad := (values < 0) | (values != np.round(values))):
                raise rows_error(index, bad, values, name, "must be a non-negative whole number")
        if np.any(bad := recency > n_periods):
            raise rows_error(index, bad, recency, "recency", "must not exceed n_periods")
        if np.any(bad := frequency > recency):
            raise rows_error(
                index, bad, frequency, "frequency", "must not exceed recency (one transaction per opportunity)"
            )

    def _prepare_data(self, data, weights):
        return (*data, *_term_layout(*data))

    def probability_alive(self, summary: pd.DataFrame, periods_ahead: int = 1) -> pd.Series:
        """P(alive at opportunity ``n + periods_ahead``), eq. 11 (``periods_ahead = 1``: the next one).

        ``periods_ahead = 0`` gives the probability of being alive at the last observed opportunity.
        """
        params = self._params()
        ahead = _check_periods(periods_ahead, "periods_ahead")
        return self._predict_unique(
            summary, lambda x, tx, n: probability_alive(params, x, tx, n, ahead), name="p_alive"
        )

    def expected_purchases(self, summary: pd.DataFrame, horizon: float) -> pd.Series:
        """Expected number of transactions in the next ``horizon`` opportunities, eq. 13."""
        params, horizon = self._params(), _check_periods(horizon, "horizon")
        return self._predict_unique(
            summary, lambda x, tx, n: expected_purchases(params, x, tx, n, horizon), name="expected_purchases"
        )

    def unconditional_expected_purchases(self, n) -> np.ndarray:
        """E[X(n)]: expected transactions in the first ``n`` opportunities of a new customer, eq. 7.

        ``alpha/(alpha+beta) * delta/(gamma-1) * [1 - Gamma(gamma+delta)/Gamma(gamma+delta+n)
        * Gamma(1+delta+n)/Gamma(1+delta)]``, which is eq. 13 for ``x = t_x = n = 0``.
        """
        params = self._params()
        periods = np.atleast_1d(np.asarray(n, dtype=float))
        zero = np.zeros(1)
        return np.array(
            [expected_purchases(params, zero, zero, zero, _check_periods(p, "n"))[0] for p in periods]
        )
