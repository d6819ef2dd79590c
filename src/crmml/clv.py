"""Customer lifetime value: expected discounted spend from a transaction model and a spend model.

A transaction model (BG/NBD, MBG/NBD, BG/BB, ...) gives each customer's expected cumulative number of
future transactions ``E[X(t)]``; a spend model (Gamma-Gamma) gives the expected value of each of those
transactions. Because spend is assumed independent of the transaction process (Fader, Hardie & Lee
2005, "RFM and CLV", *JMR* 42(4)), the expected value of the transactions in a period is the product of
the two. The horizon is split into equal steps whose cash flows are discounted at the end of the step,
as in the discrete-time CLV approximation lifetimes uses:

``CLV = margin * E[Z] * sum_{i=1}^{N} (E[X(t_i)] - E[X(t_{i-1})]) / (1 + d)^i``, ``t_i = i * horizon / N``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from crmml.models.btyd import expected_purchases_sum

__all__ = ["customer_lifetime_value"]


def _check_non_negative(value, name: str, meaning: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"The {name!r} argument of customer_lifetime_value must be {meaning}. Got {value!r} instead.")
    return number


def customer_lifetime_value(
    transaction_model,
    spend_model,
    summary: pd.DataFrame,
    *,
    horizon: float,
    n_steps: int | None = None,
    discount_rate: float = 0.0,
    margin: float = 1.0,
) -> pd.Series:
    """Expected discounted value of each customer's transactions over the next ``horizon`` time units.

    ``CLV = margin * E[Z | x, m] * sum_{i=1}^{n_steps} (E[X(t_i)] - E[X(t_{i-1})]) / (1 + discount_rate)^i``

    with ``t_i = i * horizon / n_steps``, ``E[X(t)]`` the transaction model's conditional expected
    number of transactions in the next ``t`` time units and ``E[Z | x, m]`` the spend model's expected
    transaction value. Cash flows of step ``i`` are discounted as if received at its end.

    Parameters
    ----------
    transaction_model : fitted model
        Anything with ``expected_purchases(summary, horizon) -> Series`` (e.g. :class:`BetaGeo`,
        :class:`BetaGeoBetaBinom`); ``horizon`` is in the model's time unit.
    spend_model : fitted model
        Anything with ``expected_spend(summary) -> Series`` (e.g. :class:`GammaGamma`).
    summary : DataFrame
        One row per customer with the columns both models read.
    horizon : float
        Length of the future window, in the transaction model's time unit (>= 0).
    n_steps : int, optional
        Number of equal discounting steps. Default: one per time unit, ``ceil(horizon)``, at least 1.
    discount_rate : float, default 0.0
        Discount rate **per step** (per time unit with the default ``n_steps``), >= 0. To reproduce
        lifetimes' monthly discounting on a weekly model, use ``horizon = months * 4.345`` and
        ``n_steps = months`` with the monthly rate.
    margin : float, default 1.0
        Profit margin applied to spend (>= 0): 1 gives revenue, e.g. 0.3 gives a 30 % margin.

    Returns
    -------
    Series
        Indexed like ``summary``, named ``clv``.

    Raises
    ------
    ValueError
        For a negative or non-finite ``horizon``, ``discount_rate`` or ``margin``, or an ``n_steps``
        that is not a positive whole number.
    TypeError
        If a model lacks the method it is used for.

    Examples
    --------
    >>> value = customer_lifetime_value(bgnbd, gamma_gamma, summary, horizon=52, discount_rate=0.002)  # doctest: +SKIP
    """
    for model, method in ((transaction_model, "expected_purchases"), (spend_model, "expected_spend")):
        if not callable(getattr(model, method, None)):
            raise TypeError(
                f"customer_lifetime_value needs a model with a {method}() method; "
                f"got {type(model).__name__}, which has none."
            )
    horizon = _check_non_negative(horizon, "horizon", "a finite number of time units >= 0")
    discount_rate = _check_non_negative(discount_rate, "discount_rate", "a finite rate per step >= 0")
    margin = _check_non_negative(margin, "margin", "a finite fraction >= 0")
    if n_steps is None:
        n_steps = max(1, math.ceil(horizon))
    elif isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(
            f"The 'n_steps' argument of customer_lifetime_value must be a positive int. Got {n_steps!r} instead."
        )

    spend = spend_model.expected_spend(summary).to_numpy(dtype=float)
    # sum_i (E_i - E_{i-1}) d_i with E_0 = 0 is sum_i E_i (d_i - d_{i+1}) with d_{n+1} = 0: one
    # linear combination of expectations, which the models evaluate in a single pass.
    step = horizon / n_steps
    discount = (1.0 + discount_rate) ** -np.arange(1, n_steps + 2, dtype=float)
    discount[-1] = 0.0
    horizons = step * np.arange(1, n_steps + 1)
    coefficients = discount[:-1] - discount[1:]
    combine = getattr(transaction_model, "expected_purchases_sum", None)
    if combine is None:
        purchases = expected_purchases_sum(transaction_model, summary, horizons, coefficients)
    else:
        purchases = combine(summary, horizons, coefficients)
    return pd.Series(margin * spend * purchases.to_numpy(dtype=float), index=summary.index, name="clv")
