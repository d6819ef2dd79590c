"""One customer through ``Scorer.score``: the array-native core against the pre-issue-16 core.

Run by hand (``python benchmarks/bench_one_customer.py``); not part of the test suite. A scorer is
fitted once on a simulated base of 3,000 customers with a customer table (BG/NBD, logistic churn and
Poisson GLM value learners, the lean config of ``bench_score.py``) and cached in
``benchmarks/_data/``. Then one customer (a repeat buyer with 6 transactions and a table row:
channel, region, sign-up date, referrer, cost to serve) is scored ``--repeat`` times by the current
core and by the old one (``tests/legacy_scoring.py``, the equality oracle), interleaved, in this
process, from the service's in-memory log (:class:`~crmml.data.in_memory.InMemoryTransactions`; a
DataFrame would add DuckDB's query planning, the same for both) and a one-row customer table; the script prints the median and 90th percentile of each and their ratio. Target (issue
16): median <= 1.5 ms for the current core.

``--profile`` prints where the current core's time goes (cProfile, cumulative).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the old core, kept as the tests' oracle

from legacy_scoring import legacy_score  # noqa: E402

from crmml.customer_model import ModelConfig  # noqa: E402
from crmml.data.in_memory import InMemoryTransactions  # noqa: E402
from crmml.data.simulate import simulate_customer_base  # noqa: E402
from crmml.scorer import Scorer, ScorerConfig  # noqa: E402
from crmml.uncertainty import UNCERTAINTY_NUMBERS, UncertaintyConfig  # noqa: E402

BUNDLE = HERE / "_data" / "one_customer_scorer"
AS_OF = pd.Timestamp("2025-06-30")
COLUMNS = ["customer_id", "acquisition_channel", "region", "signup_date", "referred_by"]


def _base():
    sim = simulate_customer_base(3000, start="2023-01-01", end="2025-06-30", acquisition_end="2025-05-31", seed=3)
    customers = sim.customers[COLUMNS].copy()
    customers["cost_to_serve"] = 5.0
    return sim.transactions, customers


def _scorer(transactions, customers) -> Scorer:
    if (BUNDLE / "scorer.joblib").is_file():
        return Scorer.load(BUNDLE)
    config = ScorerConfig(model=ModelConfig(churn_learners=("logistic",), value_learners=("poisson_glm",),
                                            transaction_model="bg_nbd"), baseline_models=("bg_nbd",))
    scorer = Scorer(config).fit(transactions, as_of=AS_OF, customers=customers)
    scorer.save(BUNDLE)
    return scorer


def _timings(function, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        out.append((time.perf_counter() - started) * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    transactions, customers = _base()
    scorer = _scorer(transactions, customers)
    counts = transactions.groupby("customer_id").size()
    customer = counts.index[counts.to_numpy() == 6][0]
    frame = transactions[transactions["customer_id"] == customer].reset_index(drop=True)
    rows = InMemoryTransactions.from_arrays(frame["customer_id"].to_numpy(),  # the service's log
                                            frame["timestamp"].to_numpy().astype("datetime64[us]"),
                                            frame["amount"].to_numpy())
    table = customers[customers["customer_id"] == customer].reset_index(drop=True)

    without_columns = Scorer.load(BUNDLE)  # the same model with ``uncertainty.columns: false``
    without_columns.config = dataclasses.replace(without_columns.config,
                                                 uncertainty=UncertaintyConfig(columns=False))
    without_columns.__dict__.pop("_score_uncertainty", None)  # made from the config on first use

    def current():
        return scorer.score(rows, as_of=AS_OF, customers=table)

    def current_without_columns():
        return without_columns.score(rows, as_of=AS_OF, customers=table)

    def old():
        return legacy_score(scorer, rows, as_of=AS_OF, customers=table)

    compared = ["at_risk", "high_value_at_risk", "tier_uncertain", "flags", "reasons", *UNCERTAINTY_NUMBERS]
    pd.testing.assert_frame_equal(current_without_columns().drop(columns=compared, errors="ignore"),
                                  old().drop(columns=compared, errors="ignore"), check_exact=False, rtol=1e-9)
    cores = {"array-native core": current, "same, uncertainty off": current_without_columns,
             "pre-issue-16 core": old}
    for _ in range(20):  # warm up all
        for function in cores.values():
            function()
    timings = {name: [] for name in cores}
    for _ in range(args.repeat // 50):
        for name, function in cores.items():
            timings[name] += _timings(function, 50)
    print(f"one customer through Scorer.score, {len(timings['pre-issue-16 core'])} calls each (interleaved), ms:")
    print(f"{'core':<24} {'median':>8} {'p90':>8} {'vs old':>8}")
    old_median = statistics.median(timings["pre-issue-16 core"])
    for name, ms in timings.items():
        median = statistics.median(ms)
        print(f"{name:<24} {median:8.3f} {float(np.percentile(ms, 90)):8.3f} {old_median / median:7.2f}x")
    median = statistics.median(timings["array-native core"])
    print(f"target median <= 1.5 ms (as shipped, uncertainty columns on): {'met' if median <= 1.5 else 'not met'}")
    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.enable()
        for _ in range(200):
            current()
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(35)


if __name__ == "__main__":
    main()
