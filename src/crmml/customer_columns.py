"""Which columns of a customer table are what: the table's own names mapped once onto crmml's.

crmml recognises a customer table's columns by name (:mod:`crmml.customer_table`): ``customer_id``
(required), ``signup_date``, ``acquisition_channel``, ``referred_by``, ``region`` and
``cost_to_serve``; every other column is an attribute. :class:`CustomerColumns` maps a table's own
names onto these: the ``customer_columns:`` section of a training config, and
``--table-customer-col``, ``--signup-col``, ``--channel-col``, ``--referrer-col``, ``--region-col``
and ``--cost-col`` on the command line.

The doors apply it where they read the table, by renaming the mapped columns to the canonical names
(:meth:`CustomerColumns.renames`): :func:`crmml.jobs.read_customer_table` (pandas), the DuckDB batch
engine (:func:`crmml.batch.score_in_partitions`) and Spark's scoring job. The core (features, scorer,
insights, report) sees canonical names only. A model records the mapping it was trained with
(``ScorerConfig.customer_columns``), so ``crmml score`` and ``crmml report`` read the same table
without the options.

:func:`table_record` and :func:`describe_table` say which columns training used as what: the roles,
the attribute features and the columns left out with why (:func:`crmml.customer_table.training_table`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace

import pandas as pd

from crmml.customer_table import COST_COLUMN, DERIVED_COLUMNS
from crmml.errors import DataValidationError

__all__ = ["CustomerColumns", "describe_table", "table_record"]

#: Each role (a field of :class:`CustomerColumns`) and the canonical column it becomes.
CANONICAL = {"customer": "customer_id", "signup_date": "signup_date", "acquisition_channel": "acquisition_channel",
             "referred_by": "referred_by", "region": "region", "cost_to_serve": COST_COLUMN}
_LABELS = {"customer": "customer id", "signup_date": "sign-up date", "acquisition_channel": "channel",
           "referred_by": "referrer", "region": "region", "cost_to_serve": "cost to serve"}


@dataclass(frozen=True)
class CustomerColumns:
    """The customer table's column names by role (default: the canonical names).

    Attributes
    ----------
    customer : str
        The customer id column, the log's customer ids (default ``customer_id``).
    signup_date : str
        Sign-up dates, which become ``tenure_days`` (default ``signup_date``).
    acquisition_channel : str
        The acquisition channel: an attribute, and the report's value by channel.
    referred_by : str
        The referrer's customer id, which becomes ``has_referrer`` and ``n_referrals``.
    region : str
        The region: an attribute.
    cost_to_serve : str
        Cost to serve a customer over the value horizon: used by the tiers, never a feature.

    A column mapped to a role may bear another role's default name (``signup_date: region``): that
    role then has no column.

    Raises
    ------
    ValueError
        When a name is empty or two roles are mapped to the same column.
    """

    customer: str = "customer_id"
    signup_date: str = "signup_date"
    acquisition_channel: str = "acquisition_channel"
    referred_by: str = "referred_by"
    region: str = "region"
    cost_to_serve: str = COST_COLUMN

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for role, canonical in CANONICAL.items():
            name = getattr(self, role)
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"customer_columns.{role} must be a column name; got {name!r}.")
            if name == canonical and role != "customer":  # a default: another role's column may take its name
                continue
            if name in seen:
                raise ValueError(f"customer_columns maps the column {name!r} to both {seen[name]} and {role}; "
                                 "a column has one role.")
            seen[name] = role

    @classmethod
    def from_dict(cls, values: Mapping | None) -> CustomerColumns:
        """From a mapping with any of the roles as keys (the ``customer_columns:`` config section)."""
        values = dict(values or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"Unknown key(s) {unknown} in config section 'customer_columns'; known keys: {known}.")
        return cls(**values)

    def to_dict(self) -> dict:
        return {role: getattr(self, role) for role in CANONICAL}

    def merged(self, changes: Mapping | None) -> CustomerColumns:
        """A copy with the entries of ``changes`` that are not None (command-line options over a config)."""
        given = {role: name for role, name in (changes or {}).items() if name is not None}
        return replace(self, **given) if given else self

    def source_name(self, column: str) -> str:
        """The table's own name of a canonical column (a column without a role keeps its name)."""
        for role, canonical in CANONICAL.items():
            if canonical == column:
                return getattr(self, role)
        return column

    def renames(self, found: Sequence, source: str) -> dict[str, str]:
        """``{the table's name: canonical name}`` for the roles named otherwise in a table with the
        columns ``found``, checked.

        Parameters
        ----------
        found : sequence of str
            The table's column names.
        source : str
            The table, for the errors (e.g. ``"the customer table 'customers.csv'"``).

        Raises
        ------
        DataValidationError
            Naming the column and ``source``, when the customer id column is missing, a mapped column
            is missing, or the table also has a column with the canonical name a mapped one takes.
        """
        found = [str(c) for c in found]
        if self.customer not in found:
            hint = "" if self.customer != CANONICAL["customer"] else (
                " Map the table's id column with customer_columns.customer (--table-customer-col).")
            raise DataValidationError(f"Required column {self.customer!r} is missing from {source}. Columns found: "
                                      f"{found}.{hint}", column=self.customer)
        renames = {}
        mapped = {getattr(self, role) for role, canonical in CANONICAL.items() if getattr(self, role) != canonical}
        for role, canonical in CANONICAL.items():
            name = getattr(self, role)
            if name == canonical:
                continue
            if name not in found:
                raise DataValidationError(f"Column {name!r}, mapped as {canonical} (customer_columns.{role}), is "
                                          f"missing from {source}. Columns found: {found}.", column=name)
            if canonical in found and canonical not in mapped:  # (two columns swapping names is fine)
                raise DataValidationError(f"{source[0].upper()}{source[1:]} has a column {canonical!r} besides "
                                          f"{name!r}, which is mapped as {canonical} (customer_columns.{role}); drop "
                                          "or rename one of them.", column=canonical)
            renames[name] = canonical
        return renames

    def apply(self, frame: pd.DataFrame, source: str) -> pd.DataFrame:
        """``frame`` with the mapped columns renamed to the canonical names (:meth:`renames`)."""
        renames = self.renames(list(frame.columns), source)
        return frame.rename(columns=renames) if renames else frame

    def describe(self, present: Collection[str] | None = None) -> str:
        """One line: which table column is used as what. ``present`` (the table's canonical column
        names), when given, marks the roles the table does not have."""
        parts = []
        for role, canonical in CANONICAL.items():
            if present is not None and canonical not in present:
                parts.append(f"no {_LABELS[role]}")
            else:
                parts.append(f"{_LABELS[role]} = {getattr(self, role)!r}")
        return "customer table: " + ", ".join(parts)


def table_record(columns: CustomerColumns, present: Collection[str], features: Sequence[str],
                 left_out: Mapping[str, str]) -> dict:
    """What training used of a customer table (JSON-ready; the scorer's ``customer_table_``).

    Parameters
    ----------
    columns : CustomerColumns
        The mapping the table was read with.
    present : collection of str
        The table's columns (canonical names).
    features : sequence of str
        The attribute features the model was trained with (``tenure_days``, ``acquisition_channel``...).
    left_out : mapping of str to str
        The columns not used, with why (canonical names).

    Returns
    -------
    dict
        ``columns`` ({role: the table's name} for the roles the table has), ``features`` ({feature:
        the table column it comes from}) and ``ignored`` ({the table's name: why}).
    """
    roles = {role: getattr(columns, role) for role, canonical in CANONICAL.items() if canonical in present}
    derived = {feature: source for source, made in DERIVED_COLUMNS.items() for feature in made}
    origin = {f: columns.source_name(f if f in present or f not in derived else derived[f]) for f in features}
    return {"columns": roles, "features": origin,
            "ignored": {columns.source_name(name): why for name, why in left_out.items()}}


def describe_table(record: dict | None, columns: CustomerColumns) -> list[str]:
    """Two lines from a :func:`table_record`: the roles, then the features and the columns ignored
    (none without a table)."""
    if not record:
        return []
    present = [CANONICAL[role] for role in record["columns"]]
    features = [name if source == name else f"{name} ({source!r})" for name, source in record["features"].items()]
    ignored = [f"{name!r} ({why})" for name, why in record["ignored"].items()]
    line = f"customer attributes: features {', '.join(features) or 'none'}"
    return [columns.describe(present), line + (f"; ignored {', '.join(ignored)}" if ignored else "")]
