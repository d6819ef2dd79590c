"""Prometheus metrics of one app, and the ASGI middleware that records them and guards the door.

:class:`ServiceMetrics` registers its series in a registry of its own (two apps in one process do
not share counts). With several worker processes (``crmml serve --workers N``), the CLI sets
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` adds up every worker's series (prometheus_client's
multiprocess mode).

:class:`GuardMiddleware` is plain ASGI (no per-request task), and for every request:

- answers 413 at once when ``Content-Length`` (or the body read so far) exceeds the limit;
- reads the body of a POST, PUT or PATCH whole before anything else, within ``body_timeout``
  seconds (HTTP 408 and the connection closed otherwise): a client sending its body slowly holds
  a connection, never a place among the requests in flight;
- answers 503 with ``Retry-After`` at once when ``max_in_flight`` requests (bodies received) are
  already being scored or queued in this worker, so that overload costs microseconds, not a
  growing queue;
- counts the request and its latency by route template, method and status.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from crmml.service.errors import error_body

__all__ = ["GuardMiddleware", "ServiceMetrics"]

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_UNGUARDED = ("/health/", "/metrics")  # never shed: probes and scrapes must see an overloaded worker


class ServiceMetrics:
    """The service's series (see the module docstring)."""

    def __init__(self):
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("crmml_http_requests", "HTTP requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("crmml_http_request_duration_seconds",
                                 "Time from the request's arrival to its last response byte.",
                                 ["route", "method", "status"], buckets=_LATENCY_BUCKETS, registry=r)
        self.customers = Counter("crmml_customers_scored", "Customers scored.", registry=r)
        self.unknown_categories = Counter(
            "crmml_unknown_categories", "Customers scored with an attribute value the model never saw (scored "
            "as unknown), by attribute.", ["column"], registry=r)
        self.shed = Counter("crmml_requests_shed", "Requests answered 503 because the worker was full.", registry=r)
        self.in_flight = Gauge("crmml_requests_in_flight", "Requests being handled now.", registry=r,
                               multiprocess_mode="livesum")
        self.model = Gauge("crmml_model_info", "The model served (1) by name, version and scorer version.",
                           ["name", "version", "model_version"], registry=r, multiprocess_mode="liveall")
        self.reloads = Counter("crmml_model_reloads", "Reload attempts by outcome (swapped, unchanged, failed).",
                               ["outcome"], registry=r)

    def scored(self, customers: list[dict]) -> None:
        """Count the scored customers (rows of the answer) and their unknown categories."""
        self.customers.inc(len(customers))
        counts: dict[str, int] = {}
        for row in customers:
            for column in row["unknown_categories"]:  # (the model's columns: a bounded set of labels)
                counts[column] = counts.get(column, 0) + 1
        for column, count in counts.items():
            self.unknown_categories.labels(column).inc(count)

    def model_changed(self, old, new) -> None:
        if old is not None:
            self.model.labels(*_model_labels(old)).set(0)
        self.model.labels(*_model_labels(new)).set(1)

    def exposition(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)


def _model_labels(served) -> tuple[str, str, str]:
    ref = served.ref
    return ref.name or "", ref.version or "", ref.model_version


class GuardMiddleware:
    """Body limit, load shedding and metrics (see the module docstring)."""

    def __init__(self, app, *, metrics: ServiceMetrics, max_body_bytes: int, max_in_flight: int,
                 body_timeout: float = 10.0):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.body_timeout = body_timeout
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path, method = scope["path"], scope["method"]
        guarded = not path.startswith(_UNGUARDED)
        status = {"code": 500}

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            length = _content_length(scope)
            if length is not None and length > self.max_body_bytes:
                await _error(send_counted, 413, f"the request body is {length} bytes; the limit is "
                                                f"{self.max_body_bytes}")
                return
            if method in ("POST", "PUT", "PATCH"):
                try:
                    async with asyncio.timeout(self.body_timeout):
                        body = await self._read(receive)
                except TimeoutError:
                    await _error(send_counted, 408, f"the request body did not arrive within {self.body_timeout:g} s",
                                 headers=[(b"connection", b"close")])
                    return
                if body is None:
                    await _error(send_counted, 413, f"the request body exceeds the limit of {self.max_body_bytes} bytes")
                    return
                receive = _replay(body, receive)
            if guarded and self.in_flight >= self.max_in_flight:
                self.metrics.shed.inc()
                await _error(send_counted, 503, "the service is at capacity; retry shortly",
                             headers=[(b"retry-after", b"1")])
                return
            self.in_flight += 1
            self.metrics.in_flight.inc()
            try:
                await self.app(scope, receive, send_counted)
            finally:
                self.in_flight -= 1
                self.metrics.in_flight.dec()
        finally:
            route = _route_template(scope)
            labels = (route, method, str(status["code"]))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)

    async def _read(self, receive) -> bytes | None:
        """The body, read whole; None once it passes the limit (a chunked body has no length)."""
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


def _replay(body: bytes, receive_next):
    """``receive`` that hands over a body read already, then waits on the connection as before."""
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive_next()

    return receive


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _route_template(scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or ("unmatched" if scope.get("path") else "")


async def _error(send, status: int, detail: str, headers=()) -> None:
    body = json.dumps(error_body(detail)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
