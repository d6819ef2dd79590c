"""A small HTTP/1.1 load generator for ``bench_serve.py``: closed loop and open loop, on asyncio.

It is lean on purpose, because it shares the machine with the servers it measures. Every request is
pre-built as bytes (request line, headers and body). Connections are raw keep-alive sockets
(``asyncio.open_connection``). A response is read as its status line and headers, then exactly
``Content-Length`` bytes of body (chunked bodies and close-delimited bodies are read too). Nothing
is parsed as JSON. uvloop runs the event loop when it is installed.

* :func:`closed_loop`: ``concurrency`` connections, each sending back to back for ``duration``
  seconds. No request starts after the deadline; those in flight are waited for. Latency runs from
  the write to the end of the body.
* :func:`open_loop`: requests go out on a fixed schedule (``rate`` per second, possibly in several
  phases, back to back), whatever the responses do. Latency runs from the **scheduled** send time,
  so queueing in the client (no free connection) and in the server both show; nothing is omitted
  when the server falls behind. Idle connections are reused oldest first, so keep-alive connections
  (and the server worker processes they landed on) take turns. When all are busy a new one is
  opened, up to ``max_connections``; past that, requests wait for a connection (and that wait
  counts). The generator's own lateness (due time to taking the request up: about a millisecond
  of timer resolution, more when the CPU is short) is part of the latency and reported apart as
  ``dispatch_lag_p50_ms`` / ``dispatch_lag_p99_ms``.

Status keys in the results are the HTTP status as text (``"200"``, ``"503"``) or ``"error"``
(connection refused, reset or closed mid-response) or ``"timeout"`` (no full response within
``timeout`` seconds).

Also a tiny command line for ad-hoc use::

    python benchmarks/loadgen.py http://127.0.0.1:8000/v1/score --body body.json --rate 200 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import resource
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["Result", "build_request", "closed_loop", "open_connections", "open_loop", "percentile", "run"]


def build_request(host: str, port: int, method: str, path: str, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> bytes:
    """One complete HTTP/1.1 keep-alive request as bytes, ready to write again and again."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    if body or method in {"POST", "PUT", "PATCH"}:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 100]) of already *sorted* values; None when empty."""
    if not values:
        return None
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


@dataclass
class Result:
    """What one measurement saw: latencies (seconds) by status, elapsed time, the generator's CPU."""

    name: str
    duration_s: float = 0.0  # the planned window (open loop: the phase's schedule)
    elapsed_s: float = 0.0  # first send to last response
    sent: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    offsets: dict[str, list[float]] = field(default_factory=dict)  # send time from the phase's start
    generator_cpu_s: float = 0.0
    connections: int = 0
    lags: list[float] = field(default_factory=list)  # open loop: due time to the generator taking it up

    def add(self, status: str, latency: float, offset: float) -> None:
        self.latencies.setdefault(status, []).append(latency)
        self.offsets.setdefault(status, []).append(offset)

    @property
    def statuses(self) -> Counter:
        return Counter({status: len(values) for status, values in self.latencies.items()})

    def summary(self, *, timeline_step_s: float | None = None) -> dict:
        """Counts, rates and latency percentiles (ms) of every response, of the 200s and of the rest."""
        statuses = self.statuses
        answered = sum(statuses.values())
        ok = sorted(self.latencies.get("200", []))
        rejected = sorted(v for s, values in self.latencies.items() if s in {"429", "503"} for v in values)
        every = sorted(v for values in self.latencies.values() for v in values)

        def ms(values, q):
            value = percentile(values, q)
            return None if value is None else round(value * 1000, 3)

        out = {
            "name": self.name, "duration_s": round(self.duration_s, 3), "elapsed_s": round(self.elapsed_s, 3),
            "sent": self.sent, "answered": answered, "statuses": dict(sorted(statuses.items())),
            "ok_per_s": round(len(ok) / self.elapsed_s, 2) if self.elapsed_s else 0.0,
            "answered_per_s": round(answered / self.elapsed_s, 2) if self.elapsed_s else 0.0,
            "ok_share": round(len(ok) / answered, 4) if answered else 0.0,
            "rejected_share": round(len(rejected) / answered, 4) if answered else 0.0,
            "p50_ms": ms(ok, 50), "p99_ms": ms(ok, 99), "p999_ms": ms(ok, 99.9), "max_ms": ms(ok, 100),
            "rejected_p50_ms": ms(rejected, 50), "rejected_p99_ms": ms(rejected, 99),
            "all_p50_ms": ms(every, 50), "all_p99_ms": ms(every, 99),
            "generator_cpu_s": round(self.generator_cpu_s, 3),
            "generator_cpu_share": round(self.generator_cpu_s / self.elapsed_s, 3) if self.elapsed_s else 0.0,
            "connections": self.connections,
        }
        if self.lags:
            lags = sorted(self.lags)
            out["dispatch_lag_p50_ms"], out["dispatch_lag_p99_ms"] = ms(lags, 50), ms(lags, 99)
        if timeline_step_s:
            out["timeline"] = self.timeline(timeline_step_s)
        return out

    def timeline(self, step_s: float) -> list[dict]:
        """Per ``step_s`` window of send time: requests, share answered 200, p99 of the 200s (ms)."""
        n_steps = max(1, math.ceil(self.duration_s / step_s))
        windows = [{"ok": [], "other": 0} for _ in range(n_steps)]
        for status, offsets in self.offsets.items():
            for offset, latency in zip(offsets, self.latencies[status]):
                window = windows[min(n_steps - 1, max(0, int(offset // step_s)))]
                if status == "200":
                    window["ok"].append(latency)
                else:
                    window["other"] += 1
        rows = []
        for i, window in enumerate(windows):
            ok = sorted(window["ok"])
            n = len(ok) + window["other"]
            p99 = percentile(ok, 99)
            rows.append({"from_s": round(i * step_s, 3), "requests": n,
                         "ok_share": round(len(ok) / n, 3) if n else None,
                         "p99_ms": None if p99 is None else round(p99 * 1000, 2)})
        return rows


class _Connection:
    """A keep-alive connection that reconnects itself after an error or a ``Connection: close``."""

    __slots__ = ("host", "opened", "port", "reader", "writer")

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None
        self.opened = 0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        self.opened += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> int:
        """Send ``raw``, read the whole response; return the status code."""
        if self.writer is None:
            await self.connect()
        writer, reader = self.writer, self.reader
        writer.write(raw)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = None, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length is not None:
            if length:
                await reader.readexactly(length)
        elif status >= 200 and status not in {204, 304}:
            await reader.read()  # delimited by the server closing
            close = True
        if close:
            self.close()
        return status

    async def timed(self, raw: bytes, timeout: float) -> str:
        """The status as text, or "error" / "timeout" (the connection is then dropped)."""
        try:
            async with asyncio.timeout(timeout):
                return str(await self.request(raw))
        except TimeoutError:
            self.close()
            return "timeout"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            return "error"


Balance = Callable[[list[int]], dict[int, object]]


async def open_connections(host: str, port: int, n: int, *, balance: Balance | None = None,
                           workers: int = 1, attempts: int = 20) -> list[_Connection]:
    """``n`` open connections; with ``balance``, spread evenly over the server's ``workers`` processes.

    Worker processes sharing one listening socket do not take turns at ``accept``: 8 connections
    often land 5/3 or 6/2, and a keep-alive connection stays on its worker, so a closed loop would
    measure the luck of the draw. ``balance(local_ports)`` tells which worker holds each connection
    (``bench_serve.py`` reads it from ``/proc``); connections landing on a worker that already has
    its share are closed and opened again (at most ``attempts`` rounds; then what is open is used).
    """
    def connection() -> _Connection:
        return _Connection(host, port)

    if balance is None or workers <= 1:
        connections = [connection() for _ in range(n)]
        for c in connections:
            try:
                await c.connect()
            except OSError:
                pass
        return connections
    share = -(-n // workers)
    kept: list[_Connection] = []
    per_worker: Counter = Counter()
    spare: list[_Connection] = []
    for _ in range(attempts):
        fresh = [connection() for _ in range(n - len(kept))]
        for c in fresh:
            await c.connect()
        await asyncio.sleep(0.02)  # let the workers accept
        owners = balance([c.writer.get_extra_info("sockname")[1] for c in fresh])
        for c in fresh:
            owner = owners.get(c.writer.get_extra_info("sockname")[1])
            if owner is not None and per_worker[owner] < share:
                per_worker[owner] += 1
                kept.append(c)
            else:
                spare.append(c)  # kept open for now: closing it would let the next connect land there again
        if len(kept) == n:
            break
    for c in spare:
        c.close()
    while len(kept) < n:  # could not balance: take what comes
        c = connection()
        await c.connect()
        kept.append(c)
    return kept


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------------------------------
# Closed loop
# --------------------------------------------------------------------------------------------------


async def closed_loop(host: str, port: int, requests: Sequence[bytes], *, concurrency: int, duration: float,
                      timeout: float = 60.0, name: str = "closed", balance: Balance | None = None,
                      workers: int = 1) -> Result:
    """``concurrency`` connections sending ``requests`` (cycled, shared) back to back for ``duration`` s.

    Throughput is the responses divided by the time from the first send to the last response. The
    connections are opened before the clock starts (spread over the server's worker processes when
    ``balance`` is given: see :func:`open_connections`).
    """
    result = Result(name, duration_s=duration)
    cycle = itertools.cycle(requests)
    connections = await open_connections(host, port, concurrency, balance=balance, workers=workers)
    cpu0, start = _cpu(), time.perf_counter()
    deadline = start + duration
    last = start

    async def client(connection: _Connection) -> None:
        nonlocal last
        perf = time.perf_counter
        while (sent := perf()) < deadline:
            result.sent += 1
            status = await connection.timed(next(cycle), timeout)
            done = perf()
            result.add(status, done - sent, sent - start)
            last = max(last, done)
            if status in {"error", "timeout"}:
                await asyncio.sleep(0.01)  # do not spin on a dead server

    try:
        await asyncio.gather(*(client(c) for c in connections))
    finally:
        for connection in connections:
            connection.close()
    result.elapsed_s = last - start
    result.generator_cpu_s = _cpu() - cpu0
    result.connections = sum(c.opened for c in connections)
    return result


# --------------------------------------------------------------------------------------------------
# Open loop
# --------------------------------------------------------------------------------------------------


class _Pool:
    """Idle connections, oldest first; grows on demand up to ``max_size``, then callers queue."""

    def __init__(self, host: str, port: int, max_size: int):
        self.host, self.port, self.max_size = host, port, max_size
        self.all: list[_Connection] = []
        self.idle: deque[_Connection] = deque()
        self.waiters: deque[asyncio.Future] = deque()

    async def prefill(self, n: int, balance: Balance | None = None, workers: int = 1) -> None:
        connections = await open_connections(self.host, self.port, min(n, self.max_size), balance=balance,
                                             workers=workers)
        self.all += connections
        self.idle.extend(connections)

    async def acquire(self) -> _Connection:
        if self.idle:
            return self.idle.popleft()
        if len(self.all) < self.max_size:
            connection = _Connection(self.host, self.port)  # connected by its first request
            self.all.append(connection)
            return connection
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        return await waiter

    def release(self, connection: _Connection) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self.idle.append(connection)

    def close(self) -> None:
        for connection in self.all:
            connection.close()


async def open_loop(host: str, port: int, requests: Sequence[bytes], *, phases: Sequence[tuple[str, float, float]],
                    max_connections: int = 256, prefill: int = 16, timeout: float = 10.0,
                    grace: float = 10.0, balance: Balance | None = None, workers: int = 1) -> list[Result]:
    """Send on a fixed schedule: ``phases`` = [(name, rate per s, seconds), ...], back to back.

    The i-th request of a phase is due at ``phase start + i / rate``; its latency runs from that
    time. After the schedule ends, responses are awaited for at most ``grace`` seconds more; what
    is still missing then is counted as "timeout". The ``prefill`` connections opened first are
    spread over the workers with ``balance`` (:func:`open_connections`); those opened on demand
    land where the server puts them.
    """
    pool = _Pool(host, port, max_connections)
    await pool.prefill(prefill, balance, workers)
    cycle = itertools.cycle(requests)
    loop = asyncio.get_running_loop()
    perf = time.perf_counter
    results = [Result(name, duration_s=seconds) for name, _, seconds in phases]
    pending: set[asyncio.Task] = set()
    last_done = [0.0] * len(phases)

    async def fire(result: Result, index: int, due: float, phase_start: float, raw: bytes) -> None:
        result.lags.append(perf() - due)  # the generator's own lateness (timer resolution, CPU), in the latency
        connection = await pool.acquire()
        try:
            status = await connection.timed(raw, timeout - (perf() - due))
        finally:
            pool.release(connection)
        done = perf()
        result.add(status, done - due, due - phase_start)
        last_done[index] = max(last_done[index], done)

    cpu0 = _cpu()
    start = perf() + 0.05
    phase_start = start
    cpu_marks = []
    try:
        for index, ((_, rate, seconds), result) in enumerate(zip(phases, results)):
            n = round(rate * seconds)
            interval = 1.0 / rate
            for i in range(n):
                due = phase_start + i * interval
                delay = due - perf()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
                task = loop.create_task(fire(result, index, due, phase_start, next(cycle)))
                pending.add(task)
                task.add_done_callback(pending.discard)
                result.sent += 1
            phase_start += seconds
            cpu_marks.append(_cpu())
        end_of_schedule = phase_start
        if pending:
            await asyncio.wait(set(pending), timeout=max(0.0, end_of_schedule + grace - perf()))
        for task in list(pending):
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        pool.close()
    # Requests cancelled after the grace period: timeouts of their phase, with the latency they had
    # reached (a lower bound; their send times are not kept).
    for result in results:
        missing = result.sent - sum(result.statuses.values())
        for _ in range(missing):
            result.add("timeout", grace, result.duration_s)
    phase_start = start
    previous_cpu = cpu0
    for index, (result, mark) in enumerate(zip(results, cpu_marks)):
        result.elapsed_s = max(result.duration_s, last_done[index] - phase_start)
        result.generator_cpu_s = mark - previous_cpu
        result.connections = len(pool.all)
        previous_cpu = mark
        phase_start += result.duration_s
    return results


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def run(coroutine_factory: Callable[[], object]):
    """Run a coroutine on uvloop when installed (lower per-request cost), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine_factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine_factory())


def main() -> None:
    parser = argparse.ArgumentParser(description="closed- or open-loop HTTP/1.1 load on one URL")
    parser.add_argument("url", help="e.g. http://127.0.0.1:8000/v1/score")
    parser.add_argument("--body", default=None, help="JSON file to POST (GET without)")
    parser.add_argument("--header", action="append", default=[], help="Name: value (repeatable)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8, help="closed loop connections (default 8)")
    parser.add_argument("--rate", type=float, default=None, help="open loop requests/s (default: closed loop)")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    body = Path(args.body).read_bytes() if args.body else b""
    headers = dict(h.split(":", 1) for h in args.header)
    raw = build_request(host, port, "POST" if body else "GET", url.path or "/", body,
                        {k.strip(): v.strip() for k, v in headers.items()})
    if args.rate:
        results = run(lambda: open_loop(host, port, [raw], phases=[("open", args.rate, args.duration)],
                                        timeout=args.timeout))
    else:
        results = [run(lambda: closed_loop(host, port, [raw], concurrency=args.concurrency,
                                           duration=args.duration, timeout=args.timeout))]
    for result in results:
        print(json.dumps(result.summary()))


if __name__ == "__main__":
    main()
