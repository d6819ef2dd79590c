"""The purchase-history features of :func:`crmml.features.compute_features`, computed by Spark.

The columns are :func:`crmml.features.feature_columns` (names, order and windows come from there),
defined on the daily purchase occasions of :func:`crmml.spark.occasions.period_table`: the same
occasions, the same exact net amounts and the same floating-point operations in the same order as
the local engine, so the features are equal, not close:

- counts are counts; recency, age and gaps are differences of whole days;
- every spend is a left-to-right sum of the days' net amounts in day order, starting at 0.0 (the
  order in which ``numpy.bincount`` adds them): a ``sum`` over a window ordered by day, whose frame
  Spark evaluates row by row in that order, skipping the days outside the spend's window;
- ``gap_std_days`` is Welford's update in pandas' own form (``groupby().std(ddof=0)``), folded over
  the customer's gaps in day order.

One shuffle brings each customer's purchase days together, sorted by day; every column is an
aggregate over that window, read on the customer's last purchase day (one row per customer).

Customer-table attributes are not joined here: :func:`crmml.spark.scoring.score` joins them per
batch with the local engine's own code.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from crmml.customer_rows import GAP_RATIO_CAP
from crmml.data.summary import as_day
from crmml.errors import DataValidationError
from crmml.features import TREND_DAYS, check_windows, feature_columns
from crmml.spark.occasions import Cut, period_table, units_to_double
from crmml.spark.summary import as_spark_transactions

__all__ = ["compute_features"]

_NAN = float("nan")


def compute_features(transactions, *, as_of, windows_days: Sequence[int] = (30, 90, 180, 365),
                     **validate_kwargs) -> DataFrame:
    """One row of purchase-history features per customer who bought on or before ``as_of``.

    Parameters
    ----------
    transactions : SparkTransactions or pyspark.sql.DataFrame
        A validated log, or a DataFrame for :func:`~crmml.spark.validate_transactions`.
    as_of : date-like
        The observation end; its day is included, later rows are ignored.
    windows_days : sequence of int
        Window lengths for ``purchases_last_{w}d`` and ``spend_last_{w}d``.
    **validate_kwargs
        Passed to :func:`~crmml.spark.validate_transactions` when ``transactions`` is a DataFrame.

    Returns
    -------
    pyspark.sql.DataFrame
        ``customer_id``, the double columns of :func:`crmml.features.feature_columns` in order, and
        ``no_purchase_history`` (False): the rows :func:`crmml.features.compute_features` gives
        without a customer table or models (unordered).

    Raises
    ------
    DataValidationError
        On an invalid log, or ``as_of`` before the first transaction.
    """
    names = feature_columns(windows_days)
    windows, trend = check_windows(windows_days), TREND_DAYS
    log = as_spark_transactions(transactions, **validate_kwargs)
    as_of_day = as_day(as_of, "as_of")
    if as_of_day < log.first_timestamp.normalize():
        raise DataValidationError(f"No customer has a purchase on or before as_of={as_of_day.date()} (the data "
                                  f"start on {log.first_timestamp.date()}).")
    cut = Cut("D", 1.0, as_of_day)
    days = period_table(log.rows, cut, log.has_amount).where("is_occasion")
    by_day = Window.partitionBy("customer_id").orderBy("period")
    days = days.select("customer_id", "period", *(["units"] if log.has_amount else []),
                       (units_to_double(F.col("units")) if log.has_amount else F.lit(_NAN)).alias("net"),
                       (F.col("period") - F.lag("period").over(by_day)).alias("gap"))
    history = _History(cut.as_of_period, log.has_amount, windows, trend)
    whole = by_day.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    aggregated = days.select("customer_id", "period", *[a.over(whole).alias(n) for n, a in history.aggregates().items()])
    per_customer = aggregated.where(F.col("period") == F.col("last_period"))
    columns = history.summary_columns()
    columns["gap_std_days"], columns["gap_max_days"] = history.gap_columns()
    for w in windows:
        columns[f"purchases_last_{w}d"] = F.col(f"count_{w}")
    for w in windows:
        columns[f"spend_last_{w}d"] = history.spend(f"spend_{w}")
    columns[f"purchases_trend_{trend}d"] = F.col("count_recent") - F.col("count_previous")
    columns[f"spend_trend_{trend}d"] = history.spend("spend_recent") - history.spend("spend_previous")
    columns["total_spend"] = history.spend("spend_total")
    columns["first_purchase_amount"] = F.col("first_net") if log.has_amount else F.lit(_NAN)
    if list(columns) != names:  # the local column list changed: follow it here
        raise RuntimeError(f"crmml.spark.features does not build the columns {names}; it builds {list(columns)}.")
    return per_customer.select(
        "customer_id", *[column.cast("double").alias(name) for name, column in columns.items()],
        F.lit(False).alias("no_purchase_history"),
    )


class _History:
    """Aggregates over a customer's purchase days (sorted by day) and the features made of them."""

    def __init__(self, as_of_day: int, has_amount: bool, windows: list[int], trend: int):
        self.as_of_day, self.has_amount, self.windows, self.trend = as_of_day, has_amount, windows, trend

    def aggregates(self) -> dict[str, Column]:
        """Window aggregates by name, over columns ``period``, ``net``, ``units`` and ``gap``."""
        before = F.lit(self.as_of_day) - F.col("period")  # days before as_of (0 on the as-of day)
        within = {str(w): before < w for w in self.windows}
        within["recent"] = before < self.trend
        within["previous"] = (before >= self.trend) & (before < 2 * self.trend)
        out = {"n_occasions": F.count(F.lit(1)), "first_period": F.min("period"), "last_period": F.max("period"),
               "gaps": F.collect_list("gap"), "gap_max": F.max("gap")}
        out.update({f"count_{name}": F.count(F.when(inside, 1)) for name, inside in within.items()})
        if self.has_amount:
            out.update(total_units=F.sum("units"), first_units=F.first("units"), first_net=F.first("net"),
                       spend_total=F.sum("net"))
            out.update({f"spend_{name}": F.sum(F.when(inside, F.col("net"))) for name, inside in within.items()})
        return out

    def summary_columns(self) -> dict[str, Column]:
        """The RFM columns and their ratios, as :func:`crmml.customer_rows.history_columns` forms them."""
        frequency = (F.col("n_occasions") - 1).cast("double")
        recency = (F.col("last_period") - F.col("first_period")).cast("double")
        age = (F.lit(self.as_of_day) - F.col("first_period")).cast("double")
        if self.has_amount:
            repeat = units_to_double(F.col("total_units") - F.col("first_units"))
            money = F.when(frequency > 0, repeat / frequency).otherwise(0.0)
        else:
            money = F.lit(_NAN)
        mean_gap = F.when(frequency > 0, recency / frequency).otherwise(_NAN)
        since_last = age - recency
        ratio = F.when((frequency > 0) & (mean_gap > 0),
                       F.least(since_last / mean_gap, F.lit(GAP_RATIO_CAP))).otherwise(_NAN)
        return {"frequency": frequency, "recency_days": recency, "age_days": age, "monetary_value": money,
                "days_since_last_purchase": since_last, "mean_gap_days": mean_gap, "gap_ratio": ratio}

    @staticmethod
    def gap_columns() -> tuple[Column, Column]:
        """Population standard deviation and maximum of the gaps between purchase days (NaN without gaps).

        The standard deviation folds pandas' Welford update over the gaps in day order:
        ``mean += (x - mean) / n``, ``m2 += (x - new mean) * (x - old mean)``, ``sqrt(m2 / n)``.
        """
        start = F.struct(F.lit(0).cast("long").alias("n"), F.lit(0.0).alias("mean"), F.lit(0.0).alias("m2"))

        def update(state: Column, gap: Column) -> Column:
            value = gap.cast("double")
            count = state["n"] + 1
            mean = state["mean"] + (value - state["mean"]) / count.cast("double")
            m2 = state["m2"] + (value - mean) * (value - state["mean"])
            return F.struct(count.alias("n"), mean.alias("mean"), m2.alias("m2"))

        welford = F.aggregate(F.col("gaps"), start, update)
        has_gaps = F.col("n_occasions") > 1
        std = F.when(has_gaps, F.sqrt(welford["m2"] / welford["n"].cast("double"))).otherwise(_NAN)
        return std, F.when(has_gaps, F.col("gap_max").cast("double")).otherwise(_NAN)

    def spend(self, name: str) -> Column:
        """A spend aggregate (0.0 when no day is in its window), NaN without amounts."""
        return F.coalesce(F.col(name), F.lit(0.0)) if self.has_amount else F.lit(_NAN)
