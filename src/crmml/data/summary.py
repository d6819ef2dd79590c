"""Per-customer RFM summaries (frequency, recency, T, monetary value) from DuckDB and NumPy.

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

Refunds by order: when the log has order ids (``read_transactions(..., order_col=...)``), a refund
whose order id names a purchase row of the same customer dated no later than the refund is netted in
its order's period instead of its own (its ``net_timestamp``, see :mod:`crmml.data.transactions`):
it reduces that period's net amount, and an order refunded in full leaves no occasion unless the
period holds other purchases. Each row still falls on the calibration, holdout or after-as-of side
by its own date, so a refund dated after ``as_of`` (or after the calibration end) is never netted
into the periods before it: that would use data from after the cutoff. Refunds whose order id is
blank or unknown follow the same-period rule above. :attr:`SummaryReport.refund_rows_netted_by_order`
counts the refunds netted by order.

As-of date
----------
Rows dated after the as-of date are excluded and counted; the as-of day itself is included.
lifetimes instead keeps every row of the as-of date's *period* (so with ``freq="W"`` it also keeps
the rest of the as-of week); the two agree whenever the as-of date ends a period, and always for
``freq="D"``.

Exact amounts
-------------
Each amount is rounded to 10 decimal places and summed exactly (as integers), so a refund of
0.1 + 0.2 by 0.3 nets to exactly 0 and the result does not depend on row order. Amounts must be
below 9.2e18 in absolute value, and a customer's absolute amounts must add up to less than 4.6e18.

How it is computed
------------------
DuckDB sorts the valid rows by customer and time (spilling to disk when the log does not fit its
memory limit) and streams them to NumPy in batches that never split a customer; each batch is
reduced to periods, then to customers. Memory therefore grows with the batch size and the number
of customers, not with the number of rows.

The purchase-occasion rule above stands once, in this module: :func:`purchase_occasions` yields
the same occasions batch by batch (one entry per customer and period, with its exact net amount)
for consumers that need more than the per-customer summary, such as
:func:`crmml.features.compute_features`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crmml.data.transactions import Transactions, as_transactions, duckdb_session
from crmml.errors import DataValidationError

__all__ = ["MAX_ABS_AMOUNT", "OccasionBatch", "SummaryReport", "calibration_holdout", "purchase_occasions",
           "rfm_summary"]

_Result = TypeVar("_Result")

_FREQS = ("D", "W", "M")
_MICROS_PER_DAY = 86_400_000_000

# Amounts are rounded to 10 decimal places and summed exactly in NumPy, each amount split into
# whole units and ten-billionths: amount = whole + frac / _SCALE.
_SCALE = 10**10
#: Whole units are int64: amounts at or beyond this (about 9.2e18) in absolute value cannot be summed exactly.
MAX_ABS_AMOUNT = 2.0**63
_MAX_WHOLE_SUM = 2.0**62  # bound on a customer's sum of |whole| that keeps every int64 sum exact

# Rows per Arrow batch streamed from DuckDB (a batch grows to hold a customer's rows whole).
_BATCH_ROWS = 1 << 17

# Segments a row falls into, by its day.
_CALIBRATION, _HOLDOUT, _AFTER_AS_OF = 0, 1, 2

# Row and customer counts summed over batches for the SummaryReport.
_COUNTS = (
    "rows_used",
    "refund_rows_netted",
    "rows_in_fully_refunded_periods",
    "unmatched_refund_rows",
    "refund_rows_netted_by_order",
    "rows_of_holdout_only_customers",
    "rows_after_as_of",
    "customers_seen",
)


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
    refund_rows_netted_by_order : int
        Refund rows netted in their order's period by order id (see the module docstring): a
        breakdown of the refund rows counted in ``refund_rows_netted``,
        ``rows_in_fully_refunded_periods`` and ``rows_of_holdout_only_customers``, not a part of
        ``rows_in`` of its own. Always 0 for a log without order ids.
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
    refund_rows_netted_by_order: int = 0

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
    allow_empty: bool = False,
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
    allow_empty : bool
        Return an empty frame, rather than raise, when no customer bought on or before ``as_of``.
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
    check_freq(freq)
    multiplier = positive_multiplier(freq_multiplier)
    as_of_day = as_day(as_of, "as_of") if as_of is not None else None
    log = as_transactions(transactions, **read_kwargs)
    if as_of_day is None:
        as_of_day = log.last_timestamp.normalize()
    cut = _Cut(freq, multiplier, as_of_day, as_of_day)
    spec = _Spec(
        cut, log.has_amount, include_first_transaction, with_holdout=False, with_counts=return_report
    )
    frame, counts = _summarise(log, spec)
    if not allow_empty:
        _check_not_empty(frame, log, "as_of", as_of_day)
    if not return_report:
        return frame
    return frame, _report(counts, log, cut, len(frame), calibration_end=None)


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
    check_freq(freq)
    multiplier = positive_multiplier(freq_multiplier)
    calibration_day = as_day(calibration_end, "calibration_end")
    holdout_day = as_day(holdout_end, "holdout_end") if holdout_end is not None else None
    log = as_transactions(transactions, **read_kwargs)
    if holdout_day is None:
        holdout_day = log.last_timestamp.normalize()
    if calibration_day >= holdout_day:
        raise ValueError(
            f"calibration_end ({calibration_day.date()}) must be before holdout_end "
            f"({holdout_day.date()})."
        )
    cut = _Cut(freq, multiplier, calibration_day, holdout_day)
    spec = _Spec(cut, log.has_amount, include_first=False, with_holdout=True, with_counts=return_report)
    frame, counts = _summarise(log, spec)
    _check_not_empty(frame, log, "calibration_end", calibration_day)
    if not return_report:
        return frame
    return frame, _report(counts, log, cut, len(frame), calibration_end=calibration_day)


@dataclass(frozen=True)
class OccasionBatch:
    """The purchase occasions of some customers, one entry per (customer, period).

    Entries are sorted by customer and period, and a batch holds every occasion of its customers.

    Attributes
    ----------
    customer_id : pyarrow.Array
        The batch's customers, sorted, each once.
    customer : numpy.ndarray
        Per occasion (int64): its customer's position in ``customer_id``.
    period : numpy.ndarray
        Per occasion (int64): the period number, in days since 1970-01-01 (``"D"``), weeks since
        Monday 1970-01-05 (``"W"``) or months since January of year 0 (``"M"``).
    net_amount : numpy.ndarray or None
        Per occasion (float64): the net amount, summed exactly and then rounded to a double as
        DuckDB casts DECIMAL(38, 10) to DOUBLE. None when the log has no amounts.
    n_rows : numpy.ndarray
        Per occasion (int64): its non-negative rows.
    n_refund_rows : numpy.ndarray
        Per occasion (int64): the refund rows netted into it.
    first_purchase, last_purchase : numpy.ndarray
        Per occasion (datetime64[us]): its earliest and latest non-negative rows.
    """

    customer_id: pa.Array
    customer: np.ndarray
    period: np.ndarray
    net_amount: np.ndarray | None
    n_rows: np.ndarray
    n_refund_rows: np.ndarray
    first_purchase: np.ndarray
    last_purchase: np.ndarray
    #: Per occasion (int64): the exact net amount as normalised whole units and ten-billionths (the
    #: parts :func:`rfm_summary` sums), or None without amounts; for exact sums over occasions.
    net_whole: np.ndarray | None = None
    net_frac: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.period)

    def repeat_mean_amount(self, starts: np.ndarray, frequency: np.ndarray) -> np.ndarray:
        """Per customer (occasions ``starts[k]`` onwards), the mean net amount of its repeat occasions
        (0 without any), summed exactly as :func:`rfm_summary`'s ``monetary_value``."""
        whole, frac = self.net_whole, self.net_frac
        repeat = _to_double(*_normalised(np.add.reduceat(whole, starts) - whole[starts],
                                         np.add.reduceat(frac, starts) - frac[starts]))
        return np.divide(repeat, frequency, out=np.zeros(len(frequency)), where=frequency > 0)


def purchase_occasions(
    transactions, *, as_of=None, freq: str = "D", **read_kwargs
) -> Iterator[OccasionBatch]:
    """Stream the purchase occasions on or before ``as_of``, batch by batch.

    These are exactly the occasions :func:`rfm_summary` counts with the same ``as_of`` and
    ``freq`` (see the module docstring for the refund policy), computed by the same code.

    Parameters
    ----------
    transactions : Transactions, pandas.DataFrame, str or pathlib.Path
        A validated log, or anything :func:`~crmml.data.read_transactions` accepts.
    as_of : date-like, optional
        The observation end (its day is included). Defaults to the day of the last transaction.
    freq : {"D", "W", "M"}
        Period length: day, week (Monday to Sunday) or calendar month.
    **read_kwargs
        Passed to :func:`~crmml.data.read_transactions` when ``transactions`` is not a
        :class:`~crmml.data.Transactions`.

    Returns
    -------
    iterator of OccasionBatch
        Sorted by customer and period; no customer spans two batches, and customers without an
        occasion do not appear. The log is read while the iterator is consumed.

    Raises
    ------
    DataValidationError
        When the log is invalid.
    """
    check_freq(freq)
    as_of_day = as_day(as_of, "as_of") if as_of is not None else None
    log = as_transactions(transactions, **read_kwargs)
    if as_of_day is None:
        as_of_day = log.last_timestamp.normalize()
    return _occasion_batches(log, _Cut(freq, 1.0, as_of_day, as_of_day))


def _occasion_batches(log: Transactions, cut: _Cut) -> Iterator[OccasionBatch]:
    for batch in _reduced_batches(log, cut, _occasion_batch):
        if len(batch):
            yield batch


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


def check_freq(freq: str) -> None:
    """Raise ValueError unless ``freq`` is one of the period lengths (D, W, M)."""
    if freq not in _FREQS:
        raise ValueError(f"freq must be one of {sorted(_FREQS)}. Got {freq!r} instead.")


def positive_multiplier(value) -> float:
    """``freq_multiplier`` as a float, or ValueError when it is not a positive finite number."""
    try:
        multiplier = float(value)
    except (TypeError, ValueError):
        multiplier = float("nan")
    if not multiplier > 0 or multiplier == float("inf"):
        raise ValueError(f"freq_multiplier must be a positive finite number. Got {value!r} instead.")
    return multiplier


def _check_not_empty(frame: pd.DataFrame, log: Transactions, name: str, day: pd.Timestamp) -> None:
    if frame.empty:
        start = "" if log.first_timestamp is None else f" (the data start on {log.first_timestamp.date()})"
        raise DataValidationError(f"No customer has a purchase on or before {name}={day.date()}{start}.")


def as_day(value, name: str) -> pd.Timestamp:
    """A date-like argument as a naive midnight timestamp (time-zone-aware values go to UTC).

    Every as-of and window boundary in crmml goes through this, so they all mean the same day.
    """
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
# Periods and segments
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cut:
    """How one summary cuts time: period length and the calibration / holdout / after segments."""

    freq: str
    multiplier: float
    calibration_end: pd.Timestamp
    as_of: pd.Timestamp

    def periods(self, micros: np.ndarray) -> np.ndarray:
        return period_numbers(micros, self.freq)

    def period_of(self, day: pd.Timestamp) -> int:
        return int(self.periods(np.array([_micros(day)]))[0])

    def segments(self, micros: np.ndarray) -> np.ndarray | None:
        """Segment of each timestamp (each end day included), or None when all are calibration."""
        calibration_limit = _micros(self.calibration_end) + _MICROS_PER_DAY
        if len(micros) == 0 or micros.max() < calibration_limit:
            return None
        after_as_of = micros >= _micros(self.as_of) + _MICROS_PER_DAY
        return (micros >= calibration_limit).astype(np.int8) + after_as_of

    def scaled(self, periods) -> np.ndarray:
        """Whole periods divided by the multiplier."""
        return np.asarray(periods).astype(np.float64) / self.multiplier


def period_numbers(micros: np.ndarray, freq: str) -> np.ndarray:
    """Period numbers of timestamps given in microseconds since 1970 (int64): days since 1970-01-01,
    weeks since Monday 1970-01-05 (weeks run Monday to Sunday, as pandas' W-SUN), or months since
    January of year 0."""
    days = micros // _MICROS_PER_DAY
    if freq == "D":
        return days
    if freq == "W":
        return (days - 4) // 7
    return micros.view("datetime64[us]").astype("datetime64[M]").astype(np.int64) + 1970 * 12


def _micros(day: pd.Timestamp) -> int:
    return int(day.to_datetime64().astype("datetime64[us]").astype(np.int64))


# --------------------------------------------------------------------------------------------------
# Exact amounts: whole units and ten-billionths in two int64 arrays
# --------------------------------------------------------------------------------------------------


def _split_amounts(amount: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round amounts to 10 decimal places and split them exactly into ``whole`` and ``frac``
    (rounded amount = whole + frac / 1e10, 0 <= frac < 1e10).

    The rounding is DuckDB's cast of a DOUBLE to DECIMAL(38, 10): amount * 1e10 in double
    precision, rounded half away from zero.
    """
    too_large = ~(np.abs(amount) < MAX_ABS_AMOUNT)  # before scaling: * 1e10 would overflow beyond 1.8e298
    if too_large.any():
        raise DataValidationError(
            "Amounts must be below 9.2e18 in absolute value to be summed exactly. "
            f"Got {amount[too_large][0]:.6g}.",
            column="amount",
        )
    scaled = amount * float(_SCALE)
    units = np.trunc(scaled)
    scaled -= units  # the remainder, exact
    units += scaled >= 0.5
    units -= scaled <= -0.5
    if np.abs(units).max(initial=0.0) < 2.0**63:
        whole, frac = np.divmod(units.astype(np.int64), _SCALE)
    else:  # some |amount| >= 9.2e8: those rows (usually few) in Python integers
        beyond = np.abs(units) >= 2.0**63
        whole, frac = np.divmod(np.where(beyond, 0.0, units).astype(np.int64), _SCALE)
        for row in np.flatnonzero(beyond):
            whole[row], frac[row] = _whole_and_frac(int(units[row]))
    return whole, frac


def _whole_and_frac(units: int) -> tuple[int, int]:
    whole, frac = divmod(units, _SCALE)
    if not -(2**63) <= whole < 2**63:  # the rounding carried an amount just below the limit over it
        raise DataValidationError(
            "Amounts must be below 9.2e18 in absolute value to be summed exactly. "
            f"Got {units / _SCALE:.6g}.",
            column="amount",
        )
    return whole, frac


def _normalised(whole: np.ndarray, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same amounts with 0 <= frac < 1e10."""
    carry = frac // _SCALE
    return whole + carry, frac - carry * _SCALE


def _is_positive(whole: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """For normalised amounts."""
    return (whole > 0) | ((whole == 0) & (frac > 0))


def _to_double(whole: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Normalised amounts as doubles, as DuckDB casts DECIMAL(38, 10) to DOUBLE: units / 1e10 when
    |units| <= 2**53, otherwise integer part + fraction / 1e10 (both truncated toward zero)."""
    small = np.abs(whole) < 2**53 // _SCALE + 1  # units then fit in int64
    units = np.where(small, whole, 0) * _SCALE + np.where(small, frac, 0)
    borrow = (whole < 0) & (frac > 0)
    split = (whole + borrow).astype(np.float64) + (frac - borrow * _SCALE) / _SCALE
    return np.where(small & (np.abs(units) <= 2**53), units / _SCALE, split)


# --------------------------------------------------------------------------------------------------
# From sorted rows to periods to customers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """What one summary computes."""

    cut: _Cut
    has_amount: bool
    include_first: bool
    with_holdout: bool
    with_counts: bool


@dataclass(frozen=True)
class _Rows:
    """A batch of valid rows sorted by customer and time, holding every row of its customers."""

    ids: pa.Array
    micros: np.ndarray
    whole: np.ndarray | None = None  # rounded amounts (see _split_amounts); None without amounts
    frac: np.ndarray | None = None
    is_refund: np.ndarray | None = None  # None when the batch has no refund
    # Refunds netted by order: the time whose period each row nets into, and which rows were moved
    # there; both None when no row of the batch is.
    net_micros: np.ndarray | None = None
    by_order: np.ndarray | None = None

    @classmethod
    def from_batch(cls, batch: pa.RecordBatch, has_amount: bool) -> _Rows:
        ids = batch.column(0)
        micros = batch.column(1).cast(pa.timestamp("us")).to_numpy().view(np.int64)
        if not has_amount:
            return cls(ids, micros)
        amount = batch.column(2).to_numpy()
        is_refund = amount < 0
        net_micros = by_order = None
        if "net_timestamp" in batch.schema.names:
            net_micros = batch.column("net_timestamp").cast(pa.timestamp("us")).to_numpy().view(np.int64)
            by_order = net_micros != micros
            if not by_order.any():
                net_micros = by_order = None
        rows = cls(ids, micros, *_split_amounts(amount), is_refund if is_refund.any() else None, net_micros,
                   by_order)
        rows.check_sums_are_exact()
        return rows

    @property
    def period_micros(self) -> np.ndarray:
        """The time whose period each row's amount nets into (its own, or its order's)."""
        return self.micros if self.net_micros is None else self.net_micros

    def grouped(self, cut: _Cut) -> _Rows:
        """The rows reordered so that each (customer, period, segment) is contiguous.

        Rows come sorted by customer and net time; a refund netted by order keeps its own segment
        (by its own date), so it can sit among its period's rows of another segment. A stable sort
        on the group key keeps each group's rows in time order.
        """
        if self.net_micros is None:
            return self
        segment = cut.segments(self.micros)
        key = cut.periods(self.net_micros) * 3 + (0 if segment is None else segment)
        order = np.lexsort((key, np.cumsum(self.new_customer())))
        if np.array_equal(order, np.arange(len(order))):
            return self

        def take(values):
            return None if values is None else values[order]

        return _Rows(self.ids.take(pa.array(order)), self.micros[order], take(self.whole), take(self.frac),
                     take(self.is_refund), self.net_micros[order], self.by_order[order])

    def check_sums_are_exact(self) -> None:
        """Amounts are only summed within a customer: check that no int64 sum can overflow."""
        magnitude = np.abs(self.whole).astype(np.float64)
        if magnitude.sum() < _MAX_WHOLE_SUM:
            return
        starts = np.flatnonzero(self.new_customer())
        by_customer = np.add.reduceat(magnitude, starts)
        worst = int(by_customer.argmax())
        if by_customer[worst] >= _MAX_WHOLE_SUM:
            raise DataValidationError(
                "Amounts are too large to be summed exactly: the absolute amounts of customer "
                f"{self.ids[int(starts[worst])].as_py()!r} add up to more than {_MAX_WHOLE_SUM:.1e}.",
                column="amount",
            )

    def new_customer(self) -> np.ndarray:
        """True on each customer's first row."""
        n = len(self.ids)
        first = np.ones(n, dtype=bool)
        if n > 1 and pa.types.is_integer(self.ids.type):
            values = self.ids.to_numpy()
            np.not_equal(values[1:], values[:-1], out=first[1:])
        elif n > 1:
            differs = pc.not_equal(self.ids.slice(1), self.ids.slice(0, n - 1))
            first[1:] = differs.to_numpy(zero_copy_only=False)
        return first


@dataclass(frozen=True)
class _Periods:
    """One entry per (customer, period, segment) of a batch of rows, in row order."""

    customer: np.ndarray  # customer number within the batch
    first_row: np.ndarray
    period: np.ndarray
    segment: np.ndarray | None  # None when all are calibration
    n_rows: np.ndarray
    n_refund_rows: np.ndarray | None  # None when there is no refund
    whole: np.ndarray | None  # net amount (not normalised); None without amounts
    frac: np.ndarray | None
    first_purchase: np.ndarray  # microseconds; meaningless in periods holding only refunds
    last_purchase: np.ndarray
    n_customers: int
    n_by_order: np.ndarray | None = None  # refund rows netted here by order; None when there are none

    @classmethod
    def from_rows(cls, rows: _Rows, cut: _Cut) -> _Periods:
        n = len(rows.micros)
        new_customer = rows.new_customer()
        period, segment = cut.periods(rows.period_micros), cut.segments(rows.micros)
        key = period if segment is None else period * 3 + segment
        new_period = new_customer.copy()
        new_period[1:] |= key[1:] != key[:-1]
        starts = np.flatnonzero(new_period)
        n_rows = np.diff(starts, append=n)
        first_purchase, last_purchase = rows.micros[starts], rows.micros[starts + n_rows - 1]
        whole = frac = n_refund_rows = None
        if rows.whole is not None:
            whole, frac = np.add.reduceat(rows.whole, starts), np.add.reduceat(rows.frac, starts)
        if rows.is_refund is not None:  # purchase times skip refund rows
            n_refund_rows = np.add.reduceat(rows.is_refund, starts, dtype=np.int64)
            never, always = np.iinfo(np.int64).max, np.iinfo(np.int64).min
            first_purchase = np.minimum.reduceat(np.where(rows.is_refund, never, rows.micros), starts)
            last_purchase = np.maximum.reduceat(np.where(rows.is_refund, always, rows.micros), starts)
        customer = np.cumsum(new_customer)[starts] - 1
        n_customers = int(customer[-1]) + 1 if n else 0
        n_by_order = None if rows.by_order is None else np.add.reduceat(rows.by_order, starts, dtype=np.int64)
        return cls(
            customer, starts, period[starts], None if segment is None else segment[starts], n_rows,
            n_refund_rows, whole, frac, first_purchase, last_purchase, n_customers, n_by_order,
        )

    def in_segment(self, segment: int) -> np.ndarray:
        if self.segment is None:
            return np.full(len(self.period), segment == _CALIBRATION)
        return self.segment == segment

    def in_window(self) -> np.ndarray:
        """Periods on or before the as-of date."""
        if self.segment is None:
            return np.ones(len(self.period), dtype=bool)
        return self.segment <= _HOLDOUT

    def is_occasion(self) -> np.ndarray:
        """Purchase occasions: a purchase, and a positive net amount or no refund."""
        occasion = self.in_window()
        if self.n_refund_rows is not None:
            occasion &= self.n_rows > self.n_refund_rows
            netted = np.flatnonzero(occasion & (self.n_refund_rows > 0))
            occasion[netted] = _is_positive(*_normalised(self.whole[netted], self.frac[netted]))
        return occasion

    def is_refund_only(self) -> np.ndarray:
        if self.n_refund_rows is None:
            return np.zeros(len(self.period), dtype=bool)
        return self.in_window() & (self.n_rows == self.n_refund_rows)


@dataclass(frozen=True)
class _Occasions:
    """Purchase occasions of one segment, per customer who has any."""

    customer: np.ndarray
    first: np.ndarray  # index (into _Periods) of each customer's first occasion
    last: np.ndarray
    count: np.ndarray
    whole: np.ndarray | None  # total net amount (not normalised); None without amounts
    frac: np.ndarray | None

    @classmethod
    def of(cls, periods: _Periods, selected: np.ndarray) -> _Occasions:
        index = np.flatnonzero(selected)
        everything = len(index) == len(selected)

        def pick(values: np.ndarray) -> np.ndarray:
            return values if everything else values[index]

        customer = pick(periods.customer)
        new = np.ones(len(index), dtype=bool)
        np.not_equal(customer[1:], customer[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        count = np.diff(starts, append=len(index))
        whole = frac = None
        if periods.whole is not None and len(starts):
            whole = np.add.reduceat(pick(periods.whole), starts)
            frac = np.add.reduceat(pick(periods.frac), starts)
        elif periods.whole is not None:
            whole = frac = np.zeros(0, dtype=np.int64)
        return cls(customer[starts], index[starts], index[starts + count - 1], count, whole, frac)

    def total(self) -> np.ndarray:
        return _to_double(*_normalised(self.whole, self.frac))


def _occasion_batch(rows: _Rows, periods: _Periods, occasion: np.ndarray) -> OccasionBatch:
    """The purchase occasions of one batch (``occasion`` from :meth:`_Periods.is_occasion`)."""
    index = np.flatnonzero(occasion)
    customer = periods.customer[index]
    new = np.ones(len(index), dtype=bool)
    np.not_equal(customer[1:], customer[:-1], out=new[1:])
    net = whole = frac = None
    if periods.whole is not None:
        whole, frac = _normalised(periods.whole[index], periods.frac[index])
        net = _to_double(whole, frac)
    n_refund_rows = np.zeros(len(index), dtype=np.int64)
    if periods.n_refund_rows is not None:
        n_refund_rows = periods.n_refund_rows[index]
    return OccasionBatch(
        customer_id=rows.ids.take(periods.first_row[index[new]]),
        customer=np.cumsum(new) - 1,
        period=periods.period[index],
        net_amount=net,
        n_rows=periods.n_rows[index] - n_refund_rows,
        n_refund_rows=n_refund_rows,
        first_purchase=periods.first_purchase[index].view("datetime64[us]"),
        last_purchase=periods.last_purchase[index].view("datetime64[us]"),
        net_whole=whole,
        net_frac=frac,
    )


def _summarise_rows(
    rows: _Rows, periods: _Periods, occasion: np.ndarray, spec: _Spec
) -> tuple[dict, dict[str, int]]:
    """Summary columns for the customers of one batch, and (when asked) its report counts."""
    calibration = _Occasions.of(periods, occasion & periods.in_segment(_CALIBRATION))
    columns = {"customer_id": rows.ids.take(periods.first_row[calibration.first])}
    columns.update(_calibration_columns(periods, calibration, spec))
    if spec.with_holdout:
        holdout = _Occasions.of(periods, occasion & periods.in_segment(_HOLDOUT))
        columns.update(_holdout_columns(calibration, holdout, spec))
    counts = _report_counts(periods, occasion, calibration) if spec.with_counts else {}
    return columns, counts


def _calibration_columns(periods: _Periods, occasions: _Occasions, spec: _Spec) -> dict:
    suffix, cut = ("_cal" if spec.with_holdout else ""), spec.cut
    first_period = periods.period[occasions.first]
    counted = occasions.count if spec.include_first else occasions.count - 1
    columns = {
        f"frequency{suffix}": counted.astype(np.float64),
        f"recency{suffix}": cut.scaled(periods.period[occasions.last] - first_period),
        f"T{suffix}": cut.scaled(cut.period_of(cut.calibration_end) - first_period),
    }
    if spec.has_amount and spec.include_first:
        columns[f"monetary_value{suffix}"] = occasions.total() / occasions.count
    elif spec.has_amount:  # the repeat occasions: the exact total less the first occasion's amount
        repeat_whole = occasions.whole - periods.whole[occasions.first]
        repeat = _to_double(*_normalised(repeat_whole, occasions.frac - periods.frac[occasions.first]))
        mean = np.divide(repeat, counted, out=np.zeros(len(counted)), where=counted > 0)
        columns[f"monetary_value{suffix}"] = mean
    columns["first_purchase"] = periods.first_purchase[occasions.first]
    columns[f"last_purchase{suffix}"] = periods.last_purchase[occasions.last]
    return columns


def _holdout_columns(calibration: _Occasions, holdout: _Occasions, spec: _Spec) -> dict:
    """Holdout occasions of the calibration customers (0 for those without any)."""
    position = np.searchsorted(holdout.customer, calibration.customer)
    found = position < len(holdout.customer)
    found[found] = holdout.customer[position[found]] == calibration.customer[found]
    position = position[found]
    count = np.zeros(len(found))
    count[found] = holdout.count[position]
    columns = {"frequency_holdout": count}
    if spec.has_amount:
        spend, mean = np.zeros(len(found)), np.zeros(len(found))
        spend[found] = holdout.total()[position]
        mean[found] = spend[found] / holdout.count[position]
        columns.update(spend_holdout=spend, monetary_value_holdout=mean)
    duration = spec.cut.period_of(spec.cut.as_of) - spec.cut.period_of(spec.cut.calibration_end)
    columns["duration_holdout"] = np.full(len(found), spec.cut.scaled(duration))
    return columns


def _report_counts(periods: _Periods, occasion: np.ndarray, calibration: _Occasions) -> dict[str, int]:
    returned = np.zeros(periods.n_customers, dtype=bool)
    returned[calibration.customer] = True
    returned = returned[periods.customer]
    n_refund_rows = periods.n_refund_rows
    if n_refund_rows is None:
        n_refund_rows = np.zeros_like(periods.n_rows)
    refund_only = periods.is_refund_only()
    fully_refunded = periods.in_window() & ~occasion & ~refund_only
    counts = {
        "rows_used": (periods.n_rows - n_refund_rows)[occasion & returned].sum(),
        "refund_rows_netted": n_refund_rows[occasion & returned].sum(),
        "rows_in_fully_refunded_periods": periods.n_rows[fully_refunded].sum(),
        "unmatched_refund_rows": periods.n_rows[refund_only].sum(),
        "refund_rows_netted_by_order": (
            0 if periods.n_by_order is None else periods.n_by_order[periods.in_window() & ~refund_only].sum()
        ),
        "rows_of_holdout_only_customers": periods.n_rows[occasion & ~returned].sum(),
        "rows_after_as_of": periods.n_rows[periods.in_segment(_AFTER_AS_OF)].sum(),
        "customers_seen": periods.n_customers,
    }
    return {name: int(value) for name, value in counts.items()}


# --------------------------------------------------------------------------------------------------
# Running a summary
# --------------------------------------------------------------------------------------------------


def _summarise(log: Transactions, spec: _Spec) -> tuple[pd.DataFrame, dict[str, int]]:
    """Stream the sorted log batch by batch; return the summary frame and the report counts."""

    def summarise(rows: _Rows, periods: _Periods, occasion: np.ndarray) -> tuple[dict, dict[str, int]]:
        return _summarise_rows(rows, periods, occasion, spec)

    parts, counts = [], dict.fromkeys(_COUNTS, 0)
    for columns, batch_counts in _reduced_batches(log, spec.cut, summarise):
        parts.append(columns)
        for name, value in batch_counts.items():
            counts[name] += value
    if not parts:  # no valid row: the columns of an empty batch
        empty = pa.record_batch(
            [pa.array([], pa.int64()), pa.array([], pa.timestamp("us")), pa.array([], pa.float64())],
            names=["customer_id", "timestamp", "amount"],
        )
        parts.append(summarise(*_periods_of(empty, log.has_amount, spec.cut))[0])
    return _frame(parts), counts


def _reduced_batches(
    log: Transactions, cut: _Cut, reduce: Callable[[_Rows, _Periods, np.ndarray], _Result]
) -> Iterator[_Result]:
    """Stream the sorted log and yield ``reduce(rows, periods, occasion)`` for each batch.

    The one place that decides purchase occasions, for the summaries and for
    :func:`purchase_occasions`. Each batch's rows and periods are freed before the next is read.
    """
    # DuckDB and NumPy cannot reuse memory that Arrow's allocator keeps cached (after
    # pandas.read_parquet, for example): hand it back to the system before the sort.
    kept = log.kept_sorted_batches()
    if kept is not None:  # rows in memory, sorted: a request's (InMemoryTransactions, no query plan for a
        # few rows) or a log's read once already (Transactions.kept_in_memory)
        for batch in kept:
            yield reduce(*_periods_of(batch, log.has_amount, cut))
        return
    pa.default_memory_pool().release_unused()
    keeping = [] if log.keeps_rows_in_memory else None
    with duckdb_session() as con:
        log.create_views(con)
        for batch in _customer_batches(con, log.has_amount, getattr(log, "has_order", False)):
            if keeping is not None:
                keeping.append(batch)
            yield reduce(*_periods_of(batch, log.has_amount, cut))
    if keeping is not None:
        log.keep_sorted_batches(keeping)


def _periods_of(batch: pa.RecordBatch, has_amount: bool, cut: _Cut) -> tuple[_Rows, _Periods, np.ndarray]:
    """A batch's rows, its periods and which periods are purchase occasions."""
    rows = _Rows.from_batch(batch, has_amount).grouped(cut)
    periods = _Periods.from_rows(rows, cut)
    return rows, periods, periods.is_occasion()


def _customer_batches(
    con: duckdb.DuckDBPyConnection, has_amount: bool, has_order: bool = False
) -> Iterator[pa.RecordBatch]:
    """The valid rows sorted by customer and time, in Arrow batches that never split a customer.

    With order ids the rows carry ``net_timestamp`` and are sorted by it (then by time), so that a
    refund netted by order sits with its order's period.
    """
    amount = ", amount" if has_amount else ""
    if has_amount and has_order:
        sql = ("SELECT customer_id, timestamp, amount, net_timestamp FROM crmml_transactions "
               "ORDER BY customer_id, net_timestamp, timestamp")
    else:
        sql = f"SELECT customer_id, timestamp{amount} FROM crmml_transactions ORDER BY customer_id, timestamp"
    pending, n_pending = [], 0
    for batch in con.sql(sql).to_arrow_reader(_BATCH_ROWS):
        pending.append(batch)
        n_pending += batch.num_rows
        if n_pending < _BATCH_ROWS:
            continue
        batch = pa.concat_batches(pending)
        ids = batch.column(0)
        cut = pc.index(ids, ids[-1]).as_py()  # the last customer may go on in the next batch
        if cut > 0:
            yield batch.slice(0, cut)
        pending, n_pending = [batch.slice(cut)], batch.num_rows - cut
    if n_pending:
        yield pa.concat_batches(pending)


def _frame(parts: list[dict]) -> pd.DataFrame:
    """Join the batches' columns into the summary frame, indexed by customer_id."""
    ids = pa.concat_arrays([part["customer_id"] for part in parts])
    columns = {name: np.concatenate([part[name] for part in parts]) for name in parts[0] if name != "customer_id"}
    times = [name for name in columns if name.startswith(("first_purchase", "last_purchase"))]
    if len(ids) and ids.type == pa.int64() and ids.null_count == 0 and not any((columns[t] == _INT64_MIN).any() for t in times):
        # the usual case, framed from NumPy (as Arrow would: times as datetime64[us])
        for name in times:
            columns[name] = columns[name].view("datetime64[us]")
        return pd.DataFrame(columns, index=pd.Index(ids.to_numpy(), name="customer_id"))
    table = {"customer_id": ids}
    for name, values in columns.items():
        table[name] = pa.array(values, type=pa.timestamp("us")) if name in times else values
    return pa.table(table).to_pandas(split_blocks=True).set_index("customer_id")


_INT64_MIN = np.iinfo(np.int64).min  # NumPy's NaT, a timestamp for Arrow: such columns go through Arrow


def _report(
    counts: dict[str, int], log: Transactions, cut: _Cut, n_customers: int, calibration_end
) -> SummaryReport:
    return SummaryReport(
        rows_in=log.report.rows_in,
        rows_used=counts["rows_used"],
        refund_rows_netted=counts["refund_rows_netted"],
        rows_in_fully_refunded_periods=counts["rows_in_fully_refunded_periods"],
        unmatched_refund_rows=counts["unmatched_refund_rows"],
        refund_rows_netted_by_order=counts["refund_rows_netted_by_order"],
        rows_of_holdout_only_customers=counts["rows_of_holdout_only_customers"],
        rows_after_as_of=counts["rows_after_as_of"],
        rows_rejected=log.report.rows_rejected,
        n_customers=n_customers,
        customers_excluded=counts["customers_seen"] - n_customers,
        as_of=cut.as_of,
        freq=cut.freq,
        freq_multiplier=cut.multiplier,
        calibration_end=calibration_end,
    )
