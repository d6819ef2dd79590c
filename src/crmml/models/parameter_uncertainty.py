"""Parameter uncertainty of the BTYD models, propagated to each customer's purchase distribution.

The maximum-likelihood estimates are asymptotically normal; crmml fits in log-parameters, and the
models store the covariance of the natural parameters ``theta`` from the observed information at the
optimum (``covariance_``, mapped by the delta method ``cov(theta) = D cov(log theta) D`` with
``D = diag(theta)``; :meth:`crmml.models.base.BaseModel._standard_errors`). Here it is mapped back,
``cov(log theta) = D^-1 cov(theta) D^-1``, and parameters are drawn as
``theta_d = exp(log theta_hat + L z_d)`` with ``L L' = cov(log theta)`` and ``z_d ~ N(0, I)``: positive
by construction, and the normal approximation is better on the log scale (it is the scale the
likelihood was maximised on).

Each customer's predictive distribution of purchases is the mixture over the draws,
``P(X = k | history) = mean_d P(X = k | history, theta_d)`` (:mod:`crmml.models.purchase_distribution`
per draw). A fit without a usable covariance (a boundary or flat optimum leaves it NaN) gives no
parameter uncertainty: the point estimate alone, with the reason recorded in
:attr:`ParameterDraws.reason`.

Draws are made once per model (:func:`draw_parameters`, seeded) and reused for every batch of
customers, so results do not depend on how the customers are batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crmml.models.base import check_horizon
from crmml.models.purchase_distribution import (
    DEFAULT_TAIL,
    _check_model,
    _distinct,
    _chunks,
    _summary_arrays,
    purchase_interval,
)

__all__ = ["ParameterDraws", "draw_parameters", "log_parameter_covariance", "predictive_intervals", "predictive_pmf"]

#: Draws by default. The parameter uncertainty of a fit on thousands of customers moves a customer's
#: probabilities by about a percent, so ten draws leave a Monte Carlo error of a few tenths of that;
#: the cost grows linearly with the draws (benchmarks/bench_intervals.py).
DEFAULT_DRAWS = 10


@dataclass(frozen=True)
class ParameterDraws:
    """Draws of a model's natural parameters.

    Attributes
    ----------
    params : ndarray of shape (n_draws, n_params)
        One draw per row, in ``model.param_names`` order. Without uncertainty: the point estimate, once.
    reason : str or None
        Why the parameters were not drawn (``None`` when they were).
    seed : int
        Seed of the draws.
    """

    params: np.ndarray
    reason: str | None
    seed: int

    @property
    def n_draws(self) -> int:
        return int(self.params.shape[0])


def log_parameter_covariance(model) -> tuple[np.ndarray | None, str | None]:
    """``cov(log theta) = D^-1 cov(theta) D^-1`` from ``model.covariance_``, or ``(None, reason)``.

    The covariance is unusable when it is missing, holds NaN or infinite values, or is not positive
    definite (a boundary or flat optimum); the reason says which.
    """
    params = model._params()
    covariance = getattr(model, "covariance_", None)
    if covariance is None:
        return None, f"{type(model).__name__} stores no parameter covariance"
    covariance = np.asarray(covariance, dtype=float)
    if covariance.shape != (len(params), len(params)):
        return None, f"the parameter covariance has shape {covariance.shape}, not {(len(params), len(params))}"
    if not np.all(np.isfinite(covariance)):
        return None, "the parameter covariance is not finite (a boundary or flat optimum: the information matrix is singular)"
    log_covariance = covariance / np.outer(params, params)
    log_covariance = 0.5 * (log_covariance + log_covariance.T)
    try:
        np.linalg.cholesky(log_covariance)
    except np.linalg.LinAlgError:
        return None, "the parameter covariance is not positive definite"
    return log_covariance, None


def draw_parameters(model, n_draws: int = DEFAULT_DRAWS, seed: int = 0) -> ParameterDraws:
    """Draws of the natural parameters from the asymptotic normal of the log-parameters.

    Parameters
    ----------
    model : fitted crmml model
        Uses ``params_`` and ``covariance_``.
    n_draws : int
        Number of draws (at least 1).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same draws.

    Returns
    -------
    ParameterDraws
        Without a usable covariance (see :func:`log_parameter_covariance`): the point estimate once,
        with the reason.
    """
    if isinstance(n_draws, bool) or int(n_draws) != n_draws or n_draws < 1:
        raise ValueError(f"n_draws must be a positive whole number; got {n_draws!r}.")
    params = model._params()
    log_covariance, reason = log_parameter_covariance(model)
    if log_covariance is None:
        return ParameterDraws(params[None, :].copy(), reason, int(seed))
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal((int(n_draws), len(params)))
    draws = np.exp(np.log(params) + normal @ np.linalg.cholesky(log_covariance).T)
    return ParameterDraws(draws, None, int(seed))


def predictive_pmf(model, summary: pd.DataFrame, horizon: float, draws: ParameterDraws,
                   max_purchases: int, *, rate_scale: float = 1.0) -> np.ndarray:
    """Each customer's predictive PMF of purchases, ``k = 0..max_purchases``: the mixture over ``draws``.

    ``rate_scale`` multiplies the active customers' purchase rates over the horizon (see
    :func:`~crmml.models.purchase_distribution.conditional_purchase_pmf`).

    Returns
    -------
    ndarray of shape (n, max_purchases + 1)
    """
    _check_model(model)
    x, t_x, T = _summary_arrays(model, summary)
    t = check_horizon(horizon)
    first, inverse = _distinct([x, t_x, T])
    pmf = np.empty((len(first), int(max_purchases) + 1))
    for rows, chunk in _chunks(model, draws.params, x[first], t_x[first], T[first], t, int(max_purchases), DEFAULT_TAIL,
                               rate_scale):
        pmf[rows] = chunk
    return pmf[inverse]


def predictive_intervals(model, summary: pd.DataFrame, horizon: float, draws: ParameterDraws, *,
                         level: float = 0.8, kind: str = "shortest", spend=None,
                         tail: float | None = None) -> pd.DataFrame:
    """Per customer: P(no purchase) and ``level`` intervals for purchases and value.

    The predictive distribution is the mixture over ``draws`` (:func:`draw_parameters`; a single draw,
    the point estimate, gives the model's own distribution). It is evaluated once per distinct
    ``(frequency, recency, T)`` row, in memory-bounded chunks, so the scorer can call this per batch of
    customers with the same draws.

    Parameters
    ----------
    model : BetaGeo, ModifiedBetaGeo or ParetoNBD
    summary : pandas.DataFrame
        Columns ``frequency``, ``recency``, ``T``.
    horizon : float
        In the model's time units.
    draws : ParameterDraws
    level : float
        Interval level.
    kind : {"shortest", "equal-tailed"}
        Interval kind (see :func:`~crmml.models.purchase_distribution.purchase_interval`).
    spend : array-like, optional
        Each customer's expected spend per purchase (e.g. :meth:`GammaGamma.expected_spend`); then the
        value interval is the purchase interval times it.
    tail : float, optional
        Probability left beyond the largest count evaluated; by default ``(1 - level) / 100``, enough
        for every interval holding ``level`` (it needs quantiles up to ``1 - (1 - level)/...`` at most
        ``1 - tail``) and much cheaper than a tail fit for the mean.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``summary``: ``p_no_purchase``, ``purchases_lower``, ``purchases_upper`` and, with
        ``spend``, ``value_lower`` and ``value_upper``. The mean is the model's
        ``expected_purchases`` (not recomputed here from the truncated PMF).
    """
    if tail is None:
        tail = (1.0 - float(level)) / 100.0
    _check_model(model)
    x, t_x, T = _summary_arrays(model, summary)
    t = check_horizon(horizon)
    first, inverse = _distinct([x, t_x, T])
    n_unique = len(first)
    p_none = np.empty(n_unique)
    lower, upper = np.empty(n_unique, dtype=np.int64), np.empty(n_unique, dtype=np.int64)
    for rows, pmf in _chunks(model, draws.params, x[first], t_x[first], T[first], t, None, tail):
        p_none[rows] = pmf[:, 0]
        lower[rows], upper[rows] = purchase_interval(pmf, level, kind)
    out = pd.DataFrame(
        {
            "p_no_purchase": p_none[inverse],
            "purchases_lower": lower[inverse],
            "purchases_upper": upper[inverse],
        },
        index=summary.index,
    )
    if spend is not None:
        spend = np.asarray(spend, dtype=float)
        if spend.shape != (len(summary),):
            raise ValueError(f"spend must hold one value per customer ({len(summary)}); got shape {spend.shape}.")
        out["value_lower"] = out["purchases_lower"].to_numpy() * spend
        out["value_upper"] = out["purchases_upper"].to_numpy() * spend
    return out
