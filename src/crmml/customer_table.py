"""The customer table at an as-of date: the one definition of its rules, as arrays.

:func:`table_arrays` checks a customer table and turns its columns into attribute arrays; every
engine uses it (the in-memory scorer, the service, Spark's batches) and the DuckDB batch engine
compiles the same rules from the constants here. The rules:

- ``customer_id`` is required, never missing and never repeated (:func:`check_ids`);
- ``signup_date`` becomes ``tenure_days`` (whole days from the sign-up day, in UTC, to ``as_of``);
  customers who signed up after ``as_of`` are left out, even if they bought, and counted; an
  unknown sign-up date keeps the customer (tenure unknown);
- ``referred_by`` (a customer id) becomes ``has_referrer`` (0/1) and ``n_referrals``: the customers
  in the table, signed up on or before ``as_of`` when ``signup_date`` is given (an unknown date
  does not count), who name this customer (:data:`REFERRAL_RULE`). A numeric ``n_referrals``
  column, counted upstream over the whole base, is used as given (counts >= 0);
- ``cost_to_serve`` (:data:`COST_COLUMN`) is a cost >= 0 or unknown, used by the tiers, never a
  feature (:func:`checked_costs`);
- booleans become 0/1 floats, numbers floats, text and categorical columns categories (codes
  against the sorted values; a value the learners never saw encodes as all zeros); other columns
  (dates, for example) are dropped and listed;
- for training (:func:`training_table`), a text column with more than :data:`MAX_CATEGORY_LEVELS`
  distinct values, and a column of dates (typed, or text that parses as dates: :data:`DATE_SHARE`)
  other than ``signup_date``, are left out of the features with a
  :class:`~crmml.errors.CustomerTableWarning` each.

A purchaser without a table row has unknown attributes and ``n_referrals`` 0; a table customer
without purchases keeps a row with ``no_purchase_history`` (see :mod:`crmml.features`).
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from crmml.errors import CustomerTableWarning, DataValidationError

__all__ = ["COST_COLUMN", "DATE_SHARE", "DERIVED_COLUMNS", "MAX_CATEGORY_LEVELS", "REFERRAL_RULE", "TableArrays",
           "check_ids", "checked_costs", "counted_referrers", "like_customer_ids", "sign_up_days", "table_arrays",
           "table_columns", "training_table"]

#: The customer-table column that describes cost, not the customer: kept out of the features.
COST_COLUMN = "cost_to_serve"
#: Table columns turned into other columns, and the columns they become.
DERIVED_COLUMNS = {"signup_date": ("tenure_days",), "referred_by": ("has_referrer", "n_referrals")}
#: Who counts as a referral of customer ``r``: table rows naming ``r`` in ``referred_by`` whose sign-up
#: day is known and on or before ``as_of`` (every row naming ``r`` when the table has no signup_date).
REFERRAL_RULE = "referred_by = r AND (no signup_date column OR signup_day <= as_of)"

#: A text attribute with more than this many distinct values is left out of the training features: its
#: one-hot encoding would outnumber the ~30 purchase features, with a few customers per level.
MAX_CATEGORY_LEVELS = 50
#: A text column holds dates when at least this share of its distinct values (the first
#: :data:`_DATE_SAMPLE`) parse as dates (pandas' inferred format, month or day first), not counting
#: plain numbers (``2019``).
DATE_SHARE = 0.9
_DATE_SAMPLE = 1000
#: Columns with a role of their own: never attributes as they are (see the module docstring).
_ROLE_COLUMNS = ("customer_id", "signup_date", "referred_by", "n_referrals", COST_COLUMN)

#: Up to this many rows, text columns become categories without pandas' general conversion
#: (the same categories, codes and dtype; pandas' conversion costs ~0.2 ms even for one row).
_SMALL_TABLE_ROWS = 64


@dataclass
class TableArrays:
    """A customer table turned into attributes at the as-of date (the customers kept only).

    Attributes
    ----------
    ids : numpy.ndarray
        The kept customers' ids, in table order.
    numbers : dict of str to numpy.ndarray
        Float attribute columns (``tenure_days``, ``has_referrer``, ``n_referrals`` as given, numbers).
    categories : dict of str to (numpy.ndarray, pandas.Index)
        Categorical attribute columns: codes (-1 unknown) and their categories.
    order : list of str
        The attribute columns in feature order.
    referrers : numpy.ndarray or None
        The referrer ids to count ``n_referrals`` from (:data:`REFERRAL_RULE`), None when the counts
        are given or there is no ``referred_by``.
    n_excluded : int
        Customers who signed up after as_of.
    excluded_ids : numpy.ndarray
    dropped_columns : list of str
    """

    ids: np.ndarray
    numbers: dict = field(default_factory=dict)
    categories: dict = field(default_factory=dict)
    order: list = field(default_factory=list)
    referrers: np.ndarray | None = None
    excluded_ids: np.ndarray = field(default_factory=lambda: np.empty(0))
    dropped_columns: list = field(default_factory=list)

    @property
    def n_excluded(self) -> int:
        return len(self.excluded_ids)


def check_ids(customers: pd.DataFrame) -> np.ndarray:
    """The table's ``customer_id`` values, or DataValidationError when missing or repeated."""
    if not isinstance(customers, pd.DataFrame):
        raise TypeError(f"customers must be a pandas DataFrame. Got {type(customers).__name__} instead.")
    if "customer_id" not in customers.columns:
        raise DataValidationError(
            f"Required column 'customer_id' is missing from the customer table. "
            f"Columns found: {[str(c) for c in customers.columns]}.",
            column="customer_id",
        )
    ids = customers["customer_id"]
    index = pd.Index(ids, name="customer_id")
    if index.hasnans:
        rows = list(customers.index[ids.isna().to_numpy()][:5])
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
    return index.to_numpy()


def checked_costs(values, ids) -> np.ndarray:
    """``cost_to_serve`` as floats (NaN unknown), or DataValidationError naming the customers whose
    cost is not a number >= 0."""
    column = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    if isinstance(column.dtype, np.dtype) and column.dtype.kind in "fiub":  # numbers already (the usual case)
        costs = column.to_numpy(dtype=np.float64)
        bad = ~(costs >= 0) & ~np.isnan(costs)
        if bad.any():
            rows = list(np.asarray(ids, dtype=object)[bad][:5])
            raise DataValidationError(f"The customer table's {COST_COLUMN!r} must be costs >= 0; customer ids "
                                      f"{rows} are not.", column=COST_COLUMN, rows=rows)
        return costs
    with np.errstate(over="ignore"):
        try:
            costs = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        except (OverflowError, TypeError, ValueError):
            costs = np.array([_cost(v) for v in column.tolist()], dtype=np.float64)
    bad = column.notna().to_numpy() & ~(costs >= 0)
    if bad.any():
        rows = list(np.asarray(ids, dtype=object)[bad][:5])
        raise DataValidationError(f"The customer table's {COST_COLUMN!r} must be costs >= 0; customer ids {rows} "
                                  "are not.", column=COST_COLUMN, rows=rows)
    return costs


def _cost(value) -> float:
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        return float("nan")


def table_arrays(customers: pd.DataFrame, as_of_day: pd.Timestamp, taken) -> TableArrays:
    """Check a customer table (without ``cost_to_serve``) and turn it into :class:`TableArrays`.

    ``taken`` are the feature names a table column may not have.
    """
    ids = check_ids(customers)
    names = [name for name in customers.columns if name != "customer_id"]
    return table_columns(ids, {name: customers[name] for name in names}, as_of_day, taken)


def table_columns(ids: np.ndarray, columns: Mapping[str, object], as_of_day: pd.Timestamp, taken,
                  signup_days: np.ndarray | None = None) -> TableArrays:
    """:func:`table_arrays` from checked ids and the other columns (pandas Series, or arrays /
    lists). ``signup_days`` (``datetime64[D]``), when given, replaces parsing ``signup_date``."""
    names = list(columns)
    out: dict[str, np.ndarray] = {}
    categories: dict[str, tuple] = {}
    order: list[str] = []
    keep = None
    signed_up = None
    excluded = ids[:0]
    if "signup_date" in names:
        signup = signup_days if signup_days is not None else _as_days(_series(columns["signup_date"]))
        as_of_stamp = np.datetime64(as_of_day.to_datetime64(), "D")
        after = signup > as_of_stamp
        signed_up = signup <= as_of_stamp  # unknown sign-up dates do not count as referrals
        tenure = (as_of_stamp - signup) / np.timedelta64(1, "D")  # whole days, NaN if unknown
        if after.any():
            keep = ~after
            excluded = ids[after]
        out["tenure_days"] = tenure
        order.append("tenure_days")
    referrers = None
    if "referred_by" in names:
        referrer = _series(columns["referred_by"])
        known = referrer.notna().to_numpy()
        out["has_referrer"] = known.astype(np.float64)
        order.append("has_referrer")
        if "n_referrals" not in names:
            referrers = counted_referrers(referrer, signed_up, ids)
            order.append("n_referrals")  # counted at the join, over the output customers
    if "n_referrals" in names:  # counted upstream, over a table larger than this one
        raw = _series(columns["n_referrals"])
        given = pd.to_numeric(raw, errors="coerce")
        bad = (given.isna() | (given < 0)).to_numpy()
        if bad.any():
            rows = list(ids[bad][:5])
            raise DataValidationError(
                f"The customer table's 'n_referrals' must be counts >= 0; customer ids {rows} are not.",
                column="n_referrals", rows=rows,
            )
        out["n_referrals"] = given.to_numpy(dtype=np.float64)
        order.append("n_referrals")
    dropped = []
    for name in names:
        if name in ("signup_date", "referred_by", "n_referrals"):
            continue
        if name in taken or name in out:
            raise DataValidationError(
                f"The customer table's column {name!r} has the name of a feature; rename it.", column=name
            )
        column = _series(columns[name])
        if keep is not None:
            column = column[keep]
        if pd.api.types.is_bool_dtype(column):  # as 0/1, so that a missing customer can be NaN
            out[name] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        elif isinstance(column.dtype, pd.CategoricalDtype):
            categories[name] = (column.cat.codes.to_numpy(), column.cat.categories)
        elif pd.api.types.is_numeric_dtype(column):
            out[name] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        elif pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column):
            category = _as_category(column)
            categories[name] = (np.asarray(category.codes), category.categories)
        else:
            dropped.append(name)
            continue
        order.append(name)
    if keep is not None:  # the derived columns were built over every row
        for name in ("tenure_days", "has_referrer"):
            if name in out:
                out[name] = out[name][keep]
        if "n_referrals" in out and referrers is None:
            out["n_referrals"] = out["n_referrals"][keep]
        ids = ids[keep]
    return TableArrays(ids, out, categories, order, referrers, excluded, dropped)


def training_table(customers: pd.DataFrame | None) -> tuple[pd.DataFrame | None, dict[str, str]]:
    """The customer table a model is trained on, and the columns left out of it with why.

    Left out, each with a :class:`~crmml.errors.CustomerTableWarning` that names the column and
    says what to do:

    - a column of dates other than ``signup_date``: typed dates, or text of which at least
      :data:`DATE_SHARE` of the distinct values parse as dates (and none as a plain number), such as
      an unmapped sign-up column read from CSV. As a category each day would be a level of its own
      and every later day unknown; a sign-up date should be mapped as ``signup_date`` (it then
      becomes ``tenure_days``);
    - a text (or categorical) column with more than :data:`MAX_CATEGORY_LEVELS` distinct values (an
      email, a city, free text): its one-hot encoding would outnumber the purchase features, with
      a few customers per level. Group its values into fewer levels to use it.

    ``customer_id``, ``signup_date``, ``referred_by``, ``n_referrals`` and ``cost_to_serve`` are not
    judged (they have roles of their own). :meth:`crmml.scorer.Scorer.fit` and
    :func:`crmml.backtest.backtest` call this once, so the shipped model, its backtest and the
    model's recorded attributes agree; scoring takes the same table as it is (the learners read
    only the columns they were trained on).

    Parameters
    ----------
    customers : pandas.DataFrame or None
        The customer table, canonical column names (see :class:`crmml.customer_columns.CustomerColumns`).

    Returns
    -------
    table : pandas.DataFrame or None
        ``customers`` without the columns left out (the same object when none is).
    left_out : dict of str to str
        Each column left out, with the reason in a few words.
    """
    if customers is None:
        return None, {}
    if not isinstance(customers, pd.DataFrame):
        raise TypeError(f"customers must be a pandas DataFrame. Got {type(customers).__name__} instead.")
    left_out: dict[str, str] = {}
    for name in customers.columns:
        if name in _ROLE_COLUMNS:
            continue
        why, advice = _unusable(customers[name])
        if why is None:
            continue
        left_out[name] = why
        warnings.warn(f"The customer table's column {name!r} ({why}) is left out of the features. {advice}",
                      CustomerTableWarning, stacklevel=2)
    return (customers.drop(columns=list(left_out)) if left_out else customers), left_out


def _unusable(column: pd.Series) -> tuple[str | None, str]:
    """Why a table column is not a training feature (None when it is one), and what to do."""
    name = column.name
    mapping = f"map it as signup_date (config customer_columns: {{signup_date: {name}}}, or --signup-col {name})"
    if pd.api.types.is_datetime64_any_dtype(column):
        return "dates, not mapped as signup_date", f"If it is the sign-up date, {mapping}."
    is_text = pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)
    if not (is_text or isinstance(column.dtype, pd.CategoricalDtype)):
        return None, ""
    values = pd.unique(column.dropna().to_numpy(dtype=object))
    share = _date_share(values[:_DATE_SAMPLE])
    if share >= DATE_SHARE:
        kind = "text of dates" if any(isinstance(v, str) for v in values[:_DATE_SAMPLE]) else "dates"
        return (f"{kind}, not mapped as signup_date",
                f"{share:.0%} of its values parse as dates. If it is the sign-up date, {mapping}; other dates "
                "are not used.")
    if len(values) > MAX_CATEGORY_LEVELS:
        return (f"text with {len(values):,} distinct values, more than {MAX_CATEGORY_LEVELS}",
                f"As a category it would be {len(values):,} one-hot features. If it is an id or a date, map it "
                f"(customer_columns: / --table-customer-col, --signup-col, --referrer-col); to use it, group its "
                f"values into at most {MAX_CATEGORY_LEVELS} levels; or drop it from the table.")
    return None, ""


def _date_share(values: np.ndarray) -> float:
    """The share of ``values`` (distinct, non-missing) that are dates: date objects, or text holding a
    digit that parses as a date and not as a plain number (``2019`` and ``01234`` are not dates)."""
    if not len(values):
        return 0.0
    if all(isinstance(v, (datetime.date, np.datetime64)) for v in values):  # e.g. Parquet dates as objects
        return 1.0
    text = pd.Series([v.strip() for v in values if isinstance(v, str) and any(c.isdigit() for c in v)],
                     dtype=object)
    if text.empty:
        return 0.0
    numbers = pd.to_numeric(text, errors="coerce").notna()
    best = 0
    for dayfirst in (False, True):  # 05/01/2024: the inferred format, month first or day first
        with warnings.catch_warnings():  # pandas' notice when it cannot infer one format
            warnings.simplefilter("ignore", UserWarning)
            try:
                parsed = pd.to_datetime(text, errors="coerce", utc=True, dayfirst=dayfirst).notna()
            except (TypeError, ValueError, OverflowError):
                continue
        best = max(best, int((parsed & ~numbers).sum()))
    return best / len(values)


def counted_referrers(referred_by: pd.Series, signed_up: np.ndarray | None, ids) -> np.ndarray:
    """The referrer id of every referral that counts (:data:`REFERRAL_RULE`): rows naming a
    referrer, signed up on or before as_of when the table has sign-up dates (``signed_up`` per row,
    False where unknown; None without the column). ``n_referrals`` of customer ``r`` is the number
    of times ``r`` appears here. Engines that count over a table they stream call this on its
    ``referred_by`` column and sign-up days."""
    known = referred_by.notna().to_numpy()
    counted = known if signed_up is None else known & np.asarray(signed_up, dtype=bool)
    return like_customer_ids(referred_by[counted], ids).to_numpy()


def _series(values) -> pd.Series:
    return values if isinstance(values, pd.Series) else pd.Series(values)


def _as_category(column: pd.Series) -> pd.Categorical:
    """``column.astype("category").array``; built directly for a few rows of strings."""
    if not (isinstance(column.dtype, pd.StringDtype) and len(column) <= _SMALL_TABLE_ROWS):
        return column.astype("category").array
    values = column.to_numpy(dtype=object, na_value=None)
    known = sorted({v for v in values if v is not None})
    codes = {v: i for i, v in enumerate(known)}
    return pd.Categorical.from_codes(np.array([codes.get(v, -1) for v in values], dtype=np.int8),
                                     dtype=pd.CategoricalDtype(pd.Index(known, dtype=column.dtype)))


def sign_up_days(values: pd.Series) -> np.ndarray:
    """The UTC day of each ``signup_date`` (``datetime64[D]``, NaT where unknown), or
    DataValidationError naming the column when they are not dates. A customer signed up after
    ``as_of`` when this day is after the as-of day."""
    return _as_days(values)


def _as_days(values: pd.Series) -> np.ndarray:
    """:func:`sign_up_days`."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind == "M":
        return values.to_numpy().astype("datetime64[D]")
    try:
        stamps = pd.to_datetime(values)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataValidationError(
            f"The customer table's 'signup_date' must hold dates: {exc}", column="signup_date"
        ) from exc
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.dt.normalize().to_numpy().astype("datetime64[D]")


def like_customer_ids(values: pd.Series, ids) -> pd.Series:
    """Referrer ids in the type of the customer ids (an integer column with gaps is read as float)."""
    dtype = getattr(ids, "dtype", None)
    if dtype is not None and pd.api.types.is_integer_dtype(dtype) and pd.api.types.is_float_dtype(values.dtype):
        whole = values == np.round(values)
        return values[whole].astype(dtype)
    return values
