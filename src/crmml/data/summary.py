"""Per-customer RFM summaries (frequency, recency, T, monetary value) computed in DuckDB.

The definitions are those of lifetimes' ``summary_data_from_transaction_data`` and
``calibration_and_holdout_data``, with an explicit policy for refunds and for rows after the
as-of date, and a :class:`SummaryReport` that accounts for every input row.

Purchase periods
----------------
Timestamps are grouped into periods of ``freq``: ``"D"`` calendar days, ``"W"`` weeks running
Monday to Sunday (pandas' ``W``, i.e. ``W-SUN``), ``"M"`` calendar months. A customer's
*purchase occasions* are the periods in which they bought (see the refund policy below).

- ``frequency`` = number of occasions - 1 (repeat occasions)
- ``recency`` = last occasion's period - first occasion's period
- ``T`` = the as-of date's period - first occasion's period
- ``monetary_value`` = mean net amount of the repeat occasions (0 when there are none)

``recency`` and ``T`` count whole periods and are divided by ``freq_multiplier`` (``freq="D",
freq_multiplier=7`` gives weeks as in the CDNOW summaries); ``frequency`` is a count and is not.
For ``"M"``, lifetimes 0.11.3 cannot compute recency and T under pandas 3; here they are whole
calendar months.

Refund policy
-------------
Rows with a negative amount are refunds. They are netted with the same customer's rows in the same
period. A period is a purchase occasion when it holds at least one non-negative row and either its
net amount is positive or it holds no refund, so a zero-amount purchase still counts (as in
lifetimes) but a purchase refunded in full (net <= 0) does not. Periods holding only refunds
(refunds of purchases made in earlier periods) are not occasions and change nothing. Every such row
is counted in the :class:`SummaryReport`.

As-of date
----------
Rows dated after the as-of date are excluded and counted; the as-of day itself is included.
lifetimes instead keeps every row of the as-of date's *period* (so with ``freq="W"`` it also keeps
the rest of the as-of week); the two agree whenever the as-of date ends a period, and always for
``freq="D"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from crmml.data.transactions import Transactions, duckdb_session, read_transactions
from crmml.errors import DataValidationError

__all__ = ["SummaryReport", "calibration_holdout", "rfm_summary"]

# Period number of a TIMESTAMP expression {ts}: days since 1970-01-01, weeks since Monday
# 1970-01-05 (weeks run Monday to Sunday, as pandas' W-SUN), or months since January of year 0.
_PERIOD_SQL = {
    "D": "(CAST({ts} AS DATE) - DATE '1970-01-01')",
    "W": "((CAST(date_trunc('week', {ts}) AS DATE) - DATE '1970-01-05') // 7)",
    "M": "(year({ts}) * 12 + month({ts}) - 1)",
}

# Amounts are summed exactly, as decimals with 10 places (|amount| < 1e28): sums do not depend on
# the order DuckDB's threads add them in, and a refund of 0.1 + 0.2 by 0.3 nets to exactly 0.
_EXACT_AMOUNT = "DECIMAL(38, 10)"

# Segments a row falls into (a column of the period table).
_CALIBRATION, _HOLDOUT, _AFTER_AS_OF, _REJECTED = 0, 1, 2, 3


@dataclass(frozen=True)
class SummaryReport:
    """Where every input row went in :func:`rfm_summary` or :func:`calibration_holdout`.

    The row counts from ``rows_used`` to ``rows_rejected`` partition ``rows_in``: see
    :attr:`parts` and :attr:`reconciles`.

    Attributes
    ----------
    rows_in : int
        Rows in the source, valid or not.
    rows_used : int
        Non-negative rows in the purchase occasions of the customers returned.
    refund_rows_netted : int
        Refund rows netted into those purchase occasions.
    rows_in_fully_refunded_periods : int
        Rows in periods with purchases whose net amount is <= 0 after refunds.
    unmatched_refund_rows : int
        Rows in periods holding only refunds.
    rows_of_holdout_only_customers : int
        Rows in the holdout occasions of customers whose first purchase came after the
        calibration end (always 0 for :func:`rfm_summary`).
    rows_after_as_of : int
        Rows dated after the as-of date (the holdout end for :func:`calibration_holdout`).
    rows_rejected : int
        Invalid rows excluded by ``on_invalid="reject"``.
    n_customers : int
        Customers returned.
    customers_excluded : int
        Customers with valid rows who are not returned: all their activity was excluded above.
    as_of : pandas.Timestamp
        The as-of day (holdout end for :func:`calibration_holdout`).
    freq : str
        Period length, ``"D"``, ``"W"`` or ``"M"``.
    freq_multiplier : float
        The divisor applied to frequency, recency and T.
    calibration_end : pandas.Timestamp or None
        Last calibration day for :func:`calibration_holdout`, otherwise None.
    """

    rows_in: int
    rows_used: int
    refund_rows_netted: int
    rows_in_fully_refunded_periods: int
    unmatched_refund_rows: int
    rows_of_holdout_only_customers: int
    rows_after_as_of: int
    rows_rejected: int
    n_customers: int
    customers_excluded: int
    as_of: pd.Timestamp
    freq: str
    freq_multiplier: float
    calibration_end: pd.Timestamp | None = None

    @property
    def parts(self) -> dict[str, int]:
        """The disjoint row counts that add up to ``rows_in``."""
        return {
            "rows_used": self.rows_used,
            "refund_rows_netted": self.refund_rows_netted,
            "rows_in_fully_refunded_periods": self.rows_in_fully_refunded_periods,
            "unmatched_refund_rows": self.unmatched_refund_rows,
            "rows_of_holdout_only_customers": self.rows_of_holdout_only_customers,
            "rows_after_as_of": self.rows_after_as_of,
            "rows_rejected": self.rows_rejected,
        }

    @property
    def reconciles(self) -> bool:
        """True when ``rows_in`` equals the sum of :attr:`parts` (no row unaccounted for)."""
        return self.rows_in == sum(self.parts.values())


def rfm_summary(
    transactions,
    *,
    as_of=None,
    freq: str = "D",
    freq_multiplier: float = 1,
    include_first_transaction: bool = False,
    return_report: bool = False,
    **read_kwargs,
) -> pd.DataFrame | tuple[pd.DataFrame, SummaryReport]:
    """Summarise a transaction log per customer: frequency, recency, T and monetary value.

    See the module docstring for the exact definitions, the refund policy and how rows after
    ``as_of`` are treated.

    Parameters
    ----------
    transactions : Transactions, pandas.DataFrame, str or pathlib.Path
        A validated log, or anything :func:`~crmml.data.read_transactions` accepts.
    as_of : date-like, optional
        The observation end (its day is included). Defaults to the day of the last transaction.
    freq : {"D", "W", "M"}
        Period length: day, week (Monday to Sunday) or calendar month.
    freq_multiplier : float
        Divides recency and T (not frequency), e.g. 7 with ``freq="D"`` for weeks.
    include_first_transaction : bool
        Count the first occasion in ``frequency`` and ``monetary_value`` (as lifetimes does with
        the same flag). Keep False for BG/NBD-type models.
    return_report : bool
        Also return a :class:`SummaryReport`.
    **read_kwargs
        Passed to :func:`~crmml.data.read_transactions` when ``transactions`` is not a
        :class:`~crmml.data.Transactions`.

    Returns
    -------
    pandas.DataFrame or (pandas.DataFrame, SummaryReport)
        Indexed by ``customer_id`` (sorted), float columns ``frequency``, ``recency``, ``T`` and
        (when the log has amounts) ``monetary_value``, plus timestamps ``first_purchase`` and
        ``last_purchase`` (earliest and latest purchase rows in occasions).

    Raises
    ------
    DataValidationError
        When the log is invalid, or no customer has a purchase occasion on or before ``as_of``.
    """
    period_sql, multiplier = _period_sql(freq), _positive_multiplier(freq_multiplier)
    as_of_day = _day(as_of, "as_of") if as_of is not None else None
    log = _as_transactions(transactions, read_kwargs)
    if as_of_day is None:
        as_of_day = log.last_timestamp.normalize()
    query = _SummaryQuery(period_sql, multiplier, as_of_day, as_of_day, log.has_amount)
    frame, counts = _run(log, query, query.rfm_select_sql(include_first_transaction), return_report)
    _check_not_empty(frame, log, "as_of", as_of_day)
    if not return_report:
        return frame
    return frame, _report(counts, query, freq, calibration_end=None)


def calibration_holdout(
    transactions,
    *,
    calibration_end,
    holdout_end=None,
    freq: str = "D",
    freq_multiplier: float = 1,
    return_report: bool = False,
    **read_kwargs,
) -> pd.DataFrame | tuple[pd.DataFrame, SummaryReport]:
    """Split a log into a calibration summary and holdout outcomes, per customer.

    Customers whose first purchase occasion is on or before ``calibration_end`` are summarised
    over the calibration period exactly as :func:`rfm_summary` with ``as_of=calibration_end``;
    their purchases in ``(calibration_end, holdout_end]`` give the holdout columns. Refunds and
    rows after ``holdout_end`` follow the :func:`rfm_summary` policy; a period that straddles
    ``calibration_end`` is split, its two parts judged separately (as lifetimes does).

    Parameters
    ----------
    transactions : Transactions, pandas.DataFrame, str or pathlib.Path
        A validated log, or anything :func:`~crmml.data.read_transactions` accepts.
    calibration_end : date-like
        Last day of the calibration period (included).
    holdout_end : date-like, optional
        Last day of the holdout period (included). Defaults to the day of the last transaction.
    freq : {"D", "W", "M"}
        Period length: day, week (Monday to Sunday) or calendar month.
    freq_multiplier : float
        Divides recency, T and the holdout duration, e.g. 7 with ``freq="D"`` for weeks.
    return_report : bool
        Also return a :class:`SummaryReport`.
    **read_kwargs
        Passed to :func:`~crmml.data.read_transactions` when ``transactions`` is not a
        :class:`~crmml.data.Transactions`.

    Returns
    -------
    pandas.DataFrame or (pandas.DataFrame, SummaryReport)
        Indexed by ``customer_id`` (sorted). Calibration columns ``frequency_cal``,
        ``recency_cal``, ``T_cal``, ``monetary_value_cal``, ``first_purchase``,
        ``last_purchase_cal``; holdout columns ``frequency_holdout`` (purchase occasions in the
        holdout), ``spend_holdout`` (their total net amount), ``monetary_value_holdout`` (their
        mean net amount, 0 if none) and ``duration_holdout`` (holdout length in periods divided by
        ``freq_multiplier``). Monetary columns are omitted when the log has no amounts.

    Raises
    ------
    DataValidationError
        When the log is invalid, or no customer has a purchase on or before ``calibration_end``.
    ValueError
        When ``calibration_end`` is not before ``holdout_end``.
    """
    period_sql, multiplier = _period_sql(freq), _positive_multiplier(freq_multiplier)
    calibration_day = _day(calibration_end, "calibration_end")
    holdout_day = _day(holdout_end, "holdout_end") if holdout_end is not None else None
    log = _as_transactions(transactions, read_kwargs)
    if holdout_day is None:
        holdout_day = log.last_timestamp.normalize()
    if calibration_day >= holdout_day:
        raise ValueError(
            f"calibration_end ({calibration_day.date()}) must be before holdout_end "
            f"({holdout_day.date()})."
        )
    query = _SummaryQuery(period_sql, multiplier, calibration_day, holdout_day, log.has_amount)
    frame, counts = _run(log, query, query.calibration_holdout_select_sql(), return_report)
    _check_not_empty(frame, log, "calibration_end", calibration_day)
    if not return_report:
        return frame
    return frame, _report(counts, query, freq, calibration_end=calibration_day)


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


def _as_transactions(transactions, read_kwargs: dict) -> Transactions:
    if isinstance(transactions, Transactions):
        if read_kwargs:
            raise TypeError(
                f"Read options {sorted(read_kwargs)} only apply when transactions is not already a "
                "Transactions; pass them to read_transactions instead."
            )
        return transactions
    return read_transactions(transactions, **read_kwargs)


def _period_sql(freq: str) -> str:
    if freq not in _PERIOD_SQL:
        raise ValueError(f"freq must be one of {sorted(_PERIOD_SQL)}. Got {freq!r} instead.")
    return _PERIOD_SQL[freq]


def _positive_multiplier(value) -> float:
    try:
        multiplier = float(value)
    except (TypeError, ValueError):
        multiplier = float("nan")
    if not multiplier > 0 or multiplier == float("inf"):
        raise ValueError(f"freq_multiplier must be a positive finite number. Got {value!r} instead.")
    return multiplier


def _check_not_empty(frame: pd.DataFrame, log: Transactions, name: str, day: pd.Timestamp) -> None:
    if frame.empty:
        raise DataValidationError(
            f"No customer has a purchase on or before {name}={day.date()} "
            f"(the data start on {log.first_timestamp.date()})."
        )


def _day(value, name: str) -> pd.Timestamp:
    """A date-like argument as a naive midnight timestamp (time-zone-aware values go to UTC)."""
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a date. Got {value!r} instead.") from exc
    if pd.isna(stamp):
        raise ValueError(f"{name} must be a date. Got {value!r} instead.")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.normalize()


# --------------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SummaryQuery:
    """The SQL of one summary: rows are cut into calibration / holdout / after-as-of segments."""

    period_sql: str
    multiplier: float
    calibration_end: pd.Timestamp
    as_of: pd.Timestamp
    has_amount: bool

    def period_of(self, ts_sql: str) -> str:
        return self.period_sql.format(ts=ts_sql)

    def periods_table_sql(self) -> str:
        """One row per (customer, period, segment): row counts, net amount, first/last purchase."""
        purchase = "amount >= 0" if self.has_amount else "reason IS NULL"
        refunds = "count(*) FILTER (WHERE amount < 0)" if self.has_amount else "0"
        valid_amount = f"CAST(CASE WHEN reason IS NULL THEN amount END AS {_EXACT_AMOUNT})"
        net = f"coalesce(sum({valid_amount}), 0)" if self.has_amount else "0"
        return f"""
        CREATE TEMP TABLE crmml_periods AS
        SELECT
            CASE WHEN reason IS NULL THEN customer_id END AS customer_id,
            CASE WHEN reason IS NULL THEN {self.period_of("timestamp")} END AS period,
            CASE
                WHEN reason IS NOT NULL THEN {_REJECTED}
                WHEN CAST(timestamp AS DATE) > {_date_sql(self.as_of)} THEN {_AFTER_AS_OF}
                WHEN CAST(timestamp AS DATE) > {_date_sql(self.calibration_end)} THEN {_HOLDOUT}
                ELSE {_CALIBRATION}
            END AS segment,
            count(*) AS n_rows,
            {refunds} AS n_refund_rows,
            {net} AS net_amount,
            min(timestamp) FILTER (WHERE {purchase}) AS first_purchase,
            max(timestamp) FILTER (WHERE {purchase}) AS last_purchase
        FROM crmml_checked
        GROUP BY 1, 2, 3
        """

    @staticmethod
    def classified_view_sql() -> str:
        """Flag each period: a purchase occasion, a refund-only period, or neither."""
        return f"""
        CREATE TEMP VIEW crmml_classified AS
        SELECT *,
            segment <= {_HOLDOUT} AND n_rows > n_refund_rows
                AND (net_amount > 0 OR n_refund_rows = 0) AS is_occasion,
            segment <= {_HOLDOUT} AND n_rows = n_refund_rows AS is_refund_only
        FROM crmml_periods
        """

    @staticmethod
    def customers_table_sql() -> str:
        """Calibration occasions aggregated per customer (customers with none are left out).

        The repeat occasions' total is the exact decimal total less the first occasion's amount.
        """
        return f"""
        CREATE TEMP TABLE crmml_customers AS
        SELECT
            customer_id,
            min(period) AS first_period,
            max(period) AS last_period,
            count(*) AS n_occasions,
            CAST(sum(net_amount) AS DOUBLE) / count(*) AS mean_amount,
            CASE WHEN count(*) > 1
                THEN CAST(sum(net_amount) - arg_min(net_amount, period) AS DOUBLE) / (count(*) - 1)
                ELSE 0
            END AS mean_repeat_amount,
            min(first_purchase) AS first_purchase,
            max(last_purchase) AS last_purchase
        FROM crmml_classified
        WHERE is_occasion AND segment = {_CALIBRATION}
        GROUP BY customer_id
        """

    def _scaled(self, periods_sql: str) -> str:
        return f"CAST({periods_sql} AS DOUBLE) / CAST('{self.multiplier!r}' AS DOUBLE)"

    def _calibration_columns(self, include_first: bool, suffix: str) -> list[str]:
        counted = "n_occasions" if include_first else "n_occasions - 1"
        end_period = self.period_of(_timestamp_sql(self.calibration_end))
        columns = [
            f"CAST({counted} AS DOUBLE) AS frequency{suffix}",
            f"{self._scaled('last_period - first_period')} AS recency{suffix}",
            f"{self._scaled(f'{end_period} - first_period')} AS T{suffix}",
        ]
        if self.has_amount:
            mean = "mean_amount" if include_first else "mean_repeat_amount"
            columns.append(f"{mean} AS monetary_value{suffix}")
        return columns

    def rfm_select_sql(self, include_first: bool) -> str:
        columns = self._calibration_columns(include_first, suffix="")
        return (
            f"SELECT customer_id, {', '.join(columns)}, first_purchase, last_purchase "
            "FROM crmml_customers ORDER BY customer_id"
        )

    def calibration_holdout_select_sql(self) -> str:
        duration = (
            f"{self.period_of(_timestamp_sql(self.as_of))} - "
            f"{self.period_of(_timestamp_sql(self.calibration_end))}"
        )
        holdout = ["CAST(coalesce(h.n_occasions, 0) AS DOUBLE) AS frequency_holdout"]
        if self.has_amount:
            holdout += [
                "coalesce(h.spend, 0) AS spend_holdout",
                "coalesce(h.mean_amount, 0) AS monetary_value_holdout",
            ]
        holdout.append(f"{self._scaled(duration)} AS duration_holdout")
        calibration = ", ".join(self._calibration_columns(include_first=False, suffix="_cal"))
        return f"""
        SELECT c.*, {', '.join(holdout)}
        FROM (
            SELECT customer_id, {calibration}, first_purchase, last_purchase AS last_purchase_cal
            FROM crmml_customers
        ) AS c
        LEFT JOIN (
            SELECT customer_id, count(*) AS n_occasions, CAST(sum(net_amount) AS DOUBLE) AS spend,
                CAST(sum(net_amount) AS DOUBLE) / count(*) AS mean_amount
            FROM crmml_classified WHERE is_occasion AND segment = {_HOLDOUT}
            GROUP BY customer_id
        ) AS h ON c.customer_id = h.customer_id
        ORDER BY c.customer_id
        """

    @staticmethod
    def report_sql() -> str:
        """Row and customer counts for the SummaryReport, in one pass over the period table."""
        return f"""
        SELECT
            sum(n_rows) AS rows_in,
            sum(n_rows - n_refund_rows) FILTER (WHERE is_occasion AND returned) AS rows_used,
            sum(n_refund_rows) FILTER (WHERE is_occasion AND returned) AS refund_rows_netted,
            sum(n_rows) FILTER (WHERE segment <= {_HOLDOUT} AND NOT is_occasion AND NOT is_refund_only)
                AS rows_in_fully_refunded_periods,
            sum(n_rows) FILTER (WHERE is_refund_only) AS unmatched_refund_rows,
            sum(n_rows) FILTER (WHERE is_occasion AND NOT returned) AS rows_of_holdout_only_customers,
            sum(n_rows) FILTER (WHERE segment = {_AFTER_AS_OF}) AS rows_after_as_of,
            sum(n_rows) FILTER (WHERE segment = {_REJECTED}) AS rows_rejected,
            count(DISTINCT customer_id) FILTER (WHERE segment <> {_REJECTED}) AS customers_seen,
            (SELECT count(*) FROM crmml_customers) AS n_customers
        FROM (
            SELECT p.*, c.customer_id IS NOT NULL AS returned
            FROM crmml_classified AS p
            LEFT JOIN crmml_customers AS c ON p.customer_id = c.customer_id
        )
        """


def _run(
    log: Transactions, query: _SummaryQuery, select_sql: str, with_report: bool
) -> tuple[pd.DataFrame, dict[str, int] | None]:
    """Run one summary on a fresh DuckDB connection; return the frame and the report counts."""
    with duckdb_session() as con:
        log.create_views(con)
        try:
            con.execute(query.periods_table_sql())
        except duckdb.ConversionException as exc:
            raise DataValidationError(
                f"Amounts must be below 1e28 in absolute value to be summed exactly: {exc}",
                column="amount",
            ) from exc
        con.execute(query.classified_view_sql())
        con.execute(query.customers_table_sql())
        frame = _to_pandas(con, select_sql)
        counts = _fetch_dict(con, query.report_sql()) if with_report else None
    return frame, counts


def _to_pandas(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    return con.sql(sql).to_arrow_table().to_pandas().set_index("customer_id")


def _fetch_dict(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, int]:
    relation = con.sql(sql)
    (values,) = relation.fetchall()
    return {name: int(value or 0) for name, value in zip(relation.columns, values)}


def _report(counts: dict[str, int], query: _SummaryQuery, freq: str, calibration_end) -> SummaryReport:
    return SummaryReport(
        rows_in=counts["rows_in"],
        rows_used=counts["rows_used"],
        refund_rows_netted=counts["refund_rows_netted"],
        rows_in_fully_refunded_periods=counts["rows_in_fully_refunded_periods"],
        unmatched_refund_rows=counts["unmatched_refund_rows"],
        rows_of_holdout_only_customers=counts["rows_of_holdout_only_customers"],
        rows_after_as_of=counts["rows_after_as_of"],
        rows_rejected=counts["rows_rejected"],
        n_customers=counts["n_customers"],
        customers_excluded=counts["customers_seen"] - counts["n_customers"],
        as_of=query.as_of,
        freq=freq,
        freq_multiplier=query.multiplier,
        calibration_end=calibration_end,
    )


def _date_sql(day: pd.Timestamp) -> str:
    return f"DATE '{day.date().isoformat()}'"


def _timestamp_sql(day: pd.Timestamp) -> str:
    return f"TIMESTAMP '{day.isoformat(sep=' ')}'"
