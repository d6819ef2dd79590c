"""crmml vs lifetimes on a simulated log of 1,000,000 customers (~6M transactions).

Run by hand (``make bench`` or ``python benchmarks/bench_core.py``); not part of the test suite.
Stages, timed on the same data in one run:

1. RFM summary of the transaction log (both from the same in-memory DataFrame; crmml also from the
   Parquet file, its out-of-core path)
2. BG/NBD fit on the summary (each library's default usage: crmml compresses identical rows itself)
3. Gamma-Gamma fit on the repeat customers
4. Scoring every customer: 12-month CLV (monthly steps, 1 % monthly discount) and P(alive)

Each library runs in its own subprocess so that its peak RSS (``ru_maxrss``) is its own. The
printed speed-ups are lifetimes time / crmml time; targets: summary >= 5x, fit >= 10x,
scoring >= 20x, end to end >= 10x, crmml peak RSS <= 1 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

DATA_DIR = Path(__file__).parent / "_data"
WEEKS_PER_MONTH = 4.345  # lifetimes' week-to-month factor, so both compute the same CLV
MONTHS = 12
MONTHLY_DISCOUNT = 0.01
START, END = "2023-01-01", "2025-12-31"
TARGETS = {"summary": 5, "bgnbd_fit": 10, "gamma_gamma_fit": 10, "scoring": 20, "end_to_end": 10}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_log(n_customers: int, seed: int) -> Path:
    """Simulate the log once and cache it as Parquet."""
    from crmml.data.simulate import SimulationParams, simulate_transactions

    path = DATA_DIR / f"log_{n_customers}_{seed}.parquet"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        # CDNOW's BG/NBD and Gamma-Gamma parameters with a higher purchase rate (r) over three
        # years: about 6 transactions per customer, the scale the targets are set for.
        params = SimulationParams(r=0.65)
        log = simulate_transactions(n_customers, params=params, start=START, end=END, seed=seed)
        log.transactions.to_parquet(path.with_suffix(".tmp"), index=False)
        path.with_suffix(".tmp").replace(path)
    return path


def run_crmml(path: Path, from_file: bool) -> dict:
    import pandas as pd

    from crmml.clv import customer_lifetime_value
    from crmml.data import rfm_summary
    from crmml.models import BetaGeo, GammaGamma

    timings = {}
    source = str(path) if from_file else pd.read_parquet(path)
    start = time.perf_counter()
    summary = rfm_summary(source, as_of=END, freq="D", freq_multiplier=7)
    timings["summary"] = time.perf_counter() - start

    start = time.perf_counter()
    bg = BetaGeo().fit(summary)
    timings["bgnbd_fit"] = time.perf_counter() - start

    repeaters = summary[summary["frequency"] > 0]
    start = time.perf_counter()
    gg = GammaGamma().fit(repeaters)
    timings["gamma_gamma_fit"] = time.perf_counter() - start

    start = time.perf_counter()
    clv = customer_lifetime_value(
        bg, gg, summary, horizon=MONTHS * WEEKS_PER_MONTH, n_steps=MONTHS, discount_rate=MONTHLY_DISCOUNT
    )
    p_alive = bg.probability_alive(summary)
    timings["scoring"] = time.perf_counter() - start
    return {
        "timings": timings,
        "peak_rss_mb": _peak_rss_mb(),
        "customers": len(summary),
        "bgnbd": bg.params_.to_dict(),
        "gamma_gamma": gg.params_.to_dict(),
        "clv_total": float(clv.sum()),
        "p_alive_mean": float(p_alive.mean()),
    }


def run_lifetimes(path: Path) -> dict:
    import pandas as pd
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    warnings.filterwarnings("ignore")
    transactions = pd.read_parquet(path)
    timings = {}
    start = time.perf_counter()
    summary = summary_data_from_transaction_data(
        transactions,
        "customer_id",
        "timestamp",
        monetary_value_col="amount",
        observation_period_end=END,
        freq="D",
        freq_multiplier=7,
    )
    timings["summary"] = time.perf_counter() - start

    start = time.perf_counter()
    bg = BetaGeoFitter().fit(summary["frequency"], summary["recency"], summary["T"])
    timings["bgnbd_fit"] = time.perf_counter() - start

    repeaters = summary[summary["frequency"] > 0]
    start = time.perf_counter()
    gg = GammaGammaFitter().fit(repeaters["frequency"], repeaters["monetary_value"])
    timings["gamma_gamma_fit"] = time.perf_counter() - start

    start = time.perf_counter()
    clv = gg.customer_lifetime_value(
        bg,
        summary["frequency"],
        summary["recency"],
        summary["T"],
        summary["monetary_value"],
        time=MONTHS,
        discount_rate=MONTHLY_DISCOUNT,
        freq="W",
    )
    p_alive = bg.conditional_probability_alive(summary["frequency"], summary["recency"], summary["T"])
    timings["scoring"] = time.perf_counter() - start
    return {
        "timings": timings,
        "peak_rss_mb": _peak_rss_mb(),
        "customers": len(summary),
        "bgnbd": bg.params_.to_dict(),
        "gamma_gamma": {"p": gg.params_["p"], "q": gg.params_["q"], "gamma": gg.params_["v"]},
        "clv_total": float(clv.sum()),
        "p_alive_mean": float(p_alive.mean()),
    }


def _worker(side: str, path: Path) -> dict:
    process = subprocess.run(
        [sys.executable, __file__, "--worker", side, "--data", str(path)], capture_output=True, text=True, check=False
    )
    if process.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{process.stderr}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def _table(crmml: dict, crmml_file: dict, lifetimes: dict) -> str:
    rows = ["| stage | crmml (s) | lifetimes (s) | speed-up | target |", "|---|---:|---:|---:|---:|"]
    for stage in ("summary", "bgnbd_fit", "gamma_gamma_fit", "scoring"):
        ours, theirs = crmml["timings"][stage], lifetimes["timings"][stage]
        rows.append(f"| {stage} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.1f}x | >= {TARGETS[stage]}x |")
    ours, theirs = sum(crmml["timings"].values()), sum(lifetimes["timings"].values())
    rows.append(f"| end_to_end | {ours:.2f} | {theirs:.2f} | {theirs / ours:.1f}x | >= {TARGETS['end_to_end']}x |")
    file_total = sum(crmml_file["timings"].values())
    rows.append("")
    rows.append(f"crmml from the Parquet file (out-of-core path): summary {crmml_file['timings']['summary']:.2f} s, "
                f"end to end {file_total:.2f} s")
    rows.append(
        f"peak RSS: crmml {crmml['peak_rss_mb']:.0f} MB (in-memory frame), {crmml_file['peak_rss_mb']:.0f} MB "
        f"(from file); lifetimes {lifetimes['peak_rss_mb']:.0f} MB; target <= 1024 MB"
    )
    return "\n".join(rows)


def _agreement(crmml: dict, lifetimes: dict) -> str:
    lines = []
    for model in ("bgnbd", "gamma_gamma"):
        worst = max(abs(crmml[model][k] / lifetimes[model][k] - 1) for k in crmml[model])
        lines.append(f"{model} parameters: largest relative difference {worst:.1e}")
    lines.append(f"total CLV: crmml {crmml['clv_total']:,.0f}, lifetimes {lifetimes['clv_total']:,.0f}")
    lines.append(f"mean P(alive): crmml {crmml['p_alive_mean']:.6f}, lifetimes {lifetimes['p_alive_mean']:.6f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["crmml", "crmml-file", "lifetimes"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        runners = {
            "crmml": lambda: run_crmml(args.data, from_file=False),
            "crmml-file": lambda: run_crmml(args.data, from_file=True),
            "lifetimes": lambda: run_lifetimes(args.data),
        }
        print(json.dumps(runners[args.worker]()))
        return
    path = make_log(args.customers, args.seed)
    import pyarrow.parquet as pq

    n_rows = pq.ParquetFile(path).metadata.num_rows
    print(f"simulated log: {args.customers:,} customers, {n_rows:,} transactions ({path.name})", flush=True)
    crmml = _worker("crmml", path)
    crmml_file = _worker("crmml-file", path)
    lifetimes = _worker("lifetimes", path)
    print(_table(crmml, crmml_file, lifetimes))
    print(_agreement(crmml, lifetimes))


if __name__ == "__main__":
    main()
