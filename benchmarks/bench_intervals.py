"""Cost of the per-customer purchase distributions and intervals (issue 20, acceptance 3).

Run by hand (``python benchmarks/bench_intervals.py [--log PATH] [--draws 40]``); not part of the suite.

On the 1M-customer benchmark log of ``bench_core.py`` (``benchmarks/_data/log_1000000_0.parquet``,
simulated if missing): the calibration summary in weeks from daily periods, a model fitted on 50,000
customers, then, on all 1M summary rows and measured in the same run:

* the peer: the point predictions the scorer already makes (``predict_horizons``: P(alive), expected
  purchases and P(no purchase) at the horizon),
* ``predictive_intervals`` (P(no purchase), the 80 % purchase interval) with each of ``--draws``
  parameter draws (1: the point estimate's own PMF; more: the mixture over draws),

printing seconds, microseconds per customer and the ratio to the peer; then the time of one
single-customer call (median of 200). The issue's targets: the new columns add at most 20 % to
``crmml score`` on 1M customers (about 16 s) and at most 0.3 ms to a single-customer request.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crmml.data import rfm_summary
from crmml.data.simulate import simulate_transactions
from crmml.models import BetaGeo, ModifiedBetaGeo, ParetoNBD
from crmml.models.parameter_uncertainty import draw_parameters, predictive_intervals

HORIZON = 52.0
DEFAULT_LOG = Path(__file__).parent / "_data" / "log_1000000_0.parquet"


def summary_of(path: Path | None, customers: int) -> pd.DataFrame:
    if path is not None and path.exists():
        log = pd.read_parquet(path)
    else:
        log = simulate_transactions(customers, start="2023-01-01", end="2025-12-31", seed=0).transactions
    summary = rfm_summary(log, freq="D", freq_multiplier=7)
    return summary[["frequency", "recency", "T"]]


def timed(function, repeat: int = 1) -> float:
    best = np.inf
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, default=DEFAULT_LOG)
    parser.add_argument("--customers", type=int, default=1_000_000, help="simulated when --log is missing")
    parser.add_argument("--draws", type=int, nargs="+", default=[1, 10, 40])
    parser.add_argument("--models", default="bg,pareto")
    args = parser.parse_args()

    started = time.perf_counter()
    summary = summary_of(args.log, args.customers)
    n = len(summary)
    distinct = len(summary.drop_duplicates())
    print(f"{n:,} customers, {distinct:,} distinct (frequency, recency, T) rows, "
          f"{len(summary[['frequency', 'T']].drop_duplicates()):,} distinct (frequency, T) "
          f"({time.perf_counter() - started:.1f} s to summarise)")
    classes = {"bg": BetaGeo, "mbg": ModifiedBetaGeo, "pareto": ParetoNBD}
    for name in args.models.split(","):
        model = classes[name]().fit(summary.sample(50_000, random_state=0))
        peer = timed(lambda: model.predict_horizons(summary, (HORIZON,)))
        print(f"\n{type(model).__name__}")
        print(f"  {'':40s} {'seconds':>8s} {'us/customer':>12s} {'x peer':>7s}")
        rows = [("peer: predict_horizons", peer)]
        for n_draws in args.draws:
            draws = draw_parameters(model, n_draws, seed=0)
            label = f"predictive_intervals ({draws.n_draws} draw{'s' if draws.n_draws > 1 else ''})"
            rows.append((label, timed(lambda: predictive_intervals(model, summary, HORIZON, draws))))
        for label, seconds in rows:
            print(f"  {label:40s} {seconds:8.2f} {1e6 * seconds / n:12.2f} {seconds / peer:7.2f}")
        heaviest = summary.iloc[[int(np.argmax(summary["frequency"].to_numpy()))]]
        for label, row in (("typical customer", summary.iloc[[0]]), ("heaviest buyer", heaviest)):
            base = np.median([timed(lambda: model.predict_horizons(row, (HORIZON,))) for _ in range(200)])
            line = f"  one {label}: predict_horizons {1e3 * base:.3f} ms"
            for n_draws in args.draws:
                draws = draw_parameters(model, n_draws, seed=0)
                single = np.median([timed(lambda: predictive_intervals(model, row, HORIZON, draws)) for _ in range(200)])
                line += f", predictive_intervals ({draws.n_draws}) {1e3 * single:.3f} ms"
            print(line)


if __name__ == "__main__":
    main()
