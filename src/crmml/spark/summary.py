"""Per-customer RFM summaries on Spark: :func:`crmml.data.rfm_summary`'s definitions and numbers.

The purchase periods, the refund policy, the exact amount sums and the treatment of rows after
``as_of`` are those of :mod:`crmml.data.summary` (see its module docstring), applied by
:func:`crmml.spark.occasions.period_table`; the per-customer reduction is one ``groupBy``. The
columns are the same doubles the local engine gives (equal, not close: the tests check it).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from crmml.data.summary import SummaryReport, as_day, check_freq, positive_multiplier
from crmml.errors import DataValidationError
from crmml.spark.occasions import Cut, period_table, units_to_double
from crmml.spark.transactions import SparkTransactions, validate_transactions

__all__ = ["as_spark_transactions", "customer_occasions", "rfm_summary", "timestamp_of_micros"]


def rfm_summary(
    transactions,
    *,
    as_of=None,
    freq: str = "D",
    freq_multiplier: float = 1,
    include_first_transaction: bool = False,
    return_report: bool = False,
    **validate_kwargs,
):
    """Summarise a Spark transaction log per customer: frequency, recency, T and monetary value.

    Parameters
    ----------
    transactions : SparkTransactions or pyspark.sql.DataFrame
        A validated log, or a DataFrame for :func:`~crmml.spark.validate_transactions`.
    as_of : date-like, optional
        The observation end (its day is included). Defaults to the day of the last transaction.
    freq : {"D", "W", "M"}
        Period length: day, week (Monday to Sunday) or calendar month.
    freq_multiplier : float
        Divides recency and T (not frequency), e.g. 7 with ``freq="D"`` for weeks.
    include_first_transaction : bool
        Count the first occasion in ``frequency`` and ``monetary_value``.
    return_report : bool
        Also return the :class:`~crmml.data.summary.SummaryReport` (one more Spark job).
    **validate_kwargs
        Passed to :func:`~crmml.spark.validate_transactions` when ``transactions`` is a DataFrame.

    Returns
    -------
    pyspark.sql.DataFrame or (pyspark.sql.DataFrame, SummaryReport)
        One row per customer (unordered): ``customer_id``, doubles ``frequency``, ``recency``,
        ``T`` and (with amounts) ``monetary_value``, and ``first_purchase`` / ``last_purchase``
        (``timestamp_ntz``, local time in the log's time zone), as :func:`crmml.data.rfm_summary` defines them.

    Raises
    ------
    DataValidationError
        On an invalid log, or when no customer bought on or before ``as_of``.
    """
    check_freq(freq)
    multiplier = positive_multiplier(freq_multiplier)
    log = as_spark_transactions(transactions, **validate_kwargs)
    as_of_day = as_day(as_of, "as_of") if as_of is not None else log.last_timestamp.normalize()
    if as_of_day < log.first_timestamp.normalize():
        raise DataValidationError(f"No customer has a purchase on or before as_of={as_of_day.date()} (the data "
                                  f"start on {log.first_timestamp.date()}).")
    cut = Cut(freq, multiplier, as_of_day)
    periods = period_table(log.rows, cut, log.has_amount)
    per_customer = customer_occasions(periods.where("is_occasion"), log.has_amount)
    counted = F.col("n_occasions") if include_first_transaction else F.col("n_occasions") - 1
    columns = [
        "customer_id",
        counted.cast("double").alias("frequency"),
        (F.col("last_period") - F.col("first_period")).cast("double") / F.lit(multiplier),
        (F.lit(cut.as_of_period) - F.col("first_period")).cast("double") / F.lit(multiplier),
    ]
    columns[2], columns[3] = columns[2].alias("recency"), columns[3].alias("T")
    if log.has_amount:
        columns.append(_monetary_value(include_first_transaction).alias("monetary_value"))
    columns += [timestamp_of_micros(F.col("first_purchase")).alias("first_purchase"),
                timestamp_of_micros(F.col("last_purchase")).alias("last_purchase")]
    summary = per_customer.select(*columns)
    if not return_report:
        return summary
    return summary, _report(periods, log, cut)


def as_spark_transactions(transactions, **validate_kwargs) -> SparkTransactions:
    """``transactions`` if validated already, else :func:`~crmml.spark.validate_transactions` of it."""
    if isinstance(transactions, SparkTransactions):
        if validate_kwargs:
            raise TypeError(f"Options {sorted(validate_kwargs)} only apply to a DataFrame, not to SparkTransactions.")
        return transactions
    return validate_transactions(transactions, **validate_kwargs)


def customer_occasions(occasions: DataFrame, has_amount: bool) -> DataFrame:
    """Per customer: ``n_occasions``, ``first_period``, ``last_period``, ``first_purchase``,
    ``last_purchase`` and, with amounts, ``total_units`` and ``first_units`` (the first occasion's)."""
    aggregates = [F.count(F.lit(1)).alias("n_occasions"), F.min("period").alias("first_period"),
                  F.max("period").alias("last_period"), F.min("first_purchase").alias("first_purchase"),
                  F.max("last_purchase").alias("last_purchase")]
    if has_amount:
        aggregates += [F.sum("units").alias("total_units"), F.min_by("units", "period").alias("first_units")]
    return occasions.groupBy("customer_id").agg(*aggregates)


def timestamp_of_micros(micros: Column) -> Column:
    """Microseconds since 1970 (UTC) as a ``timestamp_ntz`` holding the UTC wall-clock time."""
    return F.from_utc_timestamp(F.timestamp_micros(micros), F.current_timezone()).cast("timestamp_ntz")


def _monetary_value(include_first: bool) -> Column:
    if include_first:
        return units_to_double(F.col("total_units")) / F.col("n_occasions").cast("double")
    repeat = units_to_double(F.col("total_units") - F.col("first_units"))
    return F.when(F.col("n_occasions") > 1, repeat / (F.col("n_occasions") - 1).cast("double")).otherwise(0.0)


def _report(periods: DataFrame, log: SparkTransactions, cut: Cut) -> SummaryReport:
    occasion, refund_only, after = F.col("is_occasion"), F.col("is_refund_only"), F.col("after_as_of")
    fully_refunded = ~after & ~occasion & ~refund_only
    row = periods.agg(
        F.sum(F.when(occasion, F.col("n_rows") - F.col("n_refund_rows")).otherwise(0)).alias("rows_used"),
        F.sum(F.when(occasion, F.col("n_refund_rows")).otherwise(0)).alias("refund_rows_netted"),
        F.sum(F.when(fully_refunded, F.col("n_rows")).otherwise(0)).alias("rows_in_fully_refunded_periods"),
        F.sum(F.when(refund_only, F.col("n_rows")).otherwise(0)).alias("unmatched_refund_rows"),
        F.sum(F.when(after, F.col("n_rows")).otherwise(0)).alias("rows_after_as_of"),
        F.count_distinct("customer_id").alias("customers_seen"),
        F.count_distinct(F.when(occasion, F.col("customer_id"))).alias("n_customers"),
    ).collect()[0]
    counts = {name: int(row[name] or 0) for name in row.asDict()}
    if counts["n_customers"] == 0:
        raise DataValidationError(f"No customer has a purchase on or before as_of={cut.as_of.date()} (the data "
                                  f"start on {log.first_timestamp.date()}).")
    return SummaryReport(
        rows_in=log.report.rows_in,
        rows_used=counts["rows_used"],
        refund_rows_netted=counts["refund_rows_netted"],
        rows_in_fully_refunded_periods=counts["rows_in_fully_refunded_periods"],
        unmatched_refund_rows=counts["unmatched_refund_rows"],
        rows_of_holdout_only_customers=0,
        rows_after_as_of=counts["rows_after_as_of"],
        rows_rejected=log.report.rows_rejected,
        n_customers=counts["n_customers"],
        customers_excluded=counts["customers_seen"] - counts["n_customers"],
        as_of=cut.as_of,
        freq=cut.freq,
        freq_multiplier=cut.multiplier,
    )

