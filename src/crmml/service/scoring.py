"""From a :class:`~crmml.service.schemas.ScoreRequest` to the scorer's rows and back.

The request's customers become an :class:`~crmml.data.in_memory.InMemoryTransactions` log, the
customer table's columns (:func:`crmml.customer_table.table_columns`, the one definition of its
rules) and (for RFM-summary customers) summaries, and go through the scoring core
(:func:`crmml.customer_rows.customer_rows`, :meth:`crmml.scorer.Scorer.score_rows`): the very
features and models of batch scoring and the MLflow model, so the service's numbers are ``crmml
score``'s numbers for the same rows. Reasons are rendered as lists directly (never joined and split).

Checks the schema cannot express (limits set at run time, duplicate ids, dates after ``as_of``)
raise :class:`InputError` naming the field, which the app answers with HTTP 422.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crmml.customer_rows import customer_rows, feature_columns
from crmml.customer_table import _as_days, checked_costs, table_columns
from crmml.data.in_memory import InMemoryTransactions
from crmml.errors import DataValidationError
from crmml.features import MODEL_COLUMNS
from crmml.flags import FLAG_NAMES, FLAGS, flag_codes
from crmml.pyramid import TIER_NAMES
from crmml.scorer import COST_COLUMN, SCORE_NUMBERS, Scorer
from crmml.service.schemas import ScoreRequest
from crmml.service.settings import ServiceSettings

__all__ = ["InputError", "score_request", "score_requests", "self_check_request"]

_EPOCH, _MICROSECOND = dt.datetime(1970, 1, 1), dt.timedelta(microseconds=1)


class InputError(ValueError):
    """Input the schema accepts but the service cannot score; ``loc`` names the field."""

    def __init__(self, message: str, loc: tuple, kind: str = "value_error"):
        super().__init__(message)
        self.loc = ("body", *loc)
        self.kind = kind


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@dataclass(frozen=True)
class _Rows:
    """A request's transactions as arrays (customer by customer, in order)."""

    counts: np.ndarray  # transactions per customer
    stamps: np.ndarray  # datetime64[us], naive UTC
    amounts: np.ndarray

    @classmethod
    def of(cls, request: ScoreRequest) -> _Rows:
        customers = request.customers
        counts = np.array([len(c.transactions) if c.transactions else 0 for c in customers], dtype=np.int64)
        rows = [row for c in customers for row in (c.transactions or ())]
        stamps = np.array([(_naive_utc(row.timestamp) - _EPOCH) // _MICROSECOND for row in rows],
                          dtype=np.int64).view("datetime64[us]")  # (6x faster than converting datetimes)
        amounts = np.array([row.amount for row in rows], dtype=np.float64)
        return cls(counts, stamps.reshape(-1), amounts.reshape(-1))


def check_request(request: ScoreRequest, settings: ServiceSettings, as_of: dt.date, rows: _Rows) -> None:
    """The run-time rules: limits, distinct ids, nothing dated after ``as_of``. Of several problems,
    the first customer's is reported."""
    customers = request.customers
    if len(customers) > settings.max_customers_per_request:
        raise InputError(f"at most {settings.max_customers_per_request} customers per request; got "
                         f"{len(customers)}", ("customers",), "too_long")
    problems = []  # (customer, rule, InputError arguments): the first customer's, by rule order, is raised
    keys = [_id_key(c.customer_id) for c in customers]
    if len(set(keys)) < len(keys):
        seen: dict = {}
        for i, key in enumerate(keys):
            if key in seen:
                message = (f"customer_id {customers[i].customer_id!r} repeats customer {seen[key]}; "
                           "send each customer once")
                problems.append((i, 0, (message, ("customers", i, "customer_id"), "duplicate")))
                break
            seen[key] = i
    limit = settings.max_attributes_per_customer
    crowded = next((i for i, c in enumerate(customers) if len(c.attributes) > limit), None)
    if crowded is not None:
        problems.append((crowded, 1, (f"at most {limit} attributes per customer", ("customers", crowded, "attributes"),
                                      "too_long")))
    long = np.flatnonzero(rows.counts > settings.max_transactions_per_customer)
    if len(long):
        i = int(long[0])
        message = f"at most {settings.max_transactions_per_customer} transactions per customer; got {rows.counts[i]}"
        problems.append((i, 2, (message, ("customers", i, "transactions"), "too_long")))
    costly = next((i for i, c in enumerate(customers) if COST_COLUMN in c.attributes
                   and not _is_cost(c.attributes[COST_COLUMN])), None)
    if costly is not None:
        problems.append((costly, 3, (f"{COST_COLUMN} must be a number >= 0",
                                     ("customers", costly, "attributes", COST_COLUMN), "value_error")))
    if problems:
        raise InputError(*min(problems, key=lambda problem: problem[:2])[2])
    _check_signup_dates(request, as_of)
    late = np.flatnonzero(rows.stamps >= np.datetime64(as_of + dt.timedelta(days=1), "us"))
    if len(late):
        ends = np.cumsum(rows.counts)  # row k belongs to the first customer whose end is > k
        i = int(np.searchsorted(ends, late[0], side="right"))
        j = int(late[0] - (ends[i - 1] if i else 0))
        stamp = customers[i].transactions[j].timestamp
        raise InputError(f"timestamp {stamp.isoformat()} is after as_of {as_of}",
                         ("customers", i, "transactions", j, "timestamp"), "after_as_of")


def _is_cost(value) -> bool:
    return value is None or (not isinstance(value, (str, bool)) and value >= 0)


def _check_signup_dates(request: ScoreRequest, as_of: dt.date) -> None:
    """Every ``signup_date`` given is a date on or before ``as_of`` (parsed together, as pandas parses
    the customer table's column)."""
    given = [(i, c.attributes["signup_date"]) for i, c in enumerate(request.customers)
             if c.attributes.get("signup_date") is not None]
    if not given:
        return
    values = [value for _, value in given]
    days = _iso_days(values)
    if days is not None:
        bad = np.isnat(days) | (days > np.datetime64(as_of, "D"))
    else:
        try:
            parsed = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", utc=True, format="mixed")
        except (TypeError, ValueError, OverflowError):
            parsed = pd.Series([pd.NaT] * len(values), dtype="datetime64[ns, UTC]")
        bad = parsed.isna().to_numpy() | (parsed.dt.tz_localize(None).dt.normalize() > pd.Timestamp(as_of)).to_numpy()
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        i, value = given[k]
        raise InputError(f"signup_date {value!r} is not a date on or before as_of {as_of}",
                         ("customers", i, "attributes", "signup_date"), "after_as_of")


def _iso_days(values: list) -> np.ndarray | None:
    """``values`` as ``datetime64[D]`` when every one is None or a ``YYYY-MM-DD`` date (the common case,
    parsed ~20x faster than by pandas, to the same days); None otherwise."""
    if not all(v is None or (isinstance(v, str) and len(v) == 10 and v[4] == v[7] == "-") for v in values):
        return None
    try:
        return np.array(values, dtype="datetime64[D]")
    except ValueError:
        return None


def score_request(scorer: Scorer, request: ScoreRequest, settings: ServiceSettings | None) -> dict:
    """Score one request; the response body's fields other than ``model``. ``settings`` None skips
    the limits (the self-check's own request).

    Raises
    ------
    InputError, DataValidationError
        On input the service cannot score.
    """
    (result,) = score_requests(scorer, [request], settings)
    if isinstance(result, Exception):
        raise result
    return result


def score_requests(scorer: Scorer, requests: list[ScoreRequest], settings: ServiceSettings | None) -> list:
    """Score several requests with as few :meth:`Scorer.score` calls as possible (micro-batching).

    Requests at the same ``as_of`` that give the same attribute columns are scored in one call: a
    customer's features depend only on its own rows and attributes, and its referrals are counted
    among its own request's customers only (customer ids are replaced by positions, and
    ``referred_by`` by the referrer's position in the same request or by an id no one has), so each
    answer is the one the request gets alone (to floating-point rounding of the learners' matrix
    products, ~1e-15 relative). Returns, per request, its result or the exception it raised; a
    batch that fails validation is retried request by request, so an error stays with its request.
    """
    results: list = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}
    known = set(scorer.attribute_columns_) | {COST_COLUMN}
    rows = [_Rows.of(request) for request in requests]
    for k, request in enumerate(requests):
        as_of = request.as_of or today_utc()
        try:
            if settings is not None:
                check_request(request, settings, as_of, rows[k])
        except InputError as exc:
            results[k] = exc
            continue
        used = tuple(sorted({name for c in request.customers for name in c.attributes if name in known}))
        groups.setdefault((as_of, used), []).append(k)
    for (as_of, used), members in groups.items():
        try:
            outputs = _score_together(scorer, [requests[k] for k in members], [rows[k] for k in members], as_of, used)
        except DataValidationError as exc:
            if len(members) == 1:
                results[members[0]] = exc
                continue
            outputs = []
            for k in members:
                try:
                    outputs.extend(_score_together(scorer, [requests[k]], [rows[k]], as_of, used))
                except DataValidationError as single:
                    outputs.append(single)
        for k, output in zip(members, outputs, strict=True):
            results[k] = output
    return results


def _score_together(scorer: Scorer, requests: list[ScoreRequest], rows: list[_Rows], as_of: dt.date,
                    used: tuple) -> list[dict]:
    customers = [c for request in requests for c in request.customers]
    positions = np.arange(len(customers), dtype=np.int64)
    attributes = {name: [c.attributes.get(name) for c in customers] for name in used}
    if "referred_by" in attributes:
        attributes["referred_by"] = _referrer_positions(requests)
    if "signup_date" in attributes:  # (ISO dates parsed here; anything else as the table's column)
        days = _iso_days(attributes["signup_date"])
        if days is not None:
            attributes["signup_date"] = days
    signup_days = attributes.pop("signup_date", None)
    if signup_days is not None:  # parsed as the customer table's column is (or as ISO dates, faster)
        signup_days = signup_days if isinstance(signup_days, np.ndarray) else _signup_days(signup_days)
        attributes = {"signup_date": signup_days, **attributes}
    costs = None
    if COST_COLUMN in attributes:
        costs = checked_costs(attributes.pop(COST_COLUMN), positions)
    as_of_day = pd.Timestamp(as_of)
    windows = list(scorer.config.model.feature_windows_days)
    taken = [*feature_columns(windows), *MODEL_COLUMNS, "no_purchase_history"]
    table = table_columns(positions, attributes, as_of_day, taken, signup_days=signup_days)
    summary_rows = [(k, c.summary) for k, c in enumerate(customers) if c.summary is not None]
    summaries = None
    if summary_rows:
        summaries = pd.DataFrame({
            "customer_id": np.array([k for k, _ in summary_rows], dtype=np.int64),
            "frequency": [s.frequency for _, s in summary_rows],
            "recency_days": [s.recency_days for _, s in summary_rows],
            "age_days": [s.age_days for _, s in summary_rows],
            "monetary_value": [s.monetary_value for _, s in summary_rows],
        })
    counts = np.concatenate([r.counts for r in rows])
    log = InMemoryTransactions.from_arrays(np.repeat(positions, counts), np.concatenate([r.stamps for r in rows]),
                                           np.concatenate([r.amounts for r in rows]))
    customer_rows_ = customer_rows(log, as_of_day, windows, table=table, summaries=summaries, require_purchases=False)
    if len(customer_rows_) != len(customers):  # (every customer is in the table: a bug, not an input error)
        raise RuntimeError("The service lost customers between the request and the scores.")
    scores = scorer.score_rows(customer_rows_, None if costs is None else costs[customer_rows_.ids])
    order = np.argsort(customer_rows_.ids)  # position k at row k
    columns = {name: values[order] for name, values in scores.numbers.items()}
    flags = {name: np.asarray(scores.flags[name])[order] for name in FLAGS}
    reasons = scores.reasons.lists()
    tiers = TIER_NAMES[scores.tier[order]].tolist()
    values = {  # per field of CustomerScore, its values in customer order
        "customer_id": [c.customer_id for c in customers],
        "input": ["summary" if c.summary is not None else "transactions" for c in customers],
        **{name: _json_floats(columns[name]) for name in SCORE_NUMBERS},
        "tier": tiers,
        **{name: flags[name].tolist() for name in FLAGS},
        "flags": [list(FLAG_NAMES[code]) for code in flag_codes(flags).tolist()],  # the names set
        "reasons": [reasons[i] for i in order.tolist()],
        "unknown_categories": _unknown_categories(scores.unknown_categories, order, customers),
    }
    # plain dicts in the shape of CustomerScore, serialised as they are
    scored = [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)]
    known = set(scorer.attribute_columns_) | {COST_COLUMN}
    out, start = [], 0
    for request in requests:
        given = sorted({name for c in request.customers for name in c.attributes})
        n = len(request.customers)
        out.append({
            "as_of": as_of,
            "n_customers": n,
            "missing_attributes": [c for c in scorer.attribute_columns_ if c not in given],
            "ignored_attributes": [name for name in given if name not in known],
            "customers": scored[start:start + n],
        })
        start += n
    return out


def _unknown_categories(unseen: dict, order: np.ndarray, customers: list) -> list[dict]:
    """Per customer (in the request's order), its attributes whose value the learners never saw
    (:attr:`crmml.scorer.Scores.unknown_categories`, by row), with the value as sent."""
    out: list[dict] = [{} for _ in customers]
    for column, mask in unseen.items():
        for i in np.flatnonzero(mask[order]).tolist():
            out[i][column] = customers[i].attributes.get(column)
    return out


def _signup_days(values: list) -> np.ndarray:
    """Sign-up dates that are not all ISO days, as the customer table's column is parsed."""
    return _as_days(pd.Series(values, dtype=object))


def _referrer_positions(requests: list[ScoreRequest]) -> list:
    """Each customer's ``referred_by`` as the referrer's position in the same request, or a negative
    id no customer has when the referrer is not in the request (None stays None)."""
    out, start, outside = [], 0, 0
    for request in requests:
        here = {_id_key(c.customer_id): start + i for i, c in enumerate(request.customers)}
        for c in request.customers:
            referrer = c.attributes.get("referred_by")
            if referrer is None:
                out.append(None)
                continue
            position = here.get(_id_key(referrer))
            if position is None:
                outside += 1
                position = -outside
            out.append(position)
        start += len(request.customers)
    return out


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
            value = row[name]
            if value is None or not 0.0 <= value <= 1.0:
                raise RuntimeError(f"self-check: {name} of customer {row['customer_id']} is {value}")
        for name in ("expected_purchases", "predicted_value"):
            value = row[name]
            if value is None or value < 0:
                raise RuntimeError(f"self-check: {name} of customer {row['customer_id']} is {value}")


def _naive_utc(stamp: dt.datetime) -> dt.datetime:
    if stamp.tzinfo is None:
        return stamp
    return stamp.astimezone(dt.UTC).replace(tzinfo=None)


def _id_key(value) -> str:
    """Ids compared as text (1, "1" and 1.0 are the same customer)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _json_floats(values: np.ndarray) -> list:
    """Floats for JSON: non-finite values (no prediction) as None."""
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    if finite.all():
        return values.tolist()
    return [v if ok else None for v, ok in zip(values.tolist(), finite.tolist(), strict=True)]
