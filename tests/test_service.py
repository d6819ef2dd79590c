"""The scoring service with the real app factory and a real (small) registered model."""

from __future__ import annotations

import json

import shutil
import threading

import httpx
import numpy as np
import pandas as pd
import pytest
from service_support import AS_OF, ServerThread, service_settings

from crmml.scorer import SUMMARY_REASON
from crmml.service import create_app
from crmml.uncertainty import UNCERTAINTY_NUMBERS

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

KEY = "s3cret-key"


_settings = service_settings


@pytest.fixture(scope="module")
def client(service_model):
    with TestClient(create_app(_settings(service_model))) as test_client:
        yield test_client


def _ids(model, n: int, seed: int = 0) -> list[int]:
    bought = model.transactions.loc[model.transactions["timestamp"] <= AS_OF, "customer_id"].unique()
    return sorted(np.random.default_rng(seed).choice(bought, n, replace=False).tolist())


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------


def test_ready_live_and_scores_equal_batch_scoring(client, service_model):
    assert client.get("/health/live").json()["status"] == "ok"
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["model_version"] == "crmml-scorer/1"
    ids = _ids(service_model, 25)
    response = client.post("/v1/score", json={"as_of": AS_OF, "customers": service_model.request_customers(ids)})
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "crmml-scorer/1"  # the body's model_version, the same text
    body = response.json()
    assert body["model"] == {"name": "crmml-scorer", "version": "1", "alias": "champion",
                             "uri": "models:/crmml-scorer@champion", "model_version": "crmml-scorer/1"}
    assert [c["customer_id"] for c in body["customers"]] == ids and body["n_customers"] == 25
    assert body["missing_attributes"] == [] and body["ignored_attributes"] == []
    # The batch path (DuckDB over a DataFrame) on the same customers gives the same numbers.
    rows = service_model.transactions[service_model.transactions["customer_id"].isin(ids)]
    table = service_model.customers[service_model.customers["customer_id"].isin(ids)]
    batch = service_model.scorer.score(rows, as_of=AS_OF, customers=table).set_index("customer_id").loc[ids]
    served = pd.DataFrame(body["customers"]).set_index("customer_id")
    for column in ("expected_purchases", "p_alive", "churn_probability", "predicted_value", *UNCERTAINTY_NUMBERS):
        np.testing.assert_allclose(served[column].to_numpy(float), batch[column].to_numpy(float), rtol=1e-12)
    assert served["tier_probability"].between(0, 1).all()  # (issue 20: the uncertainty columns are answered)
    for column in ("tier", "at_risk", "high_value_at_risk", "lapsed", "new", "tier_uncertain"):
        assert served[column].tolist() == batch[column].tolist()
    assert served["flags"].map(";".join).tolist() == batch["flags"].tolist()
    assert served["reasons"].map("; ".join).tolist() == batch["reasons"].tolist()
    assert served["predicted_profit"].isna().all()  # no cost_to_serve: null, not NaN


def test_summary_new_customer_costs_text_ids_and_unknown_attributes(client, service_model):
    customers = [
        {"customer_id": "s-1", "summary": {"frequency": 4, "recency_days": 200, "age_days": 300,
                                           "monetary_value": 30.0},
         "attributes": {"cost_to_serve": 5.0, "loyalty_card": True}},
        {"customer_id": "n-1", "transactions": []},
        {"customer_id": 7, "transactions": [{"timestamp": "2025-03-01T12:00:00+02:00", "amount": 20.0}]},
    ]
    response = client.post("/v1/score", json={"as_of": AS_OF, "customers": customers})
    assert response.status_code == 200, response.text
    body = response.json()
    summary, new, text_seven = body["customers"]
    assert [summary["input"], new["input"]] == ["summary", "transactions"]
    assert summary["reasons"][0] == SUMMARY_REASON
    assert summary["predicted_profit"] is not None  # cost given: margin x value - cost
    assert new["new"] and "new" in new["flags"] and new["reasons"][0] == "no purchase yet"
    assert text_seven["customer_id"] == 7  # echoed as sent (scored as the text "7")
    assert body["ignored_attributes"] == ["loyalty_card"]
    assert set(body["missing_attributes"]) == {"acquisition_channel", "region", "signup_date", "referred_by"}
    # The summary customer is scored as the library scores an RFM summary.
    frame = pd.DataFrame({"customer_id": ["s-1"], "frequency": [4], "recency_days": [200.0], "age_days": [300.0],
                          "monetary_value": [30.0]})
    from crmml.data.in_memory import InMemoryTransactions

    empty = InMemoryTransactions.from_arrays([], [], [])
    expected = service_model.scorer.score(empty, as_of=AS_OF, summaries=frame).iloc[0]
    assert summary["predicted_value"] == pytest.approx(expected["predicted_value"], rel=1e-12)
    assert summary["churn_probability"] == pytest.approx(expected["churn_probability"], rel=1e-12)


def test_as_of_defaults_to_today(client, service_model):
    response = client.post("/v1/score", json={"customers": service_model.request_customers(_ids(service_model, 1))})
    assert response.status_code == 200
    assert response.json()["as_of"] == str(pd.Timestamp.now(tz="UTC").date())


# ----------------------------------------------------------------------------------------------
# Input rules
# ----------------------------------------------------------------------------------------------

_ONE = {"customer_id": 1, "transactions": [{"timestamp": "2025-01-01", "amount": 10.0}]}


@pytest.mark.parametrize(("customers", "loc"), [
    ([{"transactions": []}], ["body", "customers", 0, "customer_id"]),
    ([{"customer_id": 1}], ["body", "customers", 0]),
    ([{"customer_id": 1, "transactions": [], "summary": {"frequency": 0, "recency_days": 0, "age_days": 3}}],
     ["body", "customers", 0]),
    ([{"customer_id": 1, "transactions": [{"timestamp": "yesterday", "amount": 1}]}],
     ["body", "customers", 0, "transactions", 0, "timestamp"]),
    ([{"customer_id": 1, "transactions": [{"timestamp": "2025-01-01"}]}],
     ["body", "customers", 0, "transactions", 0, "amount"]),
    ([{"customer_id": 1, "transactions": [{"timestamp": "2025-01-01", "amount": "ten"}]}],
     ["body", "customers", 0, "transactions", 0, "amount"]),
    ([{"customer_id": 1, "transactions": [{"timestamp": "2025-07-01T00:00:00", "amount": 1}]}],
     ["body", "customers", 0, "transactions", 0, "timestamp"]),
    ([{"customer_id": 1, "transactions": [], "attributes": {"signup_date": "2025-08-01"}}],
     ["body", "customers", 0, "attributes", "signup_date"]),
    ([{"customer_id": 1, "transactions": [], "attributes": {"cost_to_serve": -1}}],
     ["body", "customers", 0, "attributes", "cost_to_serve"]),
    ([{"customer_id": 1, "summary": {"frequency": -1, "recency_days": 0, "age_days": 3}}],
     ["body", "customers", 0, "summary", "frequency"]),
    ([{"customer_id": 1, "summary": {"frequency": 2, "recency_days": 30, "age_days": 10}}],
     ["body", "customers", 0, "summary"]),
    ([_ONE, {**_ONE, "customer_id": "1"}], ["body", "customers", 1, "customer_id"]),
    ([{**_ONE, "extra": 1}], ["body", "customers", 0, "extra"]),
    ([], ["body", "customers"]),
])
def test_invalid_input_is_a_422_naming_the_field(client, customers, loc):
    response = client.post("/v1/score", json={"as_of": AS_OF, "customers": customers})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"][0]["loc"] == loc
    assert body["detail"].startswith(".".join(map(str, loc)))


@pytest.mark.parametrize("amount", [2e19, -1.7976931348623157e308])
def test_amounts_too_large_to_sum_exactly_are_a_422_naming_amount(client, amount):
    """Found by the fuzzer: an amount so large that the exact-sum scaling overflowed gave a 500."""
    customer = {"customer_id": 1, "transactions": [{"timestamp": "2025-01-01", "amount": amount}]}
    response = client.post("/v1/score", json={"as_of": AS_OF, "customers": [_ONE | {"customer_id": 2}, customer]})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "customers", 1, "transactions", 0, "amount"]


def test_malformed_json_and_wrong_types_are_422(client):
    bad_json = client.post("/v1/score", content=b'{"customers": [', headers={"content-type": "application/json"})
    assert bad_json.status_code == 422 and bad_json.json()["errors"][0]["type"] == "json_invalid"
    assert client.post("/v1/score", json={"as_of": "June", "customers": [_ONE]}).status_code == 422
    assert client.post("/v1/score", json=[1, 2]).status_code == 422
    body = json.dumps({"as_of": AS_OF, "customers": [_ONE]}).encode()
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = {} if content_type is None else {"content-type": content_type}
        wrong = client.post("/v1/score", content=body, headers=headers)
        assert wrong.status_code == 422 and wrong.json()["errors"][0]["loc"] == ["body"], (content_type, wrong.text)
    for content_type in ("application/json; charset=utf-8", "application/vnd.crmml+json"):
        assert client.post("/v1/score", content=body, headers={"content-type": content_type}).status_code == 200
    nested = client.post("/v1/score", json={"as_of": AS_OF, "customers": [{**_ONE, "transactions": [{"amount": 1}]}]})
    assert nested.json()["errors"][0]["loc"] == ["body", "customers", 0, "transactions", 0, "timestamp"]


def test_limits_on_customers_transactions_and_body(service_model):
    settings = _settings(service_model, max_customers_per_request=2, max_transactions_per_customer=3,
                         max_body_bytes=4096)
    with TestClient(create_app(settings)) as limited:
        three = [{**_ONE, "customer_id": i} for i in range(3)]
        response = limited.post("/v1/score", json={"as_of": AS_OF, "customers": three})
        assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["body", "customers"]
        many = [{"customer_id": 1, "transactions": [{"timestamp": f"2025-01-0{d}", "amount": 1.0}
                                                    for d in range(1, 5)]}]
        response = limited.post("/v1/score", json={"as_of": AS_OF, "customers": many})
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "customers", 0, "transactions"]
        big = b'{"customers": [' + b" " * 5000 + b"]}"
        response = limited.post("/v1/score", content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413 and "limit is 4096" in response.json()["detail"]

        def chunks():  # no Content-Length: the body is counted as it arrives
            yield b'{"customers": ['
            for _ in range(10):
                yield b" " * 1000
            yield b"]}"

        response = limited.post("/v1/score", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert limited.post("/v1/score", json={"as_of": AS_OF, "customers": [_ONE]}).status_code == 200


# ----------------------------------------------------------------------------------------------
# Auth, model, metrics
# ----------------------------------------------------------------------------------------------


def test_api_key_guards_every_route_but_the_probes(service_model):
    with TestClient(create_app(_settings(service_model, api_key=KEY))) as guarded:
        body = {"as_of": AS_OF, "customers": [_ONE]}
        assert guarded.post("/v1/score", json=body).status_code == 401
        wrong = guarded.post("/v1/score", json=body, headers={"X-API-Key": KEY + "x"})
        assert wrong.status_code == 401 and wrong.json()["detail"].startswith("missing or wrong")
        assert guarded.post("/v1/score", json=body, headers={"X-API-Key": KEY}).status_code == 200
        for path in ("/v1/model", "/metrics"):
            assert guarded.get(path).status_code == 401
            assert guarded.get(path, headers={"X-API-Key": KEY}).status_code == 200
        assert guarded.post("/v1/admin/reload").status_code == 401
        assert guarded.get("/health/live").status_code == 200
        assert guarded.get("/health/ready").status_code == 200


def test_model_endpoint_describes_the_served_model(client, service_model):
    info = client.get("/v1/model").json()
    scorer = service_model.scorer
    assert info["model"]["version"] == "1" and info["model"]["alias"] == "champion"
    assert info["trained_as_of"] == AS_OF and info["n_training_customers"] == scorer.n_customers_
    assert info["data_fingerprint"]["content_hash"] == scorer.fingerprint_["content_hash"]
    assert set(info["backtest"]["metrics"]) >= {"churn_roc_auc", "value_normalized_gini"}
    assert info["tiers"] == scorer.summary()["tiers"]
    assert info["attribute_columns"] == ["acquisition_channel", "region", "signup_date", "referred_by"]
    effects = info["channel_effects"]  # the channel's measured effect on each process, with its interval
    table = scorer.tables_["channel_effects"]
    assert len(effects) == len(table) > 0 and {e["process"] for e in effects} == {"purchase", "dropout"}
    for effect, (_, row) in zip(effects, table.iterrows(), strict=True):
        assert effect["level"] == row["level"] and effect["customers"] == row["customers"] > 0
        assert effect["ratio"] == pytest.approx(row["ratio"], rel=1e-12)
        assert effect["ratio_lower_95"] <= effect["ratio"] <= effect["ratio_upper_95"]


def test_metrics_count_requests_by_route_and_status(service_model):
    with TestClient(create_app(_settings(service_model))) as fresh:
        fresh.post("/v1/score", json={"as_of": AS_OF, "customers": [_ONE]})
        fresh.post("/v1/score", json={"as_of": AS_OF, "customers": []})
        fresh.get("/nowhere")
        text = fresh.get("/metrics").text
    assert 'crmml_http_requests_total{method="POST",route="/v1/score",status="200"} 1.0' in text
    assert 'crmml_http_requests_total{method="POST",route="/v1/score",status="422"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert 'crmml_http_request_duration_seconds_bucket{le="0.01",method="POST",route="/v1/score"' in text
    assert 'crmml_model_info{model_version="crmml-scorer/1",name="crmml-scorer",version="1"} 1.0' in text
    assert "crmml_customers_scored_total 1.0" in text


def test_unknown_routes_and_methods_answer_json(client):
    missing = client.get("/v2/score")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found", "errors": []}
    assert client.get("/v1/score").status_code == 405


# ----------------------------------------------------------------------------------------------
# Reload, registry outages, overload (a real server on 127.0.0.1)
# ----------------------------------------------------------------------------------------------


def test_reload_during_traffic_fails_no_request(service_model):
    body = {"as_of": AS_OF, "customers": service_model.request_customers(_ids(service_model, 3, seed=1))}
    statuses, versions, mismatched, stop = [], [], [], threading.Event()

    def traffic(url):
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/v1/score", json=body)
                statuses.append(response.status_code)
                header = response.headers.get("x-model-version")
                body_version = response.json()["model"]["model_version"]
                mismatched.extend([(header, body_version)] if header != body_version else [])
                versions.append(header)

    with ServerThread(create_app(_settings(service_model))) as server:
        workers = [threading.Thread(target=traffic, args=(server.url,)) for _ in range(3)]
        for worker in workers:
            worker.start()
        try:
            with httpx.Client(base_url=server.url, timeout=120) as http:
                unchanged = http.post("/v1/admin/reload").json()
                assert unchanged["reloaded"] is False and unchanged["model"]["version"] == "1"
                new_version = service_model.register_again()
                moved = http.post("/v1/admin/reload").json()
                assert moved["reloaded"] is True and moved["model"]["version"] == new_version
                while versions.count(f"crmml-scorer/{new_version}") < 5:
                    threading.Event().wait(0.05)
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=60)
    assert len(statuses) > 10 and set(statuses) == {200}
    old, new = "crmml-scorer/1", f"crmml-scorer/{new_version}"
    assert set(versions) == {old, new} and mismatched == []  # header == body in every answer
    first_new = versions.index(new)
    assert old not in versions[first_new + 3 * 2:]  # at most the requests in flight at the swap


def test_registry_down_keeps_serving_and_start_up_waits_for_it(service_model, tmp_path):
    db, saved = service_model.db_path, tmp_path / "saved.db"
    body = {"as_of": AS_OF, "customers": [_ONE]}
    with TestClient(create_app(_settings(service_model, load_retry_seconds=0.2))) as running:
        shutil.copy(db, saved)
        db.write_bytes(b"this is not a database" * 100)
        try:
            reload = running.post("/v1/admin/reload")
            assert reload.status_code == 503, reload.text
            assert "cannot be reached" in reload.json()["detail"] and "still serving" in reload.json()["detail"]
            assert running.post("/v1/score", json=body).status_code == 200
            assert running.get("/health/ready").status_code == 200
            assert 'crmml_model_reloads_total{outcome="failed"} 1.0' in running.get("/metrics").text
            # A replica starting while the registry is down: up, not ready, ready once it is back.
            with TestClient(create_app(_settings(service_model, load_retry_seconds=0.2))) as starting:
                ready = starting.get("/health/ready")
                assert ready.status_code == 503 and "cannot be reached" in ready.json()["detail"]
                assert starting.post("/v1/score", json=body).status_code == 503
                shutil.copy(saved, db)
                for _ in range(200):
                    if starting.get("/health/ready").status_code == 200:
                        break
                    threading.Event().wait(0.05)
                assert starting.post("/v1/score", json=body).status_code == 200
        finally:
            shutil.copy(saved, db)


def test_a_uri_naming_no_model_stops_the_start_up(service_model):
    app = create_app(_settings(service_model, model_uri="models:/crmml-scorer@nobody"))
    with pytest.raises(Exception, match="nobody"), TestClient(app):
        pass


def test_overload_is_shed_fast_and_recovers(service_model):
    body = {"as_of": AS_OF, "customers": service_model.request_customers(_ids(service_model, 200, seed=2))}
    results = []

    def call(url):
        with httpx.Client(base_url=url, timeout=60) as http:
            response = http.post("/v1/score", json=body)
            results.append((response.status_code, response.elapsed.total_seconds(), response.headers))

    with ServerThread(create_app(_settings(service_model, max_in_flight=2))) as server:
        burst = [threading.Thread(target=call, args=(server.url,)) for _ in range(12)]
        for thread in burst:
            thread.start()
        for thread in burst:
            thread.join()
        codes = [code for code, _, _ in results]
        assert set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 2
        shed = [(elapsed, headers) for code, elapsed, headers in results if code == 503]
        assert all(headers["retry-after"] == "1" for _, headers in shed)
        slowest_ok = max(elapsed for code, elapsed, _ in results if code == 200)
        assert min(elapsed for elapsed, _ in shed) < slowest_ok
        results.clear()
        for _ in range(3):  # load gone: every request is served again
            call(server.url)
        assert [code for code, _, _ in results] == [200, 200, 200]
        with httpx.Client(base_url=server.url) as http:
            assert "crmml_requests_shed_total" in http.get("/metrics").text


def test_crmml_serve_runs_as_a_server_process(service_model, tmp_path):
    """`crmml serve` in a subprocess on 127.0.0.1: wait for ready, score over HTTP, stop it."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from service_support import free_port

    port = free_port()
    command = [str(Path(sys.executable).parent / "crmml"), "serve", "--model", "models:/crmml-scorer/1",
               "--tracking-uri", service_model.tracking_uri, "--host", "127.0.0.1", "--port", str(port),
               "--workers", "2"]
    env = {**os.environ, "CRMML_API_KEY": KEY}
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "crmml serve did not become ready"
            time.sleep(0.2)
        body = {"as_of": AS_OF, "customers": service_model.request_customers(_ids(service_model, 2))}
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as http:
            for _ in range(4):  # both workers answer
                response = http.post("/v1/score", json=body)
                assert response.status_code == 200 and response.json()["model"]["version"] == "1"
            metrics = http.get("/metrics").text
        # /metrics adds up both worker processes' counts
        assert 'crmml_http_requests_total{method="POST",route="/v1/score",status="200"} 4.0' in metrics
        assert httpx.post(f"{url}/v1/score", json=body).status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()


def test_merged_requests_get_the_answers_they_get_alone(service_model):
    """Micro-batching: several requests in one Scorer.score call, each answered as if alone;
    referrals are counted within a request only; one bad request fails alone."""
    from crmml.service.schemas import ScoreRequest
    from crmml.service.scoring import InputError, score_request, score_requests

    ids = _ids(service_model, 6, seed=4)
    first = service_model.request_customers(ids[:3])
    second = service_model.request_customers(ids[3:])
    first[1]["attributes"]["referred_by"] = first[0]["customer_id"]  # referrer in the same request
    second[0]["attributes"]["referred_by"] = first[0]["customer_id"]  # referrer in another request
    second[1]["customer_id"] = first[0]["customer_id"]  # the same id in two requests is fine
    requests = [ScoreRequest.model_validate({"as_of": AS_OF, "customers": c}) for c in (first, second)]
    bad = ScoreRequest.model_validate({"as_of": AS_OF, "customers": [
        {"customer_id": 1, "transactions": [{"timestamp": "2025-07-02", "amount": 1.0}]}]})
    settings = _settings(service_model)
    merged = score_requests(service_model.scorer, [requests[0], bad, requests[1]], settings)
    assert isinstance(merged[1], InputError)
    for request, together in zip(requests, (merged[0], merged[2]), strict=True):
        alone = score_request(service_model.scorer, request, settings)
        assert [c["customer_id"] for c in together["customers"]] == [c.customer_id for c in request.customers]
        for a, b in zip(alone["customers"], together["customers"], strict=True):
            assert a["tier"] == b["tier"] and a["flags"] == b["flags"] and a["reasons"] == b["reasons"]
            for name in ("expected_purchases", "p_alive", "churn_probability", "predicted_value"):
                assert b[name] == pytest.approx(a[name], rel=1e-12, abs=1e-15)


def test_concurrent_requests_are_scored_in_fewer_batches(service_model):
    bodies = [{"as_of": AS_OF, "customers": service_model.request_customers([i])} for i in _ids(service_model, 24, 5)]
    app = create_app(_settings(service_model))
    answers = {}

    def call(url, k):
        with httpx.Client(base_url=url, timeout=60) as http:
            answers[k] = http.post("/v1/score", json=bodies[k]).json()

    with ServerThread(app) as server:
        threads = [threading.Thread(target=call, args=(server.url, k)) for k in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batches = app.state.batcher.batches
    assert sorted(answers) == list(range(len(bodies)))
    assert all(answers[k]["customers"][0]["customer_id"] == bodies[k]["customers"][0]["customer_id"] for k in answers)
    assert batches < len(bodies)  # requests that waited for a batch were merged into the next
