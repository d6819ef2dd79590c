"""Gamma-Gamma: the spend model that goes with the BTYD transaction models.

Fader, P. S., Hardie, B. G. S. & Lee, K. L. (2005), "RFM and CLV: Using Iso-Value Curves for Customer
Base Analysis", *Journal of Marketing Research* 42(4), 415-430; the likelihood and the conditional
expectation are written out in Hardie's note "The Gamma-Gamma Model of Monetary Value" (2013), whose
equation numbers are used below.

Each transaction of a customer is worth ``z ~ Gamma(p, nu)`` (shape ``p``, rate ``nu``), and ``nu``
varies across customers as ``Gamma(q, gamma)``. The model assumes spend is independent of the
transaction process, so it is fitted on its own, on customers with at least one repeat transaction:
the data of a customer is the number ``x >= 1`` of repeat transactions and their mean value ``m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from crmml.errors import DataValidationError
from crmml.models._levels import Levels, levels_of
from crmml.models.base import BaseModel, rows_error

__all__ = ["GammaGamma", "gamma_gamma_log_likelihood", "expected_spend", "population_mean_spend"]


@dataclass(frozen=True)
class SpendData:
    """Repeat buyers' ``(x, m)`` rows with weights, frequency levels and the data-only sums."""

    x: np.ndarray
    m: np.ndarray
    weights: np.ndarray
    x_levels: Levels
    x_times_m: np.ndarray
    weighted_x: np.ndarray
    sum_log_m: float
    sum_x_log_m: float

    @classmethod
    def from_arrays(cls, x, m, weights=None) -> SpendData:
        x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
        weights = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=float)
        log_m = np.log(m)
        return cls(
            x, m, weights, levels_of(x, weights), x * m, weights * x, float(weights @ log_m), float((weights * x) @ log_m)
        )


def gamma_gamma_log_likelihood(params: np.ndarray, data, weights=None) -> tuple[float, np.ndarray]:
    """Weighted total log-likelihood and its gradient in ``(p, q, gamma)``; Hardie's note, eq. 1.

    The mean ``m`` of ``x`` transaction values has density

    ``f(m | p, q, gamma, x) = Gamma(px+q) / (Gamma(px) Gamma(q)) * gamma^q x^(px) m^(px-1) / (gamma + x m)^(px+q)``.

    The gamma functions depend on the frequency alone and are summed per distinct frequency; the
    ``log m`` terms are data-only sums; only ``log(gamma + x m)`` is computed row by row.

    Parameters
    ----------
    params : ndarray
        ``(p, q, gamma)``.
    data : SpendData or tuple of ndarray
        ``(x, m)``: repeat transactions (``>= 1``) and their mean value (``> 0``).
    weights : ndarray, optional
        Customers per row, with a tuple (``SpendData`` carries its weights).

    Returns
    -------
    log_likelihood : float
    gradient : ndarray, shape (3,)
        Derivatives with respect to ``p``, ``q`` and ``gamma``.
    """
    if not isinstance(data, SpendData):
        data = SpendData.from_arrays(*data, weights=weights)
    p, q, gamma = params
    levels, level_weight = data.x_levels.values, data.x_levels.weight
    total_weight = float(data.weights.sum())
    px = p * levels
    digamma_pxq = special.digamma(px + q)
    log_gamma_xm = np.log(gamma + data.x_times_m)
    inverse_gamma_xm = 1.0 / (gamma + data.x_times_m)
    weighted_log = data.weights @ log_gamma_xm
    weighted_x_log = data.weighted_x @ log_gamma_xm
    log_likelihood = (
        level_weight @ (special.gammaln(px + q) - special.gammaln(px) + px * np.log(levels))
        + total_weight * (q * np.log(gamma) - special.gammaln(q))
        + p * data.sum_x_log_m
        - data.sum_log_m
        - p * weighted_x_log
        - q * weighted_log
    )
    gradient = np.array(
        [
            level_weight @ (levels * (digamma_pxq - special.digamma(px) + np.log(levels)))
            + data.sum_x_log_m
            - weighted_x_log,
            level_weight @ digamma_pxq + total_weight * (np.log(gamma) - special.digamma(q)) - weighted_log,
            total_weight * q / gamma - p * (data.weighted_x @ inverse_gamma_xm) - q * (data.weights @ inverse_gamma_xm),
        ]
    )
    return float(log_likelihood), gradient


def population_mean_spend(params: np.ndarray) -> float:
    """Mean transaction value in the population, ``E[Z] = p gamma / (q - 1)``; Hardie's note, eq. 3.

    Raises
    ------
    ValueError
        If ``q <= 1``: the mean of ``nu^-1`` is then infinite, and so is the mean spend.
    """
    p, q, gamma = params
    if not q > 1:
        raise ValueError(
            f"The Gamma-Gamma mean spend p*gamma/(q-1) is infinite for q <= 1; the fitted q is {q:.6g}. "
            "The spend data are too heavy-tailed for this model: check for outliers (e.g. wholesale orders) "
            "or fit with a small penalizer."
        )
    return float(p * gamma / (q - 1))


def expected_spend(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Expected value of a customer's future transactions, ``E[Z | p, q, gamma, x, m]``; Hardie's note, eq. 5.

    A credibility-weighted average of the population mean ``p gamma / (q - 1)`` and the customer's
    observed mean ``m``:

    ``E[Z | x, m] = (q - 1)/(p x + q - 1) * p gamma/(q - 1) + p x/(p x + q - 1) * m``.

    For ``x = 0`` it is the population mean (``m`` is then ignored). Requires ``q > 1``.
    """
    p, q, _ = params
    mean = population_mean_spend(params)
    weight = p * x / (p * x + q - 1)  # weight of the customer's own mean
    observed = np.where(x > 0, m, 0.0)
    return (1.0 - weight) * mean + weight * observed


class GammaGamma(BaseModel):
    """Gamma-Gamma model of transaction value (Fader, Hardie & Lee 2005, JMR).

    Fitted on customers with at least one repeat transaction and a positive mean repeat spend: rows
    with ``frequency == 0`` carry no information on spend (their ``monetary_value`` is undefined, 0 by
    convention), and a mean of exactly 0 (only free repeat purchases, as one CDNOW customer has) lies
    outside the gamma distribution's support. Both are left out of the likelihood and counted in
    ``n_excluded_``; :meth:`expected_spend` still predicts for them (the population mean, shrunk
    towards 0 for the zero spenders). A negative mean is an error.

    Parameters
    ----------
    penalizer, initial_params, max_iter, n_jobs
        Fitting options, see :class:`~crmml.models.base.BaseModel`; ``initial_params`` gives
        ``p, q, gamma`` (``gamma`` in the data's money unit).

    Attributes
    ----------
    params_ : Series
        ``p`` (shape of a transaction's value), ``q`` and ``gamma`` (shape and rate of the customers'
        ``nu``; ``gamma`` is in the money unit of ``monetary_value``).
    standard_errors_, covariance_ : Series, DataFrame
        From the observed information (Hessian) at the optimum.
    log_likelihood_ : float
        Total log-likelihood of the repeat customers, in the data's own money unit.
    n_customers_ : float
        Number (total weight) of repeat customers the model was fitted on.
    n_excluded_ : float
        Number (total weight) of rows left out of the fit (``frequency == 0`` or zero mean spend).

    Notes
    -----
    Money is rescaled before fitting (largest ``monetary_value`` becomes 10): multiplying every spend
    by ``c`` multiplies ``gamma`` by ``c`` and leaves ``p`` and ``q`` unchanged.

    Examples
    --------
    >>> from crmml.models.gamma_gamma import GammaGamma
    >>> spend = GammaGamma().fit(summary)                  # doctest: +SKIP
    >>> spend.expected_spend(summary)                      # doctest: +SKIP
    """

    param_names = ("p", "q", "gamma")
    data_columns = ("frequency", "monetary_value")
    scaled_columns = ("monetary_value",)
    scaled_params = ("gamma",)
    compress_rows = False  # mean spends are continuous: duplicates are rare and costly to find

    def _weighted_log_likelihood(self, params, data, weights):
        return gamma_gamma_log_likelihood(params, data)

    def _check_data(self, data, index):
        frequency, monetary_value = data["frequency"], data["monetary_value"]
        if np.any(bad := (frequency < 0) | (frequency != np.round(frequency))):
            raise rows_error(index, bad, frequency, "frequency", "must be a non-negative whole number")
        if np.any(bad := (frequency > 0) & ~(monetary_value >= 0)):
            raise rows_error(
                index, bad, monetary_value, "monetary_value", "must be >= 0 where frequency > 0 (mean repeat spend)"
            )

    def _rows_used_in_fit(self, data):
        repeat = (data["frequency"] > 0) & (data["monetary_value"] > 0)
        if not repeat.any():
            raise DataValidationError(
                "GammaGamma is fitted on customers with at least one repeat transaction (frequency > 0) "
                "and a positive mean repeat spend; the summary has none.",
                column="frequency",
            )
        return repeat

    def _density_dimensions(self, data):
        """The likelihood is a density in each row's mean spend."""
        return np.ones(len(data[0]))

    def _prepare_data(self, data, weights):
        return SpendData.from_arrays(*data, weights=weights)

    def fit(self, summary: pd.DataFrame, y=None, *, sample_weight=None):
        """Fit by maximum likelihood on the rows with ``frequency > 0``.

        Parameters
        ----------
        summary : DataFrame
            Columns ``frequency`` (repeat transactions) and ``monetary_value`` (their mean value).
        y : ignored
            Present for scikit-learn compatibility.
        sample_weight : array-like, optional
            Number of customers each row stands for.

        Returns
        -------
        self
        """
        super().fit(summary, y, sample_weight=sample_weight)
        total = float(len(summary)) if sample_weight is None else float(np.sum(sample_weight))
        self.n_excluded_ = total - self.n_customers_
        return self

    def population_mean_spend(self) -> float:
        """Mean transaction value of the population, ``p gamma / (q - 1)`` (requires ``q > 1``)."""
        return population_mean_spend(self._params())

    def expected_spend(self, summary: pd.DataFrame) -> pd.Series:
        """Expected value of each customer's future transactions, ``E[Z | x, m]`` (Hardie's note, eq. 5).

        Parameters
        ----------
        summary : DataFrame
            Columns ``frequency`` and ``monetary_value``.

        Returns
        -------
        Series
            Indexed like ``summary``; the population mean for customers with ``frequency == 0``.

        Raises
        ------
        ValueError
            If the fitted ``q <= 1`` (infinite mean spend).
        """
        params = self._params()
        population_mean_spend(params)  # fail early, with the explanation, if q <= 1
        return self._predict_unique(
            summary, lambda x, m: expected_spend(params, x, m), name="expected_spend", deduplicate=False
        )

    def conditional_expected_average_profit(self, summary: pd.DataFrame) -> pd.Series:
        """Alias of :meth:`expected_spend`, under the name lifetimes uses."""
        return self.expected_spend(summary)
