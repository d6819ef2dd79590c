"""Training at scale: ``crmml train`` on 50,000 and on 1,000,000 customers of the benchmark log.

Run by hand (``python benchmarks/bench_train.py [--customers 50000 1000000] [--baseline REV]``); not
part of the test suite.

The log is ``bench_core.py``'s 1M-customer simulation (6.1M rows, three years, as of 2025-12-31); the
first ``n`` customer ids are a random sample (customers are iid). Each run is ``crmml train`` as a
subprocess with ``models/default.yaml`` (Pareto/NBD, the logistic and boosted churn learners, the
Poisson GLM and boosted value learners, the three BTYD baselines) and a SQLite MLflow in a temporary
folder, so the time includes the backtest, the MLflow logging and the model report. Wall time is
measured around the subprocess; peak RSS is the largest ``ru_maxrss`` of the process and its children
(``os.wait4``).

``--baseline REV`` also runs the same command on the code of git revision ``REV`` (checked out into a
temporary worktree and put first on ``PYTHONPATH``) in the same run, the peer the ratios compare with.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA_DIR = HERE / "_data"
AS_OF = "2025-12-31"


def sample_log(n_customers: int) -> Path:
    """The first ``n_customers`` ids of the 1M-customer benchmark log, as Parquet (cached)."""
    import pyarrow.parquet as pq

    sys.path.insert(0, str(HERE))
    from bench_core import make_log

    path = DATA_DIR / f"train_log_{n_customers}.parquet"
    if not path.exists():
        full = make_log(1_000_000, 0)
        table = pq.read_table(full, filters=[("customer_id", "<", n_customers)])
        pq.write_table(table, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return path


def run_train(log: Path, *, source: Path | None) -> dict:
    """``crmml train`` on ``log`` in a subprocess; wall time, peak RSS and exit code."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source / "src")
    with tempfile.TemporaryDirectory(prefix="crmml-bench-train-") as work:
        command = [sys.executable, "-m", "crmml.cli", "train", "--transactions", str(log), "--as-of", AS_OF,
                   "--config", str((source or REPO) / "models" / "default.yaml"),  # each tree's own keys
                   "--tracking-uri", f"sqlite:///{work}/mlflow.db", "--bundle", f"{work}/bundle"]
        with tempfile.TemporaryFile("w+") as out:
            started = time.perf_counter()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work)
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - started
            out.seek(0)
            text = out.read()
    shipped = [line for line in text.splitlines() if line.startswith("churn: shipped")]
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "exit": os.waitstatus_to_exitcode(status),
            "shipped": shipped[0] if shipped else text[-400:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[50_000, 1_000_000])
    parser.add_argument("--baseline", default=None, help="git revision to time in the same run (e.g. 0cd36e8)")
    args = parser.parse_args()
    baseline = None
    with tempfile.TemporaryDirectory(prefix="crmml-baseline-") as folder:
        if args.baseline:
            baseline = Path(folder) / "tree"
            subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline], cwd=REPO,
                           check=True, capture_output=True)
        try:
            print(f"cores: {len(os.sched_getaffinity(0))}")
            print("| customers | code | wall (s) | peak RSS (MB) | exit | shipped |")
            print("|---:|---|---:|---:|---:|---|")
            for n in args.customers:
                log = sample_log(n)
                runs = [("this tree", None)] + ([(args.baseline, baseline)] if baseline is not None else [])
                results = {}
                for label, source in runs:
                    results[label] = result = run_train(log, source=source)
                    print(f"| {n:,} | {label} | {result['wall_s']:.1f} | {result['peak_rss_mb']:.0f} | "
                          f"{result['exit']} | {result['shipped']} |", flush=True)
                if baseline is not None:
                    ratio = results[args.baseline]["wall_s"] / results["this tree"]["wall_s"]
                    print(f"| {n:,} | speed-up | {ratio:.2f}x | | | |", flush=True)
        finally:
            if baseline is not None:
                subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=REPO,
                               capture_output=True)


if __name__ == "__main__":
    main()
