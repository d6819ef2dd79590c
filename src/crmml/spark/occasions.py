"""Purchase periods and purchase occasions on Spark: the rules of :mod:`crmml.data.summary`, as DataFrame operations.

One ``groupBy(customer_id, period)`` reduces the valid rows to periods; a period is a purchase
occasion when it is on or before the as-of date, holds a non-negative row, and either holds no
refund or nets to a positive amount (the module docstring of :mod:`crmml.data.summary`).

Exact amounts
-------------
As in the local engine, every amount is rounded to 10 decimal places the way DuckDB casts a DOUBLE
to DECIMAL(38, 10) (``amount * 1e10`` in double precision, rounded half away from zero) and summed
exactly, here as ``decimal(38, 0)`` units of 1e-10, so sums do not depend on how Spark splits and
orders the rows. A sum becomes a double as DuckDB casts DECIMAL(38, 10) to DOUBLE (and as
:func:`crmml.data.summary._to_double` does): ``units / 1e10`` when ``|units| <= 2**53``, else
integer part plus fraction / 1e10.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from crmml.data.summary import period_numbers
from crmml.spark.transactions import floor_div, micros_to_day

__all__ = ["Cut", "exact_units", "period_table", "units_to_double"]

_SCALE = 10**10
_TWO_40 = 2**40
_UNITS = "decimal(38,0)"


# --------------------------------------------------------------------------------------------------
# Exact amounts
# --------------------------------------------------------------------------------------------------


def exact_units(amount: Column) -> Column:
    """The amount rounded to 10 decimal places, in units of 1e-10, as ``decimal(38, 0)``."""
    scaled = amount * F.lit(float(_SCALE))
    remainder = scaled % F.lit(1.0)  # fmod: exact, with the sign of ``scaled``
    whole = scaled - remainder  # trunc(scaled), exact
    units = (whole + F.when(remainder >= 0.5, 1.0).otherwise(0.0)
             - F.when(remainder <= -0.5, 1.0).otherwise(0.0))  # an integer-valued double
    small = F.abs(units) < F.lit(2.0**62)
    high = F.floor(units / F.lit(float(_TWO_40)))  # exact: a power-of-two division
    low = (units - high.cast("double") * F.lit(float(_TWO_40))).cast("long")
    large = high.cast(_UNITS) * F.lit(_TWO_40).cast(_UNITS) + low.cast(_UNITS)
    return F.when(small, units.cast("long").cast(_UNITS)).otherwise(large).cast(_UNITS)


def units_to_double(units: Column) -> Column:
    """A sum of units of 1e-10 as a double, as DuckDB casts DECIMAL(38, 10) to DOUBLE."""
    scale = F.lit(_SCALE).cast(_UNITS)
    below = F.pmod(units, scale)  # 0 <= below < 1e10
    floor_part = ((units - below) / scale).cast("long")  # an exact quotient
    borrow = (units < 0) & (below > 0)
    integer_part = floor_part + F.when(borrow, 1).otherwise(0)  # toward zero
    fraction = below.cast("long") - F.when(borrow, _SCALE).otherwise(0)
    split = integer_part.cast("double") + fraction.cast("double") / F.lit(float(_SCALE))
    return F.when(F.abs(units) <= F.lit(2**53).cast(_UNITS),
                  units.cast("double") / F.lit(float(_SCALE))).otherwise(split)


# --------------------------------------------------------------------------------------------------
# Periods
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cut:
    """Period length and the as-of day of a summary (as :class:`crmml.data.summary._Cut`)."""

    freq: str
    multiplier: float
    as_of: pd.Timestamp

    def period(self, micros: Column) -> Column:
        """:func:`crmml.data.summary.period_numbers` as a Spark column: days since 1970-01-01, weeks
        since Monday 1970-01-05, or months since January of year 0."""
        day = micros_to_day(micros)
        if self.freq == "D":
            return day
        if self.freq == "W":
            return floor_div(day - F.lit(4), 7)
        date = F.date_from_unix_date(day.cast("int"))
        return F.year(date).cast("long") * 12 + F.month(date).cast("long") - 1

    def period_of(self, day: pd.Timestamp) -> int:
        micros = day.to_datetime64().astype("datetime64[us]").astype(np.int64)
        return int(period_numbers(np.array([micros]), self.freq)[0])

    @property
    def as_of_period(self) -> int:
        return self.period_of(self.as_of)

    @property
    def next_day_micros(self) -> int:
        """Microseconds of the day after ``as_of``: rows from then on are after the as-of date."""
        return int((self.as_of + pd.Timedelta(days=1)).to_datetime64().astype("datetime64[us]").astype(np.int64))


def period_table(rows: DataFrame, cut: Cut, has_amount: bool) -> DataFrame:
    """One row per (customer, period) of the valid rows, with the occasion rule applied.

    A row's amount nets into the period of its ``net_micros`` when ``rows`` has that column (refunds
    netted by order, :func:`crmml.spark.transactions.validate_transactions`), else of its own time.
    Columns: ``customer_id``, ``period``, ``after_as_of`` (bool: the rows are after ``as_of``),
    ``n_rows``, ``n_refund_rows``, ``units`` (exact net amount, ``decimal(38, 0)``; absent without
    amounts), ``first_purchase`` and ``last_purchase`` (microseconds of the earliest and latest
    non-negative rows), ``is_occasion`` and ``is_refund_only`` (bool).
    """
    after = F.col("micros") >= F.lit(cut.next_day_micros)  # each row's side by its own date
    nets_at = F.col("net_micros") if "net_micros" in rows.columns else F.col("micros")  # (refunds by order)
    keyed = rows.select(
        "customer_id", cut.period(nets_at).alias("period"), after.alias("after_as_of"), "micros",
        *([(F.col("amount") < 0).alias("is_refund"), exact_units(F.col("amount")).alias("units")]
          if has_amount else []),
    )
    if has_amount:
        purchase_time = F.when(~F.col("is_refund"), F.col("micros"))
        aggregates = [F.count(F.lit(1)).alias("n_rows"),
                      F.count(F.when(F.col("is_refund"), 1)).alias("n_refund_rows"),
                      F.sum("units").alias("units"),
                      F.min(purchase_time).alias("first_purchase"), F.max(purchase_time).alias("last_purchase")]
    else:
        aggregates = [F.count(F.lit(1)).alias("n_rows"), F.lit(0).cast("long").alias("n_refund_rows"),
                      F.min("micros").alias("first_purchase"), F.max("micros").alias("last_purchase")]
    periods = keyed.groupBy("customer_id", "period", "after_as_of").agg(*aggregates)
    in_window = ~F.col("after_as_of")
    has_purchase = F.col("n_rows") > F.col("n_refund_rows")
    if has_amount:
        occasion = in_window & has_purchase & ((F.col("n_refund_rows") == 0) | (F.col("units") > 0))
    else:
        occasion = in_window
    refund_only = in_window & ~has_purchase
    return periods.withColumn("is_occasion", occasion).withColumn("is_refund_only", refund_only)
