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

#: Values (rows x horizons) per call of a weighted sum's expectations: temporaries of 512 KB.
_WEIGHTED_BLOCK_VALUES = 1 << 16


def _checked_sum(horizons, coefficients) -> tuple[list[float], list[float]]:
    horizons = [check_horizon(h) for h in horizons]
    coefficients = [float(c) for c in coefficients]
    if len(horizons) != len(coefficients):
        raise ValueError(f"{len(horizons)} horizons but {len(coefficients)} coefficients.")
    return horizons, coefficients


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

    def predict_horizons(self, summary: pd.DataFrame, horizons=(), *, no_purchase: bool = True,
                         sums: dict | None = None) -> dict:
        """Every prediction at once (see :meth:`AliveMixtureModel.predict_horizons`); here from the
        separate methods, P(no purchase) where the model has it."""
        out = {"p_alive": self.probability_alive(summary).to_numpy(dtype=float)}
        for horizon in dict.fromkeys(horizons):
            out["expected_purchases", horizon] = self.expected_purchases(summary, horizon).to_numpy(dtype=float)
            if no_purchase and hasattr(self, "probability_no_purchase"):
                out["p_no_purchase", horizon] = self.probability_no_purchase(summary, horizon).to_numpy(dtype=float)
        for name, (steps, coefficients) in (sums or {}).items():
            out["sum", name] = self.expected_purchases_sum(summary, steps, coefficients).to_numpy(dtype=float)
        return out


class AliveMixtureModel(TransactionModel):
    """Transaction models whose predictions factor through P(alive) (see the module docstring).

    Subclasses provide, as pure functions of the natural parameters and arrays:
    :meth:`_probability_alive` ``(params, x, t_x, T)``, :meth:`_expected_if_alive`
    ``(params, x, T, t)`` and :meth:`_no_purchase_if_alive` ``(params, x, T, t)``, elementwise:
    the horizon ``t`` is a number or, for a discounted sum, one per row.
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

    def _mixtures(self, summary: pd.DataFrame, parts: dict, *, alive: bool = False) -> dict[object, np.ndarray]:
        """Per customer, for each ``key: (g, complement)`` of ``parts``, ``P(alive) * g(x, T)`` (or
        ``1 - P(alive) * (1 - g)``), and ``P(alive)`` itself under ``"p_alive"`` when ``alive``.

        The summary is read once, ``P(alive)`` is computed once and each ``g`` once per distinct
        ``(x, T)`` pair, however many parts are asked for.
        """
        params = self._params()

        def evaluate(x, t_x, T):
            p_alive = self._probability_alive(params, x, t_x, T)
            out = {"p_alive": p_alive} if alive else {}
            if parts:
                first, inverse = unique_rows([x, T])
                for key, (if_alive, complement) in parts.items():
                    alive_part = if_alive(params, x[first], T[first])[inverse]
                    out[key] = 1.0 - p_alive * (1.0 - alive_part) if complement else p_alive * alive_part
            return out

        # Where P(alive) is a few logarithms per row, that is cheaper than finding the distinct
        # rows: then only the (x, T) part, which holds the special functions, is deduplicated.
        return self._evaluate_unique(summary, evaluate, deduplicate=not self._cheap_probability_alive)

    def _combine(self, summary: pd.DataFrame, if_alive, name: str, complement: bool = False) -> pd.Series:
        """``P(alive) * g(x, T)`` per customer (or ``1 - P(alive) * (1 - g)``), g once per (x, T)."""
        values = self._mixtures(summary, {name: (if_alive, complement)})[name]
        return pd.Series(values, index=summary.index, name=name)

    def _expected_part(self, horizon: float):
        return lambda params, x, T: self._expected_if_alive(params, x, T, horizon)

    def _no_purchase_part(self, horizon: float):
        return lambda params, x, T: self._no_purchase_if_alive(params, x, T, horizon)

    def _weighted_part(self, horizons, coefficients):
        steps = np.asarray(horizons, dtype=float)

        def weighted_if_alive(params, x, T):
            # Every horizon in one call per block of rows (the rows repeated once per horizon: one
            # pass of the special functions instead of one per horizon, in cache-sized blocks), then
            # summed horizon by horizon in their order: the same numbers as one call per horizon.
            x, T = np.asarray(x, dtype=float), np.asarray(T, dtype=float)
            k = len(steps)
            out = np.zeros(len(x))
            if not k:
                return out
            block = max(1, _WEIGHTED_BLOCK_VALUES // k)
            for start in range(0, len(x), block):
                part = slice(start, start + block)
                n = len(x[part])
                values = self._expected_if_alive(params, np.repeat(x[part], k), np.repeat(T[part], k),
                                                 np.tile(steps, n)).reshape(n, k)
                total = 0
                for j, coefficient in enumerate(coefficients):
                    total = total + coefficient * values[:, j]
                out[part] = total
            return out

        return weighted_if_alive

    def probability_alive(self, summary: pd.DataFrame) -> pd.Series:
        """P(the customer is still active at the end of her observation period, T)."""
        return pd.Series(self._mixtures(summary, {}, alive=True)["p_alive"], index=summary.index, name="p_alive")

    def expected_purchases(self, summary: pd.DataFrame, horizon: float) -> pd.Series:
        """Expected number of purchases in the next ``horizon`` time units."""
        return self._combine(summary, self._expected_part(check_horizon(horizon)), "expected_purchases")

    def probability_no_purchase(self, summary: pd.DataFrame, horizon: float) -> pd.Series:
        """P(no purchase in the next ``horizon`` time units): the churn quantity."""
        return self._combine(summary, self._no_purchase_part(check_horizon(horizon)), "p_no_purchase", complement=True)

    def expected_purchases_sum(self, summary: pd.DataFrame, horizons, coefficients) -> pd.Series:
        """``sum_k coefficients[k] * E[X(horizons[k]) | history]`` in one pass over the customers."""
        horizons, coefficients = _checked_sum(horizons, coefficients)
        return self._combine(summary, self._weighted_part(horizons, coefficients), "expected_purchases_sum")

    def predict_horizons(self, summary: pd.DataFrame, horizons=(), *, no_purchase: bool = True,
                         sums: dict | None = None) -> dict:
        """Every prediction at once: what :meth:`probability_alive`, :meth:`expected_purchases`,
        :meth:`probability_no_purchase` and :meth:`expected_purchases_sum` return, number for number,
        from one pass over the customers.

        Parameters
        ----------
        summary : pandas.DataFrame
            Columns ``frequency``, ``recency`` and ``T``.
        horizons : sequence of float
            Horizons of the expected purchases and, with ``no_purchase``, of P(no purchase).
        no_purchase : bool
            Also compute P(no purchase) at each horizon.
        sums : dict, optional
            ``{name: (horizons, coefficients)}``: the weighted sums of :meth:`expected_purchases_sum`.

        Returns
        -------
        dict
            Float arrays, one value per row: ``"p_alive"``, ``("expected_purchases", h)`` and
            ``("p_no_purchase", h)`` per distinct horizon ``h`` (as given), ``("sum", name)`` per sum.
        """
        parts = {}
        for horizon in dict.fromkeys(horizons):
            checked = check_horizon(horizon)
            parts[("expected_purchases", horizon)] = (self._expected_part(checked), False)
            if no_purchase:
                parts[("p_no_purchase", horizon)] = (self._no_purchase_part(checked), True)
        for name, (steps, coefficients) in (sums or {}).items():
            parts[("sum", name)] = (self._weighted_part(*_checked_sum(steps, coefficients)), False)
        return self._mixtures(summary, parts, alive=True)

    def unconditional_expected_purchases(self, t) -> np.ndarray:
        """E[X(t)] for a customer just acquired (first purchase at 0): the tracking-plot curve.

        It is the conditional expectation for the history ``x = t_x = T = 0``.
        """
        params = self._params()
        t = np.atleast_1d(np.asarray(t, dtype=float))
        zero = np.zeros(1)
        alive = self._probability_alive(params, zero, zero, zero)[0]
        return np.array([alive * self._expected_if_alive(params, zero, zero, check_horizon(ti))[0] for ti in t])
