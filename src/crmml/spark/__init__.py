"""crmml on Apache Spark: the same definitions and numbers as the local engine, for logs beyond one machine.

The door onto Spark (``pip install 'crmml[spark]'``). Spark does the per-row work with DataFrame
operations; everything per customer after that is crmml's one core:

- :func:`validate_transactions`: a Spark DataFrame of transactions checked and put in canonical form
  (``customer_id``, ``timestamp``, ``amount``), invalid rows rejected with a reason and counted;
- :func:`rfm_summary`: frequency, recency, T and monetary value as :func:`crmml.data.rfm_summary`
  defines them (purchase periods, refund netting, exact amount sums, rows after ``as_of``), with its
  :class:`~crmml.data.summary.SummaryReport`;
- :func:`compute_features`: the purchase-history features of :func:`crmml.features.compute_features`;
- :func:`score`: a registered :class:`~crmml.scorer.Scorer` applied to a Spark DataFrame
  (``mapInPandas`` over the features, :meth:`~crmml.scorer.Scorer.score_features` per batch; the
  model reaches the executors as a broadcast);
- :func:`fit_transaction_model`, :func:`fit_spend_model`: BTYD and Gamma-Gamma fits on the driver
  from the compressed summary (distinct rows with their counts as weights);
- :func:`score_job_spark`: the batch job behind ``crmml score --engine spark``;
- :func:`spark_session`: a local or configured session (local mode binds to 127.0.0.1 only).

See ``README.md`` ("crmml on Spark") for running on a cluster.
"""

from __future__ import annotations

try:
    import pyspark  # noqa: F401  (the optional dependency, checked once here)
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "crmml.spark needs PySpark (>= 4.0): install it with  pip install 'crmml[spark]'"
    ) from exc

from crmml.spark.features import compute_features
from crmml.spark.fitting import (
    compressed_summary,
    fit_spend_model,
    fit_transaction_model,
)
from crmml.spark.jobs import score_job_spark
from crmml.spark.scoring import score, score_features, score_schema
from crmml.spark.session import spark_session
from crmml.spark.summary import rfm_summary
from crmml.spark.transactions import SparkTransactions, validate_transactions

__all__ = [
    "SparkTransactions",
    "compressed_summary",
    "compute_features",
    "fit_spend_model",
    "fit_transaction_model",
    "rfm_summary",
    "score",
    "score_features",
    "score_job_spark",
    "score_schema",
    "spark_session",
    "validate_transactions",
]
