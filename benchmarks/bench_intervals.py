"""Cost of the per-customer purchase distributions and intervals (issue 20, acceptance 3).

Run by hand (``python benchmarks/bench_intervals.py [--log PATH] [--draws 40]``); not part of the suite.

On the 1M-customer benchmark log of ``bench_core.py`` (``benchmarks/_data/log_1000000_0.parquet``,
simulated if missing): the calibration summary in weeks from daily periods, a model fitted on 50,000
customers, then, on all 1M summary rows and measured in the same run:

* the peer: the point predictions the scorer already makes (``predict_horizons``: P(alive), expected
  purchases and P(no purchase) at the horizon),
* ``purchase_distribution`` (the model's PMF: mean, P(no purchase), 80 % interval),
* ``predictive_intervals`` with ``--draws`` parameter draws (the mixture over draws),

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
from crmml.models.purchase_distribution import purchase_distribution

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
    parser.add_argument("--draws", type=int, default=40)
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
        draws = draw_parameters(model, args.draws, seed=0)
        peer = timed(lambda: model.predict_horizons(summary, (HORIZON,)))
        point = timed(lambda: purchase_distribution(model, summary, HORIZON))
        mixture = timed(lambda: predictive_intervals(model, summary, HORIZON, draws))
        print(f"\n{type(model).__name__} (reason for no draws: {draws.reason})")
        print(f"  {'':38s} {'seconds':>8s} {'us/customer':>12s} {'x peer':>7s}")
        for label, seconds in (("peer: predict_horizons", peer), ("purchase_distribution (point)", point),
                               (f"predictive_intervals ({draws.n_draws} draws)", mixture)):
            print(f"  {label:38s} {seconds:8.2f} {1e6 * seconds / n:12.2f} {seconds / peer:7.2f}")
        one = summary.iloc[[int(np.argmax(summary['frequency'].to_numpy()))]]  # the heaviest buyer
        typical = summary.iloc[[0]]
        for label, row in (("typical customer", typical), ("heaviest buyer", one)):
            single = [timed(lambda: predictive_intervals(model, row, HORIZON, draws)) for _ in range(200)]
            base = [timed(lambda: model.predict_horizons(row, (HORIZON,))) for _ in range(200)]
            print(f"  one {label}: predictive_intervals {1e3 * np.median(single):.3f} ms, "
                  f"predict_horizons {1e3 * np.median(base):.3f} ms")


if __name__ == "__main__":
    main()
