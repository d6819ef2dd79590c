"""Generate a large simulated transaction log (default about 100M rows) as a directory of Parquet files.

Run by hand, not part of the test suite::

    python benchmarks/make_large_log.py --rows 100000000 --output benchmarks/_data/log_100m --seed 0

The log is the benchmark log of ``bench_core.py`` made larger: the same BG/NBD + Gamma-Gamma
parameters (CDNOW's with ``r = 0.65``) over the same three years, about 6.1 rows per customer, so
100M rows are about 16.3M customers: the scale the batch scorer's memory target is set for
(millions of customers with a handful of rows each, as in retail, rather than few customers with
long histories).

Customers are simulated in chunks of ``--chunk-customers`` (default 1M: about 6M rows, well under 1
GB of memory), one file ``part-NNNNN.parquet`` per chunk, until ``--rows`` rows are written; the
last chunk is cut after the customer holding row ``--rows`` (no customer is split, so the total
exceeds ``--rows`` by at most that customer's remaining rows). Chunk ``c``'s ids start where the
previous chunk's end and is drawn with child ``c`` of ``numpy.random.SeedSequence(seed)`` (the
seeding of :func:`crmml.data.simulate.write_simulated_parquet`), so chunks are independent and the
files depend only on the arguments. The last chunks are sized to the rows still needed, with 3 % to
spare (the ids of customers cut from the last one are left unused). Columns: ``customer_id``
(int64), ``timestamp`` (timestamp[us]) and ``amount`` (float64). Each file is written under a
temporary name and renamed, so an interrupted run leaves only whole files; rerun into an empty
directory.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crmml.data.simulate import SimulationParams, simulate_transactions

START, END = "2023-01-01", "2025-12-31"  # as in bench_core.py
PARAMS = SimulationParams(r=0.65)  # as in bench_core.py: about 6 transactions per customer
ROWS_PER_CUSTOMER = 6.12  # measured on the 1M-customer benchmark log; only for the progress lines


def write_log(rows: int, output: Path, seed: int, chunk_customers: int) -> int:
    """Write the log; return the number of rows written."""
    if output.exists() and any(output.glob("part-*.parquet")):
        raise SystemExit(f"{output} already holds part-*.parquet files; choose an empty directory.")
    output.mkdir(parents=True, exist_ok=True)
    expected_files = math.ceil(rows / ROWS_PER_CUSTOMER / chunk_customers)
    print(f"~{rows / ROWS_PER_CUSTOMER:,.0f} customers in ~{expected_files} file(s)", flush=True)
    root = np.random.SeedSequence(seed)
    written, chunk, first_id, started = 0, 0, 0, time.perf_counter()
    while written < rows:
        (chunk_seed,) = root.spawn(1)  # successive spawns give children 0, 1, 2, ...
        # a full chunk, or (near the end) the customers still needed with 3 % to spare
        size = min(chunk_customers, math.ceil((rows - written) / ROWS_PER_CUSTOMER * 1.03) + 100)
        frame = simulate_transactions(size, params=PARAMS, start=START, end=END, seed=chunk_seed).transactions
        if written + len(frame) > rows:  # the last chunk: stop after the customer holding row `rows`
            ids = frame["customer_id"].to_numpy()
            frame = frame[ids <= ids[rows - written - 1]]
        frame["customer_id"] += first_id
        first_id += size
        path = output / f"part-{chunk:05d}.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        written += len(frame)
        chunk += 1
        elapsed = time.perf_counter() - started
        print(f"  file {chunk}/~{expected_files}: {written:,} rows, {elapsed:.1f} s, "
              f"{written / elapsed / 1e6:.2f}M rows/s", flush=True)
        del frame
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000_000, help="target number of rows (default 100M)")
    parser.add_argument("--output", type=Path, required=True, help="directory for the part-*.parquet files")
    parser.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    parser.add_argument("--chunk-customers", type=int, default=1_000_000, help="customers per file (default 1M)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.chunk_customers < 1 or args.seed < 0:
        parser.error("--rows and --chunk-customers must be positive and --seed non-negative")
    started = time.perf_counter()
    written = write_log(args.rows, args.output, args.seed, args.chunk_customers)
    elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in args.output.glob("part-*.parquet"))
    print(f"wrote {written:,} rows to {args.output} ({size / 1e6:,.0f} MB) in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
