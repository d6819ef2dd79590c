"""A Spark DataFrame of transactions, checked and put in canonical form, as :func:`crmml.data.read_transactions` does.

Each row gets the first rejection reason that holds (the codes of
:data:`crmml.data.transactions.REJECTION_REASONS`): a missing or non-whole customer id, a missing or
unparseable timestamp, a missing, non-numeric or non-finite amount. With ``on_invalid="raise"``
any invalid row is an error naming the column and the first offending values; with ``"reject"``
they are counted (:class:`~crmml.data.transactions.TransactionReport`) and kept apart
(:attr:`SparkTransactions.rejected`). A missing column or a column of an unusable type is always
an error naming the column.

Canonical columns: ``customer_id`` (long for whole-number ids, string for text ids),
``micros`` (long, microseconds since 1970-01-01 of the local wall-clock time in the log's
``timezone``, default UTC: time-zone-aware values and text with an offset or zone converted to it,
naive values taken as local, whatever the Spark session's time zone; the rule of
:func:`crmml.data.read_transactions`) and ``amount`` (double, when the log has amounts).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from crmml.data.summary import MAX_ABS_AMOUNT
from crmml.data.transactions import (
    DEFAULT_TIMEZONE,
    REJECTION_REASONS,
    ZONE_SUFFIX_PATTERN,
    TransactionReport,
    check_timezone,
)
from crmml.errors import DataValidationError

__all__ = ["SparkTransactions", "validate_transactions"]

_MICROS_PER_DAY = 86_400_000_000
_N_EXAMPLES = 5
#: strptime directives and their Spark datetime patterns (for ``time_format``).
_STRPTIME_TO_SPARK = {"%Y": "yyyy", "%m": "MM", "%d": "dd", "%H": "HH", "%M": "mm", "%S": "ss", "%f": "SSSSSS",
                      "%z": "XX", "%%": "%"}


@dataclass(frozen=True)
class SparkTransactions:
    """A validated transaction log on Spark.

    Attributes
    ----------
    rows : pyspark.sql.DataFrame
        The valid rows: ``customer_id``, ``micros`` and (with amounts) ``amount``.
    rejected : pyspark.sql.DataFrame
        The invalid rows: ``reason``, ``customer_id``, ``timestamp`` and ``amount`` (raw values as
        text) and ``file`` (the source file, when read from files).
    report : TransactionReport
        Rows in, valid and rejected (by reason).
    has_amount : bool
    first_timestamp, last_timestamp : pandas.Timestamp
        Earliest and latest valid timestamps.
    customer_column : str
        The source's name of the customer id column (for messages).
    checked : pyspark.sql.DataFrame or None
        Every row with its reason (what ``rows`` and ``rejected`` select from).
    """

    rows: DataFrame
    rejected: DataFrame
    report: TransactionReport
    has_amount: bool
    first_timestamp: pd.Timestamp
    last_timestamp: pd.Timestamp
    customer_column: str = "customer_id"
    checked: DataFrame | None = None

    def unpersist(self) -> None:
        """Free the rows cached by ``validate_transactions(..., persist=True)``."""
        if self.checked is not None:
            self.checked.unpersist()


def validate_transactions(
    frame: DataFrame,
    *,
    customer_col: str = "customer_id",
    time_col: str = "timestamp",
    amount_col: str | None = "amount",
    time_format: str | None = None,
    on_invalid: str = "raise",
    persist: bool = False,
    timezone: str = DEFAULT_TIMEZONE,
    order_col: str | None = None,
) -> SparkTransactions:
    """Check a Spark DataFrame of transactions (see the module docstring).

    Parameters
    ----------
    frame : pyspark.sql.DataFrame
        One row per purchase or refund.
    customer_col, time_col : str
        Names of the customer id and timestamp columns.
    amount_col : str or None
        Name of the amount column, or None for a log without amounts.
    time_format : str, optional
        A strptime format for text timestamps (``%Y %m %d %H %M %S %f %z``), e.g. ``"%Y%m%d"``.
    on_invalid : {"raise", "reject"}
    persist : bool
        Cache the checked rows (memory, then local disk) for the several passes of a job; free them
        with :meth:`SparkTransactions.unpersist`.
    timezone : str
        IANA time zone whose calendar defines purchase days (default ``"UTC"``).
    order_col : str, optional
        An order id column: a refund whose order id names a purchase row of the same customer
        dated no later than the refund nets into that order's period (the rule of
        :mod:`crmml.data.summary`); the valid rows then carry ``net_micros``, the time whose period
        each row's amount nets into. Needs ``amount_col``.

    Returns
    -------
    SparkTransactions

    Raises
    ------
    DataValidationError
        A missing column, a column of an unusable type, no rows, no valid rows, or (with
        ``on_invalid="raise"``) any invalid row.
    """
    if on_invalid not in ("raise", "reject"):
        raise ValueError(f"on_invalid must be 'raise' or 'reject'. Got {on_invalid!r} instead.")
    timezone = check_timezone(timezone)
    if not isinstance(frame, DataFrame):
        raise TypeError(f"frame must be a pyspark.sql.DataFrame. Got {type(frame).__name__} instead.")
    if order_col is not None and amount_col is None:
        raise DataValidationError(f"An order column ({order_col!r}) nets refunds and needs an amount column.",
                                  column=order_col)
    names = {"customer": customer_col, "time": time_col, "amount": amount_col, "order": order_col}
    types = {field.name: field.dataType for field in frame.schema.fields}
    for name in (n for n in names.values() if n is not None):
        if name not in types:
            raise DataValidationError(
                f"Required column {name!r} is missing from the transactions. Columns found: {sorted(types)}.",
                column=name,
            )
    raw_customer, raw_time = F.col(_quoted(customer_col)), F.col(_quoted(time_col))
    customer_id, missing_customer = _customer(raw_customer, types[customer_col], customer_col)
    micros, missing_time = _micros(raw_time, types[time_col], time_col, time_format, timezone)
    checks = [("missing_customer_id", missing_customer), ("invalid_customer_id", customer_id.isNull()),
              ("missing_timestamp", missing_time), ("unparseable_timestamp", micros.isNull())]
    columns = [customer_id.alias("customer_id"), micros.alias("micros")]
    raw = [raw_customer.cast("string").alias("raw_customer"), raw_time.cast("string").alias("raw_time")]
    if amount_col is not None:
        raw_amount = F.col(_quoted(amount_col))
        amount, missing_amount = _amount(raw_amount, types[amount_col], amount_col)
        checks += [("missing_amount", missing_amount), ("non_numeric_amount", amount.isNull()),
                   ("non_finite_amount", F.isnan(amount) | (F.abs(amount) == float("inf")))]
        columns.append(amount.alias("amount"))
        raw.append(raw_amount.cast("string").alias("raw_amount"))
    if order_col is not None:  # blank ids are no order id, as in the local engine
        order_text = F.trim(F.col(_quoted(order_col)).cast("string"))
        columns.append(F.when(order_text != "", order_text).alias("order_id"))
    reason = F.lit(None).cast("string")
    for code, condition in reversed(checks):  # the first that holds wins
        reason = F.when(condition, F.lit(code)).otherwise(reason)
    checked = frame.select(*columns, *raw, reason.alias("reason"), F.input_file_name().alias("file"))
    if persist:
        checked = checked.persist(StorageLevel.MEMORY_AND_DISK)

    largest = F.max(F.abs("amount")) if amount_col is not None else F.lit(None).cast("double")
    counts = checked.groupBy("reason").agg(F.count(F.lit(1)).alias("n"), F.min("micros").alias("first"),
                                           F.max("micros").alias("last"), largest.alias("largest")).collect()
    by_reason = {row["reason"]: row for row in counts}
    if by_reason.get(None) is not None and (by_reason[None]["largest"] or 0.0) >= MAX_ABS_AMOUNT:
        checked.unpersist()  # as the local engine: amounts it cannot sum exactly stop the job
        raise DataValidationError("Amounts must be below 9.2e18 in absolute value to be summed exactly. "
                                  f"Got {by_reason[None]['largest']:.6g} (in absolute value).", column=amount_col)
    rows_in = sum(row["n"] for row in counts)
    if rows_in == 0:
        checked.unpersist()
        raise DataValidationError("The transaction log has no rows.")
    invalid = {code: by_reason[code]["n"] for code in REJECTION_REASONS if code in by_reason}
    valid = by_reason.get(None)
    if valid is None or (on_invalid == "raise" and invalid):
        error = _invalid_rows_error(checked, invalid, names, no_valid_rows=valid is None)
        checked.unpersist()
        raise error
    report = TransactionReport(rows_in=rows_in, rows_valid=valid["n"], rows_rejected=sum(invalid.values()),
                               rejected_by_reason=invalid)
    rejected = checked.where(F.col("reason").isNotNull()).select(
        "reason", F.col("raw_customer").alias("customer_id"), F.col("raw_time").alias("timestamp"),
        (F.col("raw_amount") if amount_col is not None else F.lit(None).cast("string")).alias("amount"), "file")
    valid_rows = checked.where(F.col("reason").isNull()).select(
        "customer_id", "micros", *(["amount"] if amount_col is not None else []),
        *(["order_id"] if order_col is not None else []))
    return SparkTransactions(
        rows=valid_rows if order_col is None else _with_net_micros(valid_rows),
        rejected=rejected,
        report=report,
        has_amount=amount_col is not None,
        first_timestamp=pd.Timestamp(valid["first"], unit="us"),
        last_timestamp=pd.Timestamp(valid["last"], unit="us"),
        customer_column=customer_col,
        checked=checked,
    )


def _with_net_micros(rows: DataFrame) -> DataFrame:
    """``rows`` (with ``order_id``) plus ``net_micros``: a refund's order's first purchase time when the
    order id names a purchase row of the same customer dated no later than the refund, else its own
    time (:meth:`crmml.data.transactions._ParsePlan.canonical_sql`'s rule)."""
    from pyspark.sql import Window

    order = Window.partitionBy("customer_id", "order_id")
    order_micros = F.min(F.when(F.col("amount") >= 0, F.col("micros"))).over(order)
    netted = (F.col("amount") < 0) & F.col("order_id").isNotNull() & (order_micros <= F.col("micros"))
    return rows.withColumn("net_micros", F.when(netted, order_micros).otherwise(F.col("micros"))).drop("order_id")


def micros_to_day(micros: Column) -> Column:
    """Days since 1970-01-01 (floor) of microseconds since 1970-01-01 UTC."""
    return floor_div(micros, _MICROS_PER_DAY)


def floor_div(value: Column, divisor: int) -> Column:
    """``value // divisor`` for long columns, exactly (Spark's ``div`` truncates toward zero)."""
    remainder = F.pmod(value, F.lit(divisor))
    return F.call_function("div", value - remainder, F.lit(divisor))


# --------------------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------------------


def _customer(raw: Column, kind: T.DataType, name: str) -> tuple[Column, Column]:
    """The canonical id (null when not usable) and whether the raw id is missing."""
    if isinstance(kind, T.IntegralType):
        return raw.cast("long"), raw.isNull()
    if isinstance(kind, T.StringType):
        return F.when(F.trim(raw) != "", raw), raw.isNull() | (F.trim(raw) == "")
    if isinstance(kind, (T.FloatType, T.DoubleType, T.DecimalType)):
        number = raw.cast("double")
        missing = raw.isNull() | F.isnan(number)
        whole = (number == F.floor(number)) & (F.abs(number) < 2.0**63)
        return F.when(~missing & whole, number.cast("long")), missing
    raise DataValidationError(f"Column {name!r} has type {kind.simpleString()}; customer ids must be text or "
                              "whole numbers.", column=name)


def _micros(raw: Column, kind: T.DataType, name: str, time_format: str | None,
            timezone: str = DEFAULT_TIMEZONE) -> tuple[Column, Column]:
    """Microseconds since 1970-01-01 of the local wall-clock time in ``timezone`` (null when
    unparseable) and whether the raw value is missing.

    ``from_utc_timestamp(instant, zone)`` shifts an instant's microseconds by the zone's offset, so
    its ``unix_micros`` are the wall-clock time in that zone, whatever the session's time zone.
    """
    if isinstance(kind, T.TimestampType):  # an instant
        if timezone == "UTC":
            return F.unix_micros(raw), raw.isNull()
        return F.unix_micros(F.from_utc_timestamp(raw, F.lit(timezone))), raw.isNull()
    if isinstance(kind, T.TimestampNTZType):  # naive: local already, whatever the session's time zone
        stamp = F.from_utc_timestamp(raw.cast("timestamp"), F.current_timezone())
        return F.unix_micros(stamp), raw.isNull()
    if isinstance(kind, T.DateType):
        return F.unix_date(raw).cast("long") * F.lit(_MICROS_PER_DAY), raw.isNull()
    if isinstance(kind, T.StringType):
        text = F.trim(raw)
        if time_format is None:
            parsed = F.try_to_timestamp(text)
            aware = text.rlike(ZONE_SUFFIX_PATTERN)
        else:
            parsed = F.try_to_timestamp(text, F.lit(_spark_pattern(time_format, name)))
            aware = F.lit("%z" in time_format)
        # naive text was read in the session's zone: shifting it back by that zone gives it as written
        zone = F.when(aware, F.lit(timezone)).otherwise(F.current_timezone())
        return F.unix_micros(F.from_utc_timestamp(parsed, zone)), raw.isNull() | (text == "")
    raise DataValidationError(f"Column {name!r} has type {kind.simpleString()}; timestamps must be timestamps, "
                              "dates or text.", column=name)


def _amount(raw: Column, kind: T.DataType, name: str) -> tuple[Column, Column]:
    if isinstance(kind, T.NumericType):
        return raw.cast("double"), raw.isNull()
    if isinstance(kind, T.StringType):
        text = F.trim(raw)
        return text.try_cast("double"), raw.isNull() | (text == "")
    raise DataValidationError(f"Column {name!r} has type {kind.simpleString()}; amounts must be numbers.",
                              column=name)


def _spark_pattern(time_format: str, name: str) -> str:
    pattern, i = [], 0
    while i < len(time_format):
        if time_format[i] == "%":
            token = time_format[i:i + 2]
            if token not in _STRPTIME_TO_SPARK:
                raise ValueError(f"time_format {time_format!r}: {token!r} is not supported on Spark "
                                 f"(column {name!r}); use {sorted(_STRPTIME_TO_SPARK)}.")
            pattern.append(_STRPTIME_TO_SPARK[token])
            i += 2
        else:
            char = time_format[i]
            pattern.append(f"'{char}'" if char.isalpha() else char)
            i += 1
    return "".join(pattern)


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _invalid_rows_error(checked: DataFrame, invalid: dict[str, int], names: dict, *,
                        no_valid_rows: bool) -> DataValidationError:
    if not invalid:
        return DataValidationError("The transaction log has no valid rows.")
    code = next(iter(invalid))
    role, description = REJECTION_REASONS[code]
    column = names[role]
    raw = {"customer": "raw_customer", "time": "raw_time", "amount": "raw_amount"}[role]
    examples = [row[raw] for row in checked.where(F.col("reason") == code).select(raw).limit(_N_EXAMPLES).collect()]
    others = f" (and {len(invalid) - 1} other kind(s) of invalid row)" if len(invalid) > 1 else ""
    prefix = "No valid rows: " if no_valid_rows else ""
    return DataValidationError(
        f"{prefix}{invalid[code]:,} row(s) have {description} in column {column!r}, e.g. {examples}{others}. "
        "Fix them, or pass on_invalid='reject' to leave them out.",
        column=column,
    )
