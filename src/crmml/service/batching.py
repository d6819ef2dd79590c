"""Micro-batching: requests that arrive while a batch is being scored are scored together next.

Most of the cost of :meth:`crmml.scorer.Scorer.score` on a few customers is fixed per call (frame
building, model dispatch), so one call for twenty waiting single-customer requests costs about
what one call for one customer does. :class:`ScoringBatcher` keeps one scoring thread per worker
busy: whatever queued during a batch (up to ``max_customers``, same model) becomes the next batch,
and no request ever waits for a timer. Each request still gets its own answer or its own error
(see :func:`crmml.service.scoring.score_requests`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import anyio

from crmml.service.scoring import score_requests

__all__ = ["ScoringBatcher"]


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
                        score_requests, jobs[0].served.scorer, [job.request for job in jobs], self.settings)
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
