"""Scoring a Spark DataFrame with a registered :class:`~crmml.scorer.Scorer`.

Spark computes the purchase-history features (:func:`crmml.spark.compute_features`, one row per
customer, whichever partitions a customer's rows were in); ``mapInPandas`` then hands batches of
feature rows to :meth:`Scorer.score_features <crmml.scorer.Scorer.score_features>`, the scoring
core every other door uses. A customer's score depends only on its own row, so any batching gives
the same numbers.

How the model reaches the executors: the driver loads it once (from the registry, a
``models:/`` URI, or a bundle folder) and broadcasts it, pickled; each executor's Python worker
unpickles it once and keeps it for every later task of the job (``spark.python.worker.reuse``).
Executors never talk to the MLflow registry.

With a customer table, each customer's features and table row are joined by Spark (one row per
customer), referral counts are counted over the whole table first, and each batch's attributes are
formed by :func:`crmml.customer_table.table_arrays` and :func:`crmml.customer_rows.join_table`,
the local engine's own code, and scored by :meth:`crmml.scorer.Scorer.score_rows`, the one core.
"""

from __future__ import annotations

import pickle
import uuid

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from crmml.customer_rows import CustomerRows, join_table
from crmml.data.summary import as_day
from crmml.errors import DataValidationError
from crmml.flags import FLAGS
from crmml.scorer import COST_COLUMN, SCORE_COLUMNS, SCORE_NUMBERS, Scorer, _costs_for
from crmml.spark.features import compute_features
from crmml.spark.summary import as_spark_transactions

__all__ = ["load_model", "score", "score_features", "score_schema"]

_TEXT_SCORES = ("tier", "flags", "reasons", "model_version")
_IN_TABLE = "__crmml_in_table"
_HAS_HISTORY = "__crmml_has_history"

#: Unpickled scorers of this Python worker, by broadcast key.
_SCORERS: dict[str, Scorer] = {}


def score_schema(id_type: T.DataType | None = None) -> T.StructType:
    """The Spark schema of :data:`crmml.scorer.SCORE_COLUMNS` for customer ids of ``id_type`` (default long)."""
    kinds = {name: T.DoubleType() for name in SCORE_NUMBERS}
    kinds.update({name: T.BooleanType() for name in FLAGS})
    kinds.update({name: T.StringType() for name in _TEXT_SCORES})
    kinds["customer_id"] = T.LongType() if id_type is None else id_type
    return T.StructType([T.StructField(name, kinds[name], True) for name in SCORE_COLUMNS])


def load_model(model, *, tracking_uri: str | None = None) -> Scorer:
    """A fitted :class:`~crmml.scorer.Scorer`: ``model`` itself, or loaded on the driver from a
    ``models:/`` URI or a bundle folder (:func:`crmml.registry.load_scorer`)."""
    if isinstance(model, Scorer):
        return model
    from crmml.registry import load_scorer

    return load_scorer(str(model), tracking_uri=tracking_uri)


def score(transactions, model, *, as_of=None, customers=None, tracking_uri: str | None = None,
          **validate_kwargs) -> DataFrame:
    """Score every customer of a Spark transaction log: :data:`crmml.scorer.SCORE_COLUMNS`.

    Parameters
    ----------
    transactions : SparkTransactions or pyspark.sql.DataFrame
        The log (validated with ``validate_kwargs`` when a DataFrame).
    model : Scorer or str
        A fitted scorer, ``models:/crmml-scorer@champion``, ``models:/<name>/<version>`` or a bundle.
    as_of : date-like, optional
        Default: the model's training as-of date.
    customers : pyspark.sql.DataFrame or pandas.DataFrame, optional
        The customer table (one row per ``customer_id``; ``cost_to_serve`` is used for tiers).
    tracking_uri : str, optional
        MLflow tracking URI for ``models:/`` URIs.

    Returns
    -------
    pyspark.sql.DataFrame
        One row per customer (unordered), the same numbers as :meth:`Scorer.score` on the same data.
    """
    scorer = load_model(model, tracking_uri=tracking_uri)
    log = as_spark_transactions(transactions, **validate_kwargs)
    as_of_day = scorer.as_of_ if as_of is None else as_day(as_of, "as_of")
    features = compute_features(log, as_of=as_of_day, windows_days=scorer.config.model.feature_windows_days)
    if customers is None:
        return score_features(features, scorer)
    spark = log.rows.sparkSession
    table = customers if isinstance(customers, DataFrame) else spark.createDataFrame(customers)
    id_type = features.schema["customer_id"].dataType
    return _score_with_table(features, _checked_table(table, as_of_day, id_type), scorer, as_of_day,
                             log.has_amount)


def score_features(features: DataFrame, model, *, tracking_uri: str | None = None) -> DataFrame:
    """Score Spark rows of :func:`crmml.spark.compute_features` (plus attribute columns, if any).

    Returns
    -------
    pyspark.sql.DataFrame
        :data:`crmml.scorer.SCORE_COLUMNS`, one row per input row.
    """
    scorer = load_model(model, tracking_uri=tracking_uri)
    broadcast = _broadcast(features, scorer)
    id_type = features.schema["customer_id"].dataType

    def run(batches):
        local = _scorer(*broadcast)
        for batch in batches:
            yield _typed(local.score_features(batch.set_index("customer_id")))

    return features.mapInPandas(run, score_schema(id_type))


# --------------------------------------------------------------------------------------------------
# With a customer table
# --------------------------------------------------------------------------------------------------


def _checked_table(table: DataFrame, as_of_day: pd.Timestamp, id_type: T.DataType) -> DataFrame:
    """The customer table with ids checked (in the log's id type), integer columns as doubles and
    referral counts added."""
    if "customer_id" not in table.columns:
        raise DataValidationError(f"Required column 'customer_id' is missing from the customer table. Columns "
                                  f"found: {table.columns}.", column="customer_id")
    if table.schema["customer_id"].dataType != id_type:
        table = table.withColumn("customer_id", F.col("customer_id").try_cast(id_type))
    for name in (_IN_TABLE, _HAS_HISTORY):
        if name in table.columns:
            raise DataValidationError(f"The customer table's column {name!r} is reserved.", column=name)
    kinds = {f.name: f.dataType for f in table.schema.fields}
    casts = [F.col(f"`{n}`").cast("double").alias(n) if isinstance(k, T.IntegralType)
             and n not in ("customer_id", "referred_by") else F.col(f"`{n}`") for n, k in kinds.items()]
    table = table.select(*casts)
    problems = table.agg(
        F.count(F.when(F.col("customer_id").isNull(), 1)).alias("missing"),
        (F.count(F.lit(1)) - F.count_distinct("customer_id")).alias("repeated"),
        F.count(F.when(F.col(COST_COLUMN) < 0, 1)).alias("negative_costs") if COST_COLUMN in kinds
        else F.lit(0).alias("negative_costs"),
    ).collect()[0]
    if problems["missing"]:
        raise DataValidationError(f"The customer table has {problems['missing']} missing customer id(s).",
                                  column="customer_id")
    if problems["repeated"]:
        raise DataValidationError("The customer table must hold one row per customer; "
                                  f"{problems['repeated']} row(s) repeat a customer id.", column="customer_id")
    if problems["negative_costs"]:
        raise DataValidationError(f"The customer table's {COST_COLUMN!r} must be costs >= 0.", column=COST_COLUMN)
    if "referred_by" in kinds and "n_referrals" not in kinds:  # counted over the whole table, as batch.py does
        signed_up = F.lit(True)
        if "signup_date" in kinds:
            signed_up = F.coalesce(F.to_date(F.col("signup_date")) <= F.lit(as_of_day.date()), F.lit(False))
        counts = (table.where(F.col("referred_by").isNotNull() & signed_up)
                  .groupBy(F.col("referred_by").alias("__crmml_referrer"))
                  .agg(F.count(F.lit(1)).cast("double").alias("n_referrals")))
        table = (table.join(counts, table["customer_id"] == counts["__crmml_referrer"], "left")
                 .drop("__crmml_referrer").fillna(0.0, subset=["n_referrals"]))
    return table


def _score_with_table(features: DataFrame, table: DataFrame, scorer: Scorer, as_of_day: pd.Timestamp,
                      has_amount: bool) -> DataFrame:
    attribute_names = [c for c in table.columns if c != "customer_id"]
    history = features.withColumn(_HAS_HISTORY, F.lit(True))
    joined = history.join(table.withColumn(_IN_TABLE, F.lit(True)), on="customer_id", how="full_outer")
    feature_names = [c for c in features.columns if c != "customer_id"]
    broadcast = _broadcast(joined, scorer)
    id_type = joined.schema["customer_id"].dataType

    def run(batches):
        local = _scorer(*broadcast)
        for batch in batches:
            has_history = batch[_HAS_HISTORY].fillna(False).astype(bool).to_numpy()
            in_table = batch[_IN_TABLE].fillna(False).astype(bool).to_numpy()
            rows = batch.loc[has_history, ["customer_id", *feature_names]].set_index("customer_id")
            rows["no_purchase_history"] = rows["no_purchase_history"].astype(bool)
            customers = batch.loc[in_table, ["customer_id", *attribute_names]].reset_index(drop=True)
            attributes, costs = local._table_and_costs(customers, as_of_day)
            joined_rows = join_table(CustomerRows.from_frame(rows), attributes, as_of_day, has_amount,
                                     allow_empty=True)
            if len(joined_rows):
                yield _typed(local.score_rows(joined_rows, _costs_for(joined_rows.ids, costs)).to_frame())

    return joined.mapInPandas(run, score_schema(id_type))


# --------------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------------


def _broadcast(frame: DataFrame, scorer: Scorer) -> tuple[str, object]:
    """The pickled scorer broadcast to the executors, with a key naming this broadcast."""
    return uuid.uuid4().hex, frame.sparkSession.sparkContext.broadcast(pickle.dumps(scorer))


def _scorer(key: str, broadcast) -> Scorer:
    """This worker's copy of the broadcast scorer (unpickled on first use)."""
    scorer = _SCORERS.get(key)
    if scorer is None:
        _SCORERS.clear()  # one model at a time per worker
        scorer = _SCORERS[key] = pickle.loads(broadcast.value)
    return scorer


def _typed(scores: pd.DataFrame) -> pd.DataFrame:
    """Scores in the dtypes of :func:`score_schema`."""
    out = scores[SCORE_COLUMNS].copy()
    for name in SCORE_NUMBERS:
        out[name] = out[name].astype("float64")
    for name in FLAGS:
        out[name] = out[name].astype(bool)
    for name in _TEXT_SCORES:
        out[name] = out[name].astype(object)
    return out
