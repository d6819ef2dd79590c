"""Per-customer features at an as-of date: one function for training, batch scoring and the API.

:func:`compute_features` turns a transaction log (and optionally a customer table and fitted BTYD /
spend models) into one row per customer, using only the rows dated on or before ``as_of``.

Where the numbers come from
---------------------------
- ``frequency``, ``recency_days``, ``age_days`` and ``monetary_value`` are
  :func:`~crmml.data.rfm_summary` with ``freq="D"``: repeat purchase days, days from the first to the
  last purchase day, days from the first purchase day to ``as_of``, and the mean net amount of the
  repeat purchase days.
- Every other purchase feature is computed from the customer's *purchase days*: the daily purchase
  occasions streamed by :func:`crmml.data.summary.purchase_occasions`, the very occasions
  :func:`~crmml.data.rfm_summary` counts (refunds netted within the day; a day refunded in full, or
  holding only refunds, is not a purchase day). Their amounts are the days' exact net amounts.
  They are reduced to customers batch by batch, so memory grows with the number of customers.
- A window of ``w`` days is the as-of day and the ``w - 1`` days before it.
- BTYD columns come from the same summary expressed in the models' time unit (``time_unit_days``
  days): ``recency = recency_days / time_unit_days`` and ``T = age_days / time_unit_days``, which is
  exactly ``rfm_summary(freq="D", freq_multiplier=time_unit_days)``.

Customers
---------
Without a customer table the rows are the customers with a purchase day on or before ``as_of``.
With one, they are the union of those and the table's customers (less those who signed up after
``as_of``); a table customer without purchases keeps a row with ``no_purchase_history`` True.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from crmml.customer_table import _CustomerTable, _join_customers
from crmml.data.summary import OccasionBatch, as_day, purchase_occasions, rfm_summary
from crmml.data.transactions import Transactions, as_transactions
from crmml.errors import DataValidationError

__all__ = ["btyd_summary", "compute_features", "feature_columns", "model_columns", "model_features"]

#: Days of the two windows the trend features compare (the last ``TREND_DAYS`` against the ones before).
TREND_DAYS = 90
_N_SUMMARY_COLUMNS = 7  # feature_columns' leading columns that come from the RFM summary
#: The BTYD columns :func:`model_features` adds (customer-table columns may not take these names).
MODEL_COLUMNS = ("btyd_expected_purchases", "btyd_p_alive", "btyd_p_no_purchase", "expected_spend")


def feature_columns(windows_days: Sequence[int] = (30, 90, 180, 365)) -> list[str]:
    """The purchase-history columns of :func:`compute_features`, in order (no BTYD or table columns)."""
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


def compute_features(
    transactions,
    *,
    as_of,
    customers: pd.DataFrame | None = None,
    summaries: pd.DataFrame | None = None,
    transaction_model=None,
    spend_model=None,
    horizon_days: float = 90,
    windows_days: Sequence[int] = (30, 90, 180, 365),
    time_unit_days: float = 7.0,
    require_purchases: bool = True,
    **read_kwargs,
) -> pd.DataFrame:
    """One row of features per customer from the transactions on or before ``as_of``.

    Parameters
    ----------
    transactions : Transactions, pandas.DataFrame, str or pathlib.Path
        A validated log, or anything :func:`~crmml.data.read_transactions` accepts.
    as_of : date-like
        The observation end; its day is included, later rows are ignored.
    customers : pandas.DataFrame, optional
        One row per customer with a ``customer_id`` column. Numeric columns pass through (bool as
        0/1 floats); text and categorical columns become pandas ``category``; ``signup_date``
        becomes ``tenure_days`` (days from sign-up to ``as_of``; customers who signed up after
        ``as_of`` are left out, even if they bought, and counted in
        ``attrs["customers_signed_up_after_as_of"]``); ``referred_by`` (a customer id) becomes
        ``has_referrer`` (0/1) and ``n_referrals`` (customers in the table, signed up on or before
        ``as_of`` when ``signup_date`` is given, who name this customer as referrer). A numeric
        ``n_referrals`` column, counted upstream over the whole customer base, is used as given
        (so one customer's row, or one partition of the table, is scored like the whole table). Other columns
        (dates, for example) are left out and listed in ``attrs["dropped_customer_columns"]``.
    summaries : pandas.DataFrame, optional
        RFM summaries of customers whose transactions are not in the log: a ``customer_id``
        column and ``frequency`` (repeat purchase days), ``recency_days``, ``age_days`` and
        ``monetary_value`` (mean repeat purchase amount; optional), as :func:`feature_columns`
        defines them at ``as_of``. Their other purchase features (windows, gaps, trends, totals) are
        unknown: NaN. A customer must not be both in the log and here.
    transaction_model : fitted crmml transaction model, optional
        Adds ``btyd_expected_purchases`` (over ``horizon_days``), ``btyd_p_alive`` and, when the
        model has ``probability_no_purchase``, ``btyd_p_no_purchase`` (over ``horizon_days``).
    spend_model : fitted GammaGamma, optional
        Adds ``expected_spend``, the model's expected value of a future transaction.
    horizon_days : float
        Prediction horizon in days.
    windows_days : sequence of int
        Window lengths for ``purchases_last_{w}d`` and ``spend_last_{w}d``.
    time_unit_days : float
        Length in days of the time unit the models were fitted in (7 for weeks).
    require_purchases : bool
        Raise when no customer bought on or before ``as_of`` (set False to score a request of new
        customers and summaries only).
    **read_kwargs
        Passed to :func:`~crmml.data.read_transactions` when ``transactions`` is not a
        :class:`~crmml.data.Transactions`.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (sorted). Float columns :func:`feature_columns`, the BTYD columns
        when models are given, a bool ``no_purchase_history``, then the customer-table columns.
        Customers without purchases have NaN for ``frequency``, the recency and gap columns,
        ``monetary_value`` and ``first_purchase_amount``, 0 for counts and spends, and the model
        columns of a customer acquired at ``as_of`` (see :func:`model_features`). Spend columns are
        NaN when the log has no amounts.

    Raises
    ------
    DataValidationError
        When the log is invalid, no customer bought on or before ``as_of``, or the customer table
        lacks ``customer_id``, repeats an id or has a column named like a feature.
    ValueError
        On invalid ``horizon_days``, ``windows_days`` or ``time_unit_days``.
    """
    windows = check_windows(windows_days)
    horizon = _positive(horizon_days, "horizon_days")
    time_unit = _positive(time_unit_days, "time_unit_days")
    as_of_day = as_day(as_of, "as_of")
    log = as_transactions(transactions, **read_kwargs)
    if spend_model is not None and not log.has_amount:
        raise ValueError("spend_model needs amounts, but the transaction log has no amount column.")

    summary = rfm_summary(log, as_of=as_of_day, freq="D",
                          allow_empty=summaries is not None or not require_purchases)
    days = _purchase_day_features(log, as_of_day, windows)
    features = _history_features(summary, days, windows, log.has_amount)
    if summaries is not None:
        features = _with_summaries(features, summaries, windows, log.has_amount)
    features["no_purchase_history"] = False
    if customers is None:
        features.attrs = {"as_of": as_of_day}
    else:
        taken = [*features.columns, *MODEL_COLUMNS]
        features = _join_customers(features, _CustomerTable.from_frame(customers, as_of_day, taken), as_of_day,
                                   log.has_amount)
    models = model_features(
        features, transaction_model, spend_model, horizon_days=horizon, time_unit_days=time_unit
    )
    if not len(models.columns):
        return features
    at = features.columns.get_loc("no_purchase_history")
    result = pd.concat([features.iloc[:, :at], models, features.iloc[:, at:]], axis=1)
    result.attrs = features.attrs
    return result


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


def _positive(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0 < number < float("inf"):
        raise ValueError(f"{name} must be a positive finite number. Got {value!r} instead.")
    return number


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


# --------------------------------------------------------------------------------------------------
# Purchase history
# --------------------------------------------------------------------------------------------------


def _purchase_day_features(log: Transactions, as_of_day: pd.Timestamp, windows: list[int]) -> pd.DataFrame:
    """Features of each customer's purchase days on or before ``as_of``, indexed by customer_id
    (sorted as :func:`~crmml.data.rfm_summary`), from the data layer's daily purchase occasions."""
    as_of_period = int(as_of_day.to_datetime64().astype("datetime64[D]").astype(np.int64))
    parts = [
        _day_features(batch, as_of_period, windows, log.has_amount)
        for batch in purchase_occasions(log, as_of=as_of_day, freq="D")
    ]
    if not parts:
        return pd.DataFrame({name: np.empty(0) for name in feature_columns(windows)[_N_SUMMARY_COLUMNS:]},
                            index=pd.Index([], name="customer_id"))
    ids = pa.concat_arrays([part.pop("customer_id") for part in parts])
    columns = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return pd.DataFrame(columns, index=pd.Index(ids.to_pandas(), name="customer_id"))


def _day_features(batch: OccasionBatch, as_of_period: int, windows: list[int], has_amount: bool) -> dict:
    """Per-customer features of one batch of purchase days (sorted by customer and day)."""
    n, code = len(batch.customer_id), batch.customer
    before = as_of_period - batch.period  # days before as_of (0 on the as-of day)
    net = batch.net_amount if has_amount else np.zeros(len(batch))

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(code[mask], minlength=n).astype(np.float64)

    def spend(mask: np.ndarray) -> np.ndarray:
        if not has_amount:
            return np.full(n, np.nan)
        return np.bincount(code[mask], weights=net[mask], minlength=n)

    same_customer = code[1:] == code[:-1]
    gaps = pd.Series((before[:-1] - before[1:])[same_customer].astype(np.float64))
    gap_std, gap_max = np.full(n, np.nan), np.full(n, np.nan)
    if len(gaps):
        by_customer = gaps.groupby(code[1:][same_customer])
        stds, maxima = by_customer.std(ddof=0), by_customer.max()
        gap_std[stds.index.to_numpy()] = stds.to_numpy()
        gap_max[maxima.index.to_numpy()] = maxima.to_numpy()

    columns = {"customer_id": batch.customer_id, "gap_std_days": gap_std, "gap_max_days": gap_max}
    for w in windows:
        columns[f"purchases_last_{w}d"] = count(before < w)
    for w in windows:
        columns[f"spend_last_{w}d"] = spend(before < w)
    recent, previous = before < TREND_DAYS, (before >= TREND_DAYS) & (before < 2 * TREND_DAYS)
    columns[f"purchases_trend_{TREND_DAYS}d"] = count(recent) - count(previous)
    columns[f"spend_trend_{TREND_DAYS}d"] = spend(recent) - spend(previous)
    columns["total_spend"] = spend(np.ones(len(before), dtype=bool))
    first = np.ones(len(code), dtype=bool)
    first[1:] = ~same_customer
    first_amount = np.full(n, np.nan)
    if has_amount:
        first_amount[code[first]] = net[first]
    columns["first_purchase_amount"] = first_amount
    return columns


def _history_features(
    summary: pd.DataFrame, days: pd.DataFrame, windows: list[int], has_amount: bool
) -> pd.DataFrame:
    """The feature columns, in order: RFM and gap means from the summary, the rest from ``days``."""
    if not days.index.equals(summary.index):  # one occasion rule serves both: a bug, not a user error
        raise RuntimeError("The purchase days and the RFM summary disagree on the customers.")
    n = len(summary)
    frequency = summary["frequency"].to_numpy(dtype=float)
    recency = summary["recency"].to_numpy(dtype=float)
    age = summary["T"].to_numpy(dtype=float)
    has_gap = frequency > 0
    mean_gap = np.divide(recency, frequency, out=np.full(n, np.nan), where=has_gap)
    since_last = age - recency
    gap_ratio = np.divide(since_last, mean_gap, out=np.full(n, np.nan), where=has_gap & (mean_gap > 0))
    columns = {
        "frequency": frequency,
        "recency_days": recency,
        "age_days": age,
        "monetary_value": summary["monetary_value"].to_numpy(dtype=float) if has_amount else np.full(n, np.nan),
        "days_since_last_purchase": since_last,
        "mean_gap_days": mean_gap,
        "gap_ratio": gap_ratio,
    }
    for name in feature_columns(windows)[len(columns):]:
        columns[name] = days[name].to_numpy()
    return pd.DataFrame(columns, index=summary.index)


def _with_summaries(features: pd.DataFrame, summaries: pd.DataFrame, windows: list[int],
                    has_amount: bool) -> pd.DataFrame:
    """``features`` and the summary customers' rows (purchase-day features unknown), sorted by id."""
    if not isinstance(summaries, pd.DataFrame):
        raise TypeError(f"summaries must be a pandas DataFrame. Got {type(summaries).__name__} instead.")
    for column in ("customer_id", "frequency", "recency_days", "age_days"):
        if column not in summaries.columns:
            raise DataValidationError(f"Required column {column!r} is missing from the summaries.", column=column)
    ids = pd.Index(summaries["customer_id"], name="customer_id")
    both = ids.intersection(features.index)
    if len(both) or ids.has_duplicates:
        repeated = list(both[:5]) if len(both) else ids[ids.duplicated()].unique()[:5].tolist()
        raise DataValidationError(f"Customer id(s) {repeated} appear twice (in the transactions and the summaries, "
                                  "or twice in the summaries).", column="customer_id", rows=repeated)
    frequency = summaries["frequency"].to_numpy(dtype=np.float64)
    recency = summaries["recency_days"].to_numpy(dtype=np.float64)
    age = summaries["age_days"].to_numpy(dtype=np.float64)
    money = (summaries["monetary_value"].to_numpy(dtype=np.float64) if "monetary_value" in summaries
             else np.zeros(len(ids)))
    problems = {
        "frequency": ~(np.isfinite(frequency) & (frequency >= 0) & (frequency == np.round(frequency))),
        "recency_days": ~(np.isfinite(recency) & (recency >= 0) & ((recency > 0) | (frequency == 0))),
        "age_days": ~(np.isfinite(age) & (age >= recency)),
        "monetary_value": ~(np.isfinite(money) & (money >= 0)),
    }
    for column, bad in problems.items():
        if bad.any():
            rows = ids[bad][:5].tolist()
            raise DataValidationError(
                f"Summary column {column!r} is invalid for customer id(s) {rows}: frequency must be a whole number "
                ">= 0, recency_days >= 0 (> 0 with repeat purchases), age_days >= recency_days, monetary_value >= 0.",
                column=column, rows=rows)
    summary = pd.DataFrame({"frequency": frequency, "recency": recency, "T": age, "monetary_value": money}, index=ids)
    names = feature_columns(windows)[_N_SUMMARY_COLUMNS:]
    unknown = pd.DataFrame({name: np.full(len(ids), np.nan) for name in names}, index=ids)
    rows = _history_features(summary, unknown, windows, has_amount)
    combined = pd.concat([features, rows]) if len(features) else rows
    try:
        return combined.sort_index()
    except TypeError:  # ids of mixed types: keep the order given
        return combined


# --------------------------------------------------------------------------------------------------
# Model outputs
# --------------------------------------------------------------------------------------------------


def model_features(
    features: pd.DataFrame,
    transaction_model=None,
    spend_model=None,
    *,
    horizon_days: float = 90,
    time_unit_days: float = 7.0,
) -> pd.DataFrame:
    """The BTYD and spend-model columns for a frame of :func:`compute_features` rows.

    ``compute_features`` calls this; callers who need the model columns at several horizons for one
    as-of date (the time-travel training set) call it once per horizon on the same features.

    Parameters
    ----------
    features : pandas.DataFrame
        Rows of :func:`compute_features` (its ``frequency``, ``recency_days``, ``age_days`` and
        ``monetary_value`` columns are read).
    transaction_model, spend_model, horizon_days, time_unit_days
        As in :func:`compute_features`.

    Returns
    -------
    pandas.DataFrame
        Same index; ``btyd_expected_purchases``, ``btyd_p_alive``, ``btyd_p_no_purchase`` and
        ``expected_spend`` as the models allow. A customer without purchases (a customer-table row
        with ``no_purchase_history``) is scored as a customer acquired at the as-of date
        (``x = t_x = T = 0``): the models' prediction for a new customer, not NaN.
    """
    horizon = _positive(horizon_days, "horizon_days")
    columns = model_columns(features, transaction_model, spend_model, horizons_days=[horizon],
                            time_unit_days=time_unit_days)[horizon]
    out = pd.DataFrame(index=features.index)
    for name, values in columns.items():
        out[name] = values
    return out


def model_columns(
    features: pd.DataFrame,
    transaction_model=None,
    spend_model=None,
    *,
    horizons_days: Sequence[float],
    time_unit_days: float = 7.0,
) -> dict[float, dict[str, np.ndarray]]:
    """:func:`model_features` at several horizons, as arrays: each BTYD quantity computed once.

    P(alive) and the expected spend do not depend on the horizon; the models read the summary once
    and evaluate the horizon-dependent parts once per distinct horizon (see
    :meth:`crmml.models.btyd.AliveMixtureModel.predict_horizons`).

    Returns
    -------
    dict
        For each horizon of ``horizons_days`` (as given), the columns of :func:`model_features`
        in order, as float arrays (shared between horizons where they do not depend on it).
    """
    horizons = list(dict.fromkeys(horizons_days))
    checked = [_positive(h, "horizon_days") for h in horizons]
    time_unit = _positive(time_unit_days, "time_unit_days")
    out: dict[float, dict[str, np.ndarray]] = {h: {} for h in horizons}
    if transaction_model is None and spend_model is None:
        return out
    model_summary = btyd_summary(features, time_unit_days=time_unit)
    if transaction_model is not None:
        no_purchase = hasattr(transaction_model, "probability_no_purchase")
        units = [h / time_unit for h in checked]
        predicted = transaction_model.predict_horizons(model_summary, units, no_purchase=no_purchase)
        alive = np.asarray(predicted["p_alive"], dtype=np.float64)
        for horizon, unit in zip(horizons, units, strict=True):
            columns = out[horizon]
            columns["btyd_expected_purchases"] = np.asarray(predicted["expected_purchases", unit], dtype=np.float64)
            columns["btyd_p_alive"] = alive
            if no_purchase:
                columns["btyd_p_no_purchase"] = np.asarray(predicted["p_no_purchase", unit], dtype=np.float64)
    if spend_model is not None:
        spend = np.asarray(spend_model.expected_spend(model_summary), dtype=np.float64)
        for columns in out.values():
            columns["expected_spend"] = spend
    return out


def btyd_summary(features: pd.DataFrame, *, time_unit_days: float = 7.0) -> pd.DataFrame:
    """The BTYD models' input (``frequency``, ``recency``, ``T``, ``monetary_value``, recency and T in
    units of ``time_unit_days``) from :func:`compute_features` rows, positionally.

    A customer without purchases is summarised as one acquired at the as-of date,
    ``x = t_x = T = 0``: the models' prior predictive for a new customer.
    """
    time_unit = _positive(time_unit_days, "time_unit_days")
    return pd.DataFrame(
        {
            "frequency": np.nan_to_num(features["frequency"].to_numpy(dtype=float), nan=0.0),
            "recency": np.nan_to_num(features["recency_days"].to_numpy(dtype=float), nan=0.0) / time_unit,
            "T": np.nan_to_num(features["age_days"].to_numpy(dtype=float), nan=0.0) / time_unit,
            "monetary_value": np.nan_to_num(features["monetary_value"].to_numpy(dtype=float), nan=0.0),
        },
    )
