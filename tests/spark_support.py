"""What the Spark tests share: a local Spark session and a simulated log with every refund case."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crmml.data.simulate import simulate_customer_base

AS_OF = "2025-03-31"  # inside the log: rows after it exist
TRAIN_AS_OF = "2025-06-30"
#: A lean scorer: a logistic churn learner, BG/NBD x Gamma-Gamma value, no backtest (the cutoff leaves
#: no room for one). The Spark tests check Spark against the local engine, not the model's quality.
SCORER_CONFIG = {
    "model": {"churn_window_days": 90, "value_horizon_days": 180, "transaction_model": "bg_nbd",
              "churn_learners": ["logistic"], "value_learners": []},
    "baseline_models": [],
    "backtest_cutoff": TRAIN_AS_OF,
}
ATTRIBUTES = ["acquisition_channel", "region", "signup_date", "referred_by"]
#: Spark settings of the test session: loopback only, no UI, few partitions for a small log.
TEST_CONF = {"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2",
             "spark.sql.execution.arrow.maxRecordsPerBatch": "300"}


def simulated_log(n_customers: int = 800, seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A simulated log (customer_id, timestamp, amount) with every refund case, and its customer table.

    Added to the simulated purchases: partial refunds on a purchase day, purchases refunded in full,
    refunds on days without a purchase, zero-amount purchases and amounts with digits beyond 1e-10
    (so rounding to 10 decimal places matters); rows are shuffled.
    """
    sim = simulate_customer_base(n_customers, start="2023-01-01", end="2025-06-30", acquisition_end="2025-05-31",
                                 seed=seed)
    log = sim.transactions[["customer_id", "timestamp", "amount"]]
    rng = np.random.default_rng(seed)
    partial = log.sample(200, random_state=1)
    partial = partial.assign(amount=-(partial["amount"] * 0.3).round(2))
    full = log.sample(60, random_state=2)
    full = full.assign(amount=-full["amount"])
    lonely = log.sample(40, random_state=3)
    lonely = lonely.assign(timestamp=lonely["timestamp"] + pd.Timedelta(days=3), amount=-5.0)
    zero = log.sample(30, random_state=4).assign(amount=0.0)
    odd = log.sample(50, random_state=5)
    odd = odd.assign(amount=odd["amount"] + 1e-11 * rng.integers(1, 9, len(odd)))
    mixed = pd.concat([log, partial, full, lonely, zero, odd], ignore_index=True)
    return mixed.sample(frac=1, random_state=9).reset_index(drop=True), sim.customers[["customer_id", *ATTRIBUTES]]


def assert_frames_equal_exactly(local: pd.DataFrame, remote: pd.DataFrame) -> None:
    """Same index, columns and values, bit for bit (NaN where NaN)."""
    assert list(remote.columns) == list(local.columns)
    assert remote.index.equals(local.index)
    for name in local.columns:
        a, b = local[name].to_numpy(), remote[name].to_numpy()
        if a.dtype.kind == "f":
            same = (a == b) | (np.isnan(a) & np.isnan(b))
        else:
            same = a == b
        assert same.all(), f"{name}: {int((~same).sum())} customers differ, e.g. {local.index[~same][:5].tolist()}"


def assert_scores_close(local: pd.DataFrame, remote: pd.DataFrame) -> None:
    """Spark scores against local ones, both indexed by customer id: every score column, numbers to
    1e-9, text and flags identical."""
    from crmml.scorer import SCORE_COLUMNS

    assert list(remote.columns) == SCORE_COLUMNS[1:]
    assert remote.index.equals(local.index)
    for name in local.columns:
        if local[name].dtype.kind == "f":
            np.testing.assert_allclose(remote[name].to_numpy(), local[name].to_numpy(), rtol=0, atol=1e-9,
                                       err_msg=name)
        else:
            assert (remote[name].to_numpy() == local[name].to_numpy()).all(), name
