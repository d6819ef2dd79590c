"""What the uncertainty columns cost the scorer (issue 20, acceptance 3), and how many customers they flag.

Run by hand (``python benchmarks/bench_uncertainty.py [--customers 1000000] [--draws 0]``); not part
of the test suite. Each part times the same scorer twice in the same run, interleaved: **with** the
columns (``p_no_purchase``, the purchase and value intervals, ``tier_probability``, the
``tier_uncertain`` flag and its reason) and, as the peer, **without** them (the scorer's
:class:`~crmml.uncertainty.ScoreUncertainty` replaced by one for a model without a purchase
distribution, which returns NaN columns at once). Everything else is identical, so the difference
is what the columns add.

1. **Batch**: :meth:`Scorer.score` (reading the Parquet log, features, models, tiers, flags, reasons;
   the file write of ``crmml score`` is left out, so the ratio is an upper bound of its share) on
   the first ``--customers`` customers of the 1M-customer log of ``bench_core.py``, with the bundle
   ``bench_score.py`` trains (fitted here the same way if missing: 50,000 customers, lean config,
   BG/NBD). Target: at most 1.20x. A third scorer with the count columns only (the purchase PMF per
   distinct history, no value distribution) shows the floor under the columns' cost.
2. **One customer**: the scorer and customer of ``bench_one_customer.py`` (a repeat buyer with 6
   transactions and a table row, from the service's in-memory log), ``--repeat`` calls each,
   interleaved in blocks of 50; medians. Target: at most +0.3 ms.

The scorers carry the uncertainty section of the run (``--draws``, ``--flag-below``, default 0: the
flag off, as shipped), whatever their bundle was saved with. It also prints the share of customers
whose ``tier_probability`` is below 0.5 (those ``tier_uncertain_below: 0.5`` would flag) by tier on
the 1M log; ``--shares``
prints it instead on the simulated base of part 2 and on CDNOW (calibration to 1997-09-30).
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
sys.path.insert(0, str(HERE))

from bench_one_customer import AS_OF as ONE_AS_OF  # noqa: E402
from bench_one_customer import _base, _scorer  # noqa: E402

from crmml.data.in_memory import InMemoryTransactions  # noqa: E402
from crmml.scorer import Scorer  # noqa: E402
from crmml.uncertainty import ScoreUncertainty, UncertaintyConfig  # noqa: E402

LOG_AS_OF = "2025-12-31"  # bench_score.AS_OF


def _without(scorer: Scorer) -> Scorer:
    """The same scorer, its uncertainty columns NaN (the peer)."""
    import copy

    off = copy.copy(scorer)
    off._score_uncertainty = ScoreUncertainty(object(), None, 1.0, UncertaintyConfig())
    return off


def _counts_only(scorer: Scorer) -> Scorer:
    """The same scorer with the count columns only (``p_no_purchase``, the purchase interval: the purchase
    PMF per distinct history), the value columns NaN: the floor under the columns' cost."""
    import copy

    counts = copy.copy(scorer)
    full = scorer.score_uncertainty()
    counts._score_uncertainty = ScoreUncertainty(full.model, None, full.horizon, full.config)
    return counts


def _configured(scorer: Scorer, args) -> Scorer:
    """The scorer with the uncertainty section of the run: ``--draws`` parameter draws and the flag at
    ``--flag-below`` (default 0, the shipped default: off), whatever the bundle was saved with."""
    import copy
    from dataclasses import replace

    configured = copy.copy(scorer)
    configured.config = replace(scorer.config, uncertainty=UncertaintyConfig(parameter_draws=args.draws,
                                                                             tier_uncertain_below=args.flag_below))
    configured._score_uncertainty = None
    configured.score_uncertainty()
    return configured


def batch(args) -> None:
    import pyarrow.parquet as pq
    from bench_score import DATA_DIR, make_log, train_worker, write_config

    log = make_log(1_000_000, 0)
    bundle = DATA_DIR / f"bundle_{log.stem}_50000_bg_nbd"
    if not (bundle / "scorer.joblib").exists():
        print("training the bench_score bundle (50,000 customers) ...", flush=True)
        train_worker(log, 50_000, write_config("bg_nbd"), bundle)
    scorer = _configured(Scorer.load(bundle), args)
    transactions = pq.read_table(log, filters=[("customer_id", "<", args.customers)]).to_pandas()
    peers = {"with the columns": scorer, "count columns only": _counts_only(scorer), "without (peer)": _without(scorer)}
    times: dict[str, list[float]] = {name: [] for name in peers}
    scores = None
    for _ in range(args.batch_repeat):
        for name, model in peers.items():
            started = time.perf_counter()
            out = model.score(transactions, as_of=LOG_AS_OF)
            times[name].append(time.perf_counter() - started)
            if name == "with the columns":
                scores = out
    with_s, without_s = min(times["with the columns"]), min(times["without (peer)"])
    print(f"\nbatch: Scorer.score on {len(scores):,} customers ({len(transactions):,} rows), "
          f"best of {args.batch_repeat}, parameter draws {args.draws}, tier_uncertain_below {args.flag_below:g}")
    print(f"{'':<20} {'seconds':>8}")
    for name in peers:
        print(f"{name:<20} {min(times[name]):8.2f}   {min(times[name]) / without_s:.3f}x the peer")
    print(f"ratio {with_s / without_s:.3f}x (+{with_s - without_s:.2f} s); target <= 1.20x: "
          f"{'met' if with_s / without_s <= 1.2 else 'not met'}")
    below = scores["tier_probability"] < 0.5
    shares = below.groupby(scores["tier"]).agg(["mean", "size"])
    print(f"tier_probability below 0.5 (flagged with tier_uncertain_below: 0.5): {below.mean():.1%} of customers; by tier:")
    print(shares.rename(columns={"mean": "flagged share", "size": "customers"}).to_string(float_format="{:.3f}".format))
    print(f"median tier_probability {scores['tier_probability'].median():.3f}; P(no purchase) >= 0.5: "
          f"{(scores['p_no_purchase'] >= 0.5).mean():.1%} of customers")


def one_customer(args) -> None:
    transactions, customers = _base()
    scorer = _configured(_scorer(transactions, customers), args)
    counts = transactions.groupby("customer_id").size()
    customer = counts.index[counts.to_numpy() == 6][0]
    frame = transactions[transactions["customer_id"] == customer].reset_index(drop=True)
    rows = InMemoryTransactions.from_arrays(frame["customer_id"].to_numpy(),
                                            frame["timestamp"].to_numpy().astype("datetime64[us]"),
                                            frame["amount"].to_numpy())
    table = customers[customers["customer_id"] == customer].reset_index(drop=True)
    peers = {"with the columns": scorer, "without (peer)": _without(scorer)}
    for model in peers.values():
        for _ in range(30):
            model.score(rows, as_of=ONE_AS_OF, customers=table)
    times: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(args.repeat // 50):
        for name, model in peers.items():
            for _ in range(50):
                started = time.perf_counter()
                model.score(rows, as_of=ONE_AS_OF, customers=table)
                times[name].append((time.perf_counter() - started) * 1e3)
    print(f"\none customer through Scorer.score, {len(times['with the columns'])} calls each (interleaved), ms:")
    print(f"{'':<20} {'median':>8} {'p90':>8}")
    for name, ms in times.items():
        print(f"{name:<20} {statistics.median(ms):8.3f} {float(np.percentile(ms, 90)):8.3f}")
    added = statistics.median(times["with the columns"]) - statistics.median(times["without (peer)"])
    print(f"added (median): {added:+.3f} ms; target <= +0.3 ms: {'met' if added <= 0.3 else 'not met'}")
    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.enable()
        for _ in range(300):
            scorer._uncertainty  # noqa: B018 (the method itself is profiled through score)
            scorer.score(rows, as_of=ONE_AS_OF, customers=table)
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats("uncertainty|purchase_distribution", 25)


def _shares(scores: pd.DataFrame, name: str) -> None:
    scores = scores.assign(below=scores["tier_probability"] < 0.5)
    table = scores.groupby("tier").agg(customers=("below", "size"), below_0_5=("below", "mean"),
                                       median_tier_probability=("tier_probability", "median"),
                                       median_p_no_purchase=("p_no_purchase", "median"))
    table = table.reindex(["platinum", "gold", "iron", "lead"])
    print(f"\n{name}: tier_probability below 0.5 (flagged at tier_uncertain_below 0.5) on "
          f"{scores['below'].mean():.1%} of {len(scores):,} customers")
    print(table.to_string(float_format="{:.3f}".format))


def flag_shares(args) -> None:
    """The share flagged tier_uncertain by tier: the simulated base of bench_one_customer.py and CDNOW
    (the master file, calibration to 1997-09-30, the default config with lean learners)."""
    from crmml.datasets import load_cdnow_transactions
    from crmml.scorer import load_config

    transactions, customers = _base()
    scorer = _configured(_scorer(transactions, customers), args)
    _shares(scorer.score(transactions, as_of=ONE_AS_OF, customers=customers), "simulated base (3,000 customers, BG/NBD)")
    cdnow = load_cdnow_transactions(sample=False)
    config = load_config(HERE.parent / "models" / "default.yaml").with_model(
        churn_learners=["logistic"], value_learners=["poisson_glm"])
    fitted = Scorer(config).fit(cdnow, as_of="1997-09-30")
    fitted = _configured(fitted, args)
    _shares(fitted.score(cdnow, as_of="1997-09-30"), "CDNOW (23,570 customers, Pareto/NBD, as of 1997-09-30)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers of the batch part (ids below)")
    parser.add_argument("--batch-repeat", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1000, help="single-customer calls per side")
    parser.add_argument("--draws", type=int, default=0, help="uncertainty.parameter_draws (default 0)")
    parser.add_argument("--flag-below", type=float, default=0.0,
                        help="uncertainty.tier_uncertain_below (default 0: off, the shipped default)")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--profile", action="store_true", help="profile the single-customer path")
    parser.add_argument("--shares", action="store_true", help="only the tier_uncertain shares (simulated, CDNOW)")
    args = parser.parse_args()
    pd.set_option("display.width", 120)
    if args.shares:
        flag_shares(args)
        return
    one_customer(args)
    if not args.skip_batch:
        batch(args)


if __name__ == "__main__":
    main()
