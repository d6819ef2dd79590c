"""The scoring core's input: one row per customer as NumPy columns (:class:`CustomerRows`).

:func:`customer_rows` is the one function that turns a transaction log (plus an optional customer
table and RFM summaries) into per-customer features at an as-of date, for one customer as for a
million: the data layer's daily purchase occasions (:func:`crmml.data.summary.purchase_occasions`,
sorted by customer) are reduced per customer with segment reductions (``np.bincount`` and
``ufunc.reduceat`` over the occasion arrays) by :func:`history_columns`; summaries and the customer
table (:func:`crmml.customer_table.table_arrays`) are joined by id. pandas is used only to read a
user's frames. :func:`crmml.features.compute_features` frames these rows for training and users.

The feature definitions are those of :mod:`crmml.features`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from crmml.customer_table import TableArrays
from crmml.data.summary import _check_not_empty, purchase_occasions
from crmml.errors import DataValidationError

__all__ = ["CustomerRows", "TREND_DAYS", "check_windows", "customer_rows", "feature_columns", "history_columns",
           "join_table"]

#: Days of the two windows the trend features compare (the last ``TREND_DAYS`` against the ones before).
TREND_DAYS = 90
_N_SUMMARY_COLUMNS = 7  # feature_columns' leading columns that come from the RFM summary


def check_windows(windows_days) -> list[int]:
    """``windows_days`` as a list of positive whole days, or ValueError."""
    windows = list(windows_days)
    if not windows or any(
        isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w <= 0 for w in windows
    ):
        raise ValueError(f"windows_days must be positive whole numbers of days. Got {windows_days!r} instead.")
    if len(set(windows)) != len(windows):
        raise ValueError(f"windows_days must not repeat a length. Got {windows_days!r} instead.")
    return [int(w) for w in windows]


def feature_columns(windows_days: Sequence[int] = (30, 90, 180, 365)) -> list[str]:
    """The purchase-history columns of :func:`crmml.features.compute_features`, in order (no BTYD or
    table columns)."""
    windows = check_windows(windows_days)
    return [
        "frequency",
        "recency_days",
        "age_days",
        "monetary_value",
        "days_since_last_purchase",
        "mean_gap_days",
        "gap_ratio",
        "gap_std_days",
        "gap_max_days",
        *[f"purchases_last_{w}d" for w in windows],
        *[f"spend_last_{w}d" for w in windows],
        f"purchases_trend_{TREND_DAYS}d",
        f"spend_trend_{TREND_DAYS}d",
        "total_spend",
        "first_purchase_amount",
    ]


@dataclass
class CustomerRows:
    """Per-customer features as columns (the rows of :func:`crmml.features.compute_features`).

    Attributes
    ----------
    ids : numpy.ndarray
        Customer ids, sorted (in the order given when they do not sort).
    numbers : dict of str to numpy.ndarray
        Float columns: the purchase-history features, then numeric attributes (and model columns
        when added).
    no_history : numpy.ndarray
        Bool: customers without a purchase (table customers who have not bought yet).
    categories : dict of str to (numpy.ndarray, pandas.Index)
        Categorical attributes: codes (-1 unknown) into categories.
    attributes : list of str
        The attribute columns, in order.
    attrs : dict
        ``as_of`` and, with a customer table, ``customers_signed_up_after_as_of`` and
        ``dropped_customer_columns``.
    from_summary : numpy.ndarray or None
        Bool: rows given as RFM summaries.
    """

    ids: np.ndarray
    numbers: dict
    no_history: np.ndarray
    categories: dict = field(default_factory=dict)
    attributes: list = field(default_factory=list)
    attrs: dict = field(default_factory=dict)
    from_summary: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, name: str) -> np.ndarray:
        """A float column, or ``no_purchase_history``."""
        if name == "no_purchase_history":
            return self.no_history
        return self.numbers[name]

    def __contains__(self, name: str) -> bool:
        return name in self.numbers or name in self.categories or name == "no_purchase_history"

    def to_frame(self, history: Sequence[str], models: Sequence[str] = ()) -> pd.DataFrame:
        """The :func:`~crmml.features.compute_features` frame: ``history`` and ``models`` columns,
        ``no_purchase_history``, then the attributes."""
        columns: dict[str, object] = {name: self.numbers[name] for name in [*history, *models]}
        columns["no_purchase_history"] = self.no_history
        for name in self.attributes:
            if name in self.categories:
                codes, categories = self.categories[name]
                columns[name] = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(categories))
            else:
                columns[name] = self.numbers[name]
        frame = pd.DataFrame(columns, index=pd.Index(self.ids, name="customer_id"), copy=False)
        frame.attrs = dict(self.attrs)
        return frame

    @classmethod
    def from_frame(cls, features: pd.DataFrame) -> CustomerRows:
        """Rows of a :func:`~crmml.features.compute_features` frame (or Spark's equivalent)."""
        columns = list(features.columns)
        at = columns.index("no_purchase_history") if "no_purchase_history" in columns else len(columns)
        numbers, categories, attributes = {}, {}, columns[at + 1:]
        for name in columns:
            if name == "no_purchase_history":
                continue
            column = features[name]
            if isinstance(column.dtype, pd.CategoricalDtype):
                categories[name] = (column.cat.codes.to_numpy(), column.cat.categories)
            elif pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
                numbers[name] = column.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                category = column.astype("category").array
                categories[name] = (np.asarray(category.codes), category.categories)
        no_history = (features["no_purchase_history"].to_numpy(dtype=bool) if at < len(columns)
                      else np.zeros(len(features), dtype=bool))
        return cls(features.index.to_numpy(), numbers, no_history, categories, attributes, dict(features.attrs))


# --------------------------------------------------------------------------------------------------
# Purchase history: one function over occasions sorted by customer
# --------------------------------------------------------------------------------------------------


def history_columns(customer: np.ndarray, days_before: np.ndarray, net: np.ndarray | None, n: int,
                    windows: list[int], repeat_mean=None) -> dict[str, np.ndarray]:
    """The purchase-history features of ``n`` customers from their purchase days.

    Parameters
    ----------
    customer : numpy.ndarray
        Per purchase day, its customer's position (0..n-1), sorted ascending; every customer has
        at least one day.
    days_before : numpy.ndarray
        Per purchase day, days before the as-of day (0 on it), descending within a customer.
    net : numpy.ndarray or None
        Per purchase day, the net amount; None when the log has no amounts.
    n : int
    windows : list of int
    repeat_mean : callable, optional
        ``repeat_mean(starts, frequency)``: the mean repeat amount summed exactly (see
        :meth:`crmml.data.summary.OccasionBatch.repeat_mean_amount`); default: the days' net
        amounts summed as doubles.

    Returns
    -------
    dict of str to numpy.ndarray
        :func:`feature_columns` in order, float64.
    """
    days = len(customer)
    first = np.ones(days, dtype=bool)
    np.not_equal(customer[1:], customer[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], days] - 1
    count = (ends - starts + 1).astype(np.float64)
    frequency = count - 1
    age = days_before[starts].astype(np.float64)
    recency = age - days_before[ends]
    has_gap = frequency > 0
    since_last, mean_gap, gap_ratio = gap_columns(frequency, recency, age)
    repeat = ~first

    def count_where(mask: np.ndarray) -> np.ndarray:
        return np.bincount(customer[mask], minlength=n).astype(np.float64)

    def spend_where(mask: np.ndarray | None) -> np.ndarray:
        if net is None:
            return np.full(n, np.nan)
        if mask is None:
            return np.bincount(customer, weights=net, minlength=n)
        return np.bincount(customer[mask], weights=net[mask], minlength=n)

    money = np.full(n, np.nan)
    if net is not None and repeat_mean is not None:
        money = repeat_mean(starts, frequency)
    elif net is not None:
        money = np.divide(spend_where(repeat), frequency, out=np.zeros(n), where=has_gap)
    # gaps between consecutive purchase days of a customer, on the row of the later day
    gaps = np.zeros(days, dtype=np.float64)
    gaps[1:] = days_before[:-1] - days_before[1:]
    gap_std, gap_max = np.full(n, np.nan), np.full(n, np.nan)
    if repeat.any():
        who, gap = customer[repeat], gaps[repeat]
        gap_std[has_gap] = _welford_std(who, gap, n)[has_gap]
        gaps[first] = -np.inf  # (a customer's first day has no gap)
        gap_max[has_gap] = np.maximum.reduceat(gaps, starts)[has_gap]
    columns = {
        "frequency": frequency,
        "recency_days": recency,
        "age_days": age,
        "monetary_value": money,
        "days_since_last_purchase": since_last,
        "mean_gap_days": mean_gap,
        "gap_ratio": gap_ratio,
        "gap_std_days": gap_std,
        "gap_max_days": gap_max,
    }
    for w in windows:
        columns[f"purchases_last_{w}d"] = count_where(days_before < w)
    for w in windows:
        columns[f"spend_last_{w}d"] = spend_where(days_before < w)
    recent, previous = days_before < TREND_DAYS, (days_before >= TREND_DAYS) & (days_before < 2 * TREND_DAYS)
    columns[f"purchases_trend_{TREND_DAYS}d"] = count_where(recent) - count_where(previous)
    columns[f"spend_trend_{TREND_DAYS}d"] = spend_where(recent) - spend_where(previous)
    columns["total_spend"] = spend_where(None)
    columns["first_purchase_amount"] = net[starts].astype(np.float64) if net is not None else np.full(n, np.nan)
    return columns


def _welford_std(who: np.ndarray, gap: np.ndarray, n: int) -> np.ndarray:
    """Per customer, the population standard deviation of its gaps (in day order) by Welford's update
    in pandas' own form (``groupby().std(ddof=0)``, as the Spark engine folds it): ``mean += (x -
    mean) / k``, ``m2 += (x - new mean) * (x - old mean)``, ``sqrt(m2 / k)``; every customer's k-th
    gap is folded in one vectorised step."""
    rank = np.arange(len(who)) - np.searchsorted(who, who, side="left")  # gap number within its customer
    order = np.argsort(rank, kind="stable")
    counts = np.bincount(rank)
    mean, m2, k = np.zeros(n), np.zeros(n), np.zeros(n)
    at = 0
    for step, size in enumerate(counts.tolist(), start=1):
        take = order[at:at + size]
        at += size
        c, x = who[take], gap[take]
        old = mean[c]
        new = old + (x - old) / float(step)
        m2[c] = m2[c] + (x - new) * (x - old)
        mean[c] = new
        k[c] = step
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(m2 / k)


def _history(log, as_of_day: pd.Timestamp, windows: list[int]) -> tuple[np.ndarray, dict]:
    """Ids and :func:`history_columns` of every customer with a purchase day on or before as_of."""
    as_of_period = int(as_of_day.to_datetime64().astype("datetime64[D]").astype(np.int64))
    ids, parts = [], []
    for batch in purchase_occasions(log, as_of=as_of_day, freq="D"):
        net = batch.net_amount if log.has_amount else None
        exact = batch.repeat_mean_amount if net is not None and batch.net_whole is not None else None
        parts.append(history_columns(batch.customer, as_of_period - batch.period, net, len(batch.customer_id),
                                     windows, exact))
        ids.append(batch.customer_id)
    names = feature_columns(windows)
    if not parts:
        return np.empty(0, dtype=np.int64), {name: np.empty(0) for name in names}
    if len(parts) == 1:
        return _id_array(ids[0]), parts[0]
    return _id_array(pa.concat_arrays(ids)), {name: np.concatenate([p[name] for p in parts]) for name in names}


def _id_array(ids: pa.Array) -> np.ndarray:
    return ids.to_numpy(zero_copy_only=False)


# --------------------------------------------------------------------------------------------------
# RFM summaries
# --------------------------------------------------------------------------------------------------


GAP_RATIO_CAP = 1e6
"""Largest ``gap_ratio``: days since the last purchase over the mean gap. Whole-day logs never reach
it (the ratio is at most the age in days); an RFM summary with a sub-second recency would otherwise
give an infinite ratio that no learner accepts."""


def gap_columns(frequency: np.ndarray, recency: np.ndarray, age: np.ndarray):
    """Days since the last purchase, the mean gap between purchases (NaN without a repeat purchase)
    and their ratio, capped at :data:`GAP_RATIO_CAP`."""
    n = len(frequency)
    has_gap = frequency > 0
    mean_gap = np.divide(recency, frequency, out=np.full(n, np.nan), where=has_gap)
    since_last = age - recency
    with np.errstate(over="ignore"):
        ratio = np.divide(since_last, mean_gap, out=np.full(n, np.nan), where=has_gap & (mean_gap > 0))
    return since_last, mean_gap, np.minimum(ratio, GAP_RATIO_CAP)


def summary_columns(summaries: pd.DataFrame, windows: list[int], has_amount: bool) -> tuple[np.ndarray, dict]:
    """Ids and feature columns of RFM-summary customers (their purchase-day features unknown)."""
    if not isinstance(summaries, pd.DataFrame):
        raise TypeError(f"summaries must be a pandas DataFrame. Got {type(summaries).__name__} instead.")
    for column in ("customer_id", "frequency", "recency_days", "age_days"):
        if column not in summaries.columns:
            raise DataValidationError(f"Required column {column!r} is missing from the summaries.", column=column)
    ids = summaries["customer_id"].to_numpy()
    frequency = summaries["frequency"].to_numpy(dtype=np.float64)
    recency = summaries["recency_days"].to_numpy(dtype=np.float64)
    age = summaries["age_days"].to_numpy(dtype=np.float64)
    money = (summaries["monetary_value"].to_numpy(dtype=np.float64) if "monetary_value" in summaries
             else np.zeros(len(ids)))
    return ids, summary_arrays(ids, frequency, recency, age, money, windows, has_amount)


def summary_arrays(ids, frequency, recency, age, money, windows: list[int], has_amount: bool) -> dict:
    """:func:`summary_columns` from checked arrays: checks the values, derives the gap columns."""
    problems = {
        "frequency": ~(np.isfinite(frequency) & (frequency >= 0) & (frequency == np.round(frequency))),
        "recency_days": ~(np.isfinite(recency) & (recency >= 0) & ((recency > 0) | (frequency == 0))),
        "age_days": ~(np.isfinite(age) & (age >= recency)),
        "monetary_value": ~(np.isfinite(money) & (money >= 0)),
    }
    for column, bad in problems.items():
        if bad.any():
            rows = np.asarray(ids, dtype=object)[bad][:5].tolist()
            raise DataValidationError(
                f"Summary column {column!r} is invalid for customer id(s) {rows}: frequency must be a whole number "
                ">= 0, recency_days >= 0 (> 0 with repeat purchases), age_days >= recency_days, monetary_value >= 0.",
                column=column, rows=rows)
    n = len(frequency)
    since_last, mean_gap, gap_ratio = gap_columns(frequency, recency, age)
    columns = {
        "frequency": frequency,
        "recency_days": recency,
        "age_days": age,
        "monetary_value": money if has_amount else np.full(n, np.nan),
        "days_since_last_purchase": since_last,
        "mean_gap_days": mean_gap,
        "gap_ratio": gap_ratio,
    }
    for name in feature_columns(windows)[_N_SUMMARY_COLUMNS:]:
        columns[name] = np.full(n, np.nan)
    return columns


# --------------------------------------------------------------------------------------------------
# The rows
# --------------------------------------------------------------------------------------------------


def customer_rows(log, as_of_day: pd.Timestamp, windows: list[int], *, table: TableArrays | None = None,
                  summaries: pd.DataFrame | None = None, require_purchases: bool = True) -> CustomerRows:
    """The customers at ``as_of_day``: purchasers, summary customers and table customers (see
    :func:`crmml.features.compute_features` for the rules), sorted by id."""
    ids, numbers = _history(log, as_of_day, windows)
    if require_purchases and summaries is None and not len(ids):
        _check_not_empty(pd.DataFrame(), log, "as_of", as_of_day)
    from_summary = None
    if summaries is not None:
        summary_ids, summary_numbers = summary_columns(summaries, windows, log.has_amount)
        both = pd.Index(summary_ids).intersection(pd.Index(ids))
        unique = pd.Index(summary_ids)
        if len(both) or unique.has_duplicates:
            repeated = list(both[:5]) if len(both) else unique[unique.duplicated()].unique()[:5].tolist()
            raise DataValidationError(f"Customer id(s) {repeated} appear twice (in the transactions and the "
                                      "summaries, or twice in the summaries).", column="customer_id", rows=repeated)
        n_history = len(ids)
        ids = _concatenate_ids(ids, summary_ids)
        numbers = {name: np.concatenate([numbers[name], summary_numbers[name]]) for name in numbers}
        from_summary = np.r_[np.zeros(n_history, dtype=bool), np.ones(len(summary_ids), dtype=bool)]
        order = _sort_order(ids)
        if order is not None:
            ids, from_summary = ids[order], from_summary[order]
            numbers = {name: values[order] for name, values in numbers.items()}
    no_history = np.zeros(len(ids), dtype=bool)
    rows = CustomerRows(ids, numbers, no_history, attrs={"as_of": as_of_day}, from_summary=from_summary)
    if table is None:
        return rows
    return join_table(rows, table, as_of_day, log.has_amount)


def _concatenate_ids(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a):
        return np.asarray(b)
    try:
        return np.concatenate([a, b])
    except (TypeError, ValueError):
        return np.concatenate([a.astype(object), np.asarray(b, dtype=object)])


def _sort_order(ids: np.ndarray) -> np.ndarray | None:
    """The stable order that sorts ``ids``; None when sorted already or when they do not sort."""
    if len(ids) < 2:
        return None
    try:
        order = np.argsort(ids, kind="stable")
    except TypeError:  # ids of mixed types: keep the order given
        return None
    return None if np.array_equal(order, np.arange(len(ids))) else order


def join_table(rows: CustomerRows, table: TableArrays, as_of_day: pd.Timestamp, has_amount: bool, *,
               allow_empty: bool = False) -> CustomerRows:
    """Every purchaser (less those who signed up after as_of) and every kept table customer.

    Raises DataValidationError naming ``signup_date`` when no one is left because every table
    customer signed up after as_of (unless ``allow_empty``: a part of a larger table)."""
    history_ids = rows.ids
    if table.n_excluded and len(history_ids):
        history_ids = history_ids[~pd.Index(history_ids).isin(table.excluded_ids)]
    if _same(history_ids, rows.ids) and _same(table.ids, history_ids):
        index = rows.ids
    else:
        union = pd.Index(history_ids).union(pd.Index(table.ids))
        try:
            union = union.sort_values()
        except TypeError:  # ids of mixed types: keep the union's order
            pass
        index = union.to_numpy()
    n = len(index)
    if not n and table.n_excluded and not allow_empty:
        raise DataValidationError(
            f"Every customer signed up after as_of {as_of_day.date()}: {table.n_excluded} customer(s) of the "
            "customer table have a 'signup_date' after it and no one else bought on or before it; there is "
            "nothing to score.", column="signup_date")
    from_history = _positions(index, rows.ids)  # row of each output customer in rows, -1 if none
    numbers = {}
    if _is_identity(from_history, len(rows.ids)):
        numbers = dict(rows.numbers)
        no_history = rows.no_history
        from_summary = rows.from_summary
    else:
        found = from_history >= 0
        no_history = ~found
        zero = {c for c in rows.numbers if c.startswith(("purchases_last_", "purchases_trend_"))}
        if has_amount:
            zero |= {c for c in rows.numbers if c.startswith(("spend_last_", "spend_trend_"))} | {"total_spend"}
        for name, values in rows.numbers.items():
            out = np.full(n, 0.0 if name in zero else np.nan)
            out[found] = values[from_history[found]]
            numbers[name] = out
        from_summary = None
        if rows.from_summary is not None:
            from_summary = np.zeros(n, dtype=bool)
            from_summary[found] = rows.from_summary[from_history[found]]
    from_table = _positions(index, table.ids)
    identity = _is_identity(from_table, len(table.ids))
    in_table = from_table >= 0
    categories = {}
    for name in table.order:
        if name == "n_referrals" and table.referrers is not None:
            referred = _positions(pd.Index(table.referrers).to_numpy(), index) if len(table.referrers) else []
            referred = np.asarray(referred, dtype=np.int64)
            numbers[name] = np.bincount(referred[referred >= 0], minlength=n).astype(np.float64)
        elif name in table.categories:
            codes, values = table.categories[name]
            if not identity:
                picked = np.full(n, -1, dtype=codes.dtype)
                picked[in_table] = codes[from_table[in_table]]
                codes = picked
            categories[name] = (codes, values)
        else:
            values = table.numbers[name]
            if not identity:
                picked = np.full(n, np.nan)
                picked[in_table] = values[from_table[in_table]]
                values = picked
            if name == "n_referrals":  # given counts: a purchaser without a table row referred no one
                values = np.nan_to_num(values, nan=0.0) if not identity else values
            numbers[name] = values
    attrs = {
        "as_of": as_of_day,
        "customers_signed_up_after_as_of": table.n_excluded,
        "dropped_customer_columns": table.dropped_columns,
    }
    return CustomerRows(index, numbers, no_history, categories, list(table.order), attrs, from_summary)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and a.dtype == b.dtype and bool(np.array_equal(a, b))


def _positions(index: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per element of ``index``, its position in ``ids`` (-1 when absent)."""
    if not len(ids):
        return np.full(len(index), -1, dtype=np.int64)
    if _same(index, ids):
        return np.arange(len(index))
    return pd.Index(ids).get_indexer(index)


def _is_identity(positions: np.ndarray, n: int) -> bool:
    return len(positions) == n and bool(np.array_equal(positions, np.arange(n)))


__all__ += ["summary_arrays", "summary_columns"]
