"""Online scoring: ``crmml serve`` vs ``mlflow models serve`` on the same registered model, over HTTP.

Run by hand (``python benchmarks/bench_serve.py [--quick] [--json results.json]``); not part of the
test suite. Everything binds 127.0.0.1; the servers are subprocesses, killed at the end whatever
happens; the whole run is bounded (``--time-limit``, default 8 minutes, 4 with ``--quick``).

1. **Setup** (in a temp dir, or ``--workdir`` to keep it and reuse it next time): the 1,500-customer
   simulation of ``tests/test_train_score.py`` (``seed=5``), trained and registered by ``crmml train``
   with that test's GOOD config into ``sqlite:///<workdir>/mlflow.db``; both servers serve
   ``models:/crmml-scorer/1``. Training takes about a minute and is not measured.
2. **Requests**, pre-encoded once, from the same simulated customers for both servers:
   single-customer requests (a pool of 200 customers, cycled) and 1,000-customer requests (3
   different batches). ``crmml serve`` gets the ``POST /v1/score`` JSON (transactions and
   attributes per customer); ``mlflow models serve`` gets ``POST /invocations`` with a
   ``dataframe_split`` of transaction rows, the attributes repeated on each row, and
   ``params.as_of``. Before measuring, one 1,000-customer batch is scored by both and the answers are
   compared (same customers, same tier, same predicted value): both servers do the same work.
3. **One server at a time** (2 cores: the servers would compete): start with ``--workers 2``, wait
   until ready, warm up, measure, stop. The load generator (``loadgen.py``: asyncio on uvloop, raw
   keep-alive HTTP/1.1, pre-built requests) runs in this process, at nice -10 while it measures
   (when allowed) so that a saturated server does not delay its clock. Its connections are spread
   evenly over the server's worker processes (the workers share one listening socket and do not
   take turns at accepting; which worker holds a connection is read from ``/proc``). Per phase, the
   cores used by the server (its whole process group), by the generator and by everything else on
   the machine are reported: "other" should be about 0, or the run was not alone.

Measurements (peer measured in the same run):

* single-customer requests, closed loop, 32 connections (``--concurrency``): throughput (responses
  200 per second), p50/p99 for both servers, and the ratio crmml / mlflow;
* 1,000-customer requests, closed loop, 2 connections (shorter): the same;
* crmml only, open loop at 200 requests/s for 20 s (single customer): p50/p99/p99.9, latency
  counted from each request's scheduled send time (so queueing shows);
* crmml only, overload: open loop at 0.5x the single-customer closed-loop capacity measured above
  for 10 s (the reference), then 2x for 10 s, then at once 0.5x again for 10 s; per phase: the share answered 200 vs 429/503, the p50/p99 of the
  200s and of the rejections, and the p99 of the 200s per second of schedule.

Targets (printed as PASS/FAIL):

* throughput >= 3x mlflow: crmml / mlflow responses per second, for single-customer *and*
  1,000-customer requests;
* p99 <= 10 ms at 200 rps: at least 99.9 % answered 200 and their p99 <= 10 ms;
* overload shed fast and recovered: in the 2x phase, no connection error or timeout, rejections
  (429/503) with p99 <= 50 ms, the 200s' p99 <= 500 ms and their rate >= 50 % of capacity (shedding
  keeps the goodput); in the 0.5x phase after it, >= 99 % answered 200 with p99 <= max(2x the
  reference phase's p99, that p99 + 20 ms, 10 ms).
"""

from __future__ import annotations

import _thread
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import loadgen  # this folder's module

AS_OF = "2025-06-30"
MODEL_URI = "models:/crmml-scorer/1"
GOOD = (HERE.parent / "models" / "small.yaml").read_text()  # the end-to-end tests' config
MLFLOW_COLUMNS = ["customer_id", "timestamp", "amount", "acquisition_channel", "region", "signup_date", "referred_by"]
ATTRIBUTES = ["acquisition_channel", "region", "signup_date", "referred_by"]

# Phase lengths in seconds: (default, --quick).
PLAN = {
    "warmup": (3, 2),
    "mlflow_single": (10, 4),
    "mlflow_batch": (10, 4),
    "crmml_single": (15, 5),
    "crmml_batch": (10, 4),
    "open_200": (20, 8),
    "overload_high": (10, 4),
    "overload_low": (10, 4),
}


class Watchdog:
    """At ``limit`` seconds: kill the running servers' process groups and interrupt the main thread
    (a KeyboardInterrupt, which asyncio lets through), so the run ends with what it measured."""

    def __init__(self, limit: float, running: list):
        self.limit, self.running, self.fired = limit, running, False
        self.timer = threading.Timer(limit, self._fire)
        self.timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        for server in list(self.running):
            server.kill()
        _thread.interrupt_main()


# --------------------------------------------------------------------------------------------------
# Setup: data, model, request bodies
# --------------------------------------------------------------------------------------------------


def _crmml_command() -> list[str]:
    script = Path(sys.executable).parent / "crmml"
    return [str(script)] if script.exists() else [sys.executable, "-m", "crmml.cli"]


def _env(**extra: str) -> dict:
    """This environment with the venv's scripts first on PATH (mlflow starts `uvicorn` by name) and no
    inherited CRMML_* setting, so the service runs with its defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMML_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def setup(workdir: Path) -> dict:
    """Simulate, write the inputs and train + register the model (skipped when ``workdir`` has one)."""
    import pandas as pd

    from crmml.data.simulate import simulate_customer_base

    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    sim = simulate_customer_base(1500, start="2023-01-01", end="2025-06-30", acquisition_end="2025-05-31", seed=5)
    customers = sim.customers[["customer_id", *ATTRIBUTES]]
    done = workdir / ".trained"
    if done.exists():
        print(f"reusing the model trained in {workdir} ({MODEL_URI})", flush=True)
    else:
        sim.transactions.to_parquet(workdir / "transactions.parquet")
        customers.to_csv(workdir / "customers.csv", index=False)
        (workdir / "good.yaml").write_text(GOOD)
        command = [*_crmml_command(), "train", "--transactions", str(workdir / "transactions.parquet"),
                   "--customers", str(workdir / "customers.csv"), "--as-of", AS_OF,
                   "--config", str(workdir / "good.yaml"), "--tracking-uri", tracking]
        print("$ " + " ".join(command), flush=True)
        started = time.perf_counter()
        result = subprocess.run(command, check=False, cwd=workdir, env=_env(), capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"crmml train failed ({result.returncode}):\n{result.stderr[-4000:]}")
        registered = [line for line in result.stdout.splitlines() if line.startswith("registered")]
        print(f"trained in {time.perf_counter() - started:.0f} s: {registered[0] if registered else '?'}", flush=True)
        done.touch()
    return {"tracking": tracking, "transactions": sim.transactions, "customers": pd.DataFrame(customers)}


def build_bodies(transactions, customers, *, n_single: int, n_batches: int, batch_size: int, seed: int = 0) -> dict:
    """Request bodies (bytes) for both servers: the same customers, the same transactions."""
    import numpy as np
    import pandas as pd

    attributes = {}
    for row in customers.itertuples(index=False):
        values = {"acquisition_channel": row.acquisition_channel, "region": row.region,
                  "signup_date": pd.Timestamp(row.signup_date).strftime("%Y-%m-%d")}
        values["referred_by"] = None if pd.isna(row.referred_by) else int(row.referred_by)  # null as for mlflow
        attributes[int(row.customer_id)] = values
    stamps = transactions["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy()
    history: dict[int, list[tuple[str, float]]] = {}
    for cid, stamp, amount in zip(transactions["customer_id"].to_numpy(), stamps, transactions["amount"].to_numpy()):
        history.setdefault(int(cid), []).append((stamp, round(float(amount), 2)))

    def crmml_body(ids) -> bytes:
        return json.dumps({"as_of": AS_OF, "customers": [
            {"customer_id": cid,
             "transactions": [{"timestamp": s.replace(" ", "T"), "amount": a} for s, a in history.get(cid, [])],
             "attributes": attributes[cid]} for cid in ids]}, separators=(",", ":")).encode()

    def mlflow_body(ids) -> bytes:
        data = []
        for cid in ids:
            a = attributes[cid]
            rows = history.get(cid) or [(None, None)]  # no purchase yet: one row with an empty timestamp
            data += [[cid, s, amount, a["acquisition_channel"], a["region"], a["signup_date"], a["referred_by"]]
                     for s, amount in rows]
        return json.dumps({"dataframe_split": {"columns": MLFLOW_COLUMNS, "data": data}, "params": {"as_of": AS_OF}},
                          separators=(",", ":")).encode()

    rng = np.random.default_rng(seed)
    ids = [int(c) for c in customers["customer_id"]]
    single = [int(c) for c in rng.choice(ids, size=n_single, replace=False)]
    batches = [sorted(int(c) for c in rng.choice(ids, size=batch_size, replace=False)) for _ in range(n_batches)]
    return {
        "crmml": {"single": [crmml_body([c]) for c in single], "batch": [crmml_body(b) for b in batches]},
        "mlflow": {"single": [mlflow_body([c]) for c in single], "batch": [mlflow_body(b) for b in batches]},
        "batch_ids": batches,
        "transactions_single": sum(len(history.get(c, [])) for c in single) / n_single,
        "transactions_batch": sum(len(history.get(c, [])) for c in batches[0]),
    }


# --------------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess in its own process group (uvicorn's workers included), logging to a file."""

    def __init__(self, name: str, command: list[str], env: dict, cwd: Path, port: int, ready_path: str,
                 workers: int):
        self.name, self.command, self.env, self.cwd, self.workers = name, command, env, cwd, workers
        self.port, self.ready_path = port, ready_path
        self.log_path = cwd / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> float:
        """Start and wait until ``ready_path`` answers 200; return the seconds it took."""
        print("$ " + " ".join(self.command), flush=True)
        log = self.log_path.open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (OSError, urllib.error.HTTPError):
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} before {self.ready_path} "
                                   f"answered 200:\n{self.log_tail()}")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"{self.name}: {self.ready_path} not 200 after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.25)

    def cpu_seconds(self) -> float:
        """User + system CPU of every live process of the server's process group (workers included),
        plus what its reaped children used (counted by the kernel into their parent)."""
        if self.process is None:
            return 0.0
        total = 0
        for pid in self._group():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        return total / os.sysconf("SC_CLK_TCK")

    def _group(self) -> list[str]:
        """The pids (as text) of the server's process group."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[2]) == self.process.pid:
                        pids.append(entry)
                except OSError:
                    continue
        return pids

    def owners(self, local_ports: list[int]) -> dict[int, int]:
        """Which worker process holds the server end of each client connection (by the client's port):
        the socket inode from /proc/net/tcp, found among the group's open files."""
        wanted, inodes = set(local_ports), {}
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == self.port and int(fields[2].rsplit(":", 1)[1], 16) in wanted:
                inodes[f"socket:[{fields[9]}]"] = int(fields[2].rsplit(":", 1)[1], 16)
        found = {}
        for pid in self._group():
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    except OSError:
                        continue
                    if link in inodes:
                        found[inodes[link]] = int(pid)
            except OSError:
                continue
        return found

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL to the whole process group, without waiting (the watchdog's way)."""
        process = self.process
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 15 s."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # workers left behind in the group
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process = None


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def crmml_server(workdir: Path, tracking: str, workers: int) -> Server:
    port = free_port()
    command = [*_crmml_command(), "serve", "--model", MODEL_URI, "--tracking-uri", tracking, "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers)]
    return Server("crmml", command, _env(), workdir, port, "/health/ready", workers)


def mlflow_server(workdir: Path, tracking: str, workers: int) -> Server:
    port = free_port()
    command = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", MODEL_URI,
               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return Server("mlflow", command, _env(MLFLOW_TRACKING_URI=tracking), workdir, port, "/ping", workers)


PATHS = {"crmml": "/v1/score", "mlflow": "/invocations"}


def post(server: Server, body: bytes, timeout: float = 120.0) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{PATHS[server.name]}", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def predictions(server: Server, body: bytes) -> dict:
    """customer_id -> (tier, predicted_value) from one scored request, or raise with the answer."""
    status, _, raw = post(server, body)
    if status != 200:
        raise RuntimeError(f"{server.name} answered {status}: {raw[:500]!r}")
    data = json.loads(raw)
    rows = data["predictions"] if server.name == "mlflow" else data["customers"]
    return {str(r["customer_id"]): (r["tier"], r["predicted_value"]) for r in rows}


def agreement(ours: dict, theirs: dict) -> dict:
    common = ours.keys() & theirs.keys()
    same_tier = sum(ours[c][0] == theirs[c][0] for c in common)
    diffs = [abs(ours[c][1] - theirs[c][1]) / max(1e-9, abs(theirs[c][1])) for c in common
             if ours[c][1] is not None and theirs[c][1] is not None]
    return {"crmml_customers": len(ours), "mlflow_customers": len(theirs), "common": len(common),
            "same_tier": same_tier, "max_rel_diff_predicted_value": max(diffs) if diffs else None}


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------


GENERATOR_NICE = -10


def run_load(factory):
    """``loadgen.run`` at a higher CPU priority (nice -10, when allowed), back to normal after.

    The 2 cores are shared with the server's workers: at normal priority, a saturated server
    delays the generator's wake-ups by tens of milliseconds, and that lateness would be counted as
    server latency. The generator uses a few percent of a core, so the priority takes next to
    nothing from the server; the servers (started at normal priority) are not affected otherwise.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, 0, GENERATOR_NICE)
    except OSError:
        pass
    try:
        return loadgen.run(factory)
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        except OSError:
            pass


def generator_priority() -> str:
    """Whether this process may raise its priority for the measurements (recorded in the results)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, GENERATOR_NICE)
        os.setpriority(os.PRIO_PROCESS, 0, 0)
        return f"nice {GENERATOR_NICE} while measuring"
    except OSError:
        return "normal (not allowed to raise it)"


def requests_for(server: Server, bodies: list[bytes]) -> list[bytes]:
    return [loadgen.build_request("127.0.0.1", server.port, "POST", PATHS[server.name], b) for b in bodies]


def closed(server: Server, name: str, bodies: list[bytes], *, concurrency: int, duration: float,
           timeout: float) -> dict:
    raw = requests_for(server, bodies)
    cpu0, busy0, wall0 = server.cpu_seconds(), busy_cpu_seconds(), time.perf_counter()
    result = run_load(lambda: loadgen.closed_loop("127.0.0.1", server.port, raw, concurrency=concurrency,
                                                     duration=duration, timeout=timeout, name=name,
                                                     balance=server.owners, workers=server.workers))
    summary = result.summary()
    summary.update(server=server.name, load=f"closed, {concurrency} conn, {duration:g} s",
                   **_cpu_shares(server, cpu0, busy0, time.perf_counter() - wall0, result.generator_cpu_s))
    _show_progress(summary)
    return summary


def open_phases(server: Server, bodies: list[bytes], phases: list[tuple[str, float, float]], *,
                timeout: float = 10.0) -> list[dict]:
    raw = requests_for(server, bodies)
    cpu0, busy0, wall0 = server.cpu_seconds(), busy_cpu_seconds(), time.perf_counter()
    results = run_load(lambda: loadgen.open_loop("127.0.0.1", server.port, raw, phases=phases, timeout=timeout,
                                                    balance=server.owners, workers=server.workers))
    shares = _cpu_shares(server, cpu0, busy0, time.perf_counter() - wall0, sum(r.generator_cpu_s for r in results))
    summaries = []
    for (name, rate, seconds), result in zip(phases, results):
        summary = result.summary(timeline_step_s=1.0)
        summary.update(server=server.name, load=f"open, {rate:,.0f} req/s, {seconds:g} s", rate=rate,
                       **shares)  # CPU over all the phases of this schedule
        _show_progress(summary)
        summaries.append(summary)
    return summaries


def _cpu_shares(server: Server, cpu0: float, busy0: float, wall: float, generator: float) -> dict:
    """Cores used by the server, by this process (the generator) and by everything else, over ``wall``."""
    server_cpu = server.cpu_seconds() - cpu0
    other = busy_cpu_seconds() - busy0 - server_cpu - generator
    return {"server_cpu_cores": round(server_cpu / wall, 2), "generator_cpu_cores": round(generator / wall, 2),
            "other_cpu_cores": round(max(0.0, other) / wall, 2)}


def _show_progress(s: dict) -> None:
    print(f"  {s['name']}: {s['answered']:,} answered {s['statuses']}, {s['ok_per_s']:,.1f} ok/s, "
          f"p50 {_ms(s['p50_ms'])} p99 {_ms(s['p99_ms'])} ms; cores: server {s['server_cpu_cores']}, generator "
          f"{s['generator_cpu_cores']}, other {s['other_cpu_cores']}", flush=True)


def _ms(value) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "inf"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def warm_up(server: Server, bodies: dict, seconds: float) -> None:
    """Unrecorded: a few batch requests, then single-customer requests on 2 connections."""
    for body in bodies["batch"][:2]:
        post(server, body)
    raw = requests_for(server, bodies["single"])
    run_load(lambda: loadgen.closed_loop("127.0.0.1", server.port, raw, concurrency=2, duration=seconds,
                                            balance=server.owners, workers=server.workers))


def measure_mlflow(server: Server, bodies: dict, plan: dict, results: dict, args) -> None:
    results["startup_s"]["mlflow"] = round(server.start(), 1)
    print(f"mlflow models serve ready in {results['startup_s']['mlflow']} s (port {server.port})", flush=True)
    results["_predictions_mlflow"] = predictions(server, bodies["batch"][0])
    warm_up(server, bodies, plan["warmup"])
    time.sleep(1)
    results["mlflow_single"] = closed(server, "single", bodies["single"], concurrency=args.concurrency,
                                      duration=plan["mlflow_single"], timeout=60)
    time.sleep(1)
    results["mlflow_batch"] = closed(server, "1,000 customers", bodies["batch"], concurrency=2,
                                     duration=plan["mlflow_batch"], timeout=120)


def measure_crmml(server: Server, bodies: dict, plan: dict, results: dict, args) -> None:
    results["startup_s"]["crmml"] = round(server.start(), 1)
    print(f"crmml serve ready in {results['startup_s']['crmml']} s (port {server.port})", flush=True)
    status, headers, raw = post(server, bodies["single"][0])
    results["crmml_sample"] = {"status": status, "x_model_version": headers.get("x-model-version"),
                               "body": raw[:600].decode(errors="replace")}
    try:
        results["_predictions_crmml"] = predictions(server, bodies["batch"][0])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        results["agreement"] = {"error": f"crmml's answer: {str(error)[:500]}"}
    warm_up(server, bodies, plan["warmup"])
    time.sleep(1)
    single = closed(server, "single", bodies["single"], concurrency=args.concurrency, duration=plan["crmml_single"],
                    timeout=30)
    results["crmml_single"] = single
    time.sleep(1)
    results["crmml_batch"] = closed(server, "1,000 customers", bodies["batch"], concurrency=2,
                                    duration=plan["crmml_batch"], timeout=60)
    time.sleep(1)
    results["open_200"] = open_phases(server, bodies["single"], [("200 req/s", args.rate, plan["open_200"])])[0]
    time.sleep(2)
    capacity = single["ok_per_s"]
    if capacity <= 0:
        raise RuntimeError("crmml answered no single-customer request with 200: no capacity to overload")
    high = min(2 * capacity, args.max_rate)
    results["capacity_per_s"] = capacity
    results["overload"] = open_phases(server, bodies["single"], [
        ("0.5x capacity, before", 0.5 * capacity, plan["overload_low"]), ("2x capacity", high, plan["overload_high"]),
        ("0.5x capacity, after", 0.5 * capacity, plan["overload_low"])])


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _statuses(s: dict) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in s["statuses"].items()) or "-"


def _share(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _phases(results: dict) -> list[dict]:
    keys = ("mlflow_single", "mlflow_batch", "crmml_single", "crmml_batch", "open_200")
    return [results[k] for k in keys if k in results] + results.get("overload", [])


def targets(results: dict, args) -> dict:
    out = {}
    ratios = [results.get(f"ratio_{k}") for k in ("single", "batch")]
    out["throughput"] = {"pass": all(r is not None and r >= 3 for r in ratios),
                         "single": ratios[0], "batch": ratios[1]}
    at200 = results.get("open_200")
    out["p99_at_200"] = {"pass": bool(at200 and at200["ok_share"] >= 0.999 and at200["p99_ms"] is not None
                                      and at200["p99_ms"] <= args.p99_target_ms),
                         "p99_ms": at200 and at200["p99_ms"], "ok_share": at200 and at200["ok_share"]}
    overload = results.get("overload")
    if overload and at200:
        before, high, low = overload
        capacity = results["capacity_per_s"]
        failures = high["statuses"].get("error", 0) + high["statuses"].get("timeout", 0)
        shed = (failures == 0 and (high["rejected_p99_ms"] is None or high["rejected_p99_ms"] <= 50)
                and high["p99_ms"] is not None and high["p99_ms"] <= 500 and high["ok_per_s"] >= 0.5 * capacity)
        bound = max(2 * (before["p99_ms"] or 0), (before["p99_ms"] or 0) + 20, args.p99_target_ms)
        recovered = low["ok_share"] >= 0.99 and low["p99_ms"] is not None and low["p99_ms"] <= bound
        out["overload"] = {"pass": bool(shed and recovered), "shed_fast": bool(shed), "recovered": bool(recovered),
                           "recovery_bound_ms": bound}
    else:
        out["overload"] = {"pass": False, "shed_fast": None, "recovered": None}
    return out


def report(results: dict, args) -> str:
    lines = ["", ("| measurement | server | load | answered (statuses) | 200s/s | p50 ms | p99 ms | p99.9 ms "
                  "| crmml / mlflow | cores: server / generator / other |"),
             "|---|---|---|---|---:|---:|---:|---:|---:|---|"]

    def row(label, s, ratio=""):
        lines.append(f"| {label} | {s['server']} | {s['load']} | {s['answered']:,} ({_statuses(s)}) "
                     f"| {s['ok_per_s']:,.1f} | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} | {_ms(s['p999_ms'])} "
                     f"| {ratio} | {s['server_cpu_cores']} / {s['generator_cpu_cores']} / {s['other_cpu_cores']} |")

    for key, label in (("single", "1 customer / request"), ("batch", "1,000 customers / request")):
        ratio = results.get(f"ratio_{key}")
        for server in ("crmml", "mlflow"):
            if f"{server}_{key}" in results:
                shown = f"**{ratio:.2f}x**" if server == "crmml" and ratio is not None else ""
                row(label, results[f"{server}_{key}"], shown)
    if "open_200" in results:
        row(f"open loop at {args.rate:g} req/s", results["open_200"])
    for phase in results.get("overload", []):
        row(f"overload: {phase['name']}", phase)

    if results.get("overload"):
        capacity = results["capacity_per_s"]
        lines += ["", (f"overload (single-customer capacity {capacity:,.1f} req/s, closed loop above; "
                       "latency from the scheduled send time):"), "",
                  ("| phase | rate (req/s) | sent | 200 | 429/503 | other | 200s p50 / p99 ms | "
                   "429/503 p50 / p99 ms | 200s/s |"), "|---|---:|---:|---:|---:|---:|---|---|---:|"]
        for p in results["overload"]:
            other = 1 - p["ok_share"] - p["rejected_share"] if p["answered"] else 0
            lines.append(f"| {p['name']} | {p['rate']:,.0f} | {p['sent']:,} | {_share(p['ok_share'])} "
                         f"| {_share(p['rejected_share'])} | {_share(other)} | {_ms(p['p50_ms'])} / {_ms(p['p99_ms'])} "
                         f"| {_ms(p['rejected_p50_ms'])} / {_ms(p['rejected_p99_ms'])} | {p['ok_per_s']:,.1f} |")
        lines.append("")
        for p in results["overload"]:
            cells = " ".join(_ms(w["p99_ms"]) + ("" if w["ok_share"] in (None, 1.0) else f" ({w['ok_share']:.0%})")
                             for w in p["timeline"])
            lines.append(f"p99 of the 200s (ms) per second, {p['name']} (share 200 when below 100 %): {cells}")
        if "open_200" in results:
            lines.append(f"(p99 at {args.rate:g} req/s: {_ms(results['open_200']['p99_ms'])} ms)")
    lags = [(s["name"], s.get("dispatch_lag_p99_ms")) for s in [results.get("open_200"), *results.get("overload", [])]
            if s and s.get("dispatch_lag_p99_ms") is not None]
    if lags:
        lines.append("generator lateness (p99, ms; part of the open-loop latencies above): "
                     + ", ".join(f"{name} {_ms(lag)}" for name, lag in lags))

    t = results["targets"]

    def verdict(ok) -> str:
        return "PASS" if ok else "FAIL"

    r = t["throughput"]
    ratios = ", ".join(f"{k} {v:.2f}x" if v is not None else f"{k} -" for k, v in
                       (("1 customer", r["single"]), ("1,000 customers", r["batch"])))
    o = t["overload"]
    bound = f" (p99 bound {o['recovery_bound_ms']:.1f} ms)" if "recovery_bound_ms" in o else ""
    lines += ["", (f"targets: throughput >= 3x mlflow: {verdict(r['pass'])}; "
                   f"p99 <= {args.p99_target_ms:g} ms at {args.rate:g} rps: {verdict(t['p99_at_200']['pass'])}; "
                   f"overload shed fast and recovered: {verdict(o['pass'])}"),
              (f"  (throughput ratios: {ratios}; p99 at {args.rate:g} rps: {_ms(t['p99_at_200']['p99_ms'])} ms; "
               f"overload: shed fast {o['shed_fast']}, recovered {o['recovered']}{bound})")]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases: a smoke run of about a minute "
                        "plus training (about a minute; reused with --workdir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the trained model here and reuse it on later runs (default: a temp dir, deleted)")
    parser.add_argument("--servers", default="crmml,mlflow", help="which to run (default crmml,mlflow)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per server (default 2)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="connections of the single-customer closed loop, both servers (default 32)")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop rate of the p99 target (default 200)")
    parser.add_argument("--p99-target-ms", type=float, default=10.0)
    parser.add_argument("--max-rate", type=float, default=5000.0,
                        help="cap of the overload rate, the generator's limit (default 5000 req/s)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds for the whole run, servers killed past it (default 480, 240 with --quick)")
    args = parser.parse_args()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    plan = {k: v[1 if args.quick else 0] for k, v in PLAN.items()}
    limit = args.time_limit or (240 if args.quick else 480)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally below: servers stopped
    started = time.perf_counter()

    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench_serve_")) if temporary else args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"settings": {"quick": args.quick, "plan_s": plan, "workers": args.workers, "rate": args.rate,
                                  "model_uri": MODEL_URI, "servers": servers},
                     "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                     "platform": platform.platform(), "generator_priority": generator_priority()},
                     "startup_s": {}, "problems": []}
    running: list[Server] = []
    watchdog = Watchdog(limit, running)
    watchdog.timer.start()
    try:
        from importlib.metadata import version

        results["environment"].update({name: version(name) for name in ("crmml", "mlflow", "fastapi", "uvicorn")})
        data = setup(workdir)
        bodies = build_bodies(data["transactions"], data["customers"], n_single=200, n_batches=3, batch_size=1000)
        sizes = {s: {k: sum(map(len, v)) // len(v) for k, v in bodies[s].items()} for s in ("crmml", "mlflow")}
        results["body_bytes"] = sizes
        print(f"bodies: 200 single-customer (mean {bodies['transactions_single']:.1f} transactions; crmml "
              f"{sizes['crmml']['single']:,} B, mlflow {sizes['mlflow']['single']:,} B), 3 x 1,000 customers "
              f"({bodies['transactions_batch']:,} transactions; crmml {sizes['crmml']['batch']:,} B, mlflow "
              f"{sizes['mlflow']['batch']:,} B)", flush=True)
        for name in servers:
            server = (mlflow_server if name == "mlflow" else crmml_server)(workdir, data["tracking"], args.workers)
            running.append(server)
            try:
                print(f"\n== {name} ==", flush=True)
                if name == "mlflow":
                    measure_mlflow(server, bodies["mlflow"], plan, results, args)
                else:
                    measure_crmml(server, bodies["crmml"], plan, results, args)
            except (RuntimeError, OSError, KeyError, ValueError) as error:
                message = f"{name}: {type(error).__name__}: {error}"
                print(f"PROBLEM {message}", flush=True)
                results["problems"].append(message[:4000])
            finally:
                if name == "crmml":
                    results["crmml_log_tail"] = server.log_tail(15)
                server.stop()
                running.remove(server)
    except KeyboardInterrupt:
        if not watchdog.fired:
            raise
        message = f"over the {limit:.0f} s time limit: servers killed, the run stopped there"
        results["problems"].append(message)
        print(f"PROBLEM {message}", flush=True)
    finally:
        watchdog.timer.cancel()
        for server in running:
            server.stop()
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)

    for key in ("single", "batch"):
        ours, theirs = results.get(f"crmml_{key}"), results.get(f"mlflow_{key}")
        if ours and theirs and theirs["ok_per_s"]:
            results[f"ratio_{key}"] = round(ours["ok_per_s"] / theirs["ok_per_s"], 3)
    ours, theirs = results.pop("_predictions_crmml", None), results.pop("_predictions_mlflow", None)
    if ours is not None and theirs is not None:
        results["agreement"] = agreement(ours, theirs)
    results["targets"] = targets(results, args)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print(report(results, args))
    if "agreement" in results:
        print(f"same work (one 1,000-customer batch scored by both): {results['agreement']}")
    busiest = max((s.get("other_cpu_cores", 0) for s in _phases(results)), default=0)
    if busiest > 0.2:
        print(f"warning: other processes used up to {busiest} cores during a phase: the machine was not quiet")
    for problem in results["problems"]:
        print(f"problem: {problem.splitlines()[0]}")
    print(f"wall time {results['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
