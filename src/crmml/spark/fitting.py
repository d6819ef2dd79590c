"""BTYD and spend fits from a Spark summary: the distinct rows with their counts, fitted on the driver.

The models fit by maximum likelihood on compressed data: identical (frequency, recency, T) rows
(with a covariate model, identical (frequency, recency, T, attributes) rows) are one row with a weight (:meth:`crmml.models.base.BTYDModel.fit`'s ``sample_weight``). Spark
therefore only has to count the distinct rows (a few hundred thousand at most for whole-day
periods, however many customers and rows), and the fit itself runs on the driver, where it is
the same computation as the local engine's.
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from crmml.spark.summary import rfm_summary

__all__ = ["compressed_summary", "fit_spend_model", "fit_transaction_model"]

_TRANSACTION_COLUMNS = ("frequency", "recency", "T")
_SPEND_COLUMNS = ("frequency", "monetary_value")


def compressed_summary(summary: DataFrame, columns=_TRANSACTION_COLUMNS, *, where=None) -> pd.DataFrame:
    """The distinct rows of ``columns`` of a Spark summary with their counts, on the driver.

    Parameters
    ----------
    summary : pyspark.sql.DataFrame
        A summary from :func:`crmml.spark.rfm_summary` (or any DataFrame with ``columns``).
    columns : sequence of str
        The columns a model reads.
    where : pyspark.sql.Column, optional
        Keep only the rows where this holds.

    Returns
    -------
    pandas.DataFrame
        ``columns`` and ``count`` (float: the model's ``sample_weight``), sorted by ``columns``.
    """
    missing = [c for c in columns if c not in summary.columns]
    if missing:
        from crmml.errors import DataValidationError

        raise DataValidationError(f"Required column {missing[0]!r} is missing from the summary.", column=missing[0])
    rows = summary if where is None else summary.where(where)
    counted = rows.groupBy(*columns).agg(F.count(F.lit(1)).cast("double").alias("count"))
    frame = counted.toPandas()
    return frame.sort_values(list(columns), kind="stable").reset_index(drop=True)


def fit_transaction_model(model, transactions=None, *, summary: DataFrame | None = None, as_of=None,
                          freq: str = "D", freq_multiplier: float = 7, customers: DataFrame | None = None,
                          **validate_kwargs):
    """Fit a BTYD model (``BetaGeo``, ``ModifiedBetaGeo``, ``ParetoNBD``) on a Spark log or summary.

    A covariate model (``ParetoNBDCovariates``, ``BetaGeoCovariates``, ``ModifiedBetaGeoCovariates``)
    reads its attributes from the summary's columns or, with ``customers``, from a customer table
    joined on ``customer_id``; the distinct (frequency, recency, T, attributes) rows are collected
    with their counts.

    Parameters
    ----------
    model : crmml transaction model
        An unfitted estimator, e.g. ``BetaGeo()``; fitted in place and returned.
    transactions : SparkTransactions or pyspark.sql.DataFrame, optional
        The log (summarised with ``as_of``, ``freq`` and ``freq_multiplier``).
    summary : pyspark.sql.DataFrame, optional
        A summary from :func:`crmml.spark.rfm_summary` instead of the log.
    as_of, freq, freq_multiplier, **validate_kwargs
        As in :func:`crmml.spark.rfm_summary` (default: weeks of whole days).
    customers : pyspark.sql.DataFrame, optional
        ``customer_id`` and the covariate model's attribute columns (left-joined: a customer without
        a row has missing attributes, which the covariate model rejects with the column's name).

    Returns
    -------
    The fitted ``model``: the same estimates as ``model.fit(crmml.data.rfm_summary(...))`` (joined
    with the customer table) up to the summation order of the likelihood (about 1e-12 relative).
    """
    summary = _summary(transactions, summary, as_of, freq, freq_multiplier, validate_kwargs)
    attributes = list(dict.fromkeys([*getattr(model, "purchase_covariates", ()),
                                     *getattr(model, "dropout_covariates", ())]))
    if customers is not None:
        missing = [c for c in ("customer_id", *attributes) if c not in customers.columns]
        if missing:
            from crmml.errors import DataValidationError

            raise DataValidationError(f"Column {missing[0]!r} is missing from the customer table.", column=missing[0])
        summary = summary.drop(*[c for c in attributes if c in summary.columns]).join(
            customers.select("customer_id", *attributes), on="customer_id", how="left")
    columns = [*_TRANSACTION_COLUMNS, *attributes]
    compressed = compressed_summary(summary, columns)
    return model.fit(compressed[columns], sample_weight=compressed["count"].to_numpy())


def fit_spend_model(model, transactions=None, *, summary: DataFrame | None = None, as_of=None,
                    freq: str = "D", freq_multiplier: float = 7, **validate_kwargs):
    """Fit a spend model (``GammaGamma``) on the repeat buyers of a Spark log or summary.

    Parameters and returns as :func:`fit_transaction_model`; only customers with ``frequency > 0``
    and ``monetary_value > 0`` are collected (the rows the model fits on).
    """
    summary = _summary(transactions, summary, as_of, freq, freq_multiplier, validate_kwargs)
    repeat = (F.col("frequency") > 0) & (F.col("monetary_value") > 0)
    compressed = compressed_summary(summary, _SPEND_COLUMNS, where=repeat)
    return model.fit(compressed[list(_SPEND_COLUMNS)], sample_weight=compressed["count"].to_numpy())


def _summary(transactions, summary, as_of, freq, freq_multiplier, validate_kwargs) -> DataFrame:
    if (transactions is None) == (summary is None):
        raise TypeError("Pass either transactions or summary.")
    if summary is not None:
        return summary
    return rfm_summary(transactions, as_of=as_of, freq=freq, freq_multiplier=freq_multiplier, **validate_kwargs)
