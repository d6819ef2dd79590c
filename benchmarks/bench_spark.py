"""Batch scoring on Spark ``local[2]`` beside the local engine, on the 1M-customer simulated log.

Run by hand (``make bench-spark`` or ``python benchmarks/bench_spark.py``); not part of the test suite.

Both engines score every customer of ``benchmarks/_data/log_1000000_0.parquet`` (the log of
``bench_core.py``, made if missing) with the same bundle (``bench_score.py``'s, trained on 50,000 of
its customers and cached in ``benchmarks/_data/``), each as ``crmml score`` in its own subprocess,
in the same run:

- ``--engine local``: DuckDB, one partition of up to 1M customers;
- ``--engine spark --spark-master local[2]``: a Spark session in the subprocess (JVM start-up
  included) with two executor threads and two Python workers.

Wall time is measured around each subprocess; customers/s is customers scored / wall time. The
two score files are then compared customer by customer (numbers to 1e-9, tiers and flags equal).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_score import (
    AS_OF,
    DATA_DIR,
    _crmml_command,
    _gb,
    _worker,
    make_log,
    measure,
    write_config,
)


def bundle_for(log: Path, n_train: int, transaction_model: str = "bg_nbd") -> Path:
    """``bench_score.py``'s cached bundle for ``log``, trained if missing."""
    bundle = DATA_DIR / f"bundle_{log.stem}_{n_train}_{transaction_model}"
    if not (bundle / "scorer.joblib").exists():
        print(f"training on the customers with id < {n_train:,} of {log.name} ...", flush=True)
        _worker("train", "--data", str(log), "--train-customers", str(n_train), "--config",
                str(write_config(transaction_model)), "--output", str(bundle))
    return bundle


def run_engine(engine: str, bundle: Path, log: Path, output: Path, master: str, driver_memory: str) -> dict:
    command = [*_crmml_command(), "score", "--model", str(bundle), "--transactions", str(log), "--as-of", AS_OF,
               "--output", str(output), "--engine", engine]
    env = dict(os.environ)
    if engine == "local":
        command += ["--customers-per-partition", "1000000"]
    else:
        command += ["--spark-master", master]
        env["PYSPARK_SUBMIT_ARGS"] = f"--driver-memory {driver_memory} pyspark-shell"
    print("$ " + " ".join(command[len(_crmml_command()):]), flush=True)
    result = measure(command, env=env)
    counts = [line for line in result["stdout"].splitlines() if line.startswith(("rows:", "customers:"))]
    print("\n".join(counts), flush=True)
    return {**result, "counts": counts}


def compare_outputs(local: Path, spark: Path) -> str:
    import numpy as np
    import pandas as pd

    a = pd.read_parquet(local).set_index("customer_id").sort_index()
    b = pd.read_parquet(spark).set_index("customer_id").sort_index()
    if not a.index.equals(b.index):
        return f"DIFFERENT customers: {len(a):,} local, {len(b):,} spark"
    worst = max(float(np.nanmax(np.abs(a[c].to_numpy() - b[c].to_numpy()), initial=0.0))
                for c in a.columns if a[c].dtype.kind == "f")
    same = all((a[c].to_numpy() == b[c].to_numpy()).all() for c in a.columns if a[c].dtype.kind != "f")
    return (f"{len(a):,} customers in both; largest difference of a number {worst:.1e}; "
            f"tiers, flags and reasons {'identical' if same else 'DIFFERENT'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-customers", type=int, default=50_000)
    parser.add_argument("--master", default="local[2]", help="Spark master of the Spark run (default local[2])")
    parser.add_argument("--driver-memory", default="4g", help="Spark driver memory (local mode: all of Spark)")
    parser.add_argument("--keep-output", action="store_true")
    args = parser.parse_args()

    log = make_log(args.customers, args.seed)
    bundle = bundle_for(log, args.train_customers)
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(log).metadata.num_rows
    print(f"\n== {args.customers:,} customers, {rows:,} rows ({log.name}), as of {AS_OF} ==", flush=True)
    outputs = {engine: DATA_DIR / f"scores_{args.customers}_{engine}_engine.parquet" for engine in ("local", "spark")}
    results = {engine: run_engine(engine, bundle, log, outputs[engine], args.master, args.driver_memory)
               for engine in ("local", "spark")}
    scored = int(results["local"]["counts"][1].split(" in = ")[1].split(" scored")[0].replace(",", ""))
    print("\n| engine | wall (s) | customers/s | time / local |")
    print("|---|---:|---:|---:|")
    for engine, label in (("local", "local (DuckDB, 1 partition)"), ("spark", f"spark {args.master}")):
        wall = results[engine]["wall_s"]
        print(f"| {label} | {wall:.1f} | {scored / wall:,.0f} | {wall / results['local']['wall_s']:.2f}x |")
    print(f"local engine peak RSS {_gb(results['local']['peak_rss_mb'])}; Spark's memory is the JVM's (driver memory "
          f"{args.driver_memory}), not measured here")
    print(compare_outputs(outputs["local"], outputs["spark"]))
    if not args.keep_output:
        for path in outputs.values():
            path.unlink(missing_ok=True)
            path.with_name(f"{path.stem}.rejected.csv").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
