"""Calibration of the per-customer purchase distributions (issue 20, acceptance 1).

Run by hand (``python benchmarks/calibration_pit.py [--customers 60000] [--draws 40]``); the simulated
case is also asserted by ``tests/test_purchase_distribution.py::test_calibrated_on_a_simulated_log``.

1. **Simulated log, truth known**: :func:`crmml.data.simulate.simulate_transactions` (BG/NBD with the
   CDNOW estimates, Gamma-Gamma spend), acquisitions over the first 65 weeks, calibration to
   ``2024-06-30`` and a 39-week (273-day) holdout, daily periods in weeks. Each model is fitted on the
   calibration summary; each customer's predictive distribution of holdout purchases is the mixture
   over parameter draws (:mod:`crmml.models.parameter_uncertainty`).
2. **CDNOW protocol**: the master file, calibration to 1997-09-30, 39-week holdout. Then the same with
   the predicted purchase rates rescaled so that the expected total equals the actual holdout total
   (the holdout holds a Christmas season the calibration never saw).

Printed per case: the randomised PIT's share in each of 10 bins (10 % if calibrated), its largest
error in points, and the coverage of the 80 % and 50 % equal-tailed intervals, overall and per
calibration-frequency group of at least 500 customers (:func:`calibration_table`).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy import optimize

from crmml.data import calibration_holdout
from crmml.data.simulate import simulate_transactions
from crmml.datasets import load_cdnow_transactions
from crmml.models import BetaGeo, ModifiedBetaGeo, ParetoNBD
from crmml.models.parameter_uncertainty import draw_parameters, predictive_pmf
from crmml.models.purchase_calibration import calibration_table

HOLDOUT_WEEKS = 39.0
BANDS = ((0, 0, "0"), (1, 1, "1"), (2, 2, "2"), (3, 4, "3-4"), (5, 9, "5-9"), (10, np.inf, "10+"))
SHOWN = ["customers"] + [f"pit_{i}" for i in range(1, 11)] + [
    "pit_max_error", "coverage_80", "expected_coverage_80", "pit_coverage_80",
    "coverage_50", "expected_coverage_50", "pit_coverage_50",
]


def frequency_bands(frequency: np.ndarray) -> np.ndarray:
    """Calibration-frequency group labels: 0, 1, 2, 3-4, 5-9, 10+."""
    labels = np.empty(len(frequency), dtype=object)
    for low, high, label in BANDS:
        labels[(frequency >= low) & (frequency <= high)] = label
    return labels


def simulated_split(customers: int, seed: int) -> pd.DataFrame:
    """Calibration summary and holdout counts of a simulated BG/NBD log (CDNOW estimates)."""
    log = simulate_transactions(customers, start="2023-04-01", end="2025-03-30", acquisition_end="2024-06-30",
                                seed=seed).transactions
    return calibration_holdout(log, calibration_end="2024-06-30", holdout_end="2025-03-30", freq="D", freq_multiplier=7)


def cdnow_split() -> pd.DataFrame:
    log = load_cdnow_transactions(sample=False)
    return calibration_holdout(log, calibration_end="1997-09-30", holdout_end="1998-06-30", freq="D", freq_multiplier=7)


def summary_of(split: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"frequency": split["frequency_cal"], "recency": split["recency_cal"], "T": split["T_cal"]})


def evaluate(model, split: pd.DataFrame, *, draws: int, seed: int = 0, rate_scale: float = 1.0) -> pd.DataFrame:
    """The calibration table of ``model`` (fitted) on ``split``'s holdout."""
    summary = summary_of(split)
    observed = split["frequency_holdout"].to_numpy()
    sampled = draw_parameters(model, draws, seed=seed)
    pmf = predictive_pmf(model, summary, HOLDOUT_WEEKS, sampled, int(observed.max()) + 1, rate_scale=rate_scale)
    return calibration_table(pmf, observed, frequency_bands(summary["frequency"].to_numpy()), seed=seed)


def total_rate_scale(model, split: pd.DataFrame) -> float:
    """The purchase-rate multiplier that makes the expected holdout total the actual total."""
    summary = summary_of(split)
    actual = float(split["frequency_holdout"].sum())
    sampled = draw_parameters(model, 1)  # the point estimate: a level correction, not a distribution
    K = int(split["frequency_holdout"].max()) * 4 + 20

    def excess(scale: float) -> float:
        pmf = predictive_pmf(model, summary, HOLDOUT_WEEKS, sampled, K, rate_scale=scale)
        return float((pmf @ np.arange(K + 1)).sum()) - actual

    return float(optimize.brentq(excess, 0.5, 2.0, xtol=1e-4))


def show(title: str, table: pd.DataFrame) -> None:
    print(f"\n{title}")
    print(table[SHOWN].round(1).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=60_000)
    parser.add_argument("--draws", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-cdnow", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    split = simulated_split(args.customers, args.seed)
    print(f"Simulated log: {len(split):,} customers, {int(split['frequency_holdout'].sum()):,} holdout purchases "
          f"({time.perf_counter() - started:.1f} s)")
    for model_class in (BetaGeo, ModifiedBetaGeo, ParetoNBD):
        model = model_class().fit(summary_of(split))
        show(f"Simulated (truth BG/NBD), {model_class.__name__}, {args.draws} parameter draws",
             evaluate(model, split, draws=args.draws, seed=args.seed))

    if args.skip_cdnow:
        return
    split = cdnow_split()
    actual = int(split["frequency_holdout"].sum())
    print(f"\nCDNOW master: {len(split):,} customers, {actual:,} holdout purchases")
    for model_class in (BetaGeo, ParetoNBD):
        model = model_class().fit(summary_of(split))
        expected = float(model.expected_purchases(summary_of(split), HOLDOUT_WEEKS).sum())
        show(f"CDNOW, {model_class.__name__}: expected total {expected:,.0f} vs actual {actual:,} "
             f"({100 * (expected / actual - 1):+.1f} %)", evaluate(model, split, draws=args.draws, seed=args.seed))
        scale = total_rate_scale(model, split)
        show(f"CDNOW, {model_class.__name__}, purchase rates x {scale:.4f} (expected total = actual total)",
             evaluate(model, split, draws=args.draws, seed=args.seed, rate_scale=scale))


if __name__ == "__main__":
    main()
