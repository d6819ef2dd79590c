"""Micro-batching: requests that arrive while a batch is being scored are scored together next.

Most of the cost of :meth:`crmml.scorer.Scorer.score` on a few customers is fixed per call (frame
building, model dispatch), so one call for twenty waiting single-customer requests costs about
what one call for one customer does. :class:`ScoringBatcher` keeps one scoring thread per worker
busy: whatever queued during a batch (up to ``max_customers``, same model) becomes the next batch,
and no request ever waits for a timer. Each request still gets its own answer or its own error
(see :func:`crmml.service.scoring.score_requests`).

One request must never fail another: when a batch fails with anything but an input error (a
request the schema let through that still breaks the scorer), each of its requests is scored
again alone, so that only the poisoned one fails (:func:`score_isolated`). An unexpected failure
reaches its request as :class:`ScoringFailedError` (HTTP 500, logged once with its trace).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import anyio

from crmml.errors import DataValidationError
from crmml.service.scoring import InputError, score_requests

__all__ = ["INPUT_ERRORS", "ScoringBatcher", "ScoringFailedError", "score_isolated"]

log = logging.getLogger("crmml.service")

#: Errors that are the request's own fault (HTTP 422): never retried.
INPUT_ERRORS = (InputError, DataValidationError)


class ScoringFailedError(RuntimeError):
    """Scoring one request failed unexpectedly (the cause is chained and has been logged)."""


def score_isolated(scorer, requests: list, settings) -> list:
    """:func:`~crmml.service.scoring.score_requests`, with every request that failed for a reason
    other than its input (an exception of the whole call, or one handed to a request of a batch)
    scored again alone, so that the failure stays with the request that causes it. Per request,
    its result, its input error, or :class:`ScoringFailedError`."""
    try:
        results = list(score_requests(scorer, requests, settings))
    except Exception as exc:  # noqa: BLE001  (retried request by request below)
        results = [exc] * len(requests)
    for k, result in enumerate(results):
        if not isinstance(result, Exception) or isinstance(result, INPUT_ERRORS):
            continue
        if len(requests) > 1:
            try:
                (result,) = score_requests(scorer, [requests[k]], settings)
            except Exception as exc:  # noqa: BLE001
                result = exc
        if isinstance(result, Exception) and not isinstance(result, INPUT_ERRORS):
            log.error("scoring a request failed", exc_info=result)
            failed = ScoringFailedError(f"scoring failed: {type(result).__name__}")
            failed.__cause__ = result
            result = failed
        results[k] = result
    return results


@dataclass
class _Job:
    served: object
    request: object
    future: asyncio.Future


class ScoringBatcher:
    """One background task per worker that scores queued requests in batches."""

    def __init__(self, settings, *, max_customers: int):
        self.settings = settings
        self.max_customers = max_customers
        self._queue: list[_Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._queue:
            if not job.future.done():
                job.future.cancel()
        self._queue.clear()

    async def score(self, served, request) -> dict:
        """The request's result (the fields of the response other than ``model``), or its error."""
        job = _Job(served, request, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._wake.set()
        return await job.future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                jobs = self._next_batch()
                if not jobs:
                    continue
                try:
                    results = await anyio.to_thread.run_sync(
                        score_isolated, jobs[0].served.scorer, [job.request for job in jobs], self.settings)
                except Exception as exc:  # noqa: BLE001  (handed to each request's own error handler)
                    results = [exc] * len(jobs)
                self.batches += 1
                for job, result in zip(jobs, results, strict=True):
                    if job.future.done():  # the client went away
                        continue
                    if isinstance(result, Exception):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)

    def _next_batch(self) -> list[_Job]:
        """Queued jobs in order, for the first live job's model, up to ``max_customers`` (at least one)."""
        self._queue = [job for job in self._queue if not job.future.done()]
        if not self._queue:
            return []
        served = self._queue[0].served
        batch, rest, size = [], [], 0
        for job in self._queue:
            n = len(job.request.customers)
            if job.served is served and (not batch or size + n <= self.max_customers):
                batch.append(job)
                size += n
            else:
                rest.append(job)
        self._queue = rest
        return batch
