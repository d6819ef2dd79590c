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

import pandas as pd

from crmml.data import as_transactions, calibration_holdout
from crmml.data.summary import as_day
from crmml.errors import DataValidationError

__all__ = ["outcome_labels"]


def outcome_labels(
    transactions,
    *,
    as_of,
    churn_window_days: int = 90,
    value_horizon_days: int = 365,
    allow_incomplete: bool = False,
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
    horizon = calibration_holdout(log, calibration_end=as_of_day, holdout_end=horizon_end)
    return pd.DataFrame(
        {
            "churned": (window["frequency_holdout"] == 0).astype(int),
            "purchases_in_window": window["frequency_holdout"],
            "spend_in_horizon": horizon["spend_holdout"],
            "purchases_in_horizon": horizon["frequency_holdout"],
        }
    )
