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

    def current():
        return scorer.score(rows, as_of=AS_OF, customers=table)

    def old():
        return legacy_score(scorer, rows, as_of=AS_OF, customers=table)

    pd.testing.assert_frame_equal(current().drop(columns=["at_risk", "high_value_at_risk", "flags", "reasons"]),
                                  old().drop(columns=["at_risk", "high_value_at_risk", "flags", "reasons"]),
                                  check_exact=False, rtol=1e-9)
    for _ in range(20):  # warm up both
        current(), old()
    new_ms, old_ms = [], []
    for _ in range(args.repeat // 50):
        new_ms += _timings(current, 50)
        old_ms += _timings(old, 50)
    table_rows = []
    for name, ms in (("array-native core", new_ms), ("pre-issue-16 core", old_ms)):
        table_rows.append((name, statistics.median(ms), float(np.percentile(ms, 90))))
    print(f"one customer through Scorer.score, {len(new_ms)} calls each (interleaved), ms:")
    print(f"{'core':<20} {'median':>8} {'p90':>8}")
    for name, median, p90 in table_rows:
        print(f"{name:<20} {median:8.3f} {p90:8.3f}")
    print(f"speed-up (median): {table_rows[1][1] / table_rows[0][1]:.2f}x; target median <= 1.5 ms: "
          f"{'met' if table_rows[0][1] <= 1.5 else 'not met'}")
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
