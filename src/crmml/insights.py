"""Seed insights computed at training: where customers came from and who they brought.

- :func:`value_by_channel`: customers, predicted value and tiers per ``acquisition_channel``.
- :func:`referral_value`: per referrer, the customers it brought and their predicted value; and the
  referred against the unreferred.
- :func:`win_back_list`: the platinum and gold customers at risk, highest value first.

Both read the training population's scores and the customer table (``customer_id``,
``acquisition_channel``, ``referred_by``); without the column the table is None.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crmml.customer_table import like_customer_ids

__all__ = ["referral_summary", "referral_value", "value_by_channel", "win_back_list"]


def value_by_channel(scores: pd.DataFrame, customers: pd.DataFrame | None,
                     column: str = "acquisition_channel") -> pd.DataFrame | None:
    """Predicted value per acquisition channel ("where they came from").

    Parameters
    ----------
    scores : pandas.DataFrame
        One row per customer: ``customer_id``, ``predicted_value``, ``tier``, ``at_risk``.
    customers : pandas.DataFrame or None
        The customer table.

    Returns
    -------
    pandas.DataFrame or None
        Per channel (``unknown`` for customers without one): customers, total, mean and median
        predicted value, the channel's share of all predicted value, the share of its customers in
        platinum or gold and the share at risk; sorted by total value. None without the column.
        ``mean_value_lower_95`` / ``mean_value_upper_95``: a 95 % interval for the mean predicted value
        per customer acquired through the channel (normal approximation, mean +- 1.96 standard
        errors over its customers; NaN below 30 customers, where a skewed value is not near normal).
    """
    if customers is None or column not in customers.columns:
        return None
    channel = customers.set_index("customer_id")[column].reindex(scores["customer_id"]).to_numpy()
    frame = pd.DataFrame({
        "channel": pd.Series(channel, dtype=object).fillna("unknown").astype(str).to_numpy(),
        "value": scores["predicted_value"].to_numpy(dtype=np.float64),
        "top": scores["tier"].isin(["platinum", "gold"]).to_numpy(),
        "at_risk": scores["at_risk"].to_numpy(dtype=bool),
    })
    grouped = frame.groupby("channel")
    table = pd.DataFrame({
        "customers": grouped.size(),
        "predicted_value": grouped["value"].sum(),
        "mean_value": grouped["value"].mean(),
        "median_value": grouped["value"].median(),
        "mean_value_lower_95": grouped["value"].mean() - 1.959963984540054 * grouped["value"].sem(),
        "mean_value_upper_95": grouped["value"].mean() + 1.959963984540054 * grouped["value"].sem(),
        "platinum_or_gold_share": grouped["top"].mean(),
        "at_risk_share": grouped["at_risk"].mean(),
    })
    few = table["customers"] < 30
    table.loc[few, ["mean_value_lower_95", "mean_value_upper_95"]] = np.nan
    total = table["predicted_value"].sum()
    table.insert(2, "value_share", table["predicted_value"] / total if total else 0.0)
    table.index.name = column
    return table.sort_values("predicted_value", ascending=False)


def referral_value(scores: pd.DataFrame, customers: pd.DataFrame | None, top: int | None = None) -> pd.DataFrame | None:
    """Per referrer, the customers it brought and their predicted value ("who they brought").

    Returns
    -------
    pandas.DataFrame or None
        Indexed by the referrer's ``customer_id``: ``referred_customers``, ``referred_value`` (the
        sum of their predicted value), ``own_value`` and ``own_tier`` of the referrer, sorted by
        ``referred_value``; the first ``top`` rows when given. None without ``referred_by``.
    """
    if customers is None or "referred_by" not in customers.columns:
        return None
    referred = customers[["customer_id", "referred_by"]].dropna(subset=["referred_by"])
    value = scores.set_index("customer_id")
    referred = referred[referred["customer_id"].isin(value.index)]
    referrer = like_customer_ids(referred["referred_by"], value.index)
    referred = referred.loc[referrer.index].assign(referred_by=referrer)
    referred["value"] = value["predicted_value"].reindex(referred["customer_id"]).to_numpy()
    grouped = referred.groupby("referred_by")
    table = pd.DataFrame({"referred_customers": grouped.size(), "referred_value": grouped["value"].sum()})
    table["own_value"] = value["predicted_value"].reindex(table.index).to_numpy()
    table["own_tier"] = value["tier"].reindex(table.index).to_numpy()
    table.index.name = "referrer_id"
    table = table.sort_values(["referred_value", "referred_customers"], ascending=False)
    return table if top is None else table.head(top)


def referral_summary(scores: pd.DataFrame, customers: pd.DataFrame | None) -> pd.DataFrame | None:
    """Referred against unreferred customers, and referrers against the rest: customers and mean value."""
    if customers is None or "referred_by" not in customers.columns:
        return None
    value = scores.set_index("customer_id")["predicted_value"]
    table = customers.set_index("customer_id")
    referred = table["referred_by"].notna().reindex(value.index, fill_value=False)
    referrers = value.index.isin(like_customer_ids(table["referred_by"].dropna(), value.index))
    groups = {
        "referred by a customer": referred.to_numpy(),
        "not referred": ~referred.to_numpy(),
        "referred someone": referrers,
        "referred no one": ~referrers,
    }
    rows = {name: {"customers": int(mask.sum()),
                   "mean_value": float(value[mask].mean()) if mask.any() else np.nan,
                   "predicted_value": float(value[mask].sum())} for name, mask in groups.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("group")


def win_back_list(scores: pd.DataFrame) -> pd.DataFrame:
    """The win-back list: the rows of ``scores`` flagged ``high_value_at_risk`` (platinum or gold
    customers at risk), highest ``predicted_value`` first, ties by ``customer_id``."""
    listed = scores[scores["high_value_at_risk"].to_numpy(dtype=bool)]
    return listed.sort_values(["predicted_value", "customer_id"], ascending=[False, True], kind="stable")
