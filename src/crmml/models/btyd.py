"""Predictions shared by the purchase-count (buy-till-you-die) models.

In BG/NBD, MBG/NBD and Pareto/NBD the future of a customer with history ``(x, t_x, T)`` is a
mixture: inactive (no more purchases) or active, and an active customer's future depends on the
history only through ``(x, T)`` (the posterior of her purchase rate, and of her dropout, given that
she is still active). So

``E[X(T, T+t] | x, t_x, T] = P(alive | x, t_x, T) * E[X(t) | alive, x, T]``

``P(no purchase in (T, T+t] | x, t_x, T) = 1 - P(alive) * (1 - P(no purchase | alive, x, T))``

:class:`AliveMixtureModel` implements the predictions once from three per-model functions; the
"alive" parts are evaluated once per distinct ``(x, T)`` pair and ``P(alive)`` once per distinct row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from crmml.models.base import BaseModel, check_horizon, unique_rows

__all__ = ["AliveMixtureModel", "TransactionModel", "expected_purchases_sum"]


def expected_purchases_sum(model, summary: pd.DataFrame, horizons: Sequence[float], coefficients: Sequence[float]):
    """``sum_k coefficients[k] * E[X(horizons[k]) | history]`` per customer, one call per horizon.

    The generic path for any model with ``expected_purchases(summary, horizon)``.
    """
    total = np.zeros(len(summary))
    for horizon, coefficient in zip(horizons, coefficients, strict=True):
        total += coefficient * model.expected_purchases(summary, horizon).to_numpy(dtype=float)
    return pd.Series(total, index=summary.index, name="expected_purchases_sum")


class TransactionModel(BaseModel):
    """A model of the number of future purchases (BG/NBD, MBG/NBD, Pareto/NBD, BG/BB)."""

    def expected_purchases_sum(self, summary: pd.DataFrame, horizons, coefficients) -> pd.Series:
        """``sum_k coefficients[k] * E[X(horizons[k]) | history]`` for every customer.

        A discounted value over steps is such a sum (see :func:`crmml.clv.customer_lifetime_value`).
        """
        return expected_purchases_sum(self, summary, horizons, coefficients)


class AliveMixtureModel(TransactionModel):
    """Transaction models whose predictions factor through P(alive) (see the module docstring).

    Subclasses provide, as pure functions of the natural parameters and arrays:
    :meth:`_probability_alive` ``(params, x, t_x, T)``, :meth:`_expected_if_alive`
    ``(params, x, T, t)`` and :meth:`_no_purchase_if_alive` ``(params, x, T, t)``.
    """

    data_columns = ("frequency", "recency", "T")
    scaled_columns = ("recency", "T")
    #: True where P(alive) is closed-form and cheaper per row than deduplication (BG/NBD, MBG/NBD);
    #: Pareto/NBD's needs a quadrature and is evaluated once per distinct row.
    _cheap_probability_alive: bool = False

    def _density_dimensions(self, data):
        """The likelihood is a density in each of the ``x`` repeat-purchase times."""
        return data[0]

    def _probability_alive(self, params, x, t_x, T):
        raise TypeError(f"{type(self).__name__} must define _probability_alive")

    def _expected_if_alive(self, params, x, T, t):
        raise TypeError(f"{type(self).__name__} must define _expected_if_alive")

    def _no_purchase_if_alive(self, params, x, T, t):
        raise TypeError(f"{type(self).__name__} must define _no_purchase_if_alive")

    def _combine(self, summary: pd.DataFrame, if_alive, name: str, complement: bool = False) -> pd.Series:
        """``P(alive) * g(x, T)`` per customer (or ``1 - P(alive) * (1 - g)``), g once per (x, T)."""
        params = self._params()

        def evaluate(x, t_x, T):
            first, inverse = unique_rows([x, T])
            alive_part = if_alive(params, x[first], T[first])[inverse]
            alive = self._probability_alive(params, x, t_x, T)
            return 1.0 - alive * (1.0 - alive_part) if complement else alive * alive_part

        # Where P(alive) is a few logarithms per row, that is cheaper than finding the distinct
        # rows: then only the (x, T) part, which holds the special functions, is deduplicated.
        return self._predict_unique(summary, evaluate, name=name, deduplicate=not self._cheap_probability_alive)

    def probability_alive(self, summary: pd.DataFrame) -> pd.Series:
        """P(the customer is still active at the end of her observation period, T)."""
        params = self._params()
        return self._predict_unique(
            summary,
            lambda x, t_x, T: self._probability_alive(params, x, t_x, T),
            name="p_alive",
            deduplicate=not self._cheap_probability_alive,
        )

    def expected_purchases(self, summary: pd.DataFrame, horizon: float) -> pd.Series:
        """Expected number of purchases in the next ``horizon`` time units."""
        horizon = check_horizon(horizon)
        return self._combine(
            summary, lambda params, x, T: self._expected_if_alive(params, x, T, horizon), "expected_purchases"
        )

    def probability_no_purchase(self, summary: pd.DataFrame, horizon: float) -> pd.Series:
        """P(no purchase in the next ``horizon`` time units): the churn quantity."""
        horizon = check_horizon(horizon)
        return self._combine(
            summary,
            lambda params, x, T: self._no_purchase_if_alive(params, x, T, horizon),
            "p_no_purchase",
            complement=True,
        )

    def expected_purchases_sum(self, summary: pd.DataFrame, horizons, coefficients) -> pd.Series:
        """``sum_k coefficients[k] * E[X(horizons[k]) | history]`` in one pass over the customers."""
        horizons = [check_horizon(h) for h in horizons]
        coefficients = [float(c) for c in coefficients]
        if len(horizons) != len(coefficients):
            raise ValueError(f"{len(horizons)} horizons but {len(coefficients)} coefficients.")

        def weighted_if_alive(params, x, T):
            return sum(c * self._expected_if_alive(params, x, T, h) for h, c in zip(horizons, coefficients, strict=True))

        return self._combine(summary, weighted_if_alive, "expected_purchases_sum")

    def unconditional_expected_purchases(self, t) -> np.ndarray:
        """E[X(t)] for a customer just acquired (first purchase at 0): the tracking-plot curve.

        It is the conditional expectation for the history ``x = t_x = T = 0``.
        """
        params = self._params()
        t = np.atleast_1d(np.asarray(t, dtype=float))
        zero = np.zeros(1)
        alive = self._probability_alive(params, zero, zero, zero)[0]
        return np.array([alive * self._expected_if_alive(params, zero, zero, check_horizon(ti))[0] for ti in t])
