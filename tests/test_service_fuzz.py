"""Fuzzing the service: against its own OpenAPI schema (schemathesis), and with valid-shaped
requests full of extreme dates and numbers (hypothesis). No 5xx, every response as documented."""

from __future__ import annotations

import datetime as dt
import json

import pytest

schemathesis = pytest.importorskip("schemathesis")
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from service_support import ServerThread

from crmml.service import ServiceSettings, create_app
from crmml.service.schemas import FIRST_DATE, LAST_DATE, ScoreRequest

#: Generated cases of /v1/score (the one operation with a body); the others get what they need.
SCORE_CASES = 1000
OTHER_CASES = 50
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance)
_HYPOTHESIS = {"deadline": None, "derandomize": True, "database": None, "suppress_health_check": list(HealthCheck)}


@pytest.fixture(scope="module")
def server_url(service_model):
    app = create_app(ServiceSettings(model_uri="models:/crmml-scorer/1", tracking_uri=service_model.tracking_uri,
                                     max_customers_per_request=50, max_transactions_per_customer=200))
    with ServerThread(app) as server:
        yield server.url


# The schema is the app's own (building an app loads no model: that happens at start-up).
schema = schemathesis.openapi.from_dict(create_app(ServiceSettings(model_uri="unused")).openapi())


def test_every_generated_request_gets_a_documented_answer(server_url):
    """Every operation, fuzzed in this one test, which counts its own cases (so it runs alone)."""
    calls: dict[str, int] = {}
    statuses: dict[int, int] = {}

    def fuzz_operation(operation):
        label = operation.label

        @given(case=operation.as_strategy())
        @settings(max_examples=SCORE_CASES if label == "POST /v1/score" else OTHER_CASES, **_HYPOTHESIS)
        def fuzz(case):
            calls[label] = calls.get(label, 0) + 1
            response = case.call_and_validate(base_url=server_url, checks=CHECKS, timeout=60)
            if label == "POST /v1/score":
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        fuzz()

    for result in schema.get_all_operations():
        fuzz_operation(result.ok())
    assert calls.get("POST /v1/score", 0) >= SCORE_CASES, calls
    assert {"GET /v1/model", "GET /health/ready", "GET /metrics", "POST /v1/admin/reload"} <= set(calls)
    # Both sides of the schema were exercised: requests scored and requests refused. (Since the
    # schema bounds dates and numbers, random bodies are rarely valid: 15 of 1,000 with this seed;
    # the valid side is fuzzed by the next test, >= 1,000 cases that reach the scorer.)
    assert statuses.get(200, 0) >= 10 and statuses.get(422, 0) >= 20, statuses


# ----------------------------------------------------------------------------------------------
# Valid-shaped requests with extreme values in every field
# ----------------------------------------------------------------------------------------------

_ZONES = st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=14)), dt.timezone(dt.timedelta(hours=-12)),
                          dt.timezone(dt.timedelta(hours=5, minutes=30))])
# Mostly inside the documented range (those reach scoring), at times at its edges or far beyond.
_DAYS = st.one_of(
    st.dates(FIRST_DATE, LAST_DATE),
    st.sampled_from([FIRST_DATE, LAST_DATE, FIRST_DATE + dt.timedelta(days=1), LAST_DATE - dt.timedelta(days=1)]),
    st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)),
)
_EDGES = [0.0, 5e-324, 1e-300, 1.0, 1e12, 1e15, 1e18, 9.2e18, 9.3e18, 1e300, 1.7976931348623157e308]
_NUMBERS = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(_EDGES + [-x for x in _EDGES]),
                     st.integers(-(2**70), 2**70), st.floats(-1e6, 1e6))
_SMALL = st.one_of(st.floats(0, 1e5), st.sampled_from([0.0, 1e-9, 1e5, 109_573.0]))


# In range, with its edges: what most requests are made of (so that most reach the scorer).
_IN_RANGE = {
    "days": st.one_of(st.dates(FIRST_DATE, LAST_DATE), st.sampled_from([FIRST_DATE, LAST_DATE])),
    "amounts": st.one_of(st.floats(-1e6, 1e6), st.sampled_from([9.2e18, -9.2e18, 1e-300, 5e-324, 0.0])),
    "costs": st.one_of(st.floats(0, 9.2e18), st.sampled_from([0, 9.2e18, 10**18])),
    "numbers": st.one_of(st.floats(-9.2e18, 9.2e18), st.integers(-(2**62), 2**62)),
}
_ANYWHERE = {"days": _DAYS, "amounts": _NUMBERS, "costs": _NUMBERS, "numbers": _NUMBERS}


@st.composite
def _stamp(draw, as_of: dt.date, values: dict):
    earliest = as_of - dt.timedelta(days=4000) if as_of.year > 20 else dt.date(1, 1, 1)
    day = draw(st.one_of(st.dates(max(earliest, FIRST_DATE) if values is _IN_RANGE else earliest, as_of),
                         values["days"].filter(lambda d: values is not _IN_RANGE or d <= as_of)))
    if values is _IN_RANGE and day == FIRST_DATE:
        zone = draw(st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=-12))]))
    elif values is _IN_RANGE and day == as_of:
        zone = draw(st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=14))]))
    else:
        zone = draw(_ZONES)
    clock = draw(st.sampled_from([dt.time(0, 0), dt.time(23, 59, 59, 999999), dt.time(12, 0)]))
    return dt.datetime.combine(day, clock, tzinfo=zone).isoformat()


@st.composite
def _customer(draw, k: int, as_of: dt.date, values: dict):
    customer: dict = {"customer_id": k}
    if draw(st.integers(0, 4)) == 0:
        recency = draw(_SMALL)
        frequency = draw(st.integers(0, 1_000_000)) if recency > 0 else 0
        customer["summary"] = {"frequency": frequency, "recency_days": recency if frequency else 0.0,
                               "age_days": recency + draw(_SMALL), "monetary_value": draw(st.floats(0, 1e12))}
    else:
        customer["transactions"] = draw(st.lists(st.fixed_dictionaries(
            {"timestamp": _stamp(as_of, values), "amount": values["amounts"]}), max_size=6))
    attributes = draw(st.fixed_dictionaries({}, optional={
        "signup_date": values["days"].filter(lambda d: values is not _IN_RANGE or d <= as_of).map(dt.date.isoformat),
        "cost_to_serve": values["costs"],
        "region": st.one_of(st.sampled_from(["north", "south", ""]), values["numbers"]),
        "acquisition_channel": st.sampled_from(["search", "referral", "x" * 1000]),
        "referred_by": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "n_referrals": st.one_of(st.integers(0, 10**9 - 1), values["numbers"].filter(
            lambda x: values is not _IN_RANGE or 0 <= x < 1e9)),
    }))
    if attributes:
        customer["attributes"] = attributes
    return customer


@st.composite
def _request(draw):
    """One request in four may hold values anywhere (mostly refused); the others stay in range."""
    values = _ANYWHERE if draw(st.integers(0, 3)) == 0 else _IN_RANGE
    as_of = draw(st.one_of(st.dates(dt.date(1990, 1, 1), LAST_DATE), values["days"]))
    n = draw(st.integers(1, 4))
    return {"as_of": as_of.isoformat(), "customers": [draw(_customer(k, as_of, values)) for k in range(n)]}


@pytest.mark.slow
def test_extreme_values_in_valid_shaped_requests_never_give_a_5xx(server_url):
    """Issue 21: the schema bounds every field so that whatever it accepts is scored (200) or named
    as a 422; at least 1,000 of the cases reach the scorer."""
    reached, refused = 0, 0

    with httpx.Client(base_url=server_url, timeout=60) as http:
        @given(body=_request())
        @settings(max_examples=1700, **_HYPOTHESIS)
        def fuzz(body):
            nonlocal reached, refused
            text = json.dumps(body)
            response = http.post("/v1/score", content=text, headers={"content-type": "application/json"})
            assert response.status_code in (200, 422), (response.status_code, response.text, text[:2000])
            try:
                ScoreRequest.model_validate_json(text)
            except ValueError:
                assert response.status_code == 422
                refused += 1
                return
            reached += 1  # accepted by the schema: scored, or refused by a run-time rule naming the field
            if response.status_code == 422:
                assert response.json()["errors"][0]["loc"][:2] == ["body", "customers"], response.text

        fuzz()
    assert reached >= 1000 and refused >= 50, (reached, refused)
