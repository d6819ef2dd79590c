"""From a :class:`~crmml.service.schemas.ScoreRequest` to the scorer's rows and back.

The request's customers become an :class:`~crmml.data.in_memory.InMemoryTransactions` log, a
customer table and (for RFM-summary customers) a summaries frame, and go through
:meth:`crmml.scorer.Scorer.score`: the very features and models of batch scoring and the MLflow
model, so the service's numbers are ``crmml score``'s numbers for the same rows.

Checks the schema cannot express (limits set at run time, duplicate ids, dates after ``as_of``)
raise :class:`InputError` naming the field, which the app answers with HTTP 422.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from crmml.data.in_memory import InMemoryTransactions
from crmml.scorer import COST_COLUMN, Scorer
from crmml.service.schemas import CustomerScore, ScoreRequest
from crmml.service.settings import ServiceSettings

__all__ = ["InputError", "score_request", "self_check_request"]

_FLOAT_FIELDS = ("expected_purchases", "p_alive", "churn_probability", "predicted_value", "predicted_profit")
_FLAG_FIELDS = ("at_risk", "high_value_at_risk", "lapsed", "new")


class InputError(ValueError):
    """Input the schema accepts but the service cannot score; ``loc`` names the field."""

    def __init__(self, message: str, loc: tuple, kind: str = "value_error"):
        super().__init__(message)
        self.loc = ("body", *loc)
        self.kind = kind


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def check_request(request: ScoreRequest, settings: ServiceSettings, as_of: dt.date) -> None:
    """The run-time rules: limits, distinct ids, nothing dated after ``as_of``."""
    if len(request.customers) > settings.max_customers_per_request:
        raise InputError(f"at most {settings.max_customers_per_request} customers per request; got "
                         f"{len(request.customers)}", ("customers",), "too_long")
    seen: dict = {}
    limit = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time())
    for i, customer in enumerate(request.customers):
        key = _id_key(customer.customer_id)
        if key in seen:
            raise InputError(f"customer_id {customer.customer_id!r} repeats customer {seen[key]}; send each "
                             "customer once", ("customers", i, "customer_id"), "duplicate")
        seen[key] = i
        if len(customer.attributes) > settings.max_attributes_per_customer:
            raise InputError(f"at most {settings.max_attributes_per_customer} attributes per customer",
                             ("customers", i, "attributes"), "too_long")
        if customer.transactions is not None:
            if len(customer.transactions) > settings.max_transactions_per_customer:
                raise InputError(f"at most {settings.max_transactions_per_customer} transactions per customer; "
                                 f"got {len(customer.transactions)}", ("customers", i, "transactions"), "too_long")
            for j, row in enumerate(customer.transactions):
                if _naive_utc(row.timestamp) >= limit:
                    raise InputError(f"timestamp {row.timestamp.isoformat()} is after as_of {as_of}",
                                     ("customers", i, "transactions", j, "timestamp"), "after_as_of")
        signup = customer.attributes.get("signup_date")
        if signup is not None:
            try:
                day = pd.Timestamp(signup)
            except (TypeError, ValueError):
                raise InputError(f"signup_date {signup!r} is not a date", ("customers", i, "attributes",
                                                                           "signup_date"), "date_parsing") from None
            if pd.isna(day) or (day.tz_convert("UTC").tz_localize(None) if day.tzinfo else day).date() > as_of:
                raise InputError(f"signup_date {signup!r} is after as_of {as_of} (or not a date)",
                                 ("customers", i, "attributes", "signup_date"), "after_as_of")
        cost = customer.attributes.get(COST_COLUMN)
        if cost is not None and (isinstance(cost, (str, bool)) or not cost >= 0):
            raise InputError(f"{COST_COLUMN} must be a number >= 0", ("customers", i, "attributes", COST_COLUMN))


def score_request(scorer: Scorer, request: ScoreRequest, settings: ServiceSettings | None) -> dict:
    """Score a request; the response body's fields other than ``model``. ``settings`` None skips the
    limits (the self-check's own request)."""
    as_of = request.as_of or today_utc()
    if settings is not None:
        check_request(request, settings, as_of)
    customers = request.customers
    text_ids = any(isinstance(c.customer_id, str) for c in customers)
    ids = [str(c.customer_id) if text_ids else c.customer_id for c in customers]
    log = _transactions(customers, ids)
    known = set(scorer.attribute_columns_) | {COST_COLUMN}
    given = sorted({name for c in customers for name in c.attributes})
    used = [name for name in given if name in known]
    table = pd.DataFrame({"customer_id": ids, **{name: [c.attributes.get(name) for c in customers] for name in used}})
    summary_rows = [(k, c.summary) for k, c in zip(ids, customers, strict=True) if c.summary is not None]
    summaries = None
    if summary_rows:
        summaries = pd.DataFrame({
            "customer_id": [k for k, _ in summary_rows],
            "frequency": [s.frequency for _, s in summary_rows],
            "recency_days": [s.recency_days for _, s in summary_rows],
            "age_days": [s.age_days for _, s in summary_rows],
            "monetary_value": [s.monetary_value for _, s in summary_rows],
        })
    scores = scorer.score(log, as_of=pd.Timestamp(as_of), customers=table, summaries=summaries)
    by_id = scores.set_index("customer_id")
    rows = by_id.loc[ids]
    out = []
    columns = {name: rows[name].to_numpy() for name in by_id.columns}
    for i, customer in enumerate(customers):
        record = {
            "customer_id": customer.customer_id,
            "input": "summary" if customer.summary is not None else "transactions",
            "tier": str(columns["tier"][i]),
            "flags": _split(columns["flags"][i], ";"),
            "reasons": _split(columns["reasons"][i], "; "),
        }
        for name in _FLOAT_FIELDS:
            value = float(columns[name][i])
            record[name] = value if math.isfinite(value) else None
        for name in _FLAG_FIELDS:
            record[name] = bool(columns[name][i])
        out.append(CustomerScore.model_construct(**record))
    return {
        "as_of": as_of,
        "n_customers": len(out),
        "missing_attributes": [c for c in scorer.attribute_columns_ if c not in given],
        "ignored_attributes": [name for name in given if name not in known],
        "customers": out,
    }


def self_check_request(scorer: Scorer) -> ScoreRequest:
    """A request the loaded model must answer before it serves: a repeat buyer, a one-time buyer, a
    customer who has not bought yet and an RFM summary, at the model's training date."""
    day = pd.Timestamp(scorer.as_of_)
    stamps = [(day - pd.Timedelta(days=d)).isoformat() for d in (200, 120, 30)]
    return ScoreRequest.model_validate({
        "as_of": str(day.date()),
        "customers": [
            {"customer_id": 1, "transactions": [{"timestamp": t, "amount": 20.0 + 5 * k} for k, t in enumerate(stamps)]},
            {"customer_id": 2, "transactions": [{"timestamp": stamps[-1], "amount": 15.0}]},
            {"customer_id": 3, "transactions": []},
            {"customer_id": 4, "summary": {"frequency": 2, "recency_days": 60, "age_days": 150,
                                           "monetary_value": 30.0}},
        ],
    })


def check_answer(body: dict) -> None:
    """Raise when a self-check answer is not a sane score (probabilities in [0, 1], value >= 0)."""
    for row in body["customers"]:
        for name in ("p_alive", "churn_probability"):
            value = getattr(row, name)
            if value is None or not 0.0 <= value <= 1.0:
                raise RuntimeError(f"self-check: {name} of customer {row.customer_id} is {value}")
        for name in ("expected_purchases", "predicted_value"):
            value = getattr(row, name)
            if value is None or value < 0:
                raise RuntimeError(f"self-check: {name} of customer {row.customer_id} is {value}")


def _transactions(customers, ids: list) -> InMemoryTransactions:
    counts = [len(c.transactions) if c.transactions else 0 for c in customers]
    n = sum(counts)
    row_ids = np.repeat(np.asarray(ids, dtype=object if isinstance(ids[0], str) else np.int64), counts)
    stamps = np.empty(n, dtype="datetime64[us]")
    amounts = np.empty(n, dtype=np.float64)
    k = 0
    for c in customers:
        for row in c.transactions or ():
            stamps[k] = np.datetime64(_naive_utc(row.timestamp), "us")
            amounts[k] = row.amount
            k += 1
    return InMemoryTransactions.from_arrays(row_ids, stamps, amounts)


def _naive_utc(stamp: dt.datetime) -> dt.datetime:
    if stamp.tzinfo is None:
        return stamp
    return stamp.astimezone(dt.UTC).replace(tzinfo=None)


def _id_key(value) -> str:
    return str(value)


def _split(text, sep: str) -> list[str]:
    text = "" if text is None else str(text)
    return [part for part in text.split(sep) if part] if text else []
