"""Fuzzing the service against its own OpenAPI schema (schemathesis): no 5xx, every response as documented."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from service_support import ServerThread

from crmml.service import ServiceSettings, create_app

#: Generated cases per operation; /v1/score, the one with a body, gets the most.
SCORE_CASES = 1000
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance)
CALLS: dict[str, int] = {}
STATUSES: dict[int, int] = {}


@pytest.fixture(scope="module")
def server_url(service_model):
    app = create_app(ServiceSettings(model_uri="models:/crmml-scorer/1", tracking_uri=service_model.tracking_uri,
                                     max_customers_per_request=50, max_transactions_per_customer=200))
    with ServerThread(app) as server:
        yield server.url


# The schema is the app's own (building an app loads no model: that happens at start-up).
schema = schemathesis.openapi.from_dict(create_app(ServiceSettings(model_uri="unused")).openapi())


@schema.parametrize()
@settings(max_examples=SCORE_CASES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_generated_request_gets_a_documented_answer(case, server_url):
    CALLS[case.operation.label] = CALLS.get(case.operation.label, 0) + 1
    response = case.call_and_validate(base_url=server_url, checks=CHECKS, timeout=60)
    if case.operation.label == "POST /v1/score":
        STATUSES[response.status_code] = STATUSES.get(response.status_code, 0) + 1


def test_the_fuzzer_ran_enough_cases():
    assert CALLS.get("POST /v1/score", 0) >= SCORE_CASES, CALLS
    assert {"GET /v1/model", "GET /health/ready", "GET /metrics"} <= set(CALLS)
    # Both sides of the schema were exercised: requests scored and requests refused.
    assert STATUSES.get(200, 0) >= 20 and STATUSES.get(422, 0) >= 20, STATUSES
