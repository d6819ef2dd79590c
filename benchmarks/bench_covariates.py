"""Covariate BTYD models: fitting speed against the plain model, and interval coverage.

Run by hand (``python benchmarks/bench_covariates.py [speed|coverage]``); not part of the test suite.

1. ``speed``: the 1M-customer benchmark log of ``bench_core.py`` (CDNOW parameters with r = 0.65,
   three years, weeks of whole days). Three binary customer attributes are attached (two related to
   the customer's behaviour, so their effects are not zero, one pure noise) and Pareto/NBD is
   fitted without and with them (the three on both processes: 6 coefficients), in the same process
   one after the other. Target: covariate fit <= 3x the plain fit.
2. ``coverage``: 200 simulated logs with known channel effects (4,000 customers each, Pareto/NBD and
   BG/NBD); the share of the 95 % intervals of the rate ratios that cover the truth (target about
   95 %), and the largest |estimate - truth| / standard error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

TRUTH = {"purchase:channel=referral": np.log(1.4), "purchase:channel=paid": np.log(0.8),
         "dropout:channel=referral": np.log(0.5), "dropout:channel=paid": np.log(1.5)}


def attach_attributes(summary, seed: int = 0):
    """Three binary attributes: two that lean on frequency and recency, one noise."""
    rng = np.random.default_rng(seed)
    n = len(summary)
    loyal = rng.random(n) < 0.2 + 0.3 * (summary["frequency"].to_numpy() > 2)
    recent = rng.random(n) < 0.3 + 0.3 * (summary["recency"].to_numpy() > 0.5 * summary["T"].to_numpy())
    newsletter = rng.random(n) < 0.5
    return summary.assign(loyal=loyal, recent=recent, newsletter=newsletter)


def speed(n_customers: int, seed: int) -> None:
    import pandas as pd
    from bench_core import END, make_log

    from crmml.data import rfm_summary
    from crmml.models import ParetoNBD
    from crmml.models.pareto_nbd_covariates import ParetoNBDCovariates

    log = pd.read_parquet(make_log(n_customers, seed))
    summary = attach_attributes(rfm_summary(log, as_of=END, freq="D", freq_multiplier=7), seed)
    covariates = ["loyal", "recent", "newsletter"]

    # Passes over the data (likelihood-and-gradient evaluations of every row): a load-independent
    # measure of the work, counted on the chunk functions.
    calls = {"plain": 0, "covariates": 0}

    def counted(cls, name, key):
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            calls[key] += 1
            return original(self, *args, **kwargs)

        setattr(cls, name, wrapper)

    counted(ParetoNBD, "_weighted_log_likelihood", "plain")
    counted(ParetoNBDCovariates, "_weighted_log_likelihood", "covariates")
    counted(ParetoNBDCovariates, "_group_gradients", "covariates")
    start = time.perf_counter()
    plain = ParetoNBD().fit(summary)
    plain_time = time.perf_counter() - start
    plain_calls = calls["plain"]
    start = time.perf_counter()
    model = ParetoNBDCovariates(covariates, covariates).fit(summary)
    covariate_time = time.perf_counter() - start
    chunk = 1 << 17
    plain_passes = plain_calls / -(-plain.n_unique_rows_ // chunk)
    covariate_passes = calls["covariates"] / -(-model.n_unique_rows_ // chunk)
    print(f"customers {len(summary):,}; distinct rows: plain {plain.n_unique_rows_:,}, "
          f"with covariates {model.n_unique_rows_:,} in {model.n_groups_} covariate groups")
    print(f"plain Pareto/NBD fit       {plain_time:8.2f} s  ({plain.n_iter_} iterations, {plain_passes:.0f} passes)")
    print(f"Pareto/NBD + 3 covariates  {covariate_time:8.2f} s  ({model.n_iter_} iterations, "
          f"{covariate_passes:.0f} passes)")
    print(f"ratio                      {covariate_time / plain_time:8.2f}x  (target <= 3x)")
    print(f"log-likelihood: plain {plain.log_likelihood_:,.1f}, with covariates {model.log_likelihood_:,.1f}")
    print(model.param_table()[["estimate", "standard_error", "ratio", "ratio_lower_95", "ratio_upper_95"]]
          .to_string(float_format=lambda v: f"{v:.4g}"))


def coverage(n_fits: int, n_customers: int) -> None:
    import warnings

    from crmml.data.simulate_covariates import simulate_channel_log
    from crmml.models.beta_geo_covariates import BetaGeoCovariates
    from crmml.models.pareto_nbd_covariates import ParetoNBDCovariates

    for kind, model_class in (("pareto_nbd", ParetoNBDCovariates), ("bg_nbd", BetaGeoCovariates)):
        covered, total, worst, failed = 0, 0, 0.0, 0
        start = time.perf_counter()
        for seed in range(n_fits):
            summary = simulate_channel_log(n_customers, model=kind, seed=10_000 + seed).summary
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    table = model_class(["channel"], ["channel"], reference_levels={"channel": "web"}).fit(
                        summary).param_table()
            except Exception as error:  # counted, not hidden
                failed += 1
                print(f"  {kind} seed {seed}: {type(error).__name__}: {error}")
                continue
            for term, truth in TRUTH.items():
                row = table.loc[term]
                covered += bool(row["ratio_lower_95"] <= np.exp(truth) <= row["ratio_upper_95"])
                total += 1
                worst = max(worst, abs(row["estimate"] - truth) / row["standard_error"])
        print(f"{kind}: {n_fits} fits of {n_customers:,} customers, {failed} failed, "
              f"{time.perf_counter() - start:.0f} s; 95 % intervals cover the truth in {covered}/{total} "
              f"= {covered / max(total, 1):.1%}; largest |error| / se {worst:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=["speed", "coverage", "all"], default="all")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fits", type=int, default=200)
    parser.add_argument("--coverage-customers", type=int, default=4000)
    args = parser.parse_args()
    if args.part in ("speed", "all"):
        speed(args.customers, args.seed)
    if args.part in ("coverage", "all"):
        coverage(args.fits, args.coverage_customers)


if __name__ == "__main__":
    main()
