"""The product's jobs behind ``crmml train``, ``crmml score`` and ``crmml demo``.

- :func:`train_job`: read the data, fit a :class:`~crmml.scorer.Scorer`, log and register it in
  MLflow with the champion gate (:func:`crmml.registry.log_and_register`).
- :func:`score_job`: load a model by URI and score every customer out of core
  (:func:`crmml.batch.score_in_partitions`), writing the scores and the rejections atomically.
- :func:`demo_data` / :func:`demo_report`: the CDNOW demo's inputs and the tables it prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from crmml.customer_columns import CustomerColumns
from crmml.data.summary import as_day
from crmml.data.transactions import LogColumns, read_transactions

__all__ = ["ScorePartition", "ScoreResult", "TrainResult", "demo_data", "demo_report", "read_customer_table",
           "score_job", "train_job"]

DEMO_AS_OF = "1998-06-30"


@dataclass
class TrainResult:
    scorer: object
    record: object

    def backtest_table(self) -> pd.DataFrame:
        """The shipped model's and the baselines' backtest metrics, one row per scorer."""
        backtest = self.scorer.backtest_
        rows = {"crmml": backtest["metrics"], **backtest["baselines"]}
        columns = ["churn_roc_auc", "churn_brier", "value_normalized_gini", "value_top20_capture",
                   "value_total_error_pct", "transactions_total_error_pct"]
        table = pd.DataFrame.from_dict(rows, orient="index")
        return table[[c for c in columns if c in table]].dropna(how="all")


@dataclass
class ScoreResult:
    report: object  #: crmml.batch.BatchReport
    model_version: str
    missing_attributes: list[str]
    columns: LogColumns = LogColumns()  #: the log's columns and time zone as read
    customer_columns: CustomerColumns = CustomerColumns()  #: the customer table's columns as read


def read_customer_table(path: str | Path | None,
                        columns: CustomerColumns | Mapping | None = None) -> pd.DataFrame | None:
    """A customer table from CSV or Parquet (one row per customer), its columns renamed to the
    canonical names by ``columns`` (a :class:`~crmml.customer_columns.CustomerColumns`, or a mapping
    of its roles to column names; default: the canonical names).

    Raises
    ------
    FileNotFoundError
        When there is no file at ``path``.
    DataValidationError
        Naming the column and the file, when the id column or a mapped column is missing.
    """
    if path is None:
        return None
    mapping = columns if isinstance(columns, CustomerColumns) else CustomerColumns().merged(columns)
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"No customer table at {path}")
    if file.suffix == ".parquet":
        table = pd.read_parquet(file)
    elif file.suffix == ".csv":
        table = pd.read_csv(file)
    else:
        raise ValueError(f"The customer table must be .csv or .parquet; got {file.name!r}.")
    return mapping.apply(table, f"the customer table {str(path)!r}")


def train_job(*, transactions, as_of, customers=None, config=None, churn_window_days=None,
              value_horizon_days=None, tracking_uri, experiment="crmml", model_name="crmml-scorer",
              promote="auto", bundle=None, time_format=None, progress=None, columns=None,
              jobs=1, customer_columns=None) -> TrainResult:
    """Fit, log, register and gate (see the module docstring).

    ``jobs`` is :meth:`crmml.scorer.Scorer.fit`'s (cores to use; the model does not depend on it).

    ``columns`` (a mapping with keys of :class:`~crmml.data.transactions.LogColumns`; None values
    ignored) overrides the config's ``columns:`` section, and ``customer_columns`` (keys of
    :class:`~crmml.customer_columns.CustomerColumns`) its ``customer_columns:`` section; the model
    records the mappings it was trained with, and ``crmml score`` / ``crmml report`` default to them.
    """
    from crmml.registry import log_and_register, tracking_store_opened
    from crmml.scorer import Scorer, ScorerConfig, load_config

    step = progress or (lambda _: None)
    settings = load_config(config) if config else ScorerConfig()
    overrides = {k: v for k, v in (("churn_window_days", churn_window_days),
                                   ("value_horizon_days", value_horizon_days)) if v is not None}
    if overrides:
        settings = settings.with_model(**overrides)
    settings = replace(settings, columns=settings.columns.merged(columns),
                       customer_columns=settings.customer_columns.merged(customer_columns))
    with tracking_store_opened(tracking_uri):  # MLflow's set-up runs while the models fit
        step("read the data")
        log = read_transactions(transactions, time_format=time_format, on_invalid="reject",
                                **settings.columns.read_kwargs())
        table = read_customer_table(customers, settings.customer_columns)
        as_of_day = as_day(as_of, "as_of")
        scorer = Scorer(settings).fit(log, as_of=as_of_day, customers=table, progress=step, jobs=jobs)
    step("log to MLflow")
    record = log_and_register(scorer, transactions=log, customers=table, tracking_uri=tracking_uri,
                              experiment=experiment, model_name=model_name, promote=promote,
                              input_example=_input_example(log, table, scorer))
    if bundle:
        scorer.save(bundle)
    return TrainResult(scorer, record)


def _input_example(log, table, scorer) -> pd.DataFrame:
    """Three rows of the training data in the pyfunc's input format (attributes included)."""
    canonical = ["customer_id", "timestamp", *(["amount"] if log.has_amount else [])]
    rows = log.relation.select(*canonical).limit(3).to_arrow_table().to_pandas()
    log.close()
    rows["timestamp"] = rows["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
    if table is not None and scorer.attribute_columns_:
        attributes = table.set_index("customer_id")[scorer.attribute_columns_]
        extra = attributes.reindex(rows["customer_id"]).reset_index(drop=True)
        for column in extra.columns:  # attributes can be missing: no integer columns in the schema
            if pd.api.types.is_datetime64_any_dtype(extra[column]):
                extra[column] = extra[column].dt.strftime("%Y-%m-%d")
            elif pd.api.types.is_integer_dtype(extra[column]) or pd.api.types.is_bool_dtype(extra[column]):
                extra[column] = extra[column].astype("float64")
        rows = pd.concat([rows.reset_index(drop=True), extra], axis=1)
    return rows


class ScorePartition:
    """The scoring callable of :func:`score_job`: ``scorer.score`` of one partition at ``as_of``.

    A module-level class, so that it pickles (with the scorer) into the worker processes of
    ``crmml score --jobs N`` (:func:`crmml.batch.score_in_partitions` with ``jobs > 1``).
    """

    def __init__(self, scorer, as_of):
        self.scorer, self.as_of = scorer, as_of

    def __call__(self, log, table) -> pd.DataFrame:
        return self.scorer.score(log, as_of=self.as_of, customers=table)


def score_job(*, model, transactions, as_of, output, customers=None, tracking_uri=None, time_format=None,
              customers_per_partition=250_000, progress=None, jobs=1, columns=None,
              customer_columns=None) -> ScoreResult:
    """Score every customer with the model at ``model`` (a URI or a bundle folder), ``jobs``
    partitions at a time (see :func:`crmml.batch.score_in_partitions`).

    The log is read with the model's training columns (``ScorerConfig.columns``), overridden by
    ``columns`` (a mapping with keys of :class:`~crmml.data.transactions.LogColumns`), and the
    customer table likewise (``ScorerConfig.customer_columns``, overridden by ``customer_columns``).
    """
    from crmml.batch import score_in_partitions
    from crmml.registry import load_scorer

    scorer = load_scorer(model, tracking_uri=tracking_uri)
    log_columns = scorer.config.columns.merged(columns)
    table_columns = scorer.config.customer_columns.merged(customer_columns)
    as_of_day = as_day(as_of, "as_of")
    report = score_in_partitions(
        transactions, as_of=as_of_day, score_partition=ScorePartition(scorer, as_of_day), output=output,
        customers=customers, customers_per_partition=customers_per_partition, progress=progress,
        read_kwargs={**({"time_format": time_format} if time_format else {}), **log_columns.read_kwargs()},
        jobs=jobs, customer_columns=table_columns,
    )
    missing = {name for attrs in report.partition_attrs for name in attrs.get("missing_attributes", [])}
    return ScoreResult(report, scorer.model_version, sorted(missing), log_columns, table_columns)


def demo_data(workdir: str | Path) -> dict:
    """Write the demo's inputs: the full CDNOW log as CSV and its simulated customer table."""
    from crmml.datasets import load_cdnow_transactions, simulated_cdnow_customers

    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    log = load_cdnow_transactions(sample=False)[["customer_id", "timestamp", "amount"]]
    transactions, customers = folder / "cdnow_transactions.csv", folder / "cdnow_customers_simulated.csv"
    log.to_csv(transactions, index=False, date_format="%Y-%m-%d")
    simulated_cdnow_customers(log).to_csv(customers, index=False, date_format="%Y-%m-%d")
    return {"transactions": transactions, "customers": customers, "as_of": DEMO_AS_OF}


def demo_report(scores_path: str | Path, customers_path: str | Path, *, top: int = 10) -> dict[str, pd.DataFrame]:
    """The tables ``make demo`` prints: the pyramid, the win-back list, channels and referrals."""
    from crmml.insights import (
        referral_summary,
        referral_value,
        value_by_channel,
        win_back_list,
    )
    from crmml.pyramid import TIERS

    scores = pd.read_parquet(scores_path)
    customers = read_customer_table(customers_path)
    pyramid = scores.groupby("tier")["predicted_value"].agg(customers="size", predicted_value="sum").reindex(TIERS)
    pyramid["value_share"] = pyramid["predicted_value"] / pyramid["predicted_value"].sum()
    win_back = win_back_list(scores)
    columns = ["customer_id", "tier", "predicted_value", "churn_probability", "reasons"]
    return {
        "tier pyramid (all customers scored)": pyramid,
        f"win-back list (platinum/gold at risk): top {top} of {len(win_back):,}": win_back[columns].head(top)
        .set_index("customer_id"),
        "value by acquisition channel (simulated channels)": value_by_channel(scores, customers),
        "who they brought: top referrers by their referrals' predicted value": referral_value(scores, customers, top=top),
        "referred against not referred": referral_summary(scores, customers),
    }
