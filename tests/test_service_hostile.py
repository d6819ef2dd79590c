"""The service under hostile input (issue 21): extreme values, a poisoned batch, slow bodies."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from service_support import AS_OF, ServerThread, service_settings

from crmml.service import create_app

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient


_settings = service_settings


@pytest.fixture(scope="module")
def client(service_model):
    with TestClient(create_app(_settings(service_model))) as test_client:
        yield test_client


def _one(**transaction):
    return {"customer_id": 1, "transactions": [{"timestamp": "2025-01-01", "amount": 10.0, **transaction}]}


_HUGE = "1" + "0" * 400  # a JSON integer no float holds


@pytest.mark.parametrize(("as_of", "customer", "loc"), [
    ("9999-12-31", _one(), ["body", "as_of"]),
    (AS_OF, _one(timestamp="0001-01-01T00:00:00+01:00"), ["body", "customers", 0, "transactions", 0, "timestamp"]),
    ("9999-12-30", _one(timestamp="9999-12-31T23:00:00-05:00"),
     ["body", "as_of"]),
    (AS_OF, _one(timestamp="1899-12-31T23:30:00-01:00"), None),  # 1900-01-01T00:30 UTC: in range
    (AS_OF, _one(timestamp="1900-01-01T00:30:00+01:00"), ["body", "customers", 0, "transactions", 0, "timestamp"]),
    (AS_OF, _one(timestamp=1700000000), ["body", "customers", 0, "transactions", 0, "timestamp"]),
    (AS_OF, _one(amount=True), ["body", "customers", 0, "transactions", 0, "amount"]),
    (AS_OF, _one(amount="10"), ["body", "customers", 0, "transactions", 0, "amount"]),
    (AS_OF, {"customer_id": 1, "summary": {"frequency": 1, "recency_days": 3, "age_days": 5, "monetary_value": False}},
     ["body", "customers", 0, "summary", "monetary_value"]),
    (AS_OF, {"customer_id": 1, "summary": {"frequency": "1", "recency_days": 3, "age_days": 5}},
     ["body", "customers", 0, "summary", "frequency"]),
    (AS_OF, {**_one(), "attributes": {"cost_to_serve": True}}, ["body", "customers", 0, "attributes", "cost_to_serve"]),
    (AS_OF, {**_one(), "attributes": {"signup_date": "0001-01-01"}},
     ["body", "customers", 0, "attributes", "signup_date"]),
    (AS_OF, {**_one(), "attributes": {"region": 1e300}}, ["body", "customers", 0, "attributes", "region"]),
])
def test_extreme_values_are_a_422_naming_the_field(client, as_of, customer, loc):
    response = client.post("/v1/score", json={"as_of": as_of, "customers": [customer]})
    if loc is None:
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == loc


@pytest.mark.parametrize("where", ["cost_to_serve", "amount", "n_referrals", "other"])
def test_a_number_no_float_holds_is_a_422(client, where):
    """F3: ``cost_to_serve`` of 1 followed by 400 zeros (a JSON integer) overflowed in the scorer."""
    if where == "amount":
        customer = json.dumps(_one()).replace("10.0", _HUGE)
        loc = ["body", "customers", 0, "transactions", 0, "amount"]
    else:
        customer = json.dumps({**_one(), "attributes": {where: 0}}).replace(': 0}', f": {_HUGE}}}")
        loc = ["body", "customers", 0, "attributes", where]
    body = f'{{"as_of": "{AS_OF}", "customers": [{customer}]}}'.encode()
    response = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == loc


def test_a_poisoned_request_fails_alone_and_its_neighbours_are_answered(service_model, monkeypatch):
    """F4: a request that makes the scorer raise (here an injected OverflowError, as the issue's
    out-of-range dates did) used to fail every request of its micro-batch with 500 and a dropped
    connection. Now the batch is rescored request by request: only the poisoned one gets 500, on
    a connection that stays open, and every good one is answered 200."""
    import crmml.service.batching as batching

    real = batching.score_requests
    mixed = []  # batches that held the poisoned request and others

    def poisoned(scorer, requests, settings):
        if any(c.customer_id == "poison" for r in requests for c in r.customers):
            if len(requests) > 1:
                mixed.append(len(requests))
            raise OverflowError("date value out of range")
        return real(scorer, requests, settings)

    monkeypatch.setattr(batching, "score_requests", poisoned)
    ids = service_model.transactions["customer_id"].unique()[:24]
    good = [{"as_of": AS_OF, "customers": service_model.request_customers([i])} for i in ids]
    bad = {"as_of": AS_OF, "customers": [{"customer_id": "poison", "transactions": []}]}
    statuses: dict = {}
    poison_statuses: list = []
    stop = threading.Event()
    app = create_app(_settings(service_model))

    def call(url, k):
        with httpx.Client(base_url=url, timeout=60) as http:
            statuses[k] = [http.post("/v1/score", json=good[k]).status_code for _ in range(3)]

    def poison(url):
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                poison_statuses.append(http.post("/v1/score", json=bad).status_code)
            # the same connection still answers after its own 500s
            poison_statuses.append(http.post("/v1/score", json=good[0]).status_code)

    with ServerThread(app) as server:
        poisoner = threading.Thread(target=poison, args=(server.url,))
        poisoner.start()
        threads = [threading.Thread(target=call, args=(server.url, k)) for k in range(len(good))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        poisoner.join()
    assert sorted(statuses) == list(range(len(good)))
    assert all(codes == [200, 200, 200] for codes in statuses.values()), statuses
    assert set(poison_statuses[:-1]) == {500} and poison_statuses[-1] == 200
    assert mixed, "the poisoned request was never batched with others"


def _slow_sender(port: int, stop: threading.Event, answers: list) -> None:
    """A client that sends its headers, then its 100-byte body one byte every 0.2 s (bounded)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        sock.settimeout(0.2)
        received = b""
        for _ in range(60):  # 12 s at most
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                if not stop.is_set():
                    try:
                        sock.sendall(b" ")
                    except OSError:
                        break
                continue
            if not chunk:
                break
            received += chunk
        answers.append(received)


def test_slow_bodies_do_not_lock_out_other_clients(service_model):
    """F6: slow senders used to count as in flight from their first byte, so that max_in_flight of
    them locked every other client out (503) with no time-out. Now a request counts once its body
    is in, and a body that does not arrive within CRMML_BODY_TIMEOUT_SECONDS gets 408."""
    app = create_app(_settings(service_model, max_in_flight=2, body_timeout_seconds=1.5))
    stop, answers = threading.Event(), []
    body = {"as_of": AS_OF, "customers": [_one()]}
    with ServerThread(app) as server:
        slow = [threading.Thread(target=_slow_sender, args=(server.port, stop, answers)) for _ in range(6)]
        for thread in slow:
            thread.start()
        threading.Event().wait(0.5)  # every slow sender is mid-body
        with httpx.Client(base_url=server.url, timeout=30) as http:
            statuses = [http.post("/v1/score", json=body).status_code for _ in range(3)]
            assert http.get("/health/ready").status_code == 200
        for thread in slow:
            thread.join(timeout=30)
        stop.set()
    assert statuses == [200, 200, 200]
    assert len(answers) == 6
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"did not arrive within 1.5 s" in answer


@pytest.mark.parametrize("corruption", ["truncated", "random", "empty"])
def test_a_corrupt_bundle_is_one_line_naming_the_file_and_exit_2(service_model, tmp_path, corruption):
    """F2: a truncated, random or empty scorer.joblib gave UnpicklingError/IndexError/EOFError
    tracebacks (exit 1) in `crmml score` and `crmml report`."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    from crmml.registry import load_scorer
    from crmml.scorer import BUNDLE_FILE

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    good = (service_model.folder / "bundle" / BUNDLE_FILE).read_bytes()
    bad = {"truncated": good[: len(good) // 2], "random": np.random.default_rng(3).bytes(5000), "empty": b""}
    (bundle / BUNDLE_FILE).write_bytes(bad[corruption])
    with pytest.raises(ValueError, match="scorer.joblib is not a readable crmml model bundle"):
        load_scorer(str(bundle))
    data = tmp_path / "tx.csv"
    data.write_text("customer_id,timestamp,amount\n1,2025-01-01,10\n")
    crmml = str(Path(sys.executable).parent / "crmml")
    for command in (["score", "--transactions", str(data), "--as-of", AS_OF, "--output", str(tmp_path / "s.csv")],
                    ["report", "--output", str(tmp_path / "r.html")]):
        run = subprocess.run([crmml, command[0], "--model", str(bundle), *command[1:]], capture_output=True,
                             text=True, timeout=300, env=os.environ.copy())
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr and str(bundle / BUNDLE_FILE) in run.stderr, run.stderr


def test_a_reload_that_fails_its_self_check_is_a_503_with_the_reason(service_model, monkeypatch):
    """F8: the failed self-check of a new version answered 500 "internal error"."""
    import dataclasses

    import crmml.service.state as state

    with TestClient(create_app(_settings(service_model, model_uri="models:/crmml-scorer/1"))) as running:
        holder = running.app.state.holder
        served = holder.current
        # As if an older version were served: the reload loads version 1, which now fails its check.
        holder.current = dataclasses.replace(served, ref=served.ref.model_copy(update={"version": "0"}))

        def broken(body):
            raise RuntimeError("self-check: p_alive of customer 1 is nan")

        monkeypatch.setattr(state, "check_answer", broken)
        response = running.post("/v1/admin/reload")
        assert response.status_code == 503, response.text
        detail = response.json()["detail"]
        assert "failed its self-check" in detail and "p_alive of customer 1 is nan" in detail
        assert "still serving" in detail and response.headers["retry-after"] == "30"
        assert holder.current.ref.version == "0"  # the old model goes on serving
        assert running.post("/v1/score", json={"as_of": AS_OF, "customers": [_one()]}).status_code == 200
        assert 'crmml_model_reloads_total{outcome="failed"} 1.0' in running.get("/metrics").text


def test_no_internal_paths_in_answers_docs_closed_with_a_key_and_an_empty_key_refused(service_model, tmp_path):
    """F9: /health/ready (no key needed) and error bodies showed tracking URIs and paths; the schema
    and docs pages were open when a key was set; CRMML_API_KEY="" silently turned auth off."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pydantic import ValidationError

    secret = tmp_path / "internal-secret-dir"
    secret.mkdir()
    (secret / "mlflow.db").write_bytes(b"not a database" * 100)
    broken = _settings(service_model, tracking_uri=f"sqlite:///{secret}/mlflow.db", load_retry_seconds=30)
    with TestClient(create_app(broken)) as starting:
        ready = starting.get("/health/ready")
        assert ready.status_code == 503 and "cannot be reached" in ready.json()["detail"]
        assert "internal-secret-dir" not in ready.text and "sqlite" not in ready.text
    with TestClient(create_app(_settings(service_model, api_key="k"))) as guarded:
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert guarded.get(path).status_code == 404, path
            assert guarded.get(path, headers={"X-API-Key": "k"}).status_code == 404, path
    with TestClient(create_app(_settings(service_model))) as open_service:
        assert open_service.get("/openapi.json").status_code == 200
    with pytest.raises(ValidationError, match="set but empty"):
        _settings(service_model, api_key="")
    run = subprocess.run([str(Path(sys.executable).parent / "crmml"), "serve", "--model", "models:/crmml-scorer/1",
                          "--tracking-uri", service_model.tracking_uri, "--port", "1"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "CRMML_API_KEY": ""})
    assert run.returncode == 2 and "CRMML_API_KEY" in run.stderr and "empty" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_crmml_serve_binds_at_once_when_the_registry_refuses_connections(tmp_path):
    """F10: with an HTTP registry refusing connections, `crmml serve` bound its port only after
    ~520 s (MLflow's retries, twice). Now the retries are bounded (CRMML_REGISTRY_RETRIES): the
    port answers /health/live soon, /health/ready is 503, and each retry is logged."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from service_support import free_port

    refused, port = free_port(), free_port()  # nothing listens on `refused`
    command = [str(Path(sys.executable).parent / "crmml"), "serve", "--model", "models:/crmml-scorer@champion",
               "--tracking-uri", f"http://127.0.0.1:{refused}", "--host", "127.0.0.1", "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    env.update(CRMML_REGISTRY_RETRIES="1", CRMML_LOAD_RETRY_SECONDS="1")
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    start = time.monotonic()
    try:
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() - start < 90, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
        assert ready.status_code == 503
        deadline = time.monotonic() + 60
        while (tmp_path / "serve.log").read_text().count("model not loaded yet") < 2:
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.parametrize("fault", ["moved", "emptied"])
def test_a_registry_file_moved_or_emptied_under_the_service_is_seen(service_model, tmp_path, fault):
    """The reload answered "still names version 1" with the registry file gone: now a 503 (the
    loaded model goes on serving) and a failed reload in the metrics."""
    import shutil

    db, saved = service_model.db_path, tmp_path / "saved.db"
    with TestClient(create_app(_settings(service_model))) as running:
        shutil.copy(db, saved)
        try:
            if fault == "moved":
                db.rename(tmp_path / "moved.db")
            else:
                db.write_bytes(b"")
            reload = running.post("/v1/admin/reload")
            assert reload.status_code == 503, reload.text
            assert "cannot be reached" in reload.json()["detail"] and str(db) not in reload.text
            assert running.post("/v1/score", json={"as_of": AS_OF, "customers": [_one()]}).status_code == 200
            assert 'crmml_model_reloads_total{outcome="failed"} 1.0' in running.get("/metrics").text
        finally:
            shutil.copy(saved, db)
