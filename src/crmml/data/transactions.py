"""Read and validate a transaction log.

A transaction log is one row per purchase (or refund): who bought, when, and optionally how much.
:func:`read_transactions` accepts a pandas DataFrame or CSV/Parquet files (a file, a glob or a
directory), checks every row with DuckDB and returns a :class:`Transactions`: the validated log in
canonical form (``customer_id``, ``timestamp``, ``amount``), kept as SQL over its source so that
files larger than memory are never loaded into pandas.

Canonical types
---------------
``customer_id``
    Keeps the source's type: strings stay strings and integers stay integers. Floating-point ids
    (an integer column that had missing values in pandas) become BIGINT. CSV files have no types,
    so a CSV id column becomes BIGINT when every non-blank id is a plain integer (at most 18
    digits, an optional ``-``, no leading zeros) and stays VARCHAR otherwise: ``"00042"`` stays
    text.
``timestamp``
    TIMESTAMP without time zone: the local wall-clock time in the log's time zone (``timezone``,
    default ``"UTC"``), which defines purchase days and as-of dates everywhere downstream. Values
    that carry a time zone or a UTC offset (time-zone-aware columns, text such as
    ``2024-07-01T00:30:00+02:00`` or ``...Z``, ``%z`` formats) are converted to that zone; naive
    values are taken as already local.
``amount``
    DOUBLE; absent when ``amount_col=None``.
``order_id``
    VARCHAR (NULL when blank); present only with ``order_col``. With it the canonical log also has
    ``net_timestamp``: for a refund whose order id names an earlier purchase row of the same
    customer, that order's (first row's) time, for every other row its own ``timestamp``. It is the
    time whose period the row's amount nets into (see :mod:`crmml.data.summary`).

DuckDB resources
----------------
Each query runs on a fresh DuckDB connection limited to 25 % of the machine's memory (DuckDB
spills to a temporary directory beyond that) and using DuckDB's default number of threads (one
per core). The environment variables ``CRMML_DUCKDB_MEMORY_LIMIT`` (a DuckDB size such as
``"2GB"`` or ``"50%"``) and ``CRMML_DUCKDB_THREADS`` override them.
"""

from __future__ import annotations

import glob as globlib
import numbers
import os
import tempfile
import zoneinfo
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crmml.errors import DataValidationError, InvalidTimezoneError

__all__ = ["DEFAULT_TIMEZONE", "LogColumns", "TransactionReport", "Transactions", "check_timezone", "duckdb_session",
           "read_transactions"]

#: The time zone that defines purchase days when none is given.
DEFAULT_TIMEZONE = "UTC"
#: Valid rows a log kept in memory may hold (:meth:`Transactions.kept_in_memory`): ~0.3 GB.
DEFAULT_MAX_KEPT_ROWS = 10_000_000

#: A regular expression (DuckDB and Java syntax) true for timestamp text that ends in a UTC offset
#: or a zone name after its time of day: ``+02``, ``+0200``, ``+02:00``, ``Z``, `` UTC``,
#: `` Europe/Berlin``. Such text is converted to the log's time zone; other text is local already.
ZONE_SUFFIX_PATTERN = r"[0-9]:[0-9]{2}(:[0-9]{2}([.,][0-9]*)?)?\s*([zZ]|[+-][0-9]{1,2}(:?[0-9]{2})?|[A-Za-z][A-Za-z0-9_/+-]*)$"

# Why a row can be rejected, in the order the checks are applied (a row gets the first that holds).
# Each maps to (role of the column at fault, what the message says about the offending values).
REJECTION_REASONS: Mapping[str, tuple[str, str]] = {
    "missing_customer_id": ("customer", "a missing (null or blank) customer id"),
    "invalid_customer_id": ("customer", "a customer id that is not a whole number"),
    "missing_timestamp": ("time", "a missing (null or empty) timestamp"),
    "unparseable_timestamp": ("time", "a timestamp that cannot be parsed"),
    "missing_amount": ("amount", "a missing (null or blank) amount"),
    "non_numeric_amount": ("amount", "an amount that is not a number"),
    "non_finite_amount": ("amount", "an amount that is not finite (inf or nan)"),
}

# SQL over checked rows: true for the rows rejected for their customer id, which name no customer.
WITHOUT_CUSTOMER_SQL = "(customer_id IS NULL OR coalesce(reason IN ({}), false))".format(
    ", ".join(f"'{reason}'" for reason, (role, _) in REJECTION_REASONS.items() if role == "customer")
)

_ROLE_NAMES = {"customer": "customer id", "time": "timestamp", "amount": "amount", "order": "order id"}
_N_EXAMPLES = 5
_INTEGER_TYPES = frozenset(
    "TINYINT SMALLINT INTEGER BIGINT HUGEINT UTINYINT USMALLINT UINTEGER UBIGINT UHUGEINT".split()
)
_FLOAT_TYPES = frozenset({"FLOAT", "DOUBLE"})
_NAIVE_TIME_TYPES = frozenset({"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE"})
_ZONED_TIME_TYPES = frozenset({"TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"})
_PLAIN_INTEGER_PATTERN = "-?(0|[1-9][0-9]{0,17})"
_MEMORY_LIMIT_VARIABLE, _DEFAULT_MEMORY_LIMIT = "CRMML_DUCKDB_MEMORY_LIMIT", "25%"
_THREADS_VARIABLE = "CRMML_DUCKDB_THREADS"
_FILE_KINDS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet"}


# --------------------------------------------------------------------------------------------------
# Public objects
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransactionReport:
    """What :func:`read_transactions` did with the rows it read.

    Attributes
    ----------
    rows_in : int
        Rows in the source.
    rows_valid : int
        Rows that passed every check.
    rows_rejected : int
        Rows excluded by ``on_invalid="reject"`` (always 0 with ``on_invalid="raise"``).
    rejected_by_reason : dict of str to int
        ``rows_rejected`` broken down by reason code (see ``REJECTION_REASONS``); only reasons
        that occurred are listed.
    """

    rows_in: int
    rows_valid: int
    rows_rejected: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


class Transactions:
    """A validated transaction log, held as DuckDB SQL over its source.

    Build one with :func:`read_transactions`. Nothing is loaded into pandas until
    :meth:`to_pandas` is called; every query re-reads the source, so do not modify the files while
    the object is in use. :meth:`partition` restricts a log to a hash partition of its customers.

    Attributes
    ----------
    report : TransactionReport
        Row counts from validation (of this partition's rows, for a partition).
    has_amount : bool
        Whether the log has an ``amount`` column.
    first_timestamp, last_timestamp : pandas.Timestamp or None
        Earliest and latest valid timestamps (None for a partition without valid rows).
    """

    def __init__(
        self,
        source: _Source,
        plan: _ParsePlan,
        report: TransactionReport | None,
        first_timestamp: pd.Timestamp | None,
        last_timestamp: pd.Timestamp | None,
        partitions: tuple[tuple[int, int], ...] = (),
    ):
        self._source = source
        self._plan = plan
        self._partitions = partitions  # (index, count) pairs, all of which a row must match
        # A partition's counts take a scan of the source: counted on first use (report is None).
        self._counts = None if report is None else (report, first_timestamp, last_timestamp)
        self._own_connection: duckdb.DuckDBPyConnection | None = None
        self._own_temp_directory: tempfile.TemporaryDirectory | None = None
        self._keep_rows = 0  # > 0: keep the sorted valid rows in memory, up to this many (kept_in_memory)
        self._sorted_rows: list[pa.RecordBatch] | None = None

    def __getstate__(self) -> dict:
        # A copy sent to a worker process re-reads its rows: no connection, no kept rows.
        state = dict(self.__dict__)
        state.update(_own_connection=None, _own_temp_directory=None, _sorted_rows=None)
        return state

    def kept_in_memory(self, max_rows: int = DEFAULT_MAX_KEPT_ROWS) -> Transactions:
        """The same log, whose valid rows, once sorted by customer and time, stay in memory.

        Training reads a log dozens of times (a summary and the features at every cutoff, the labels
        of every window), and each read scans, validates and sorts the source again. The returned log
        keeps the sorted rows of its first full read (as Arrow batches, about 32 bytes a row) and
        hands them to every later read (:func:`crmml.data.summary.purchase_occasions` and the
        summaries), so the results are the same numbers. Its :meth:`partition` logs keep theirs.

        Parameters
        ----------
        max_rows : int
            A log with more valid rows than this is streamed from the source as before (the first
            read that passes the limit drops what it kept).

        Returns
        -------
        Transactions
            ``self`` when it already keeps its rows, else a copy that does.
        """
        if isinstance(max_rows, bool) or not isinstance(max_rows, numbers.Integral) or max_rows < 1:
            raise ValueError(f"max_rows must be a positive int. Got {max_rows!r} instead.")
        if self._keep_rows:
            return self
        copy = Transactions(self._source, self._plan, None, None, None, self._partitions)
        copy._counts, copy._keep_rows = self._counts, int(max_rows)
        return copy

    @property
    def keeps_rows_in_memory(self) -> bool:
        """Whether reads keep the sorted rows (:meth:`kept_in_memory`)."""
        return self._keep_rows > 0

    def kept_sorted_batches(self) -> list[pa.RecordBatch] | None:
        """The sorted valid rows kept by an earlier read, or None."""
        return self._sorted_rows

    def keep_sorted_batches(self, batches: list[pa.RecordBatch]) -> None:
        """Keep a full read's sorted batches (when this log keeps its rows and they are within the limit)."""
        if self._keep_rows and sum(batch.num_rows for batch in batches) <= self._keep_rows:
            self._sorted_rows = batches

    @property
    def report(self) -> TransactionReport:
        """Row counts from validation (see :class:`TransactionReport`)."""
        return self._counted()[0]

    @property
    def first_timestamp(self) -> pd.Timestamp | None:
        """Earliest valid timestamp."""
        return self._counted()[1]

    @property
    def last_timestamp(self) -> pd.Timestamp | None:
        """Latest valid timestamp."""
        return self._counted()[2]

    @property
    def has_amount(self) -> bool:
        """Whether the log has an ``amount`` column."""
        return self._plan.columns.amount is not None

    @property
    def has_order(self) -> bool:
        """Whether the log has order ids (``order_id`` and ``net_timestamp`` columns)."""
        return self._plan.columns.order is not None

    @property
    def timezone(self) -> str:
        """The IANA time zone whose local wall-clock time the canonical timestamps hold."""
        return self._plan.timezone

    @property
    def source_description(self) -> str:
        """The source as the user named it: ``"the DataFrame"``, a path, or a glob."""
        return self._source.description

    def __len__(self) -> int:
        return self.report.rows_valid

    def __repr__(self) -> str:
        parts = "".join(f", partition={index}/{count}" for index, count in self._partitions)
        if self._counts is None:  # a repr does not scan the source
            return f"Transactions(source={self.source_description!r}{parts}, rows not counted yet)"
        return (
            f"Transactions(source={self.source_description!r}{parts}, "
            f"rows_valid={self.report.rows_valid}, rows_rejected={self.report.rows_rejected})"
        )

    def partition(self, index: int, count: int) -> Transactions:
        """The same log restricted to one hash partition of its customers.

        A customer belongs to partition ``hash(CAST(customer_id AS VARCHAR)) % count`` (DuckDB's
        ``hash``), so all of a customer's rows land in one partition, and an id read as the integer
        ``42`` and one read as the text ``"42"`` land in the same one. Rows with a missing or invalid
        customer id (rejected rows of no customer) belong to partition 0, so the partitions'
        ``crmml_checked`` views (and :meth:`rejected_rows`) add up to the whole log's. It shares this
        log's source and parse plan: :meth:`create_views`, and with it every consumer
        (:func:`~crmml.data.rfm_summary`, :func:`~crmml.data.purchase_occasions`,
        :func:`~crmml.features.compute_features`), sees only the partition's rows. Each query still
        scans the whole source, except on a log split by
        :func:`~crmml.data.split_log.split_by_customer` into the same ``count``: its partitions read
        only their own rows.

        Parameters
        ----------
        index : int
            The partition, ``0 <= index < count``.
        count : int
            Number of partitions; 1 gives the whole log. Partitioning a partition keeps the
            customers in both.

        Returns
        -------
        Transactions
            The partition. Its :attr:`report` and timestamps describe the partition's rows; they
            take one scan of the source, run when first asked for.

        Raises
        ------
        TypeError
            When ``index`` or ``count`` is not an int.
        ValueError
            When ``count < 1`` or ``index`` is not in ``[0, count)``.
        """
        for name, value in (("index", index), ("count", count)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int. Got {value!r} instead.")
        if count < 1 or not 0 <= index < count:
            raise ValueError(
                f"count must be >= 1 and index in [0, count). Got index={index!r}, count={count!r}."
            )
        own = self._source.split_part(int(index), int(count))
        if own is not None:  # a split log's partition reads only its own rows (crmml.data.split_log)
            part = Transactions(own, self._plan, None, None, None, self._partitions)
            part._keep_rows = self._keep_rows
            return part
        partitions = self._partitions if count == 1 else (*self._partitions, (int(index), int(count)))
        part = Transactions(self._source, self._plan, None, None, None, partitions)
        part._keep_rows = self._keep_rows
        if count == 1:
            part._counts = self._counts  # the same rows: reuse the counts when known
            part._sorted_rows = self._sorted_rows
        return part

    def _counted(self) -> tuple[TransactionReport, pd.Timestamp | None, pd.Timestamp | None]:
        """The report and valid time range, counted (one scan) the first time a partition needs them."""
        if self._counts is None:
            with duckdb_session() as con:
                self.create_views(con)
                rows = con.sql(
                    "SELECT reason, count(*), min(timestamp) FILTER (WHERE reason IS NULL), "
                    "max(timestamp) FILTER (WHERE reason IS NULL) FROM crmml_checked GROUP BY reason"
                ).fetchall()
            by_reason = {row[0]: row[1] for row in rows}
            invalid = {reason: by_reason[reason] for reason in REJECTION_REASONS if reason in by_reason}
            valid = [row for row in rows if row[0] is None]
            report = TransactionReport(
                rows_in=sum(by_reason.values()),
                rows_valid=by_reason.get(None, 0),
                rows_rejected=sum(invalid.values()),
                rejected_by_reason=invalid,
            )
            first, last = (pd.Timestamp(valid[0][2]), pd.Timestamp(valid[0][3])) if valid else (None, None)
            self._counts = (report, first, last)
        return self._counts

    def create_views(self, con: duckdb.DuckDBPyConnection) -> None:
        """Define this log's views on a DuckDB connection.

        Creates ``crmml_checked`` (every source row with its parsed ``customer_id``, ``timestamp``,
        ``amount`` and a ``reason`` that is NULL for valid rows) and ``crmml_transactions`` (the
        canonical log: valid rows only). For a :meth:`partition`, both hold the partition's rows.

        Parameters
        ----------
        con : duckdb.DuckDBPyConnection
            A connection from :func:`duckdb_session`.
        """
        raw = self._source.raw_sql(con, self._plan.columns)
        checked = self._plan.checked_sql(raw)
        if self._partitions:
            checked = f"SELECT * FROM ({checked}) WHERE {self._partition_filter()}"
        con.execute(f"CREATE OR REPLACE TEMP VIEW crmml_checked AS {checked}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW crmml_transactions AS {self._plan.canonical_sql()}")

    @property
    def relation(self) -> duckdb.DuckDBPyRelation:
        """The canonical log as a lazy DuckDB relation (on a connection owned by this object)."""
        if self._own_connection is None:
            self._own_temp_directory = tempfile.TemporaryDirectory(prefix="crmml-duckdb-")
            self._own_connection = _connect(self._own_temp_directory.name)
            self.create_views(self._own_connection)
        return self._own_connection.table("crmml_transactions")

    def to_pandas(self) -> pd.DataFrame:
        """Load the canonical log into pandas.

        Returns
        -------
        pandas.DataFrame
            Columns ``customer_id``, ``timestamp`` and, when present, ``amount``, in no
            particular order.
        """
        with duckdb_session() as con:
            self.create_views(con)
            return con.table("crmml_transactions").to_arrow_table().to_pandas()

    def rejected_rows(self) -> pd.DataFrame:
        """The rows excluded by ``on_invalid="reject"``, with their raw values.

        Returns
        -------
        pandas.DataFrame
            The source's own columns (raw values, as read) plus ``reason``. For a DataFrame source
            the index holds the original index labels; for files, columns ``file`` and ``row``
            (1-based data row) say where each row came from. Empty when nothing was rejected.
        """
        columns = self._plan.columns
        if self._counts is not None and self.report.rows_rejected == 0:  # uncounted partition: query
            return _empty_rejected_frame(columns, self._source.is_frame)
        with duckdb_session() as con:
            where = "reason IS NOT NULL"
            if self._partitions:
                where += f" AND {self._partition_filter()}"
            located = self._source.located_rows_sql(con, self._plan, where)
            table = con.sql(
                f"SELECT {_raw_select_list(columns)}, reason, source_file, source_row "
                f"FROM ({located}) ORDER BY source_file, source_row"
            ).to_arrow_table()
        return self._source.label_rows(table.to_pandas())

    def _partition_filter(self) -> str:
        """SQL over checked rows: true for the rows of this partition."""
        return " AND ".join(
            f"(CASE WHEN {WITHOUT_CUSTOMER_SQL} THEN 0 ELSE {partition_number_sql('customer_id', count)} END) = {index}"
            for index, count in self._partitions
        )

    def close(self) -> None:
        """Close the connection behind :attr:`relation`, if one was opened."""
        if self._own_connection is not None:
            self._own_connection.close()
            self._own_connection = None
        if self._own_temp_directory is not None:
            self._own_temp_directory.cleanup()
            self._own_temp_directory = None


@dataclass(frozen=True)
class LogColumns:
    """Which columns of a transaction log are what, and its time zone: the mapping options of
    :func:`read_transactions` as one value (the ``columns:`` section of a training config, the
    ``--customer-col`` ... ``--timezone`` options of the command line).

    Attributes
    ----------
    customer, time : str
        The customer id and timestamp columns (default ``customer_id``, ``timestamp``).
    amount : str or None
        The amount column (default ``amount``); None for a log without amounts.
    order : str or None
        The order id column, for netting refunds by order (default None: none).
    timezone : str
        IANA time zone of purchase days and as-of dates (default ``"UTC"``).
    """

    customer: str = "customer_id"
    time: str = "timestamp"
    amount: str | None = "amount"
    order: str | None = None
    timezone: str = DEFAULT_TIMEZONE

    def __post_init__(self) -> None:
        for role in ("customer", "time", "amount", "order"):
            value = getattr(self, role)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                if role in ("amount", "order") and value == "":
                    object.__setattr__(self, role, None)  # '' means "no such column"
                    continue
                raise ValueError(f"columns.{role} must be a column name; got {value!r}.")
        check_timezone(self.timezone)

    @classmethod
    def from_dict(cls, values: Mapping | None) -> LogColumns:
        """From a mapping with any of the keys ``customer``, ``time``, ``amount``, ``order``, ``timezone``."""
        values = dict(values or {})
        known = [f for f in cls.__dataclass_fields__]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"Unknown key(s) {unknown} in config section 'columns'; known keys: {known}.")
        return cls(**values)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def merged(self, changes: Mapping | None) -> LogColumns:
        """A copy with the entries of ``changes`` that are not None (``""`` removes amount or order)."""
        given = {name: value for name, value in (changes or {}).items() if value is not None}
        return replace(self, **given) if given else self

    def read_kwargs(self) -> dict:
        """The keyword arguments of :func:`read_transactions` for this mapping."""
        return {"customer_col": self.customer, "time_col": self.time, "amount_col": self.amount,
                "order_col": self.order, "timezone": self.timezone}

    def describe(self) -> str:
        """One line: which column is used as what, e.g. for a command's output."""
        parts = [f"customer id = {self.customer!r}", f"timestamp = {self.time!r} (time zone {self.timezone})",
                 f"amount = {self.amount!r}" if self.amount is not None else "no amount",
                 f"order id = {self.order!r}" if self.order is not None else "no order id"]
        return "columns: " + ", ".join(parts)


def read_transactions(
    source: pd.DataFrame | str | Path,
    *,
    customer_col: str = "customer_id",
    time_col: str = "timestamp",
    amount_col: str | None = "amount",
    time_format: str | None = None,
    on_invalid: Literal["raise", "reject"] = "raise",
    order_col: str | None = None,
    timezone: str = DEFAULT_TIMEZONE,
) -> Transactions:
    """Read and validate a transaction log.

    Parameters
    ----------
    source : pandas.DataFrame, str or pathlib.Path
        A DataFrame, or a path to CSV or Parquet data: one file (``.csv``, ``.csv.gz``,
        ``.parquet``), a glob (``"data/*.parquet"``, ``**`` recurses) or a directory (every
        ``*.parquet`` or ``*.csv`` file under it, recursively). All files must be of one format.
        CSV files need a header row; their columns are read as text and parsed here.
    customer_col, time_col : str
        Names of the customer id and timestamp columns.
    amount_col : str or None
        Name of the monetary column, or None when the log has none.
    time_format : str, optional
        A strptime format for text or integer timestamps (CDNOW uses ``"%Y%m%d"``). Without it, ISO
        8601 text, timestamps and dates are accepted and integer columns are an error.
    on_invalid : {"raise", "reject"}
        ``"raise"`` (default) raises on the first kind of invalid row found. ``"reject"`` excludes
        invalid rows, counts them in :attr:`Transactions.report` and keeps them available through
        :meth:`Transactions.rejected_rows`. Missing columns and empty input always raise.
    order_col : str, optional
        Name of an order id column. With it a refund (negative amount) whose order id names an
        earlier purchase row of the same customer is netted against that order, in the order's
        period (see :mod:`crmml.data.summary`); a blank order id matches nothing.
    timezone : str
        An IANA time zone name (``"Europe/Berlin"``), default ``"UTC"``: the zone whose calendar
        defines purchase days and as-of dates. Time-zone-aware values are converted to its local
        wall-clock time; naive values are taken as local already.

    Returns
    -------
    Transactions
        The validated log.

    Raises
    ------
    DataValidationError
        On a missing path, no matching files, mixed file formats, a missing column, a column of an
        unusable type, zero rows, no valid rows, or (with ``on_invalid="raise"``) any invalid row:
        a missing customer id, a missing or unparseable timestamp, or a missing, non-numeric or
        non-finite amount. The message names the column and the first offending rows (index
        labels for a DataFrame, file and 1-based data row for files) with their raw values.
    InvalidTimezoneError
        When ``timezone`` is not an IANA time zone name.
    """
    if on_invalid not in ("raise", "reject"):
        raise ValueError(f"on_invalid must be 'raise' or 'reject'. Got {on_invalid!r} instead.")
    timezone = check_timezone(timezone)
    columns = _ColumnNames(customer_col, time_col, amount_col, order_col)
    with duckdb_session() as con:
        _check_time_format(con, time_format)
        source_obj = _resolve_source(source, columns, con)
        try:
            raw = source_obj.raw_sql(con, columns)
            raw_types = _column_types(con, raw)
        except duckdb.Error as exc:
            raise DataValidationError(f"Could not read {source_obj.description}: {exc}") from exc
        plan = _ParsePlan.from_types(columns, raw_types, time_format, source_obj.kind == "csv", timezone)
        counts = _count_by_reason(con, plan.checked_sql(raw), plan, source_obj)
        plan = plan.with_integer_ids(counts.ids_are_plain_integers)
        invalid = {reason: n for reason, n in counts.by_reason.items() if reason is not None}
        if counts.rows_valid == 0 or (on_invalid == "raise" and invalid):
            raise _invalid_rows_error(con, source_obj, plan, invalid, counts.rows_valid == 0)
    report = TransactionReport(
        rows_in=counts.rows_in,
        rows_valid=counts.rows_valid,
        rows_rejected=sum(invalid.values()),
        rejected_by_reason=invalid,
    )
    return Transactions(source_obj, plan, report, counts.first_timestamp, counts.last_timestamp)


def check_timezone(name) -> str:
    """``name`` if it is an IANA time zone name (``"UTC"``, ``"Europe/Berlin"``), else an error.

    Raises
    ------
    InvalidTimezoneError
        Naming the value, when it is not a time zone the system's tz database knows.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidTimezoneError(f"timezone must be an IANA time zone name such as 'Europe/Berlin'. Got {name!r}.")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidTimezoneError(
            f"Unknown time zone {name!r}: expected an IANA time zone name such as 'UTC' or 'Europe/Berlin'."
        ) from exc
    return name


def partition_number_sql(key: str, count: int) -> str:
    """SQL for the hash partition (``0 .. count - 1``) of the customer id expression ``key``.

    The rule of :meth:`Transactions.partition`: ``hash(CAST(key AS VARCHAR)) % count``, NULL
    when ``key`` is NULL. Use it to split other per-customer data (a customer table) the same way.
    """
    return f"CAST(CASE WHEN ({key}) IS NOT NULL THEN hash(CAST(({key}) AS VARCHAR)) % {int(count)} END AS BIGINT)"


def as_transactions(transactions, **read_kwargs) -> Transactions:
    """``transactions`` itself if it is a :class:`Transactions` (or an in-memory log), else :func:`read_transactions` of it.

    The entry point of every function that takes "anything read_transactions takes". Read options
    with an already-read log are an error rather than silently ignored.
    """
    from crmml.data.in_memory import InMemoryTransactions  # it imports this module

    if isinstance(transactions, (Transactions, InMemoryTransactions)):
        if read_kwargs:
            raise TypeError(
                f"Read options {sorted(read_kwargs)} only apply when transactions is not already a "
                "Transactions; pass them to read_transactions instead."
            )
        return transactions
    return read_transactions(transactions, **read_kwargs)



# --------------------------------------------------------------------------------------------------
# Column names and parsing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ColumnNames:
    """The user's names for the customer, time and the optional amount and order id columns."""

    customer: str
    time: str
    amount: str | None
    order: str | None = None

    def by_role(self) -> dict[str, str]:
        names = {"customer": self.customer, "time": self.time}
        if self.amount is not None:
            names["amount"] = self.amount
        if self.order is not None:
            names["order"] = self.order
        return names


@dataclass(frozen=True)
class _ParsePlan:
    """SQL expressions turning raw columns (``raw_customer`` ...) into canonical ones."""

    columns: _ColumnNames
    customer_kind: str  # "text", "integer" or "float"
    time_kind: str  # "naive", "zoned", "text" or "integer"
    amount_kind: str | None  # "number", "text" or None
    time_format: str | None
    ids_from_untyped_text: bool
    ids_as_integers: bool = False
    timezone: str = DEFAULT_TIMEZONE

    @classmethod
    def from_types(
        cls, columns: _ColumnNames, raw_types: dict[str, str], time_format: str | None, untyped: bool,
        timezone: str = DEFAULT_TIMEZONE,
    ) -> _ParsePlan:
        if columns.order is not None and columns.amount is None:
            raise ValueError("order_col needs amount_col: refunds are the rows with a negative amount.")
        return cls(
            columns=columns,
            customer_kind=_customer_kind(raw_types["raw_customer"], columns.customer),
            time_kind=_time_kind(raw_types["raw_time"], columns.time, time_format),
            amount_kind=_amount_kind(raw_types.get("raw_amount"), columns.amount),
            time_format=time_format,
            ids_from_untyped_text=untyped,
            timezone=timezone,
        )

    def with_integer_ids(self, ids_are_plain_integers: bool) -> _ParsePlan:
        """Return the plan that casts untyped (CSV) text ids to BIGINT when all are integers."""
        as_integers = self.ids_from_untyped_text and self.customer_kind == "text" and ids_are_plain_integers
        return replace(self, ids_as_integers=as_integers)

    def checked_sql(self, raw: str) -> str:
        """SQL over ``raw`` adding parsed ``customer_id``, ``timestamp``, ``amount`` and ``reason``."""
        parsed = f"SELECT *, {self._customer_sql()} AS customer_id, {self._time_sql()} AS timestamp"
        if self.amount_kind is not None:
            parsed += f", {self._amount_sql()} AS amount"
        if self.columns.order is not None:
            parsed += ", NULLIF(trim(CAST(raw_order AS VARCHAR)), '') AS order_id"
        return f"SELECT *, {self._reason_sql()} AS reason FROM ({parsed} FROM ({raw}))"

    def canonical_sql(self) -> str:
        """SQL over the view ``crmml_checked`` selecting the canonical log."""
        amount = ", amount" if self.amount_kind is not None else ""
        valid = f"SELECT customer_id, timestamp{amount} FROM crmml_checked WHERE reason IS NULL"
        if self.columns.order is None:
            return valid
        # A refund nets into its order's period: the order's first purchase row of the same
        # customer, when it is not later than the refund (the rule stated in crmml.data.summary).
        ordered = (
            "SELECT customer_id, timestamp, amount, order_id, min(CASE WHEN amount >= 0 THEN timestamp END) "
            "OVER (PARTITION BY customer_id, order_id) AS order_timestamp "
            "FROM crmml_checked WHERE reason IS NULL"
        )
        return (
            "SELECT customer_id, timestamp, amount, order_id, CASE WHEN amount < 0 AND order_id IS NOT NULL "
            "AND order_timestamp <= timestamp THEN order_timestamp ELSE timestamp END AS net_timestamp "
            f"FROM ({ordered})"
        )

    def _customer_sql(self) -> str:
        if self.ids_as_integers:
            return "TRY_CAST(raw_customer AS BIGINT)"
        if self.customer_kind == "float":
            return "CASE WHEN raw_customer = round(raw_customer) THEN TRY_CAST(raw_customer AS BIGINT) END"
        return "raw_customer"

    def _time_sql(self) -> str:
        """Local wall-clock time in ``timezone``: aware values converted, naive ones as they are.

        Sessions run in UTC (see :func:`duckdb_session`), so text without an offset cast to
        TIMESTAMPTZ is read as UTC and ``timezone('UTC', ...)`` gives it back as written.
        """
        zone = _sql_string(self.timezone)
        if self.time_kind == "naive":
            return "CAST(raw_time AS TIMESTAMP)"
        if self.time_kind == "zoned":
            return f"timezone({zone}, raw_time)"
        text = "trim(raw_time)" if self.time_kind == "text" else "CAST(raw_time AS VARCHAR)"
        if self.time_format is None:
            if self.timezone == "UTC":
                return f"timezone('UTC', TRY_CAST({text} AS TIMESTAMPTZ))"
            aware = f"regexp_matches({text}, {_sql_string(ZONE_SUFFIX_PATTERN)})"
            return f"timezone(CASE WHEN {aware} THEN {zone} ELSE 'UTC' END, TRY_CAST({text} AS TIMESTAMPTZ))"
        parsed = f"try_strptime({text}, {_sql_string(self.time_format)})"
        return f"timezone({zone}, {parsed})" if _format_has_zone(self.time_format) else parsed

    def _amount_sql(self) -> str:
        if self.amount_kind == "number":
            return "CAST(raw_amount AS DOUBLE)"
        return "TRY_CAST(trim(raw_amount) AS DOUBLE)"

    def _reason_sql(self) -> str:
        conditions = {
            "missing_customer_id": self._missing_customer_sql(),
            "invalid_customer_id": "customer_id IS NULL",
            "missing_timestamp": _missing_sql("raw_time", self.time_kind == "text"),
            "unparseable_timestamp": "timestamp IS NULL OR NOT isfinite(timestamp)",
        }
        if self.amount_kind is not None:
            conditions["missing_amount"] = _missing_sql("raw_amount", self.amount_kind == "text")
            conditions["non_numeric_amount"] = "amount IS NULL"
            conditions["non_finite_amount"] = "NOT isfinite(amount)"
        cases = " ".join(f"WHEN {cond} THEN '{reason}'" for reason, cond in conditions.items())
        return f"CASE {cases} END"

    def _missing_customer_sql(self) -> str:
        if self.customer_kind == "float":
            return "raw_customer IS NULL OR isnan(raw_customer)"
        return _missing_sql("raw_customer", self.customer_kind == "text")


def _missing_sql(column: str, is_text: bool) -> str:
    if is_text:
        return f"{column} IS NULL OR trim({column}) = ''"
    return f"{column} IS NULL"


def _customer_kind(duckdb_type: str, name: str) -> str:
    if duckdb_type == "VARCHAR":
        return "text"
    if duckdb_type in _INTEGER_TYPES:
        return "integer"
    if duckdb_type in _FLOAT_TYPES:
        return "float"
    raise DataValidationError(
        f"Column {name!r} (customer id) has type {duckdb_type}; customer ids must be text or "
        "integers.",
        column=name,
    )


def _time_kind(duckdb_type: str, name: str, time_format: str | None) -> str:
    if duckdb_type in _NAIVE_TIME_TYPES:
        return "naive"
    if duckdb_type in _ZONED_TIME_TYPES:
        return "zoned"
    if duckdb_type == "VARCHAR":
        return "text"
    if duckdb_type in _INTEGER_TYPES:
        if time_format is None:
            raise DataValidationError(
                f"Column {name!r} (timestamp) holds integers ({duckdb_type}), not timestamps. "
                "Pass time_format to parse them, for example time_format='%Y%m%d' for 19970101.",
                column=name,
            )
        return "integer"
    raise DataValidationError(
        f"Column {name!r} (timestamp) has type {duckdb_type}; expected timestamps, dates or text.",
        column=name,
    )


def _amount_kind(duckdb_type: str | None, name: str | None) -> str | None:
    if name is None:
        return None
    if duckdb_type in _INTEGER_TYPES or duckdb_type in _FLOAT_TYPES or duckdb_type.startswith("DECIMAL"):
        return "number"
    if duckdb_type == "VARCHAR":
        return "text"
    raise DataValidationError(
        f"Column {name!r} (amount) has type {duckdb_type}; expected numbers or numeric text.",
        column=name,
    )


def _check_time_format(con: duckdb.DuckDBPyConnection, time_format: str | None) -> None:
    if time_format is None:
        return
    try:
        con.sql(f"SELECT try_strptime('', {_sql_string(time_format)})").fetchall()
    except duckdb.Error as exc:
        raise ValueError(f"time_format {time_format!r} is not a valid strptime format: {exc}") from exc


def _format_has_zone(time_format: str) -> bool:
    return "%z" in time_format or "%Z" in time_format


# --------------------------------------------------------------------------------------------------
# Sources: a DataFrame, or CSV / Parquet files
# --------------------------------------------------------------------------------------------------


class _Source(ABC):
    """Where raw rows come from. Subclasses produce SQL yielding the ``raw_*`` columns."""

    description: str
    kind: str
    is_frame: bool = False

    @abstractmethod
    def raw_sql(self, con: duckdb.DuckDBPyConnection, columns: _ColumnNames) -> str:
        """SQL selecting ``raw_customer``, ``raw_time`` and ``raw_amount`` (when present)."""

    @abstractmethod
    def located_rows_sql(
        self, con: duckdb.DuckDBPyConnection, plan: _ParsePlan, where: str, max_files: int | None = None
    ) -> str:
        """SQL of the checked rows matching ``where``, with ``source_file`` and ``source_row``.

        ``max_files`` allows a file source to number only the first files (in name order) that
        hold matching rows.
        """

    @abstractmethod
    def row_label(self, source_file: str | None, source_row: int):
        """The label a user sees for one row."""

    def split_part(self, index: int, count: int) -> _Source | None:
        """The source of partition ``index`` of ``count`` when this source is already split that way
        (:mod:`crmml.data.split_log`), else None."""
        return None

    @abstractmethod
    def label_rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Turn ``source_file``/``source_row`` columns into the user's row labels."""


class _FrameSource(_Source):
    """An in-memory DataFrame, converted column by column to Arrow (no row copy for numbers)."""

    kind = "frame"
    is_frame = True
    _VIEW = "crmml_frame"

    def __init__(self, table: pa.Table, index: pd.Index):
        self.description = "the DataFrame"
        self._table = table
        self._index = index

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: _ColumnNames) -> _FrameSource:
        _check_columns_present(list(frame.columns), columns, "the DataFrame")
        if len(frame) == 0:
            raise DataValidationError("The DataFrame has no rows.")
        arrays = {f"raw_{role}": _series_to_arrow(frame[name]) for role, name in columns.by_role().items()}
        return cls(pa.table(arrays), frame.index)

    def raw_sql(self, con, columns):
        con.register(self._VIEW, self._table)
        return f"SELECT * FROM {self._VIEW}"

    def located_rows_sql(self, con, plan, where, max_files=None):
        con.register(self._VIEW, self._table)
        located = (
            "SELECT *, NULL::VARCHAR AS source_file, row_number() OVER () - 1 AS source_row "
            f"FROM {self._VIEW}"
        )
        return f"SELECT * FROM ({plan.checked_sql(located)}) WHERE {where}"

    def row_label(self, source_file, source_row):
        return self._index.take([int(source_row)]).tolist()[0]

    def label_rows(self, frame):
        labels = self._index.take(frame["source_row"].to_numpy(dtype="int64"))
        return frame.drop(columns=["source_file", "source_row"]).set_index(labels)


class _FileSource(_Source):
    """CSV or Parquet files, read by DuckDB (streamed, so they may exceed memory)."""

    is_frame = False

    def __init__(self, files: list[str], kind: str, description: str):
        self.files = files
        self.kind = kind
        self.description = description

    def _scan(self, files: list[str], *extra_options: str) -> str:
        listed = "[" + ", ".join(_sql_string(f) for f in files) + "]"
        options = ["union_by_name = true", *extra_options]
        if self.kind == "csv":
            options = ["header = true", "all_varchar = true", *options]
            return f"read_csv({listed}, {', '.join(options)})"
        return f"read_parquet({listed}, {', '.join(options)})"

    def raw_sql(self, con, columns):
        return f"SELECT {_raw_renames(columns)} FROM {self._scan(self.files)}"

    def located_rows_sql(self, con, plan, where, max_files=None):
        columns = plan.columns
        if self.kind == "parquet":
            scan = self._scan(self.files, "filename = 'crmml_file'", "file_row_number = true")
            located = (
                f"SELECT {_raw_renames(columns)}, crmml_file AS source_file, "
                f"file_row_number + 1 AS source_row FROM {scan}"
            )
            return f"SELECT * FROM ({plan.checked_sql(located)}) WHERE {where}"
        # CSV readers have no row number; a window over one file's scan keeps the file's order.
        # Number only the files that hold matching rows.
        per_file = [
            f"(SELECT *, {_sql_string(f)} AS crmml_file, row_number() OVER () AS crmml_row "
            f"FROM {self._scan([f])})"
            for f in self._files_matching(con, plan, where, max_files)
        ]
        if not per_file:  # no row matches (a partition without rejected rows, say)
            scan = self._scan(self.files)
            per_file = [f"(SELECT *, NULL::VARCHAR AS crmml_file, 0 AS crmml_row FROM {scan} LIMIT 0)"]
        located = (
            f"SELECT {_raw_renames(columns)}, crmml_file AS source_file, crmml_row AS source_row "
            f"FROM ({' UNION ALL BY NAME '.join(per_file)})"
        )
        return f"SELECT * FROM ({plan.checked_sql(located)}) WHERE {where}"

    def _files_matching(
        self, con: duckdb.DuckDBPyConnection, plan: _ParsePlan, where: str, max_files: int | None
    ) -> list[str]:
        scan = self._scan(self.files, "filename = 'crmml_file'")
        named = f"SELECT {_raw_renames(plan.columns)}, crmml_file FROM {scan}"
        limit = f" LIMIT {max_files}" if max_files is not None else ""
        rows = con.sql(
            f"SELECT DISTINCT crmml_file FROM ({plan.checked_sql(named)}) WHERE {where} "
            f"ORDER BY crmml_file{limit}"
        ).fetchall()
        return [row[0] for row in rows]

    def row_label(self, source_file, source_row):
        return (source_file, int(source_row))

    def label_rows(self, frame):
        located = frame.rename(columns={"source_file": "file", "source_row": "row"})
        ordered = ["file", "row", *[c for c in located.columns if c not in ("file", "row")]]
        return located[ordered].reset_index(drop=True)

    def check_columns(self, con: duckdb.DuckDBPyConnection, columns: _ColumnNames) -> None:
        found = list(_column_types(con, f"SELECT * FROM {self._scan(self.files)}"))
        _check_columns_present(found, columns, self.description)


def _resolve_source(source, columns: _ColumnNames, con: duckdb.DuckDBPyConnection) -> _Source:
    if isinstance(source, pd.DataFrame):
        return _FrameSource.from_frame(source, columns)
    if not isinstance(source, (str, Path)):
        raise TypeError(
            f"source must be a pandas DataFrame or a path. Got {type(source).__name__} instead."
        )
    files, kind = _list_files(str(source))
    file_source = _FileSource(files, kind, str(source))
    try:
        file_source.check_columns(con, columns)
    except duckdb.Error as exc:
        raise DataValidationError(f"Could not read {source}: {exc}") from exc
    return file_source


def _list_files(source: str) -> tuple[list[str], str]:
    """Expand a file, glob or directory into a sorted list of same-format data files."""
    if globlib.has_magic(source):
        matched = sorted(p for p in globlib.glob(source, recursive=True) if Path(p).is_file())
        if not matched:
            raise DataValidationError(f"No files match the pattern {source!r}.")
    elif Path(source).is_dir():
        matched = sorted(str(p) for p in Path(source).rglob("*") if p.is_file() and _file_kind(p.name))
        if not matched:
            raise DataValidationError(f"The directory {source!r} holds no *.parquet or *.csv files.")
    elif Path(source).is_file():
        matched = [source]
    else:
        raise DataValidationError(f"No such file or directory: {source!r}.")
    return matched, _single_kind(matched, source)


def _file_kind(name: str) -> str | None:
    lowered = name.lower()
    for suffix, kind in _FILE_KINDS.items():
        if lowered.endswith(suffix):
            return kind
    return None


def _single_kind(files: list[str], source: str) -> str:
    kinds = {f: _file_kind(Path(f).name) for f in files}
    unknown = [f for f, kind in kinds.items() if kind is None]
    if unknown:
        raise DataValidationError(
            f"{source!r} includes files that are neither CSV nor Parquet "
            f"(expected {', '.join(_FILE_KINDS)}): {unknown[:_N_EXAMPLES]}."
        )
    found = set(kinds.values())
    if len(found) > 1:
        examples = {kind: next(f for f, k in kinds.items() if k == kind) for kind in sorted(found)}
        raise DataValidationError(
            f"{source!r} mixes CSV and Parquet files (e.g. {examples}); point it at one format."
        )
    return found.pop()


def _series_to_arrow(series: pd.Series) -> pa.Array:
    """One column to Arrow; NaN/NaT become null, mixed-type object columns become text."""
    try:
        array = pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        array = pa.array([None if _is_missing(v) else str(v) for v in series], type=pa.string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = pc.cast(array, array.type.value_type)
    return array


def _is_missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _check_columns_present(found: list, columns: _ColumnNames, where: str) -> None:
    for role, name in columns.by_role().items():
        if name not in found:
            raise DataValidationError(
                f"Required column {name!r} ({_ROLE_NAMES[role]}) is missing from {where}. "
                f"Columns found: {[str(c) for c in found]}.",
                column=name,
            )


def _raw_renames(columns: _ColumnNames) -> str:
    return ", ".join(f"{_sql_identifier(name)} AS raw_{role}" for role, name in columns.by_role().items())


def _raw_select_list(columns: _ColumnNames) -> str:
    return ", ".join(f"raw_{role} AS {_sql_identifier(name)}" for role, name in columns.by_role().items())


def _empty_rejected_frame(columns: _ColumnNames, is_frame: bool) -> pd.DataFrame:
    names = list(columns.by_role().values()) + ["reason"]
    return pd.DataFrame(columns=names if is_frame else ["file", "row", *names])


# --------------------------------------------------------------------------------------------------
# Validation queries and messages
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ValidationCounts:
    by_reason: dict[str | None, int]
    first_timestamp: pd.Timestamp | None
    last_timestamp: pd.Timestamp | None
    ids_are_plain_integers: bool

    @property
    def rows_in(self) -> int:
        return sum(self.by_reason.values())

    @property
    def rows_valid(self) -> int:
        return self.by_reason.get(None, 0)


def _count_by_reason(
    con: duckdb.DuckDBPyConnection, checked: str, plan: _ParsePlan, source: _Source
) -> _ValidationCounts:
    """One pass over the source: rows per rejection reason, the valid time range, and whether
    every non-blank text id is a plain integer (which decides the type of CSV ids)."""
    integer_check = (
        f"bool_and(regexp_full_match(raw_customer, '{_PLAIN_INTEGER_PATTERN}')) "
        "FILTER (WHERE trim(raw_customer) <> '')"
        if plan.ids_from_untyped_text and plan.customer_kind == "text"
        else "false"
    )
    sql = (
        f"SELECT reason, count(*), min(timestamp), max(timestamp), {integer_check} "
        f"FROM ({checked}) GROUP BY reason"
    )
    try:
        rows = con.sql(sql).fetchall()
    except duckdb.Error as exc:
        raise DataValidationError(f"Could not read {source.description}: {exc}") from exc
    if not rows:
        raise DataValidationError(f"{source.description} has no rows.")
    order = [None, *REJECTION_REASONS]
    rows.sort(key=lambda row: order.index(row[0]))
    valid = [row for row in rows if row[0] is None]
    return _ValidationCounts(
        by_reason={row[0]: row[1] for row in rows},
        first_timestamp=pd.Timestamp(valid[0][2]) if valid else None,
        last_timestamp=pd.Timestamp(valid[0][3]) if valid else None,
        ids_are_plain_integers=all(row[4] is not False for row in rows),
    )


def _invalid_rows_error(
    con: duckdb.DuckDBPyConnection,
    source: _Source,
    plan: _ParsePlan,
    invalid: dict[str, int],
    nothing_valid: bool,
) -> DataValidationError:
    """Build the error for the first kind of invalid row, naming the column and example rows."""
    if not invalid:
        return DataValidationError(f"{source.description} has no rows.")
    reason, count = next(iter(invalid.items()))
    role, description = REJECTION_REASONS[reason]
    column = plan.columns.by_role()[role]
    examples = _example_rows(con, source, plan, reason)
    listed = "; ".join(f"{_describe_row(source, f, r)}: {value!r}" for f, r, value in examples)
    message = "Every row is invalid. " if nothing_valid else ""
    message += (
        f"Column {column!r}: {count} row(s) with {description}. First offending rows "
        f"({_row_label_kind(source)}: raw value): {listed}."
    )
    message += _reason_hint(reason, plan)
    others = {r: n for r, n in invalid.items() if r != reason}
    if others:
        message += f" Other invalid rows: {others}."
    if not nothing_valid:
        message += " Pass on_invalid='reject' to exclude invalid rows and count them instead."
    rows = [source.row_label(f, r) for f, r, _ in examples]
    return DataValidationError(message, column=column, rows=rows)


def _example_rows(
    con: duckdb.DuckDBPyConnection, source: _Source, plan: _ParsePlan, reason: str
) -> list[tuple[str | None, int, str | None]]:
    role = REJECTION_REASONS[reason][0]
    located = source.located_rows_sql(con, plan, f"reason = '{reason}'", max_files=_N_EXAMPLES)
    return con.sql(
        f"SELECT source_file, source_row, CAST(raw_{role} AS VARCHAR) FROM ({located}) "
        f"ORDER BY source_file, source_row LIMIT {_N_EXAMPLES}"
    ).fetchall()


def _describe_row(source: _Source, source_file: str | None, source_row: int) -> str:
    label = source.row_label(source_file, source_row)
    if source.is_frame:
        return repr(label)
    return f"{label[0]} row {label[1]}"


def _row_label_kind(source: _Source) -> str:
    return "index label" if source.is_frame else "file and 1-based data row"


def _reason_hint(reason: str, plan: _ParsePlan) -> str:
    if reason != "unparseable_timestamp":
        return ""
    if plan.time_format is None:
        return " Pass time_format (e.g. '%Y%m%d') if the timestamps are not ISO 8601."
    return f" They do not match time_format {plan.time_format!r}."


# --------------------------------------------------------------------------------------------------
# Small SQL helpers
# --------------------------------------------------------------------------------------------------


@contextmanager
def duckdb_session() -> Iterator[duckdb.DuckDBPyConnection]:
    """Open a DuckDB connection for one call, closed (and its spill directory removed) on exit.

    Yields
    ------
    duckdb.DuckDBPyConnection
        An in-memory connection with its own temporary spill directory, so queries larger than
        its memory limit spill to disk. The limit is ``CRMML_DUCKDB_MEMORY_LIMIT`` (default
        ``"25%"`` of the machine's memory) and the thread count ``CRMML_DUCKDB_THREADS``
        (default: DuckDB's, one per core). It does not preserve insertion order (faster
        aggregation), shows no progress bar, and its session time zone is UTC, so
        time-zone-aware values convert to UTC wall time.

    Raises
    ------
    ValueError
        When ``CRMML_DUCKDB_MEMORY_LIMIT`` or ``CRMML_DUCKDB_THREADS`` holds an invalid value.
    """
    with tempfile.TemporaryDirectory(prefix="crmml-duckdb-") as temp_directory:
        con = _connect(temp_directory)
        try:
            yield con
        finally:
            con.close()


def _connect(temp_directory: str) -> duckdb.DuckDBPyConnection:
    config = {"temp_directory": temp_directory, "preserve_insertion_order": False}
    con = duckdb.connect(":memory:", config=config)
    try:
        con.execute("SET TimeZone = 'UTC'")
        try:
            con.execute("SET enable_progress_bar = false")
        except duckdb.InvalidInputException:  # in a Jupyter kernel without ipywidgets DuckDB refuses the
            pass  # setting, and its bar is off there already
        _set_resources(con)
    except BaseException:
        con.close()
        raise
    return con


def _set_resources(con: duckdb.DuckDBPyConnection) -> None:
    """Apply the memory limit and thread count (see the module docstring)."""
    memory_limit = os.environ.get(_MEMORY_LIMIT_VARIABLE) or _DEFAULT_MEMORY_LIMIT
    try:
        con.execute(f"SET memory_limit = {_sql_string(memory_limit)}")
    except duckdb.Error as exc:
        raise ValueError(
            f"{_MEMORY_LIMIT_VARIABLE} must be a memory size DuckDB accepts, such as '2GB' or '50%'. "
            f"Got {memory_limit!r} instead."
        ) from exc
    threads = os.environ.get(_THREADS_VARIABLE)
    if threads:
        if not threads.strip().isdigit() or int(threads) < 1:
            raise ValueError(
                f"{_THREADS_VARIABLE} must be a positive whole number. Got {threads!r} instead."
            )
        con.execute(f"SET threads = {int(threads)}")


def _column_types(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, str]:
    return {row[0]: row[1] for row in con.sql(f"DESCRIBE {sql}").fetchall()}


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_identifier(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'
