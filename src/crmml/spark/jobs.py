"""``crmml score --engine spark``: the batch scoring job on a Spark session.

It reads the log (Parquet or CSV: a file, a directory or a glob) with Spark, validates it with
``on_invalid="reject"``, scores every customer (:func:`crmml.spark.score`) and writes what the local
engine writes: one scores file (``.parquet`` or ``.csv``) and ``<output>.rejected.csv`` (rows and
customers not scored, with their reason), both moved into place only when everything succeeded,
and a :class:`crmml.batch.BatchReport` whose counts reconcile (rows in = used + after as-of +
rejected; customers in = scored + rejected). Spark writes part files into a hidden directory next to
the output; they are then concatenated into the one file (streamed, never all in memory).

A *lake path* as output, a URI (``s3a://bucket/scores/2025-06-30``, ``hdfs://...``,
``file:///...``) or a local path without a ``.parquet``/``.csv`` suffix, is written by Spark itself
as a Parquet dataset (part files and ``_SUCCESS``, replacing what was there; nothing passes through
the driver), and the rejections as a CSV dataset with a header at ``<output>.rejected``.
"""

from __future__ import annotations

import glob as globlib
import os
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crmml.batch import CUSTOMER_REJECTION_REASONS, REJECTED_COLUMNS, BatchReport
from crmml.data.summary import as_day
from crmml.errors import DataValidationError, first_line
from crmml.jobs import ScoreResult
from crmml.spark.scoring import load_model, score
from crmml.spark.session import spark_session
from crmml.spark.transactions import SparkTransactions, validate_transactions

__all__ = ["read_spark_table", "score_job_spark"]

_SUFFIXES = (".parquet", ".csv")
_SCORED = "scored"


def score_job_spark(*, model, transactions, as_of, output, customers=None, tracking_uri=None, time_format=None,
                    master: str | None = None, session: SparkSession | None = None, columns=None,
                    customer_columns=None) -> ScoreResult:
    """Score every customer of a log with Spark (see the module docstring).

    Parameters
    ----------
    model : str or Scorer
        ``models:/crmml-scorer@champion``, ``models:/<name>/<version>``, a bundle folder or a scorer.
    transactions : str or pathlib.Path
        Parquet or CSV data: a file, a directory or a glob (any path Spark reads).
    as_of : date-like
    output : str or pathlib.Path
        A local ``.parquet`` or ``.csv`` file, replaced if it exists, or a lake path (a URI, or a
        local path without those suffixes) that Spark writes as a Parquet dataset.
    customers : str or pathlib.Path, optional
        A CSV or Parquet customer table.
    tracking_uri, time_format
        As for ``crmml score``.
    master : str, optional
        Spark master; default: the active or ``spark-submit`` session, else ``local[2]``.
    session : SparkSession, optional
        A session to use instead (``master`` is then ignored).
    columns : mapping, optional
        Overrides of the model's training columns and time zone (keys of
        :class:`~crmml.data.transactions.LogColumns`); with an ``order`` column, refunds net into
        their order's period, as in the local engine.
    customer_columns : mapping, optional
        Overrides of the model's customer-table columns (keys of
        :class:`~crmml.customer_columns.CustomerColumns`); the mapped columns are renamed to the
        canonical names as the table is read.

    Returns
    -------
    crmml.jobs.ScoreResult

    Raises
    ------
    DataValidationError, FileNotFoundError, ValueError
        On bad input; nothing is written then.
    """
    if is_lake_path(output):
        output = str(output).rstrip("/")
    else:
        output = Path(output)
        if output.suffix.lower() not in _SUFFIXES or output.is_dir():
            raise ValueError(f"output must be a .parquet or .csv file or a lake path. Got {str(output)!r} instead.")
        if not output.parent.is_dir():
            raise FileNotFoundError(f"The output directory {str(output.parent)!r} does not exist.")
    as_of_day = as_day(as_of, "as_of")
    scorer = load_model(model, tracking_uri=tracking_uri)
    log_columns = scorer.config.columns.merged(columns)
    table_columns = scorer.config.customer_columns.merged(customer_columns)
    started_here = session is None and SparkSession.getActiveSession() is None
    with warnings.catch_warnings():  # PySpark's notice about pandas 3: nothing a user can act on
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        spark = session or spark_session(master)
        try:
            result = _score(spark, scorer, transactions, as_of_day, output, customers, time_format, log_columns,
                            table_columns)
            return replace(result, columns=log_columns, customer_columns=table_columns)
        except AnalysisException as exc:  # unreadable input, as Spark says it
            raise DataValidationError(f"Spark could not read the input: {first_line(exc)}") from exc
        finally:
            if started_here:
                spark.stop()


def _score(spark, scorer, transactions, as_of_day, output: Path, customers, time_format, columns,
           table_columns) -> ScoreResult:
    log = validate_transactions(read_spark_table(spark, transactions, "transactions"), time_format=time_format,
                                on_invalid="reject", persist=True, customer_col=columns.customer,
                                time_col=columns.time, amount_col=columns.amount, timezone=columns.timezone,
                                order_col=columns.order)
    try:
        return _score_log(spark, scorer, log, transactions, as_of_day, output, customers, table_columns)
    finally:
        log.unpersist()


def is_lake_path(output) -> bool:
    """Whether ``output`` is written as a Parquet dataset by Spark: a URI (``scheme://``) or a local
    path that does not end in ``.parquet`` or ``.csv``."""
    text = str(output)
    return "://" in text or not text.lower().endswith(_SUFFIXES)


def _score_log(spark, scorer, log: SparkTransactions, transactions, as_of_day, output, customers,
               table_columns) -> ScoreResult:
    if as_of_day < log.first_timestamp.normalize():
        raise DataValidationError(f"as_of {as_of_day.date()} is before the first valid transaction "
                                  f"({log.first_timestamp.date()}) of {transactions}; there is nothing to score.")
    table = None
    if customers is not None:  # the canonical names from here on
        table = read_spark_table(spark, customers, "customer table")
        renames = table_columns.renames(table.columns, f"the customer table {str(customers)!r}")
        table = table.withColumnsRenamed(renames) if renames else table
    if isinstance(output, str):  # a lake path: Spark writes the datasets where they go
        rejected_path = f"{output}.rejected"
        scores = score(log, scorer, as_of=as_of_day, customers=table)
        scores.write.mode("overwrite").parquet(output)
        written = spark.read.parquet(output)
        report, customer_rejections = _reconcile(log, table, written, as_of_day, len(written.inputFiles()),
                                                 output, rejected_path)
        _rejections(log, customer_rejections).coalesce(1).write.mode("overwrite").option("header", "true").csv(
            rejected_path)
        missing = list(scorer.attribute_features_) if table is None else []
        return ScoreResult(report, scorer.model_version, missing)
    rejected_path = output.with_name(f"{output.stem}.rejected.csv")
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as work:
        work = Path(work)
        scores = score(log, scorer, as_of=as_of_day, customers=table)
        scores.write.parquet(str(work / "scores"))
        written = spark.read.parquet(str(work / "scores"))
        n_parts = len(_parts(work / "scores", ".parquet"))
        report, customer_rejections = _reconcile(log, table, written, as_of_day, n_parts, output, rejected_path)
        _write_rejections(log, customer_rejections, work / "rejected")
        _concatenate_scores(work / "scores", work / f"scores{output.suffix}")
        _concatenate_csv(work / "rejected", work / "rejected.csv")
        os.replace(work / "rejected.csv", rejected_path)
        try:
            os.replace(work / f"scores{output.suffix}", output)
        except BaseException:
            rejected_path.unlink(missing_ok=True)
            raise
    missing = list(scorer.attribute_features_) if table is None else []
    return ScoreResult(report, scorer.model_version, missing)


def read_spark_table(spark: SparkSession, path, what: str) -> DataFrame:
    """Parquet or CSV (with a header; column types inferred) at ``path``: a file, a directory or a glob."""
    text = str(path)
    if "://" not in text:
        if not globlib.glob(text, recursive=True):
            raise FileNotFoundError(f"No {what} at {text}")
        local = Path(text)
        candidates = [local] if local.is_file() else [Path(p) for p in globlib.glob(text, recursive=True)]
        if local.is_dir():
            candidates = [p for p in local.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))]
        kinds = {".csv" if p.name.endswith((".csv", ".csv.gz")) else p.suffix for p in candidates if p.is_file()}
        kinds &= {".csv", ".parquet"}
        if len(kinds) != 1:
            raise DataValidationError(f"The {what} at {text} must be Parquet or CSV files of one kind; found "
                                      f"{sorted(kinds) or 'neither'}.")
        kind = kinds.pop()
    else:
        kind = ".csv" if text.endswith((".csv", ".csv.gz")) else ".parquet"
    reader = spark.read.option("recursiveFileLookup", "true") if Path(text).is_dir() else spark.read
    if kind == ".csv":
        return reader.option("header", "true").option("inferSchema", "true").csv(text)
    return reader.parquet(text)


# --------------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------------


def _reconcile(log: SparkTransactions, table: DataFrame | None, written: DataFrame, as_of_day: pd.Timestamp,
               n_parts: int, output: Path, rejected_path: Path) -> tuple[BatchReport, DataFrame]:
    """The report, and the customers not scored with their reason (``customer_id`` as text, ``reason``)."""
    next_day = int((as_of_day + pd.Timedelta(days=1)).to_datetime64().astype("datetime64[us]").astype("int64"))
    before = F.col("micros") < F.lit(next_day)
    rows_used, rows_after = log.rows.agg(F.count(F.when(before, 1)), F.count(F.when(~before, 1))).collect()[0]
    key = F.col("customer_id").cast("string").alias("key")
    valid = log.rows.groupBy(key).agg(F.count(F.lit(1)).alias("n_valid"), F.count(F.when(before, 1)).alias("n_before"))
    invalid = (log.rejected.where(F.trim(F.col("customer_id")) != "").groupBy(F.trim("customer_id").alias("key"))
               .agg(F.count(F.lit(1)).alias("n_invalid")))
    everyone = valid.join(invalid, "key", "full_outer")
    if table is not None:
        signup = F.to_date(F.col("signup_date")) if "signup_date" in table.columns else F.lit(None).cast("date")
        after = F.coalesce(signup > F.lit(as_of_day.date()), F.lit(False))
        everyone = everyone.join(table.select(key, after.alias("after")), "key", "full_outer")
    else:
        everyone = everyone.withColumn("after", F.lit(False))
    everyone = everyone.join(written.select(key, F.lit(True).alias(_SCORED)), "key", "left")
    n_valid, n_before = F.coalesce(F.col("n_valid"), F.lit(0)), F.coalesce(F.col("n_before"), F.lit(0))
    n_rows = n_valid + F.coalesce(F.col("n_invalid"), F.lit(0))
    rules = [
        (F.coalesce(F.col("after"), F.lit(False)), "signed up after as_of"),
        ((n_rows > 0) & (n_valid == 0), "every row invalid"),
        ((n_valid > 0) & (n_before == 0), "first purchase after as_of"),
        (n_before > 0, "no purchase on or before as_of (refunds only)"),
    ]
    reason = F.lit("not returned by score_partition")
    for condition, text in reversed(rules):
        reason = F.when(condition, F.lit(text)).otherwise(reason)
    classified = everyone.select("key", F.when(F.col(_SCORED).isNotNull(), F.lit(_SCORED))
                                 .otherwise(reason).alias("reason")).cache()
    counts = {row["reason"]: row["n"] for row in classified.groupBy("reason").agg(F.count(F.lit(1)).alias("n"))
              .collect()}
    scored = counts.pop(_SCORED, 0)
    if scored == 0:
        raise DataValidationError(f"No customer bought on or before as_of {as_of_day.date()}; there is nothing "
                                  "to score.")
    by_reason = {r: counts[r] for r in CUSTOMER_REJECTION_REASONS if counts.get(r)}
    report = BatchReport(
        rows_in=log.report.rows_in, rows_used=int(rows_used), rows_after_as_of=int(rows_after),
        rows_rejected=log.report.rows_rejected, customers_in=scored + sum(by_reason.values()),
        customers_scored=written.count(), customers_rejected=sum(by_reason.values()), partitions=n_parts,
        output_path=output, rejected_path=rejected_path, as_of=as_of_day, customers_rejected_by_reason=by_reason,
        rows_rejected_by_reason=dict(log.report.rejected_by_reason),
    )
    if not report.reconciles or report.customers_scored != scored:
        raise RuntimeError(f"The Spark batch counts do not reconcile:\n{report}")
    return report, classified.where(F.col("reason") != _SCORED).select(F.col("key").alias("customer_id"), "reason")


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _rejections(log: SparkTransactions, customers: DataFrame) -> DataFrame:
    """The rows and the customers not scored, in the rejections file's columns."""
    rows = log.rejected.select(F.lit("row").alias("kind"), "reason", "customer_id", "timestamp", "amount", "file",
                               F.lit(None).cast("string").alias("row"))
    people = customers.select(F.lit("customer").alias("kind"), "reason", "customer_id",
                              *[F.lit(None).cast("string").alias(c) for c in ("timestamp", "amount", "file", "row")])
    return rows.unionByName(people).select(*REJECTED_COLUMNS)


def _write_rejections(log: SparkTransactions, customers: DataFrame, folder: Path) -> None:
    _rejections(log, customers).coalesce(1).write.option("header", "false").csv(str(folder))


def _parts(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"part-*{suffix}") if p.stat().st_size > 0)


def _concatenate_scores(folder: Path, target: Path) -> None:
    """Spark's part files as one Parquet or CSV file, batch by batch."""
    writer = None
    first_csv = True
    try:
        for part in _parts(folder, ".parquet"):
            source = pq.ParquetFile(part)
            for batch in source.iter_batches():
                table = pa.Table.from_batches([batch]).replace_schema_metadata(None)
                if target.suffix.lower() == ".csv":
                    table.to_pandas().to_csv(target, mode="w" if first_csv else "a", header=first_csv, index=False)
                    first_csv = False
                    continue
                if writer is None:
                    writer = pq.ParquetWriter(target, table.schema)
                writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


def _concatenate_csv(folder: Path, target: Path) -> None:
    with open(target, "w", encoding="utf-8") as out:
        out.write(",".join(REJECTED_COLUMNS) + "\n")
        for part in _parts(folder, ".csv"):
            with open(part, encoding="utf-8") as source:
                shutil.copyfileobj(source, out)
