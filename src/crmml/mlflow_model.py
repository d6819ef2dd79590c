"""The scorer as an MLflow pyfunc: what ``mlflow.pyfunc.load_model``, ``mlflow models serve`` and
``mlflow.pyfunc.spark_udf`` run.

Input: either of two shapes
---------------------------
**Transaction rows** (one row per purchase; one output row per customer):

``customer_id``
    The customer (the type the model was trained with).
``timestamp``
    When; ISO 8601 text or datetime. A row with an empty timestamp declares a customer with no
    purchases yet (scored as new).
``amount``
    The purchase amount (when the model was trained with amounts).
attributes (optional)
    The customer-table columns the model was trained with (``acquisition_channel``, ``region``,
    ``signup_date``, ``referred_by``, ``n_referrals``...), and ``cost_to_serve``, repeated on each
    of a customer's rows (the first non-empty value counts). Attributes left out are scored as
    unknown.

**Customer rows** (one row per customer, no ``timestamp`` column; one output row per input row,
in the input's order, so ``spark_udf`` can use it): ``customer_id``, the RFM summary
``frequency`` (repeat purchase days), ``recency_days`` (first to last purchase day),
``age_days`` (first purchase day to ``as_of``), ``monetary_value`` (mean spend of the repeat
purchase days), and the attributes as above. These customers are scored by the BTYD and spend
models alone (the learners need the purchase days), as in :meth:`crmml.scorer.Scorer.score`.

Params: ``as_of`` (``YYYY-MM-DD``; empty or left out: today, UTC). Rows after ``as_of`` are not
read; a customer whose every row is later is an input error.

Output
------
:data:`crmml.scorer.SCORE_COLUMNS`, the numbers ``crmml score`` gives, with ``flags`` and
``reasons`` as lists (the scoring service's shape) and missing numbers as None, so that the JSON
of ``mlflow models serve`` holds ``null``, never ``NaN``. An input error (a missing column, a bad
value, a customer with no row on or before ``as_of``) is an ``MlflowException`` with error code
``INVALID_PARAMETER_VALUE``: HTTP 400 with the message and no stack trace. With ``mlflow models
serve``: ``POST /invocations`` with ``{"dataframe_split": {"columns": [...], "data": [...]},
"params": {"as_of": "1998-06-30"}}``.

This module imports MLflow; crmml imports it only when MLflow is used.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from crmml.data.in_memory import InMemoryTransactions
from crmml.errors import CrmmlError, DataValidationError
from crmml.scorer import COST_COLUMN, Scorer

__all__ = ["SUMMARY_COLUMNS", "CustomerRowsModel", "ScorerModel", "customer_rows_example", "model_signature",
           "split_model_input"]

#: The RFM summary columns of the customer-rows input (``monetary_value`` optional).
SUMMARY_COLUMNS = ("frequency", "recency_days", "age_days")

_TRANSACTION_COLUMNS = ("customer_id", "timestamp", "amount")


def split_model_input(frame: pd.DataFrame, attribute_columns) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Transaction rows and the customer table (one row per customer) from the pyfunc input."""
    if not isinstance(frame, pd.DataFrame):
        raise DataValidationError(f"The model input must be a DataFrame of transaction rows; got {type(frame).__name__}.")
    for column in ("customer_id", "timestamp"):
        if column not in frame.columns:
            raise DataValidationError(
                f"Required column {column!r} is missing from the model input. Columns found: "
                f"{[str(c) for c in frame.columns]}.", column=column,
            )
    stamps = frame["timestamp"]
    has_time = stamps.notna().to_numpy() & (stamps.astype(str).str.strip() != "").to_numpy()
    transactions = frame.loc[has_time, [c for c in _TRANSACTION_COLUMNS if c in frame.columns]]
    wanted = {*attribute_columns, COST_COLUMN}
    attributes = [c for c in frame.columns if c in wanted]
    if not attributes and has_time.all():
        return transactions, None
    rows = frame[["customer_id", *attributes]]
    customers = rows.groupby("customer_id", sort=False, dropna=True).first().reset_index()
    return transactions, customers


class ScorerModel(mlflow.pyfunc.PythonModel):
    """A :class:`~crmml.scorer.Scorer` behind MLflow's pyfunc interface, fed **transaction rows**
    (see the module docstring)."""

    def load_context(self, context) -> None:
        self.scorer = Scorer.load(context.artifacts["scorer"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        as_of = (params or {}).get("as_of") or pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
        try:
            scores = self._scores(model_input, as_of)
        except CrmmlError as exc:  # the caller's input: a 400 with the message, no stack trace
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        return _json_safe(scores)

    def _scores(self, model_input, as_of: str) -> pd.DataFrame:
        transactions, customers = split_model_input(model_input, self.scorer.attribute_columns_)
        if not len(transactions):
            raise DataValidationError("The model input holds no transaction with a timestamp.")
        scores = self.scorer.score(transactions, as_of=as_of, customers=customers, lists=True,
                                   amount_col="amount" if "amount" in transactions.columns else None)
        known = set(scores["customer_id"].tolist())
        later = [c for c in pd.unique(transactions["customer_id"]).tolist() if c not in known]
        if later:
            raise DataValidationError(
                f"{len(later)} customer(s) have no purchase on or before as_of {as_of}: every row of "
                f"customer_id {later[:5]} is later. Score them at a later as_of, or leave them out.",
                column="timestamp",
            )
        return scores


class CustomerRowsModel(ScorerModel):
    """The same scorer fed **customer rows** (an RFM summary and the attributes per customer): one
    output row per input row, in order, as ``mlflow.pyfunc.spark_udf`` requires (see the module
    docstring)."""

    def _scores(self, model_input, as_of: str) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            raise DataValidationError(f"The model input must be a DataFrame of customer rows; got "
                                      f"{type(model_input).__name__}.")
        summary_columns = ["customer_id", *SUMMARY_COLUMNS,
                           *(["monetary_value"] if "monetary_value" in model_input.columns else [])]
        wanted = {*self.scorer.attribute_columns_, COST_COLUMN}
        attributes = [c for c in model_input.columns if c in wanted and model_input[c].notna().any()]
        customers = model_input[["customer_id", *attributes]] if attributes else None
        no_rows = InMemoryTransactions.from_arrays(
            model_input["customer_id"].to_numpy()[:0], np.array([], dtype="datetime64[ns]"),
            np.array([]) if self.scorer.model_.btyd_.spend_model is not None else None,
            timezone=self.scorer.config.columns.timezone,
        )
        scores = self.scorer.score(no_rows, as_of=as_of, customers=customers,
                                   summaries=model_input.reindex(columns=summary_columns), lists=True)
        order = pd.Index(scores["customer_id"]).get_indexer(model_input["customer_id"])
        return scores.iloc[order].reset_index(drop=True)  # the input's order: one row per input row


def _json_safe(scores: pd.DataFrame) -> pd.DataFrame:
    """Number columns with a missing value as objects holding None (JSON null, not NaN)."""
    out = scores.copy()
    for name in out.columns:
        if out[name].dtype.kind == "f" and out[name].isna().any():
            out[name] = out[name].astype(object).where(out[name].notna(), None)
    return out


def model_signature(scorer: Scorer, example: pd.DataFrame | None, *, customer_rows: bool = False):
    """Input schema, output schema, and the ``as_of`` param (default ``""``: today, UTC).

    Transaction rows: ``customer_id`` and ``timestamp`` required, ``amount`` and the attributes
    optional. Customer rows (``customer_rows``): ``customer_id`` and the RFM summary required,
    ``monetary_value`` and the attributes optional."""
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema

    if example is None:
        example = input_example(scorer)
    output = pd.DataFrame({c: [v] for c, v in _output_example(scorer).items()})
    if customer_rows:
        example = customer_rows_example(scorer, example)
    signature = infer_signature(example, output, params={"as_of": ""})
    required = ("customer_id", *SUMMARY_COLUMNS) if customer_rows else ("customer_id", "timestamp")
    signature.inputs = Schema([ColSpec(spec.type, spec.name, required=spec.name in required)
                               for spec in signature.inputs.inputs])
    return signature


def customer_rows_example(scorer: Scorer, transactions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Customer rows for the customers of ``transactions`` (default :func:`input_example`): their RFM
    summary at the model's as-of date (:func:`crmml.features.compute_features`'s columns) and
    their attributes."""
    from crmml.features import compute_features

    rows = input_example(scorer) if transactions is None else transactions
    log = rows[[c for c in _TRANSACTION_COLUMNS if c in rows.columns]]
    summary = compute_features(log, as_of=scorer.as_of_, amount_col="amount" if "amount" in log else None)
    frame = summary[[*SUMMARY_COLUMNS, "monetary_value"]].reset_index()
    attributes = [c for c in rows.columns if c not in _TRANSACTION_COLUMNS]
    if attributes:
        frame = frame.merge(rows.groupby("customer_id", sort=False)[attributes].first().reset_index(), on="customer_id")
    return frame


def input_example(scorer: Scorer) -> pd.DataFrame:
    """Two customers' transaction rows in the model's input format (attributes left empty)."""
    day = scorer.as_of_
    frame = pd.DataFrame({
        "customer_id": [1, 1, 2],
        "timestamp": [str((day - pd.Timedelta(days=d)).date()) for d in (200, 30, 10)],
        "amount": [25.0, 40.0, 12.5],
    })
    return frame


def _output_example(scorer: Scorer) -> dict:
    return {
        "customer_id": 1, "expected_purchases": 1.0, "p_alive": 0.9, "churn_probability": 0.3,
        "predicted_value": 10.0, "predicted_profit": np.nan, "p_no_purchase": 0.4, "purchases_lower": 0.0,
        "purchases_upper": 2.0, "value_lower": 0.0, "value_upper": 25.0, "tier_probability": 0.7, "tier": "iron",
        "at_risk": False, "high_value_at_risk": False, "lapsed": False, "new": False, "tier_uncertain": False,
        "flags": ["at_risk"],
        "reasons": ["churn probability 0.30 over the next 90 days"],
        "model_version": scorer.model_version,
    }
