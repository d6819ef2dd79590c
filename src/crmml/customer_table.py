"""The customer table of :func:`crmml.features.compute_features`: attributes at the as-of date.

:class:`_CustomerTable` checks a customer table and turns its columns into feature columns
(``tenure_days`` from ``signup_date``, ``has_referrer`` and ``n_referrals`` from ``referred_by``,
text as ``category``); :func:`_join_customers` joins them to the purchase-history rows. See
:func:`crmml.features.compute_features` for the rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crmml.errors import DataValidationError

__all__ = ["like_customer_ids"]

#: Up to this many rows, text columns become categories without pandas' general conversion
#: (the same categories, codes and dtype; pandas' conversion costs ~0.2 ms even for one row).
_SMALL_TABLE_ROWS = 64




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
