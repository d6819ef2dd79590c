"""A transaction log written once into its customers' hash partitions, so that each partition reads its own rows.

:meth:`Transactions.partition <crmml.data.transactions.Transactions.partition>` restricts a log to
one hash partition of its customers, but every query of a partition still scans the whole source.
A batch job scores every partition, two or three queries each, so a log of ``P`` partitions is
scanned about ``3 P`` times: on 100M rows and 17 partitions that was half of the job. A job that
scores every partition splits the log first (:func:`split_by_customer`): one scan writes each
row's raw columns, with its source file and row and its partition number, to a Parquet folder
per partition (DuckDB's ``PARTITION_BY``); the partitions of the split log then read only their own
folder. The split log validates, counts and labels its rows exactly as the log it came from: the
raw columns go through the same parse plan, and a rejected row is still named by its place in
the original source (file and row, or the DataFrame's index label).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from crmml.data.transactions import (
    WITHOUT_CUSTOMER_SQL,
    Transactions,
    _ParsePlan,
    _Source,
    _sql_string,
    partition_number_sql,
)

__all__ = ["split_by_customer"]

_PART = "crmml_part"
#: Rows a partition's writer holds before it writes them (DuckDB's ``partitioned_write_flush_threshold``).
_FLUSH_ROWS = 1 << 16


class _SplitSource(_Source):
    """The raw rows of one partition of a split log (``part``), or of all of them (``part`` None)."""

    def __init__(self, folder: Path, count: int, original: _Source, part: int | None = None):
        self.folder, self.count, self.original, self.part = Path(folder), int(count), original, part
        self.description = original.description
        self.kind = original.kind
        self.is_frame = original.is_frame

    def split_part(self, index: int, count: int) -> _SplitSource | None:
        if count != self.count or self.part is not None:
            return None
        return _SplitSource(self.folder, self.count, self.original, index)

    def _rows(self, columns: str) -> str:
        scan = f"read_parquet({_sql_string(str(self.folder / '**' / '*.parquet'))}, hive_partitioning = true)"
        where = "" if self.part is None else f" WHERE {_PART} = {self.part}"  # (prunes the other folders)
        return f"SELECT {columns} FROM {scan}{where}"

    def raw_sql(self, con, columns):
        return self._rows(", ".join(f"raw_{role}" for role in columns.by_role()))

    def located_rows_sql(self, con, plan, where, max_files=None):
        raw = ", ".join(f"raw_{role}" for role in plan.columns.by_role())
        return f"SELECT * FROM ({plan.checked_sql(self._rows(f'{raw}, source_file, source_row'))}) WHERE {where}"

    def row_label(self, source_file, source_row):
        return self.original.row_label(source_file, source_row)

    def label_rows(self, frame):
        return self.original.label_rows(frame)


def split_by_customer(con: duckdb.DuckDBPyConnection, log: Transactions, folder: str | Path, count: int) -> Transactions:
    """``log`` written into ``folder`` by hash partition of its customers (the rule of
    :meth:`~crmml.data.transactions.Transactions.partition`, ``count`` partitions), as a log whose
    ``partition(index, count)`` reads only partition ``index``'s rows.

    The split log has the rows, counts, time range, validation and row labels of ``log``; its
    other partitionings (another ``count``) still filter by hash. ``folder`` must not exist or be
    empty, and must outlive the split log (a batch job's work folder).

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        A connection from :func:`~crmml.data.transactions.duckdb_session` (it runs the one scan).
    log : Transactions
        Read from files or a DataFrame; a partition of a log is split as the rows it holds.
    folder : str or pathlib.Path
        Where the partitions' Parquet folders (``crmml_part=<index>/``) are written.
    count : int
        Number of partitions.
    """
    folder = Path(folder)
    plan: _ParsePlan = log._plan
    where = log._partition_filter() if log._partitions else "true"
    located = log._source.located_rows_sql(con, plan, where)
    raw = ", ".join(f"raw_{role}" for role in plan.columns.by_role())
    part = f"CASE WHEN {WITHOUT_CUSTOMER_SQL} THEN 0 ELSE {partition_number_sql('customer_id', count)} END"
    # A partition's rows are written out every _FLUSH_ROWS rows (DuckDB buffers 524,288 per
    # partition and thread by default: 4 GB on 100M rows in 66 partitions, here about 0.5 GB).
    flush = con.sql("SELECT current_setting('partitioned_write_flush_threshold')").fetchall()[0][0]
    con.execute(f"SET partitioned_write_flush_threshold = {_FLUSH_ROWS}")
    try:
        con.execute(
            f"COPY (SELECT {raw}, source_file, source_row, {part} AS {_PART} FROM ({located})) "
            f"TO {_sql_string(str(folder))} (FORMAT parquet, PARTITION_BY ({_PART}), OVERWRITE_OR_IGNORE)"
        )
    finally:
        con.execute(f"SET partitioned_write_flush_threshold = {int(flush)}")
    report, first, last = log._counted()
    split = Transactions(_SplitSource(folder, count, log._source), plan, report, first, last)
    split._keep_rows = log._keep_rows
    return split
