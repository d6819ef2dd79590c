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
  They are reduced to customers batch by batch, so memory grows with the number of customers
  (:func:`crmml.customer_rows.customer_rows`, the scoring core's array-native rows).
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

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from crmml.customer_rows import TREND_DAYS, CustomerRows, check_windows, customer_rows, feature_columns
from crmml.customer_table import table_arrays
from crmml.data.summary import as_day
from crmml.data.transactions import as_transactions
from crmml.models.base import SummaryColumns

__all__ = ["TREND_DAYS", "attribute_values", "btyd_summary", "check_windows", "compute_features", "feature_columns",
           "features_frame", "model_columns", "model_features", "model_predictions", "transaction_covariates"]

#: The BTYD columns :func:`model_features` adds (customer-table columns may not take these names).
MODEL_COLUMNS = ("btyd_expected_purchases", "btyd_p_alive", "btyd_p_no_purchase", "expected_spend")


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
    history = feature_columns(windows)
    table = None
    if customers is not None:
        table = table_arrays(customers, as_of_day, [*history, *MODEL_COLUMNS, "no_purchase_history"])
    rows = customer_rows(log, as_of_day, windows, table=table, summaries=summaries,
                         require_purchases=require_purchases)
    models = model_columns(rows, transaction_model, spend_model, horizons_days=[horizon],
                           time_unit_days=time_unit)[horizon]
    rows.numbers.update(models)
    return features_frame(rows, windows, list(models))


def features_frame(rows: CustomerRows, windows_days: Sequence[int], models: Sequence[str] = ()) -> pd.DataFrame:
    """The :func:`compute_features` frame of :class:`~crmml.customer_rows.CustomerRows`."""
    return rows.to_frame(feature_columns(windows_days), models)


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

    ``features`` is a frame of :func:`compute_features` rows or :class:`~crmml.customer_rows.CustomerRows`.

    Returns
    -------
    dict
        For each horizon of ``horizons_days`` (as given), the columns of :func:`model_features`
        in order, as float arrays (shared between horizons where they do not depend on it).
    """
    return model_predictions(features, transaction_model, spend_model, horizons_days=horizons_days,
                             time_unit_days=time_unit_days)[0]


def model_predictions(features, transaction_model=None, spend_model=None, *, horizons_days: Sequence[float],
                      time_unit_days: float = 7.0, sums: dict | None = None) -> tuple[dict, dict]:
    """:func:`model_columns`, and the transaction model's weighted sums of expected purchases
    ``sums`` (``{name: (horizons in time units, coefficients)}``, see
    :meth:`~crmml.models.btyd.AliveMixtureModel.predict_horizons`) from the same pass over the
    customers: ``(columns by horizon, {name: sum})``."""
    horizons = list(dict.fromkeys(horizons_days))
    checked = [_positive(h, "horizon_days") for h in horizons]
    time_unit = _positive(time_unit_days, "time_unit_days")
    out: dict[float, dict[str, np.ndarray]] = {h: {} for h in horizons}
    summed: dict[str, np.ndarray] = {}
    if transaction_model is None and spend_model is None:
        return out, summed
    covariates = transaction_covariates(transaction_model)
    if covariates:  # a covariate model reads the customer's attributes (and groups a frame by them)
        model_summary = btyd_summary(features, time_unit_days=time_unit)
        for name in covariates:
            model_summary[name] = attribute_values(features, name)
    else:  # a plain model reads the columns as they are
        model_summary = SummaryColumns(_btyd_columns(features, time_unit))
    if transaction_model is not None:
        no_purchase = hasattr(transaction_model, "probability_no_purchase")
        units = [h / time_unit for h in checked]
        predicted = transaction_model.predict_horizons(model_summary, units, no_purchase=no_purchase,
                                                       sums=sums)
        summed = {name: np.asarray(predicted["sum", name], dtype=np.float64) for name in sums or {}}
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
    return out, summed


def btyd_summary(features: pd.DataFrame | Mapping, *, time_unit_days: float = 7.0) -> pd.DataFrame:
    """The BTYD models' input (``frequency``, ``recency``, ``T``, ``monetary_value``, recency and T in
    units of ``time_unit_days``) from :func:`compute_features` rows, positionally.

    A customer without purchases is summarised as one acquired at the as-of date,
    ``x = t_x = T = 0``: the models' prior predictive for a new customer.
    """
    return pd.DataFrame(_btyd_columns(features, time_unit_days), copy=False)


def _btyd_columns(features, time_unit_days: float) -> dict[str, np.ndarray]:
    """:func:`btyd_summary`'s columns as arrays."""
    time_unit = _positive(time_unit_days, "time_unit_days")
    return {
        "frequency": np.nan_to_num(_floats(features["frequency"]), nan=0.0),
        "recency": np.nan_to_num(_floats(features["recency_days"]), nan=0.0) / time_unit,
        "T": np.nan_to_num(_floats(features["age_days"]), nan=0.0) / time_unit,
        "monetary_value": np.nan_to_num(_floats(features["monetary_value"]), nan=0.0),
    }


def transaction_covariates(model) -> list[str]:
    """The customer attributes a transaction model reads besides the RFM summary: the covariates of a
    :class:`~crmml.models.covariate_btyd.CovariateTransactionModel` (``design_.names``), none for a
    plain model (or None)."""
    design = getattr(model, "design_", None)
    return [] if design is None else list(design.names)


def attribute_values(features, column: str) -> np.ndarray:
    """One attribute per customer as the covariate models read it, from :func:`compute_features` rows
    (a frame, or :class:`~crmml.customer_rows.CustomerRows`).

    A categorical attribute is an object array of its levels as text (None where missing), a numeric
    one (booleans are 0/1 numbers in the features) a float array (NaN where missing). An attribute
    the rows lack is missing for everyone (an all-NaN float array): the covariate model scores such
    customers at its reference level and says so
    (:meth:`~crmml.models.covariate_btyd.CovariateTransactionModel.covariate_fallback`).
    """
    if isinstance(features, CustomerRows):
        if column in features.categories:
            codes, categories = features.categories[column]
            return _levels_as_text(np.asarray(codes), pd.Index(categories))
        if column in features.numbers:
            return np.asarray(features.numbers[column], dtype=np.float64)
        return np.full(len(features), np.nan)
    if column not in features.columns:
        return np.full(len(features), np.nan)
    values = features[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        return _levels_as_text(values.cat.codes.to_numpy(), values.cat.categories)
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    text = values.astype(object)
    return np.where(values.isna().to_numpy(), None, text.astype(str).to_numpy()).astype(object)


def _levels_as_text(codes: np.ndarray, categories: pd.Index) -> np.ndarray:
    """Category codes (-1 missing) as an object array of the levels' text, None where missing."""
    levels = np.array([str(c) for c in categories] + [None], dtype=object)
    return levels[np.where(codes >= 0, codes, len(categories))]


def _floats(values) -> np.ndarray:
    return values.to_numpy(dtype=float) if isinstance(values, pd.Series) else np.asarray(values, dtype=float)
