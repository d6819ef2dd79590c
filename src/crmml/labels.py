"""What happened after an as-of date: the churn and value labels of the supervised models.

For the customers known at ``as_of`` (a purchase on or before it):

- ``churned``: 1 if the customer made no purchase in ``(as_of, as_of + churn_window]``, else 0;
- ``purchases_in_window``: purchase occasions (days) in that window;
- ``spend_in_horizon`` and ``purchases_in_horizon``: net spend and purchase occasions in
  ``(as_of, as_of + value_horizon]``.

Purchases, refunds and invalid rows follow the data layer's policy (:func:`crmml.data.rfm_summary`),
because the labels are :func:`crmml.data.calibration_holdout` splits at ``as_of``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crmml.data import as_transactions, calibration_holdout
from crmml.data.summary import as_day, purchase_occasions
from crmml.errors import DataValidationError

__all__ = ["outcome_labels"]


def outcome_labels(
    transactions,
    *,
    as_of,
    churn_window_days: int = 90,
    value_horizon_days: int = 365,
    allow_incomplete: bool = False,
    customer_ids=None,
    **read_kwargs,
) -> pd.DataFrame:
    """Churn and value labels after ``as_of`` for every customer known at ``as_of``.

    Parameters
    ----------
    transactions : Transactions, DataFrame or path
        Anything :func:`crmml.data.read_transactions` takes (``read_kwargs`` go to it).
    as_of : date-like
        The last day of the observed history (included).
    churn_window_days : int, default 90
        Length of the churn window after ``as_of``.
    value_horizon_days : int, default 365
        Length of the value horizon after ``as_of``.
    allow_incomplete : bool, default False
        The log must reach the end of both windows (its last transaction on or after that day),
        otherwise labels would silently count missing data as churn. ``True`` accepts a shorter log
        (for instance to score a window that is still running); the caller then owns the bias.
    customer_ids : array-like, optional
        Customers to label besides those known at ``as_of``: customers from a customer table who had
        not bought by ``as_of``. Their labels count their first purchases in the windows (a
        customer who bought nothing is ``churned``). The result then has one row per customer
        known at ``as_of`` or listed here, sorted by id.

    Returns
    -------
    DataFrame
        Indexed by ``customer_id``: ``churned`` (int), ``purchases_in_window``,
        ``spend_in_horizon``, ``purchases_in_horizon``.
    """
    for name, days in (("churn_window_days", churn_window_days), ("value_horizon_days", value_horizon_days)):
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ValueError(f"{name} must be a positive whole number of days; got {days!r}.")
    log = as_transactions(transactions, **read_kwargs)
    as_of_day = as_day(as_of, "as_of")
    window_end = as_of_day + pd.Timedelta(days=churn_window_days)
    horizon_end = as_of_day + pd.Timedelta(days=value_horizon_days)
    last_day = log.last_timestamp.normalize()
    if not allow_incomplete and last_day < max(window_end, horizon_end):
        raise DataValidationError(
            f"The transactions end on {last_day.date()}, before the end of the label windows "
            f"({window_end.date()} for churn, {horizon_end.date()} for value, after as_of={as_of_day.date()}): "
            "customers would look churned for lack of data. Use an earlier as_of or shorter windows "
            "(or allow_incomplete=True)."
        )
    window = calibration_holdout(log, calibration_end=as_of_day, holdout_end=window_end)
    horizon = window if horizon_end == window_end else calibration_holdout(
        log, calibration_end=as_of_day, holdout_end=horizon_end)
    labels = pd.DataFrame(
        {
            "purchases_in_window": window["frequency_holdout"].astype(np.float64),
            "spend_in_horizon": horizon["spend_holdout"].astype(np.float64),
            "purchases_in_horizon": horizon["frequency_holdout"].astype(np.float64),
        }
    )
    if customer_ids is not None:
        unknown = pd.Index(pd.unique(np.asarray(customer_ids))).difference(labels.index)
        if len(unknown):
            in_window, spent = _first_time_purchases(log, as_of_day, window_end, unknown)
            in_horizon, spend = (in_window, spent) if horizon_end == window_end else _first_time_purchases(
                log, as_of_day, horizon_end, unknown)
            first_time = pd.DataFrame(
                {"purchases_in_window": in_window, "spend_in_horizon": spend, "purchases_in_horizon": in_horizon},
                index=unknown,
            )
            labels = pd.concat([labels, first_time]).sort_index()
            labels.index.name = "customer_id"
    labels.insert(0, "churned", (labels["purchases_in_window"] == 0).astype(int))
    return labels


def _first_time_purchases(log, as_of_day: pd.Timestamp, end_day: pd.Timestamp, ids: pd.Index):
    """Purchase days and net spend in ``(as_of, end]`` of the customers ``ids`` who first bought
    after ``as_of`` (customers who bought earlier, or never, get 0), by the data layer's occasions."""
    as_of_period = int(as_of_day.to_datetime64().astype("datetime64[D]").astype(np.int64))
    count = pd.Series(0.0, index=ids)
    spend = pd.Series(0.0, index=ids)
    for batch in purchase_occasions(log, as_of=end_day, freq="D"):
        batch_ids = pd.Index(batch.customer_id.to_pandas())
        wanted = batch_ids.isin(ids)
        if not wanted.any():
            continue
        n = len(batch_ids)
        code = batch.customer
        first_period = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(first_period, code, batch.period)
        new_customer = wanted & (first_period > as_of_period)
        keep = new_customer[code]
        counts = np.bincount(code[keep], minlength=n).astype(np.float64)
        amounts = (
            np.bincount(code[keep], weights=batch.net_amount[keep], minlength=n)
            if batch.net_amount is not None
            else np.full(n, np.nan)
        )
        count[batch_ids[new_customer]] = counts[new_customer]
        spend[batch_ids[new_customer]] = amounts[new_customer]
    if not log.has_amount:
        spend[:] = np.nan
    return count.to_numpy(), spend.to_numpy()
