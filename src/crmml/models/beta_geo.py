"""BG/NBD: the beta-geometric/negative-binomial model of repeat purchasing.

Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005), "Counting Your Customers the Easy Way: An
Alternative to the Pareto/NBD Model", *Marketing Science* 24(2), 275-284. Equation numbers below
refer to that paper.

While active, a customer buys at Poisson rate ``lambda ~ Gamma(r, alpha)``; after every repeat
purchase they become inactive with probability ``p ~ Beta(a, b)``.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from crmml.models._special import one_minus_euler_term_over, one_minus_pfaff_term, softplus_and_expit
from crmml.models._levels import RFMLevels
from crmml.models.base import check_btyd_summary
from crmml.models.btyd import AliveMixtureModel

__all__ = ["BetaGeo"]

#: Above this ``(a - 1) * -log(1 - z)`` (``(1 - z)^(a-1) < 1e-13``) the conditional expectation is summed
#: as the positive series of :func:`~crmml.models._special.one_minus_pfaff_term` instead of the Euler form.
_EULER_LIMIT = 30.0
#: Half-width of the interval around a = 1 over which the series form is averaged (see below).
_NEAR_ONE = 1e-4


def beta_geometric_log_likelihood(params: np.ndarray, data, weights=None, shift: int = 0) -> tuple[float, np.ndarray]:
    """Weighted total log-likelihood and its gradient in ``(r, alpha, a, b)``, BG/NBD eq. 6.

    ``L = B(a, b+x+shift)/B(a, b) * Gamma(r+x) alpha^r / Gamma(r)
    * [(alpha+T)^-(r+x) + [x+shift>0] a/(b+x+shift-1) (alpha+t_x)^-(r+x)]``.

    ``shift=0`` is BG/NBD, where a customer can only drop out after a repeat purchase; ``shift=1``
    is MBG/NBD (Batislam, Denizel & Filiztekin 2007), where she can also drop out right after the
    first purchase. Writing the bracket as ``(alpha+T)^-(r+x) (1 + e^d)`` with
    ``d = log(a/(b+x+shift-1)) + (r+x) log((alpha+T)/(alpha+t_x))``, everything but
    ``log(1 + e^d)`` depends on one column only and is summed per level (:mod:`._levels`); the
    gradient of ``log(1 + e^d)`` is ``expit(d)`` times that of ``d``.

    Parameters
    ----------
    params : array of 4 floats
        ``r, alpha, a, b``.
    data : RFMLevels or tuple of arrays
        ``(frequency, recency, T)`` rows (a tuple is compressed on the fly).
    weights : array, optional
        Customers per row; only used with a tuple (``RFMLevels`` carries its weights).
    """
    if not isinstance(data, RFMLevels):
        data = RFMLevels.from_arrays(*data, weights=weights)
    r, alpha, a, b = params
    xl, Tl, tl = data.x_levels, data.T_levels, data.t_x_levels
    weights, x = data.weights, data.x
    total_weight = data.total_weight

    # Per frequency level: gamma/beta terms and their derivatives.
    bl = b + xl.values + shift
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.where(xl.values + shift > 0, np.log(a) - np.log(bl - 1), -np.inf)
        inverse_bl1 = np.where(xl.values + shift > 0, 1.0 / (bl - 1), 0.0)
    constant = special.gammaln(r + xl.values) + special.betaln(a, bl)
    digamma_abl = special.digamma(a + bl)
    # Per T level and per t_x level.
    log_alpha_T, log_alpha_tx = np.log(alpha + Tl.values), np.log(alpha + tl.values)
    weight_x_by_T = Tl.total(weights * x)

    # Row by row: the mixing term log(1 + e^d).
    rx = r + x
    log_T_rows = log_alpha_T[Tl.index]
    log_gap = log_T_rows - log_alpha_tx[tl.index]
    d = log_ratio[xl.index] + rx * log_gap
    softplus, w = softplus_and_expit(d)
    ww = weights * w
    inverse_gap = (1.0 / (alpha + Tl.values))[Tl.index] - (1.0 / (alpha + tl.values))[tl.index]

    log_likelihood = (
        xl.weight @ constant
        + total_weight * (r * np.log(alpha) - special.gammaln(r) - special.betaln(a, b))
        - log_alpha_T @ (r * Tl.weight + weight_x_by_T)
        + weights @ softplus
    )
    gradient = np.array(
        [
            xl.weight @ special.digamma(r + xl.values)
            + total_weight * (np.log(alpha) - special.digamma(r))
            - Tl.weight @ log_alpha_T
            + ww @ log_gap,
            total_weight * r / alpha
            - (r * Tl.weight + weight_x_by_T) @ (1.0 / (alpha + Tl.values))
            + (ww * rx) @ inverse_gap,
            total_weight * special.digamma(a + b) - xl.weight @ digamma_abl + ww.sum() / a,
            xl.weight @ (special.digamma(bl) - digamma_abl)
            + total_weight * (special.digamma(a + b) - special.digamma(b))
            - xl.total(ww) @ inverse_bl1,
        ]
    )
    return float(log_likelihood), gradient


def _log_odds_dropped(params, x, t_x, T, shift: int) -> np.ndarray:
    """``log[P(inactive) / P(active)]`` given the history (the ratio behind BG/NBD eq. 13)."""
    r, alpha, a, b = params
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = np.log(a) - np.log(b + x + shift - 1) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return np.where((x + shift) > 0, odds, -np.inf)


def probability_alive(params, x, t_x, T, shift: int = 0) -> np.ndarray:
    """P(active at T | x, t_x, T), eq. 13, as ``expit(-log odds)`` so it never overflows."""
    return special.expit(-_log_odds_dropped(params, x, t_x, T, shift))


def expected_purchases_if_alive(params, x, T, t: float, shift: int = 0) -> np.ndarray:
    """E[X(T, T+t] | active at T, x, T]: eq. 10 without its P(alive) factor.

    ``(a+b+x+shift-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x+shift; a+b+x+shift-1; z)]``
    with ``z = t/(alpha+T+t)`` (MBG/NBD, Batislam et al. 2007, with ``shift=1``). After Euler's
    transformation the bracket over ``(a - 1)`` is :func:`one_minus_euler_term_over` with parameters
    ``(a+b+shift-1-r, a-1; a+b+x+shift-1; z)``: small numerator parameters, so it never overflows.
    """
    r, alpha, a, b = params
    x, T = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(T, dtype=float))
    c = a + b + x + shift - 1
    z = t / (alpha + T + t)
    eps = np.broadcast_to(np.asarray(a - 1.0), c.shape)
    # Where (1 - z)^(a - 1) underflows the Euler form is 0 * inf: there the equal positive series of
    # one_minus_pfaff_term is used (it converges fast exactly when a, hence c, is large).
    large = eps * -np.log1p(-z) > _EULER_LIMIT
    out = np.full(c.shape, np.nan)
    small = ~large
    zz, rx, bx = (np.broadcast_to(v, c.shape) for v in (z, r + x, b + x + shift))
    if small.any():
        with np.errstate(all="ignore"):  # a corner that overflows is caught by the bounds below
            out[small] = c[small] * one_minus_euler_term_over(a + b + shift - 1 - r, eps[small], c[small], zz[small])
    # scipy's hyp2f1 is wrong in a few degenerate corners of the Euler form (e.g. r + x ~ 1e-8 with
    # z -> 1: NaN, or a negative value); a row outside the bounds 0 <= E <= (r + x) t / (alpha + T)
    # (the expectation of (1 - (1 + p u)^-(r+x)) / p <= (r + x) u over p) takes the series too.
    bound = (r + x) * (t / (alpha + T)) * (1 + 1e-9)
    large |= ~((out >= 0) & (out <= bound))
    if large.any():
        near_one = np.abs(eps[large]) < _NEAR_ONE
        # The series form divides by a - 1: next to a = 1 it is the mean of a = 1 -+ _NEAR_ONE (E is
        # smooth in a, so the error is O(_NEAR_ONE^2), plus ~1e-16 / _NEAR_ONE of cancellation).
        values = np.zeros(near_one.shape)
        for shifted, weight in ((eps[large], ~near_one), (np.full(near_one.shape, -_NEAR_ONE), near_one),
                                (np.full(near_one.shape, _NEAR_ONE), near_one)):
            shifted = np.where(weight, shifted, 1.0)
            width = bx[large] + shifted
            with np.errstate(all="ignore"):
                part = width / shifted * one_minus_pfaff_term(rx[large], bx[large], width, zz[large])
            values += np.where(weight, part * np.where(near_one, 0.5, 1.0), 0.0)
        out[large] = values
    # Only a series cut at its term limit can leave the bounds (z within ~1e-4 of 1): keep it in them.
    out = np.where(np.isfinite(out), out, bound)
    return np.clip(out, 0.0, bound)


def no_purchase_if_alive(params, x, T, t: float) -> np.ndarray:
    """P(no purchase in (T, T+t] | active at T, x, T) = ((alpha+T)/(alpha+T+t))^(r+x).

    The purchase rate of an active customer is ``Gamma(r+x, alpha+T)`` a posteriori, and she can
    only drop out right after a purchase, so she makes none with probability ``E[exp(-lambda t)]``.
    """
    r, alpha, a, b = params
    return np.exp(-(r + x) * np.log1p(t / (alpha + T)))


class BetaGeo(AliveMixtureModel):
    """BG/NBD model (Fader, Hardie & Lee 2005).

    Parameters
    ----------
    penalizer, initial_params, max_iter, n_jobs
        Fitting options, see :class:`~crmml.models.base.BaseModel`; ``initial_params`` gives
        ``r, alpha, a, b``.

    Attributes
    ----------
    params_ : Series
        ``r, alpha`` (purchase-rate gamma; ``alpha`` in the data's time unit) and ``a, b``
        (dropout beta).
    standard_errors_, covariance_ : Series, DataFrame
        From the observed information (Hessian) at the optimum.
    log_likelihood_ : float
        Total log-likelihood in the data's own time units (comparable with published values).

    Examples
    --------
    >>> from crmml.models import BetaGeo
    >>> model = BetaGeo().fit(summary)                      # doctest: +SKIP
    >>> model.expected_purchases(summary, horizon=39)        # doctest: +SKIP
    """

    param_names = ("r", "alpha", "a", "b")
    scaled_params = ("alpha",)
    #: 0 for BG/NBD (dropout only after repeat purchases), 1 for MBG/NBD.
    _dropout_shift: int = 0
    _cheap_probability_alive = True

    def _weighted_log_likelihood(self, params, data, weights):
        return beta_geometric_log_likelihood(params, data, shift=self._dropout_shift)

    def _check_data(self, data, index):
        check_btyd_summary(data, index)

    def _prepare_data(self, data, weights):
        return RFMLevels.from_arrays(*data, weights=weights)

    def _probability_alive(self, params, x, t_x, T):
        return probability_alive(params, x, t_x, T, self._dropout_shift)

    def _expected_if_alive(self, params, x, T, t):
        return expected_purchases_if_alive(params, x, T, t, self._dropout_shift)

    def _no_purchase_if_alive(self, params, x, T, t):
        return no_purchase_if_alive(params, x, T, t)
