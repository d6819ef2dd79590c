"""The scorer as an MLflow pyfunc: what ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` run.

Input
-----
One DataFrame of **transaction rows**, one row per purchase:

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

Params: ``as_of`` (``YYYY-MM-DD``; default: today, UTC). Rows after ``as_of`` are not read.

Output
------
:data:`crmml.scorer.SCORE_COLUMNS`, one row per customer, the same numbers ``crmml score`` gives.
With ``mlflow models serve``: ``POST /invocations`` with
``{"dataframe_split": {"columns": [...], "data": [...]}, "params": {"as_of": "1998-06-30"}}``.

This module imports MLflow; crmml imports it only when MLflow is used.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from crmml.errors import DataValidationError
from crmml.scorer import COST_COLUMN, Scorer

__all__ = ["ScorerModel", "model_signature", "split_model_input"]

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
    """A :class:`~crmml.scorer.Scorer` behind MLflow's pyfunc interface (see the module docstring)."""

    def load_context(self, context) -> None:
        self.scorer = Scorer.load(context.artifacts["scorer"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        as_of = (params or {}).get("as_of") or pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
        transactions, customers = split_model_input(model_input, self.scorer.attribute_columns_)
        if not len(transactions):
            raise DataValidationError("The model input holds no transaction with a timestamp.")
        return self.scorer.score(transactions, as_of=as_of, customers=customers,
                                 amount_col="amount" if "amount" in transactions.columns else None)


def model_signature(scorer: Scorer, example: pd.DataFrame | None):
    """Input schema (transaction rows + optional attributes), output schema, and the ``as_of`` param."""
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema

    if example is None:
        example = input_example(scorer)
    output = pd.DataFrame({c: [v] for c, v in _output_example(scorer).items()})
    signature = infer_signature(example, output, params={"as_of": str(scorer.as_of_.date())})
    columns = []
    for spec in signature.inputs.inputs:
        required = spec.name in ("customer_id", "timestamp", "amount")
        columns.append(ColSpec(spec.type, spec.name, required=required))
    signature.inputs = Schema(columns)
    return signature


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
        "predicted_value": 10.0, "predicted_profit": np.nan, "tier": "iron", "at_risk": False,
        "high_value_at_risk": False, "lapsed": False, "new": False, "flags": "", "reasons": "",
        "model_version": scorer.model_version,
    }
