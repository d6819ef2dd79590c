"""The scoring core as it was before issue 16 (commit c6035b9): the test oracle of the array-native core.

Copied from src/crmml/{features,customer_table,learners,customer_model,scorer,flags,pyramid}.py at that
commit, trimmed to the scoring path. One intentional change (issue 21): ``at_risk`` is
``churn probability > threshold and not lapsed``, as the new core computes it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn import config_context
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from crmml.validation import rescaled_amount, rescaled_churn
from crmml.data.summary import as_day, purchase_occasions, rfm_summary
from crmml.data.transactions import as_transactions
from crmml.errors import DataValidationError
from crmml.features import MODEL_COLUMNS, TREND_DAYS, _positive, check_windows, feature_columns
from crmml.flags import _FLAG_TEXTS, flag_codes
from crmml.learners import _same_fitted

_N_SUMMARY_COLUMNS = 7
_SMALL_TABLE_ROWS = 64
SUMMARY_REASON = "scored from an RFM summary: BTYD and spend models only"
COST_COLUMN = "cost_to_serve"
_DAYS_PER_YEAR = 365.25
_DAYS_PER_MONTH = _DAYS_PER_YEAR / 12


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

from dataclasses import dataclass  # noqa: E402


@dataclass(frozen=True)
class _CustomerTable:
    """A customer table turned into attributes at the as-of date."""

    attributes: pd.DataFrame  # indexed by customer_id: the customers kept
    referrals: pd.Series | None  # customers naming each referrer id (None without referred_by)
    excluded: pd.Index  # customers who signed up after as_of
    dropped_columns: list[str]

    @classmethod
    def from_frame(cls, customers: pd.DataFrame, as_of_day: pd.Timestamp, taken: list[str]) -> _CustomerTable:
        return cls(*_customer_attributes(customers, as_of_day, taken))


def _customer_attributes(customers: pd.DataFrame, as_of_day: pd.Timestamp, taken: list[str]):
    """The parts of :class:`_CustomerTable`, after checking the table."""
    if not isinstance(customers, pd.DataFrame):
        raise TypeError(f"customers must be a pandas DataFrame. Got {type(customers).__name__} instead.")
    if "customer_id" not in customers.columns:
        raise DataValidationError(
            f"Required column 'customer_id' is missing from the customer table. "
            f"Columns found: {[str(c) for c in customers.columns]}.",
            column="customer_id",
        )
    ids = customers["customer_id"]
    index = pd.Index(ids, name="customer_id")  # the customer_id index of the table
    if index.hasnans:
        missing = ids.isna().to_numpy()
        rows = list(customers.index[missing][:5])
        raise DataValidationError(
            f"The customer table has missing customer ids (index labels {rows}).", column="customer_id", rows=rows
        )
    if not index.is_unique:
        repeated = pd.unique(ids[ids.duplicated(keep=False)]).tolist()
        raise DataValidationError(
            f"The customer table must hold one row per customer; {len(repeated)} customer id(s) repeat: "
            f"{repeated[:10]}.",
            column="customer_id",
            rows=repeated,
        )
    # Columns are built as arrays of the kept rows (``keep``, positions) and framed once.
    names = [name for name in customers.columns if name != "customer_id"]
    out: dict[str, object] = {}
    dropped, referrals, keep = [], None, None
    signed_up = np.ones(len(index), dtype=bool)
    excluded = index[:0]
    if "signup_date" in names:
        signup = _as_days(customers["signup_date"]).to_numpy()  # days, NaT where unknown
        as_of_stamp = as_of_day.to_datetime64()
        after = signup > as_of_stamp
        tenure = (as_of_stamp - signup) / np.timedelta64(1, "D")  # whole days (both are midnights), NaN if unknown
        signed_up = signup <= as_of_stamp  # unknown sign-up dates do not count as referrals
        excluded = index[after]
        if after.any():
            keep = ~after
        out["tenure_days"] = tenure if keep is None else tenure[keep]

    def kept(values):
        return values if keep is None else values[keep]

    if "referred_by" in names:
        referrer = customers["referred_by"]
        known = referrer.notna().to_numpy()
        out["has_referrer"] = kept(known.astype(np.float64))
        if "n_referrals" not in names:
            named = like_customer_ids(referrer[signed_up & known], index)
            referrals = named.value_counts()
            out["n_referrals"] = np.zeros(len(index) if keep is None else int(keep.sum()))  # see _join_customers
    if "n_referrals" in names:  # counted upstream, over a table larger than this one
        given = pd.to_numeric(customers["n_referrals"], errors="coerce")
        bad = given.isna() | (given < 0)
        if bad.any():
            rows = list(index[bad.to_numpy()][:5])
            raise DataValidationError(
                f"The customer table's 'n_referrals' must be counts >= 0; customer ids {rows} are not.",
                column="n_referrals", rows=rows,
            )
        out["n_referrals"] = kept(given.astype(np.float64).to_numpy())
    for name in names:
        if name in ("signup_date", "referred_by", "n_referrals"):
            continue
        column = customers[name]
        if keep is not None:
            column = column[keep]
        if name in taken or name in out:
            raise DataValidationError(
                f"The customer table's column {name!r} has the name of a feature; rename it.", column=name
            )
        if pd.api.types.is_bool_dtype(column):  # as 0/1, so that a missing customer can be NaN
            out[name] = column.astype(np.float64).to_numpy()
        elif pd.api.types.is_numeric_dtype(column) or isinstance(column.dtype, pd.CategoricalDtype):
            out[name] = column.array
        elif pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column):
            out[name] = _as_category(column)
        else:
            dropped.append(name)
    kept_index = index if keep is None else index[keep]
    attributes = pd.DataFrame(out, index=kept_index) if out else pd.DataFrame(index=kept_index)
    return attributes, referrals, excluded, dropped


def _as_category(column: pd.Series) -> pd.Categorical:
    """``column.astype("category").array``; built directly for a few rows of strings."""
    if not (isinstance(column.dtype, pd.StringDtype) and len(column) <= _SMALL_TABLE_ROWS):
        return column.astype("category").array
    values = column.to_numpy(dtype=object, na_value=None)
    known = sorted({v for v in values if v is not None})
    codes = {v: i for i, v in enumerate(known)}
    return pd.Categorical.from_codes(np.array([codes.get(v, -1) for v in values], dtype=np.int8),
                                     dtype=pd.CategoricalDtype(pd.Index(known, dtype=column.dtype)))


def _as_days(values: pd.Series) -> pd.Series:
    try:
        stamps = pd.to_datetime(values)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(
            f"The customer table's 'signup_date' must hold dates: {exc}", column="signup_date"
        ) from exc
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.dt.normalize()


def like_customer_ids(values: pd.Series, ids: pd.Index) -> pd.Series:
    """Referrer ids in the type of the customer ids (an integer column with gaps is read as float)."""
    if pd.api.types.is_integer_dtype(ids.dtype) and pd.api.types.is_float_dtype(values.dtype):
        whole = values == np.round(values)
        return values[whole].astype(ids.dtype)
    return values


def _same_index(index: pd.Index, other: pd.Index) -> bool:
    return index.dtype == other.dtype and index.equals(other)


def _join_customers(
    features: pd.DataFrame, table: _CustomerTable, as_of_day: pd.Timestamp, has_amount: bool
) -> pd.DataFrame:
    """Every purchaser (less those who signed up after as_of) and every kept table customer."""
    index = features.index.difference(table.excluded).union(table.attributes.index)
    try:
        index = index.sort_values()
    except TypeError:  # ids of mixed types: keep the union's order
        pass
    index.name = "customer_id"
    if _same_index(index, features.index):  # every customer bought (a reindex would only copy)
        joined = features
    else:
        joined = features.reindex(index)
        no_history = ~index.isin(features.index)
        joined["no_purchase_history"] = no_history
        zero_columns = [c for c in joined.columns if c.startswith(("purchases_last_", "purchases_trend_"))]
        if has_amount:
            zero_columns += [c for c in joined.columns if c.startswith(("spend_last_", "spend_trend_"))]
            zero_columns.append("total_spend")
        if no_history.any():
            joined.loc[no_history, zero_columns] = 0.0
    same = _same_index(index, table.attributes.index)
    attributes = table.attributes if same else table.attributes.reindex(index)
    attributes = attributes.copy(deep=False)
    if table.referrals is not None:
        attributes["n_referrals"] = table.referrals.reindex(index, fill_value=0).astype(np.float64).to_numpy()
    elif "n_referrals" in attributes:  # given counts: a purchaser without a table row referred no one
        attributes["n_referrals"] = attributes["n_referrals"].fillna(0.0)
    result = pd.concat([joined, attributes], axis=1)
    result.index.name = "customer_id"
    result.attrs = {
        "as_of": as_of_day,
        "customers_signed_up_after_as_of": len(table.excluded),
        "dropped_customer_columns": table.dropped_columns,
    }
    return result

def predict_learner(learner, rows: pd.DataFrame, method: str = "predict") -> np.ndarray:
    """``learner.predict(rows)`` (or another ``method``) of a fitted learner pipeline, without
    scikit-learn's per-call validation of the estimators' hyperparameters (checked when fitted)."""
    return predict_learners([learner], rows, method)[0]


def predict_learners(learners, rows: pd.DataFrame, method: str = "predict") -> list[np.ndarray]:
    """:func:`predict_learner` for several learners on the same rows.

    Pipelines whose transform steps are fitted alike (same classes, equal fitted state: the value
    and purchases learners fitted on one training frame) transform the rows once; each final step
    then predicts from the shared matrix, exactly as its own ``Pipeline.predict`` would.
    """
    out, shared = [], []  # shared: (transform steps, their output) computed so far
    with config_context(skip_parameter_validation=True):
        for learner in learners:
            if not isinstance(learner, Pipeline):
                out.append(getattr(learner, method)(rows))
                continue
            check_is_fitted(learner)
            steps = [step for _, step in learner.steps[:-1] if step is not None and step != "passthrough"]
            for done, matrix in shared:
                if len(done) == len(steps) and all(_same_fitted(a, b) for a, b in zip(done, steps, strict=True)):
                    break
            else:
                matrix = rows
                for step in steps:
                    matrix = step.transform(matrix)
                shared.append((steps, matrix))
            out.append(getattr(learner.steps[-1][1], method)(matrix))
    return out




def with_model_features_at(features, btyd, horizons_days, time_unit_days, *, frames_at=None):
    columns = model_columns(features, btyd.transaction_model, btyd.spend_model, horizons_days=horizons_days,
                            time_unit_days=time_unit_days)
    frames = {}
    for horizon in (columns if frames_at is None else dict.fromkeys(frames_at)):
        extra = dict(columns[horizon])
        replaced = [c for c in extra if c in features.columns]
        base = features.drop(columns=replaced) if replaced else features
        if "horizon_days" not in base.columns:
            extra["horizon_days"] = np.full(len(features), float(horizon))
        frame = pd.concat([base, pd.DataFrame(extra, index=features.index)], axis=1)
        if "horizon_days" in base.columns:
            frame["horizon_days"] = float(horizon)
        frames[horizon] = frame
    return frames, columns


def predict_features(model, features):
    cfg = model.config
    learners = {}
    if model.churn_learner_ is not None:
        learners["churn"] = model.churn_choice_.plan.longest_days
    if model.value_learner_ is not None:
        learners["value"] = model.value_choice_.plan.longest_days
    frames, columns = with_model_features_at(
        features, model.btyd_, [cfg.churn_window_days, cfg.value_horizon_days, *learners.values()],
        cfg.time_unit_days, frames_at=learners.values(),
    )
    churn_columns, value_columns = columns[cfg.churn_window_days], columns[cfg.value_horizon_days]
    btyd_churn = churn_columns["btyd_p_no_purchase"]
    churn = btyd_churn
    if "churn" in learners:
        rows = frames[learners["churn"]]
        learned = rescaled_churn(predict_learner(model.churn_learner_, rows, "predict_proba")[:, 1],
                                 columns[learners["churn"]], churn_columns)
        churn = 0.5 * (learned + btyd_churn) if model.churn_choice_.shipped.startswith("blend:") else learned
    btyd_purchases = value_columns["btyd_expected_purchases"]
    btyd_spend = (btyd_purchases * value_columns["expected_spend"]
                  if "expected_spend" in value_columns else np.full(len(features), np.nan))
    purchases, spend = btyd_purchases, btyd_spend
    if "value" in learners:
        rows, learner_columns = frames[learners["value"]], columns[learners["value"]]
        spend, purchases = predict_learners([model.value_learner_, model.purchases_learner_], rows)
        spend = rescaled_amount(spend, learner_columns, value_columns) * model.value_level_["spend_scale"]
        purchases = rescaled_amount(purchases, learner_columns, value_columns) * model.value_level_["purchases_scale"]
    return pd.DataFrame({
        "churn_probability": churn, "btyd_churn_probability": btyd_churn, "p_alive": churn_columns["btyd_p_alive"],
        "predicted_purchases": purchases, "btyd_expected_purchases": btyd_purchases, "predicted_spend": spend,
        "btyd_predicted_spend": btyd_spend,
        "no_purchase_history": features["no_purchase_history"].to_numpy(dtype=bool),
    }, index=features.index)


def _discount_factors(scorer, features):
    cfg = scorer.config.model
    rate = scorer.config.annual_discount_rate
    if rate == 0 or not len(features):
        return np.ones(len(features))
    n_steps = max(1, math.ceil(cfg.value_horizon_days / _DAYS_PER_MONTH))
    step_days = cfg.value_horizon_days / n_steps
    times_days = step_days * np.arange(1, n_steps + 1)
    discount = (1.0 + rate) ** -(times_days / _DAYS_PER_YEAR)
    coefficients = discount - np.r_[discount[1:], 0.0]
    model = scorer.model_.btyd_.transaction_model
    summary = btyd_summary(features, time_unit_days=cfg.time_unit_days)
    horizons = times_days / cfg.time_unit_days
    both = model.predict_horizons(summary, [horizons[-1]], no_purchase=False,
                                  sums={"discounted": (horizons, coefficients)})
    discounted, total = both["sum", "discounted"], both["expected_purchases", horizons[-1]]
    return np.divide(discounted, total, out=np.ones(len(total)), where=total > 0)


def _predictions(scorer, features, from_summary=None):
    predicted = predict_features(scorer.model_, features)
    if from_summary is not None and from_summary.any():
        for shipped, btyd in (("churn_probability", "btyd_churn_probability"),
                              ("predicted_purchases", "btyd_expected_purchases"),
                              ("predicted_spend", "btyd_predicted_spend")):
            predicted[shipped] = np.where(from_summary, predicted[btyd], predicted[shipped])
    predicted["discount_factor"] = _discount_factors(scorer, features)
    predicted["predicted_value"] = predicted["predicted_spend"] * predicted["discount_factor"]
    return predicted


def tier_evaluate(rule, predicted_value, cost_to_serve=None):
    value = np.asarray(predicted_value, dtype=np.float64)
    profit = rule.predicted_profit(value, cost_to_serve)
    known = np.isfinite(profit)
    lead = np.where(known, profit <= 0, value <= rule.lead_max_value_without_costs)
    tier = np.select([lead, value >= rule.platinum_min_value, value >= rule.gold_min_value],
                     ["lead", "platinum", "gold"], default="iron").astype(object)
    reasons = np.full(len(value), "", dtype=object)
    for i, value_i, profit_i, known_i in zip(np.flatnonzero(lead).tolist(), value[lead].tolist(),
                                             profit[lead].tolist(), known[lead].tolist(), strict=True):
        if known_i:
            cost = rule.margin * value_i - profit_i
            reasons[i] = (f"predicted profit {profit_i:,.2f} <= 0 (value {value_i:,.2f} x margin "
                          f"{rule.margin:g} - cost to serve {cost:,.2f})")
        else:
            reasons[i] = (f"predicted value {value_i:,.2f} is in the bottom of the training population "
                          f"(<= {rule.lead_max_value_without_costs:,.2f}; no cost data)")
    return profit, tier, reasons


def flag_columns(rule, *, churn_probability, tier, days_since_last_purchase, mean_gap_days, age_days,
                 no_purchase_history, churn_window_days):
    p = np.asarray(churn_probability, dtype=np.float64)
    tier = np.asarray(tier, dtype=object)
    since = np.asarray(days_since_last_purchase, dtype=np.float64)
    own_gap = np.asarray(mean_gap_days, dtype=np.float64)
    age = np.asarray(age_days, dtype=np.float64)
    no_history = np.asarray(no_purchase_history, dtype=bool)
    new = no_history | (age < rule.new_customer_days)
    has_own_gap = np.isfinite(own_gap) & (own_gap > 0)
    gap = np.where(has_own_gap, own_gap, rule.typical_gap_days)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap_multiple = since / gap
    lapsed = ~new & np.isfinite(gap_multiple) & (gap_multiple > rule.lapsed_gap_multiple)
    at_risk = (p > rule.at_risk_threshold) & ~lapsed  # issue 21: the one intentional change
    high_value_at_risk = at_risk & np.isin(tier, ["platinum", "gold"])
    n = len(p)
    reasons = [[] for _ in range(n)]
    threshold = f"{rule.at_risk_threshold:.2f}"
    for i, p_i in zip(np.flatnonzero(at_risk).tolist(), p[at_risk].tolist(), strict=True):
        reasons[i].append(f"churn probability {p_i:.2f} over the next {churn_window_days} days, above the "
                          f"at-risk threshold {threshold}")
    for i in np.flatnonzero(high_value_at_risk).tolist():
        reasons[i].append(f"{tier[i]} customer at risk: on the win-back list")
    for i, since_i, multiple_i, gap_i, own in zip(np.flatnonzero(lapsed).tolist(), since[lapsed].tolist(),
                                                  gap_multiple[lapsed].tolist(), gap[lapsed].tolist(),
                                                  has_own_gap[lapsed].tolist(), strict=True):
        whose = "the usual gap" if own else "the typical repeat customer's gap"
        reasons[i].append(f"no purchase for {since_i:.0f} days, {multiple_i:.1f}x {whose} ({gap_i:.0f} days)")
    for i, age_i, none_yet in zip(np.flatnonzero(new).tolist(), age[new].tolist(), no_history[new].tolist(),
                                  strict=True):
        reasons[i].append("no purchase yet" if none_yet else
                          f"first purchase {age_i:.0f} days ago: too little history to judge")
    flags = {"at_risk": at_risk, "high_value_at_risk": high_value_at_risk, "lapsed": lapsed, "new": new}
    return {**flags, "flags": _FLAG_TEXTS[flag_codes(flags)].tolist(), "reasons": ["; ".join(r) for r in reasons]}


def _reasons_after(first, reasons):
    return np.where(first == "", reasons, np.where(reasons == "", first, first + "; " + reasons))


def _score(scorer, features, predicted, cost_to_serve, from_summary=None):
    value = predicted["predicted_value"].to_numpy()
    profit, tier, lead = tier_evaluate(scorer.tier_rule_, value, cost_to_serve)
    flags = flag_columns(
        scorer.flag_rule_, churn_probability=predicted["churn_probability"].to_numpy(), tier=tier,
        days_since_last_purchase=features["days_since_last_purchase"].to_numpy(dtype=float),
        mean_gap_days=features["mean_gap_days"].to_numpy(dtype=float),
        age_days=features["age_days"].to_numpy(dtype=float),
        no_purchase_history=features["no_purchase_history"].to_numpy(dtype=bool),
        churn_window_days=scorer.config.model.churn_window_days,
    )
    reasons = _reasons_after(lead, np.array(flags["reasons"], dtype=object))
    if from_summary is not None and from_summary.any():
        reasons = _reasons_after(np.where(from_summary, SUMMARY_REASON, "").astype(object), reasons)
    return pd.DataFrame({
        "customer_id": features.index.to_numpy(),
        "expected_purchases": predicted["predicted_purchases"].to_numpy(),
        "p_alive": predicted["p_alive"].to_numpy(),
        "churn_probability": predicted["churn_probability"].to_numpy(),
        "predicted_value": value, "predicted_profit": profit, "tier": tier,
        "at_risk": flags["at_risk"], "high_value_at_risk": flags["high_value_at_risk"],
        "lapsed": flags["lapsed"], "new": flags["new"],
        "flags": np.array(flags["flags"], dtype=object), "reasons": reasons,
        "model_version": scorer.model_version,
    })


def _split_costs(customers):
    if customers is None:
        return None, None
    if COST_COLUMN not in customers.columns:
        return customers, None
    costs = pd.to_numeric(customers[COST_COLUMN], errors="coerce")
    return customers.drop(columns=COST_COLUMN), pd.Series(costs.to_numpy(), index=customers["customer_id"])


def legacy_score_features(scorer, features, cost_to_serve=None, from_summary=None):
    """``Scorer.score_features`` as it was."""
    missing = [c for c in scorer.attribute_features_ if c not in features.columns]
    if missing:
        features = features.assign(**{c: np.nan for c in missing})
    return _score(scorer, features, _predictions(scorer, features, from_summary), cost_to_serve, from_summary)


def legacy_score(scorer, transactions, *, as_of=None, customers=None, summaries=None):
    """``Scorer.score`` as it was."""
    log = as_transactions(transactions)
    as_of_day = scorer.as_of_ if as_of is None else as_day(as_of, "as_of")
    table, costs = _split_costs(customers)
    features = compute_features(log, as_of=as_of_day, customers=table, summaries=summaries,
                                windows_days=scorer.config.model.feature_windows_days,
                                require_purchases=summaries is None and table is None)
    from_summary = None if summaries is None else features.index.isin(summaries["customer_id"])
    cost = None if costs is None else costs.reindex(features.index).to_numpy(dtype=np.float64)
    return legacy_score_features(scorer, features, cost, from_summary)
