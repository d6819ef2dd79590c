"""Out-of-core batch scoring: a transaction log scored one hash partition of customers at a time.

:func:`score_in_partitions` splits the customers into ``partitions`` groups by
:meth:`~crmml.data.Transactions.partition`'s hash rule, hands each group's log (and customer-table
rows) to a scoring callback, and appends the callback's rows to the output file. Only one
partition's rows, features and scores are in memory at a time; DuckDB streams the log and spills
to disk beyond its memory limit (see :func:`~crmml.data.transactions.duckdb_session`).

With more than one partition, the log is first split: one scan writes every row, with its place
in the source, into its partition's own Parquet folder in the work directory
(:func:`~crmml.data.split_log.split_by_customer`), and each partition reads only those rows
(before, every partition re-scanned the whole source three or four times: half the run time on
100M rows in 17 partitions). The work directory then holds a copy of the log (about the size
of the log as Parquet). The partition count is bounded (:data:`MAX_PARTITIONS`,
:data:`MIN_CUSTOMERS_PER_PARTITION`).

With ``jobs > 1``, up to ``jobs`` partitions are scored at once, by this process and worker
processes (:mod:`crmml.batch_pool`), each writing its partition's scores and rejections to its
own part file; the parent appends the parts in partition order. One process (``jobs=1``) goes through the
same part files, so the output files are byte-identical for every ``jobs``: the partition count
does not depend on ``jobs``, and rows come in partition order (then the callback's order).

Every input row and customer is accounted for in a :class:`BatchReport` and, for those not used,
in the rejections file next to the output. Outputs are written to a hidden work directory in the
output's directory and moved into place only when everything succeeded; the work directories a
killed run leaves behind are removed by the next run for the same output.
"""

from __future__ import annotations

import numbers
import os
import shutil
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crmml.batch_pool import check_picklable, partition_count, partition_runner, work_folder
from crmml.data.split_log import split_by_customer
from crmml.customer_columns import CustomerColumns
from crmml.data.summary import MAX_ABS_AMOUNT, as_day
from crmml.data.transactions import (
    WITHOUT_CUSTOMER_SQL,
    Transactions,
    duckdb_session,
    partition_number_sql,
    read_transactions,
)
from crmml.errors import DataValidationError

__all__ = ["CUSTOMER_REJECTION_REASONS", "BatchReport", "score_in_partitions"]

#: Why an input customer got no output row, with the rule (SQL over a partition's customers),
#: tried in this order.
_CUSTOMER_REASONS = {
    "signed up after as_of": "after",  # customer table: signup_date after as_of (bought or not)
    "every row invalid": "n_rows > 0 AND n_valid = 0",  # log rows name them, all were rejected
    "first purchase after as_of": "n_valid > 0 AND n_before = 0",
    "no purchase on or before as_of (refunds only)": "n_before > 0 AND NOT buyer",  # or refunded in full
    "not returned by score_partition": "true",  # the callback left them out
}
CUSTOMER_REJECTION_REASONS = tuple(_CUSTOMER_REASONS)
REJECTED_COLUMNS = ["kind", "reason", "customer_id", "timestamp", "amount", "file", "row"]
_INTEGER_TYPES = frozenset(
    ["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"]
)
_SUFFIXES = {".parquet": "parquet", ".csv": "csv"}
_KEY, _AFTER, _PART = "__crmml_key", "__crmml_after", "__crmml_part"
#: Bounds on the number of partitions (each one pays the callback's fixed cost and a scan of its
#: own rows): at most this many, and at most one per this many customers.
MAX_PARTITIONS, MIN_CUSTOMERS_PER_PARTITION = 256, 50


@dataclass(frozen=True)
class BatchReport:
    """Where every input row and customer went in :func:`score_in_partitions`.

    Attributes
    ----------
    rows_in, rows_used, rows_after_as_of, rows_rejected : int
        Log rows read; valid rows dated on or before ``as_of``; valid rows after it; invalid rows.
    customers_in : int
        Distinct customer ids in the input: ids of log rows (valid or not) that have one, and ids
        of the customer table.
    customers_scored, customers_rejected : int
        Output rows, and input customers without one.
    customers_rejected_by_reason, rows_rejected_by_reason : dict of str to int
        The rejections by reason (see :data:`CUSTOMER_REJECTION_REASONS` and
        :data:`crmml.data.transactions.REJECTION_REASONS`).
    partitions : int
        Number of customer partitions.
    output_path, rejected_path : pathlib.Path
        The scores file and the rejections file.
    as_of : pandas.Timestamp
        The as-of day.
    partition_attrs : tuple of dict
        The ``attrs`` of each scored partition's callback result, in partition order.
    """

    rows_in: int
    rows_used: int
    rows_after_as_of: int
    rows_rejected: int
    customers_in: int
    customers_scored: int
    customers_rejected: int
    partitions: int
    output_path: Path
    rejected_path: Path
    as_of: pd.Timestamp
    customers_rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rows_rejected_by_reason: dict[str, int] = field(default_factory=dict)
    partition_attrs: tuple[dict, ...] = ()

    @property
    def reconciles(self) -> bool:
        """Whether the rows and the customers add up."""
        rows = self.rows_in == self.rows_used + self.rows_after_as_of + self.rows_rejected
        return rows and self.customers_in == self.customers_scored + self.customers_rejected

    def __str__(self) -> str:
        def reasons(counts: dict[str, int]) -> str:
            return f" ({', '.join(f'{r}: {n:,}' for r, n in counts.items())})" if counts else ""

        rows = (f"rows: {self.rows_in:,} in = {self.rows_used:,} used + {self.rows_after_as_of:,} after "
                f"as_of + {self.rows_rejected:,} rejected{reasons(self.rows_rejected_by_reason)}")
        customers = (f"customers: {self.customers_in:,} in = {self.customers_scored:,} scored + "
                     f"{self.customers_rejected:,} rejected{reasons(self.customers_rejected_by_reason)}")
        return "\n".join([f"as of {self.as_of.date()}, in {self.partitions} partition(s):", rows, customers,
                          f"scores in {self.output_path}; rejections in {self.rejected_path}"])


def score_in_partitions(
    transactions,
    *,
    as_of,
    score_partition: Callable[[Transactions, pd.DataFrame | None], pd.DataFrame],
    output,
    customers=None,
    customers_per_partition: int = 250_000,
    progress: Callable[[int, int], object] | None = None,
    read_kwargs: dict | None = None,
    jobs: int = 1,
    customer_columns=None,
) -> BatchReport:
    """Score a transaction log partition by partition, writing the scores to one file.

    Parameters
    ----------
    transactions : Transactions, str or pathlib.Path
        A validated log, or what :func:`~crmml.data.read_transactions` reads; a path is read with
        ``on_invalid="reject"``, so invalid rows are counted and listed instead of fatal.
    as_of : date-like
        The as-of day; rows after it count as ``rows_after_as_of``.
    score_partition : callable
        ``score_partition(log_partition, customers_partition) -> DataFrame``: one row per scored
        customer with a ``customer_id`` column (or index), the same columns and types for every
        partition, and only customers of the partition. ``customers_partition`` is None without a
        customer table, else the partition's table rows (possibly none). For example
        ``lambda log, table: compute_features(log, as_of=as_of, customers=table).reset_index()``.
        With ``jobs > 1`` it must be picklable (a module-level function, or an instance of a
        module-level class such as :class:`crmml.jobs.ScorePartition`; not a lambda or a closure):
        each worker process unpickles it once. Its result's ``attrs`` come back in
        :attr:`BatchReport.partition_attrs`, the only way a worker's callback can report to the
        caller. It is not called for a partition where no customer bought on or before ``as_of`` and no
        table customer signed up by then (``compute_features`` raises on a partition of table
        customers without any buyer: small partitions of a small log only).
    output : str or pathlib.Path
        A ``.parquet`` or ``.csv`` file, replaced if it exists. The rejections go to
        ``<output without suffix>.rejected.csv``: columns ``kind`` (``row`` or ``customer``),
        ``reason``, ``customer_id``, ``timestamp``, ``amount`` (raw values, for rows), ``file`` and
        ``row`` (file and 1-based data row, or the DataFrame index label); header only when
        nothing was rejected.
    customers : str or pathlib.Path, optional
        A CSV or Parquet customer table, one row per ``customer_id``. Integer columns other than
        ``customer_id`` and ``referred_by`` are handed over as floats (so a partition with missing
        values has the types of one without), ids in the type of the log's ids when they convert
        exactly, and with ``referred_by`` (and no ``n_referrals``), an ``n_referrals`` column counted
        over the whole table (referring customers signed up on or before ``as_of`` when
        ``signup_date`` is given), so that a partition is scored as in the whole table.
    customers_per_partition : int
        Target customers per partition: ``ceil(distinct customers / customers_per_partition)``
        partitions, at least 1, at most :data:`MAX_PARTITIONS` (256) and at most one per
        :data:`MIN_CUSTOMERS_PER_PARTITION` (50) customers. It does not depend on ``jobs``: with
        fewer partitions than ``jobs``, only that many workers run.
    progress : callable, optional
        Called as ``progress(done_partitions, total_partitions)`` after each partition (as they
        finish, in any order, with ``jobs > 1``).
    read_kwargs : dict, optional
        Passed to :func:`~crmml.data.read_transactions` (not with a :class:`Transactions`).
    jobs : int
        Partitions scored at once. 1 (default): one after the other in this process, no worker
        process. More: this process and ``jobs - 1`` ``spawn``-ed worker processes (fewer when the
        log's rows show that there are fewer partitions, none for one), each
        with ``1 / jobs`` of DuckDB's threads and memory limit (see :mod:`crmml.batch_pool`);
        peak memory grows with ``jobs`` x the partition size. Each worker gets its own copy of
        ``transactions`` when it is a DataFrame's log: pass files for large logs.
    customer_columns : crmml.customer_columns.CustomerColumns, optional
        The customer table's column names: its mapped columns are renamed to the canonical names as
        the table is read (default: the canonical names).

    Returns
    -------
    BatchReport
        The counts; ``reconciles`` is always True.

    Raises
    ------
    TypeError
        With ``jobs > 1`` and a ``score_partition`` that cannot be pickled.
    DataValidationError
        On an amount of 9.2e18 or more in absolute value (naming its row: the sums are exact,
        see :data:`crmml.data.summary.MAX_ABS_AMOUNT`),
        an invalid log (no valid row, missing column, ...), ``as_of`` before the first valid
        transaction, nothing to score, or a customer table that is missing, unreadable, without
        ``customer_id``, with missing or repeated ids or unparseable sign-up dates.
    FileNotFoundError
        When the output's directory does not exist.
    ValueError
        On an output suffix other than ``.parquet`` / ``.csv``, a bad ``customers_per_partition``
        or ``jobs``,
        or callback results with duplicate or foreign customer ids or changing columns.
    RuntimeError
        When the counts do not reconcile (a bug). On any error no output or rejections file is
        written and no temporary file is left behind.
    """
    as_of_day = as_day(as_of, "as_of")
    per_partition = customers_per_partition
    for name, value in (("customers_per_partition", per_partition), ("jobs", jobs)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int. Got {value!r} instead.")
    output = Path(output)
    kind = _SUFFIXES.get(output.suffix.lower())
    if kind is None or output.is_dir():
        raise ValueError(f"output must be a .parquet or .csv file. Got {str(output)!r} instead.")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"The output directory {str(output.parent)!r} does not exist.")
    rejected_path = output.with_name(f"{output.stem}.rejected.csv")
    if isinstance(transactions, Transactions):
        if read_kwargs:
            raise TypeError("read_kwargs only apply when transactions is not already a Transactions.")
        log = transactions
    else:
        log = read_transactions(transactions, **{"on_invalid": "reject", **(read_kwargs or {})})
    if as_of_day < log.first_timestamp.normalize():
        raise DataValidationError(
            f"as_of {as_of_day.date()} is before the first valid transaction "
            f"({log.first_timestamp.date()}) of {log.source_description}; there is nothing to score."
        )
    next_day = f"TIMESTAMP '{as_of_day + pd.Timedelta(days=1)}'"

    # no more workers than partitions; customers are not counted yet, but a log's rows bound them
    workers = min(jobs, partition_count(log.report.rows_in, int(per_partition), most=MAX_PARTITIONS,
                                        fewest_customers=MIN_CUSTOMERS_PER_PARTITION))
    if jobs > 1:
        check_picklable(score_partition, "score_partition")  # whether or not workers are needed
        if customers is not None:
            workers = jobs  # the table's customers may outnumber the log's rows
    with work_folder(output) as work, partition_runner(score_partition, workers) as runner:
        with duckdb_session() as con:
            log.create_views(con)
            id_type = con.sql("DESCRIBE SELECT customer_id FROM crmml_transactions").fetchall()[0][1]
            table = None if customers is None else _CustomerTable(con, customers, as_of_day, id_type,
                                                                  customer_columns)
            rows_used, rows_after, largest = con.sql(
                f"SELECT count(*) FILTER (WHERE timestamp < {next_day}), count(*) FILTER (WHERE timestamp >= "
                f"{next_day}), {'max(abs(amount))' if log.has_amount else 'NULL'} FROM crmml_transactions"
            ).fetchall()[0]
            if largest is not None and not largest < MAX_ABS_AMOUNT:
                raise _amount_too_large(con, log)
            keys = f"SELECT DISTINCT customer_id FROM crmml_checked WHERE NOT {WITHOUT_CUSTOMER_SQL}"
            if table is not None:  # (distinct ids in their own type first: faster)
                keys = (f"SELECT CAST(customer_id AS VARCHAR) FROM ({keys}) "
                        f"UNION SELECT {table.key} FROM {table.scan}")
            customers_in = con.sql(f"SELECT count(*) FROM ({keys})").fetchall()[0][0]
            n_partitions = partition_count(customers_in, int(per_partition), most=MAX_PARTITIONS,
                                           fewest_customers=MIN_CUSTOMERS_PER_PARTITION)
            if table is not None:
                table.write(con, work / "customers.parquet", n_partitions)
            if n_partitions > 1:  # every partition is read: one scan writes each its own rows
                log_parts = split_by_customer(con, log, work / "log", n_partitions)
            else:
                log_parts = log

        scores = _ScoreWriter(work / f"scores{output.suffix}", kind)
        rejections = work / "rejected.csv"
        pd.DataFrame(columns=REJECTED_COLUMNS).to_csv(rejections, index=False)
        counts = {"scored": 0, "seen": 0, "rows": 0, "reasons": dict.fromkeys(CUSTOMER_REJECTION_REASONS, 0)}
        attrs = []
        parts = runner.run(_score_to_files, (n_partitions, log_parts, table, next_day, work), n_partitions, progress)
        try:
            with closing(parts):  # on an error here: stop the workers before the work folder goes
                for part in parts:
                    _append_part(part, scores, rejections, counts)
                    attrs.append(part["attrs"])
        finally:
            scores.close()
        if not scores.started:
            raise DataValidationError(
                f"No customer bought on or before as_of {as_of_day.date()} in {log.source_description}; "
                "there is nothing to score."
            )
        by_reason = {reason: n for reason, n in counts["reasons"].items() if n}
        report = BatchReport(
            rows_in=log.report.rows_in, rows_used=rows_used, rows_after_as_of=rows_after,
            rows_rejected=log.report.rows_rejected, customers_in=customers_in,
            customers_scored=counts["scored"], customers_rejected=sum(by_reason.values()),
            partitions=n_partitions, output_path=output, rejected_path=rejected_path, as_of=as_of_day,
            customers_rejected_by_reason=by_reason,
            rows_rejected_by_reason=dict(log.report.rejected_by_reason), partition_attrs=tuple(attrs),
        )
        if not report.reconciles or counts["seen"] != customers_in or counts["rows"] != report.rows_rejected:
            raise RuntimeError(
                f"The batch counts do not reconcile ({counts['seen']} customers and {counts['rows']} rejected "
                f"rows found in the partitions):\n{report}"
            )
        os.replace(rejections, rejected_path)
        try:
            os.replace(scores.path, output)
        except BaseException:
            rejected_path.unlink(missing_ok=True)
            raise
    return report


def _amount_too_large(con: duckdb.DuckDBPyConnection, log: Transactions) -> DataValidationError:
    """The error for a valid row whose amount the exact sums cannot hold, naming the first such row
    (the data layer's rule, :data:`crmml.data.summary.MAX_ABS_AMOUNT`, checked before DuckDB's
    ``DECIMAL(38, 10)`` sums overflow on it)."""
    where = (f"reason IS NULL AND NOT abs(amount) < {MAX_ABS_AMOUNT!r}"
             + (f" AND {log._partition_filter()}" if log._partitions else ""))
    located = log._source.located_rows_sql(con, log._plan, where, max_files=1)
    frame = log._source.label_rows(con.sql(
        f"SELECT amount, source_file, source_row FROM ({located}) ORDER BY source_file, source_row LIMIT 1"
    ).df())
    if log._source.is_frame:
        label, rows = f"index label {frame.index[0]!r} of the DataFrame", [frame.index[0]]
    else:
        label, rows = f"row {frame['row'].iloc[0]} of {frame['file'].iloc[0]}", [int(frame["row"].iloc[0])]
    return DataValidationError(
        f"Amounts must be below 9.2e18 in absolute value to be summed exactly. Got {frame['amount'].iloc[0]:.6g} "
        f"in column 'amount', {label}.", column="amount", rows=rows,
    )


# --------------------------------------------------------------------------------------------------
# One partition
# --------------------------------------------------------------------------------------------------


def _score_to_files(index, score_partition, count, log, table, next_day, work: Path) -> dict:
    """Score partition ``index`` of ``count`` into its own files in ``work``: the scores (Parquet,
    in the callback's row order) and the rejections (its rejected rows, then its rejected customers
    by id). Returns the files and the partition's counts. Runs in a worker process with ``jobs > 1``."""
    part = log.partition(index, count)
    stem = work / f"part-{index:06d}"
    rejections = stem.with_suffix(".rejected.csv")
    rejections.touch()
    rows = _append_rejected_rows(part, rejections) if log.report.rows_rejected else 0
    scores_path, n_scored, attrs = None, 0, {}
    with duckdb_session() as con:
        part.create_views(con)
        con.execute(f"CREATE TEMP TABLE crmml_ids AS {_customers_sql(part, table, index, next_day)}")
        n_ids, n_buyers, n_eligible = con.sql(
            "SELECT count(*), count(*) FILTER (WHERE buyer), count(*) FILTER (WHERE in_table AND NOT after) "
            "FROM crmml_ids"
        ).fetchall()[0]
        con.register("crmml_scored", pa.table({"customer_id": pa.array([], pa.string())}))
        if n_buyers or n_eligible:  # else nobody here can be scored (and compute_features would fail)
            result = _checked_result(score_partition(part, table.frame(con, index) if table else None), index)
            ids = pa.array(result["customer_id"], from_pandas=True)
            if pa.types.is_dictionary(ids.type):
                ids = ids.dictionary_decode()
            con.register("crmml_scored", pa.table({"customer_id": ids}))
            foreign = con.sql(
                "SELECT CAST(s.customer_id AS VARCHAR) FROM crmml_scored AS s ANTI JOIN crmml_ids AS i "
                "ON CAST(s.customer_id AS VARCHAR) = i.key LIMIT 5"
            ).fetchall()
            if foreign:
                raise ValueError(f"score_partition returned customers that are not in partition {index}, e.g. "
                                 f"{[row[0] for row in foreign]}.")
            attrs, n_scored = dict(result.attrs), len(result)
            scores_path = stem.with_suffix(".parquet")
            pq.write_table(_arrow_scores(result), scores_path)
        cases = " ".join(f"WHEN {rule} THEN '{reason}'" for reason, rule in _CUSTOMER_REASONS.items())
        rejected = con.sql(
            f"SELECT 'customer' AS kind, CASE {cases} END AS reason, i.key AS customer_id FROM crmml_ids AS i "
            "ANTI JOIN crmml_scored AS s ON CAST(s.customer_id AS VARCHAR) = i.key ORDER BY i.key"
        ).df()
    rejected.reindex(columns=REJECTED_COLUMNS).to_csv(rejections, mode="a", header=False, index=False)
    reasons = {reason: int(n) for reason, n in rejected["reason"].value_counts().items()}
    return {"index": index, "scores": scores_path, "rejections": rejections, "scored": n_scored, "seen": n_ids,
            "rows": rows, "reasons": reasons, "attrs": attrs}


def _append_part(part: dict, scores: _ScoreWriter, rejections: Path, counts: dict) -> None:
    """Append one partition's files (from :func:`_score_to_files`) to the output's, then remove them."""
    if part["scores"] is not None:
        scores.write(pq.read_table(part["scores"]), part["index"])
        part["scores"].unlink()
    with open(rejections, "ab") as whole, open(part["rejections"], "rb") as piece:
        shutil.copyfileobj(piece, whole)
    part["rejections"].unlink()
    counts["scored"] += part["scored"]
    counts["seen"] += part["seen"]
    counts["rows"] += part["rows"]
    for reason, n in part["reasons"].items():
        counts["reasons"][reason] += n


def _customers_sql(part: Transactions, table: _CustomerTable | None, index: int, next_day: str) -> str:
    """One row per customer id of the partition: its row counts, whether it bought on or before
    as_of (the purchase-day rule of :mod:`crmml.data.summary`) and its customer-table status."""
    days = (  # a customer's rows by day (invalid rows: day NULL), grouped by the id's own type (faster)
        "SELECT customer_id, CASE WHEN reason IS NULL THEN CAST(timestamp AS DATE) END AS day, "
        f"count(*) AS n, min(timestamp) FILTER (WHERE reason IS NULL) < {next_day} AS before"
    )
    occasion = "before"
    if part.has_amount:
        days += (", count(*) FILTER (WHERE reason IS NULL AND amount >= 0) AS n_purchases, "
                 "count(*) FILTER (WHERE reason IS NULL AND amount < 0) AS n_refunds, "
                 "sum(CASE WHEN reason IS NULL THEN CAST(amount AS DECIMAL(38, 10)) END) AS net")
        occasion += " AND n_purchases > 0 AND (net > 0 OR n_refunds = 0)"
    days += f" FROM crmml_checked WHERE NOT {WITHOUT_CUSTOMER_SQL} GROUP BY ALL"
    logged = (
        "SELECT CAST(customer_id AS VARCHAR) AS key, sum(n) AS n_rows, "
        "sum(n) FILTER (WHERE day IS NOT NULL) AS n_valid, sum(n) FILTER (WHERE before) AS n_before, "
        f"bool_or({occasion}) AS buyer FROM ({days}) GROUP BY customer_id"
    )
    listed = "SELECT NULL::VARCHAR AS key, false AS after WHERE false"
    if table is not None:
        listed = (f"SELECT {_KEY} AS key, {_AFTER} AS after FROM read_parquet({_literal(table.path)}) "
                  f"WHERE {_PART} = {index}")
    return (
        "SELECT key, coalesce(n_rows, 0) AS n_rows, coalesce(n_valid, 0) AS n_valid, "
        "coalesce(n_before, 0) AS n_before, coalesce(buyer, false) AS buyer, t.key IS NOT NULL AS in_table, "
        "coalesce(t.after, false) AS after "
        f"FROM ({logged}) AS l FULL JOIN ({listed}) AS t USING (key)"
    )


def _checked_result(result, index: int) -> pd.DataFrame:
    if not isinstance(result, pd.DataFrame):
        raise TypeError(f"score_partition must return a DataFrame. Got {type(result).__name__} instead.")
    if "customer_id" not in result.columns:
        if result.index.name != "customer_id":
            raise ValueError(f"score_partition returned no 'customer_id' column: {list(result.columns)}.")
        result = result.reset_index()
    ids = result["customer_id"]
    if ids.isna().any() or ids.duplicated().any():
        repeated = pd.unique(ids[ids.duplicated() | ids.isna()])[:5].tolist()
        raise ValueError(
            f"score_partition returned missing or repeated customer ids in partition {index}: {repeated}."
        )
    return result


def _append_rejected_rows(part: Transactions, rejections: Path) -> int:
    """Append the partition's rejected log rows to the rejections file; return how many."""
    frame = part.rejected_rows()
    names, is_frame = part._plan.columns, part._source.is_frame  # the user's column names, source kind
    pd.DataFrame({
        "kind": "row",
        "reason": frame["reason"].to_numpy(),
        "customer_id": frame[names.customer].to_numpy(),
        "timestamp": frame[names.time].to_numpy(),
        "amount": frame[names.amount].to_numpy() if names.amount is not None else None,
        "file": None if is_frame else frame["file"].to_numpy(),
        "row": frame.index.to_numpy() if is_frame else frame["row"].to_numpy(),
    }).to_csv(rejections, mode="a", header=False, index=False)
    return len(frame)


# --------------------------------------------------------------------------------------------------
# Customer table and output file
# --------------------------------------------------------------------------------------------------


class _CustomerTable:
    """A checked customer-table file; :meth:`write` stores it split into partitions (one Parquet
    file sorted by partition, so that reading a partition skips the others' row groups)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, source, as_of_day: pd.Timestamp, log_id_type: str,
                 columns=None):
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"customers must be the path of a CSV or Parquet file. Got {type(source).__name__}.")
        file, self.description = Path(source), f"the customer table {str(source)!r}"
        if not file.is_file():
            raise DataValidationError(f"No customer table at {str(source)!r}.")
        name = file.name.lower()
        if not name.endswith((".csv", ".csv.gz", ".parquet")):
            raise DataValidationError(f"The customer table must be a .csv or .parquet file: {file.name!r}.")
        is_csv = not name.endswith(".parquet")
        self.scan = f"read_csv({_literal(file)}, header = true)" if is_csv else f"read_parquet({_literal(file)})"
        types = dict(row[:2] for row in self._query(con, f"DESCRIBE SELECT * FROM {self.scan}"))
        renames = (columns or CustomerColumns()).renames(list(types), self.description)
        if renames:  # the canonical names from here on (the columns in the file's order)
            select = ", ".join(f"{_identifier(n)} AS {_identifier(renames.get(n, n))}" for n in types)
            self.scan = f"(SELECT {select} FROM {self.scan})"
            types = {renames.get(n, n): t for n, t in types.items()}
        if "customer_id" not in types:
            raise DataValidationError(f"Required column 'customer_id' is missing from {self.description}. "
                                      f"Columns found: {list(types)}.", column="customer_id")
        whole = _whole_id("customer_id", types["customer_id"])
        self.key = f"CAST({whole} AS VARCHAR)"
        keys = f"(SELECT {self.key} AS k FROM {self.scan})"
        n_missing, integers = self._query(
            con, f"SELECT count(*) FILTER (WHERE k IS NULL OR trim(k) = ''), "
                 f"bool_and(CAST(TRY_CAST(k AS BIGINT) AS VARCHAR) = k) FROM {keys}"
        )[0]
        if n_missing:
            raise DataValidationError(f"{self.description} has {n_missing} row(s) with a missing or non-integer "
                                      "customer_id.", column="customer_id")
        repeated = self._query(con, f"SELECT k, count(*) OVER () FROM {keys} GROUP BY k HAVING count(*) > 1 "
                                    "ORDER BY k LIMIT 10")
        if repeated:
            ids = [row[0] for row in repeated]
            raise DataValidationError(f"{self.description} must hold one row per customer; {repeated[0][1]} "
                                      f"customer id(s) repeat: {ids}.", column="customer_id", rows=ids)
        self.id_sql = whole  # handed over in the log's id type when the ids convert exactly
        if log_id_type in _INTEGER_TYPES and integers and types["customer_id"] == "VARCHAR":
            self.id_sql = f"CAST({self.key} AS BIGINT)"
        elif log_id_type == "VARCHAR":
            self.id_sql = self.key
        day, as_of = _signup_day(types.get("signup_date")), f"DATE '{as_of_day.date()}'"
        if day and self._query(con, f"SELECT count(*) FROM {self.scan} WHERE {day} IS NULL AND "
                                    "trim(CAST(signup_date AS VARCHAR)) <> ''")[0][0]:
            raise DataValidationError(f"{self.description}: 'signup_date' must hold dates.", column="signup_date")
        self.after = f"coalesce({day} > {as_of}, false)" if day else "false"
        signed_up = f"coalesce({day} <= {as_of}, false)" if day else "true"  # unknown date: no referral
        self.referrals = None
        if "referred_by" in types and "n_referrals" not in types:
            referrer = f"CAST({_whole_id('referred_by', types['referred_by'])} AS VARCHAR)"
            self.referrals = (f"SELECT {referrer} AS __crmml_referrer, count(*) AS __crmml_n FROM {self.scan} "
                              f"WHERE {referrer} IS NOT NULL AND {signed_up} GROUP BY ALL")
        self.floats = [n for n, t in types.items()
                       if t in _INTEGER_TYPES and n not in ("customer_id", "referred_by")]
        self.path: Path | None = None

    def _query(self, con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
        try:
            return con.sql(sql).fetchall()
        except duckdb.Error as exc:
            raise DataValidationError(f"Could not read {self.description}: {exc}") from exc

    def write(self, con: duckdb.DuckDBPyConnection, path: Path, count: int) -> None:
        """Write the table with its partition numbers, keys, sign-up flags and referral counts."""
        floats = "".join(f", CAST({_identifier(n)} AS DOUBLE) AS {_identifier(n)}" for n in self.floats)
        select, joined = f"SELECT t.* REPLACE ({self.id_sql} AS customer_id{floats})", f"{self.scan} AS t"
        if self.referrals is not None:
            select += ", CAST(coalesce(r.__crmml_n, 0) AS DOUBLE) AS n_referrals"
            joined += f" LEFT JOIN ({self.referrals}) AS r ON {self.key} = r.__crmml_referrer"
        select += (f", {self.key} AS {_KEY}, {self.after} AS {_AFTER}, "
                   f"{partition_number_sql(self.key, count)} AS {_PART} FROM {joined} ORDER BY {_PART}")
        self._query(con, f"COPY ({select}) TO {_literal(path)} (FORMAT parquet)")
        self.path = path

    def frame(self, con: duckdb.DuckDBPyConnection, index: int) -> pd.DataFrame:
        """The table rows of partition ``index``."""
        return con.sql(f"SELECT * EXCLUDE ({_KEY}, {_AFTER}, {_PART}) FROM read_parquet({_literal(self.path)}) "
                       f"WHERE {_PART} = {index}").to_arrow_table().to_pandas()


def _whole_id(column: str, duckdb_type: str) -> str:
    name = _identifier(column)
    if duckdb_type in ("FLOAT", "DOUBLE"):  # an integer column with gaps, written by pandas
        return f"CASE WHEN {name} = round({name}) THEN TRY_CAST({name} AS BIGINT) END"
    if duckdb_type in _INTEGER_TYPES or duckdb_type == "VARCHAR":
        return name
    raise DataValidationError(f"Column {column!r} of the customer table has type {duckdb_type}; ids must be text "
                              "or whole numbers.", column=column)


def _signup_day(duckdb_type: str | None) -> str | None:
    """SQL for the (UTC) day of ``signup_date``, as :func:`crmml.features.compute_features` reads it."""
    if duckdb_type is None:
        return None
    if duckdb_type == "DATE":
        return "signup_date"
    if duckdb_type in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "VARCHAR"):
        parsed = "signup_date" if duckdb_type != "VARCHAR" else "TRY_CAST(signup_date AS TIMESTAMPTZ)"
        return f"CAST(timezone('UTC', {parsed}) AS DATE)"
    if duckdb_type.startswith("TIMESTAMP"):
        return "CAST(signup_date AS DATE)"
    raise DataValidationError(f"The customer table's 'signup_date' has type {duckdb_type}; expected dates.",
                              column="signup_date")


def _arrow_scores(frame: pd.DataFrame) -> pa.Table:
    """A callback's scores as an Arrow table: no index, no pandas metadata, categories as their values."""
    frame = frame.copy(deep=False)
    frame.attrs = {}  # pandas attrs are not stored: they may not be serialisable
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    return pa.table({
        name: column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column
        for name, column in zip(table.column_names, table.columns, strict=True)
    })


class _ScoreWriter:
    """Appends each partition's scores (:func:`_arrow_scores` tables) to one Parquet or CSV file, in
    the first partition's columns and (Parquet) types."""

    def __init__(self, path: Path, kind: str):
        self.path, self.kind, self.columns = path, kind, None
        self._writer: pq.ParquetWriter | None = None

    @property
    def started(self) -> bool:
        return self.columns is not None

    def write(self, table: pa.Table, index: int) -> None:
        first = self.columns is None
        if first:
            self.columns = list(table.column_names)
        elif sorted(table.column_names) != sorted(self.columns):
            raise ValueError(f"score_partition returned columns {table.column_names} for partition {index}, "
                             f"but {self.columns} before.")
        table = table.select(self.columns)
        if self.kind == "csv":
            table.to_pandas().to_csv(self.path, mode="w" if first else "a", header=first, index=False)
            return
        if first:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        try:
            self._writer.write_table(table.cast(self._writer.schema))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            raise ValueError(f"score_partition returned types {table.schema.types} for partition {index}, "
                             f"which do not convert to the first one's {self._writer.schema.types}: {exc}") from exc

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _literal(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'
