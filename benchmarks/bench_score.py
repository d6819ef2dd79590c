"""Batch scoring at scale: ``crmml score`` vs the lifetimes way, on 1M customers and on 100M rows.

Run by hand (``python benchmarks/bench_score.py [--large]``); not part of the test suite.

1. **Training** (once, cached): a :class:`crmml.scorer.Scorer` is fitted on a sample of customers
   (ids below ``--train-customers``; the simulated customers are iid, so that is a random sample) of
   the 1M-customer log of ``bench_core.py`` with a lean config (``models/default.yaml`` with
   ``churn_learners: [logistic]``, ``value_learners: [poisson_glm]``, ``baseline_models: [bg_nbd]``)
   and saved as a local bundle in ``benchmarks/_data/``. Its time and peak RSS are reported
   separately: they are not part of scoring.
2. **1M customers**: ``crmml score`` scores every customer of ``log_1000000_0.parquet`` in a
   subprocess; as the peer, measured in the same run and in its own subprocess, the lifetimes way a
   data scientist scores the same log in one process: ``pandas.read_parquet``,
   ``summary_data_from_transaction_data``, BG/NBD + Gamma-Gamma fitted on the same customer sample,
   ``conditional_expected_number_of_purchases_up_to_time``, ``conditional_probability_alive``,
   ``customer_lifetime_value`` (12 monthly steps at the same annual discount rate), and the scores
   written to Parquet. crmml does strictly more per customer (the full feature set, the churn model,
   the value model, tiers, flags and reasons in words, and a reconciled account of every row and
   customer).
3. **100M rows** (``--large``): the ``make_large_log.py`` log (about 16.3M customers) in
   ``benchmarks/_data/log_100m/`` (generated if missing), scored with ``crmml score``; target: peak
   RSS < 4 GB.

Wall time is measured around each subprocess (interpreter start and imports included). Peak RSS of
the lifetimes peer (one process) is its ``ru_maxrss`` from ``os.wait4``. ``crmml score`` runs once
per ``--jobs`` value (default ``1 2``: the ratio of the two is the parallel speed-up) and, as
``--jobs N`` runs N worker processes at once and ``ru_maxrss`` gives only the largest of them, its
peak is the largest sum over the process and its descendants, sampled every 50 ms with psutil
(RSS sum, an upper bound as shared pages count once per process; PSS sum also printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "_data"
REPO = HERE.parent
AS_OF = "2025-12-31"  # the simulated logs' last day (bench_core.END)
CHURN_WINDOW_DAYS, VALUE_HORIZON_DAYS = 90, 365  # models/default.yaml
ANNUAL_DISCOUNT = 0.10  # models/default.yaml
LEAN = {"churn_learners": ["logistic"], "value_learners": ["poisson_glm"]}


# --------------------------------------------------------------------------------------------------
# Measuring a subprocess
# --------------------------------------------------------------------------------------------------


def measure(command: list[str], *, env: dict | None = None, echo: bool = False) -> dict:
    """Run ``command``; return its wall time, peak RSS (MB), exit code, stdout and stderr."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting
        out.seek(0)
        err.seek(0)
        result = {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "returncode": process.returncode,
                  "stdout": out.read(), "stderr": err.read()}
    if echo:
        print(result["stdout"], end="", flush=True)
    if result["returncode"] != 0:
        raise SystemExit(f"command failed ({result['returncode']}): {' '.join(command)}\n{result['stderr'][-4000:]}")
    return result


def _worker(name: str, *args: str) -> dict:
    """Run this script's worker ``name`` in a subprocess; its last stdout line is JSON."""
    result = measure([sys.executable, __file__, "--worker", name, *args])
    return {**json.loads(result["stdout"].strip().splitlines()[-1]), "wall_s": result["wall_s"],
            "peak_rss_mb": result["peak_rss_mb"]}


def _crmml_command() -> list[str]:
    script = Path(sys.executable).parent / "crmml"
    return [str(script)] if script.exists() else [sys.executable, "-m", "crmml.cli"]


# --------------------------------------------------------------------------------------------------
# Data, training
# --------------------------------------------------------------------------------------------------


def make_log(n_customers: int, seed: int) -> Path:
    """The bench_core log (same file name, same simulation), made if missing."""
    sys.path.insert(0, str(HERE))
    from bench_core import make_log as bench_core_make_log

    return bench_core_make_log(n_customers, seed)


def write_config(transaction_model: str) -> Path:
    import yaml

    values = yaml.safe_load((REPO / "models" / "default.yaml").read_text())
    values["model"].update(LEAN, transaction_model=transaction_model)
    values["baseline_models"] = ["bg_nbd"]
    path = DATA_DIR / f"bench_score_{transaction_model}.yaml"
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def train_worker(log: Path, n_train: int, config: Path, bundle: Path) -> dict:
    import pyarrow.parquet as pq

    from crmml.scorer import Scorer, load_config

    started = time.perf_counter()
    sample = pq.read_table(log, filters=[("customer_id", "<", n_train)]).to_pandas()
    scorer = Scorer(load_config(config)).fit(sample, as_of=AS_OF)
    scorer.save(bundle)
    models = scorer.model_.summary()
    return {"fit_s": time.perf_counter() - started, "rows": len(sample), "customers": scorer.n_customers_,
            "churn": models["churn"]["shipped"], "value": models["value"]["shipped"],
            "at_risk": scorer.flag_rule_.at_risk_rule}


# --------------------------------------------------------------------------------------------------
# The lifetimes peer
# --------------------------------------------------------------------------------------------------


def lifetimes_worker(log: Path, n_train: int, output: Path) -> dict:
    import pandas as pd
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    warnings.filterwarnings("ignore")
    timings, started = {}, time.perf_counter()
    transactions = pd.read_parquet(log)
    timings["read"] = time.perf_counter() - started

    start = time.perf_counter()
    summary = summary_data_from_transaction_data(
        transactions, "customer_id", "timestamp", monetary_value_col="amount", observation_period_end=AS_OF,
        freq="D", freq_multiplier=7,
    )
    del transactions
    timings["summary"] = time.perf_counter() - start

    start = time.perf_counter()  # fitted on the customers crmml is trained on
    sample = summary[summary.index < n_train]
    bg = BetaGeoFitter().fit(sample["frequency"], sample["recency"], sample["T"])
    repeaters = sample[sample["frequency"] > 0]
    gg = GammaGammaFitter().fit(repeaters["frequency"], repeaters["monetary_value"])
    timings["fit"] = time.perf_counter() - start

    start = time.perf_counter()
    f, r, t, m = summary["frequency"], summary["recency"], summary["T"], summary["monetary_value"]
    scores = pd.DataFrame({
        "expected_purchases_90d": bg.conditional_expected_number_of_purchases_up_to_time(
            CHURN_WINDOW_DAYS / 7, f, r, t),
        "expected_purchases_365d": bg.conditional_expected_number_of_purchases_up_to_time(
            VALUE_HORIZON_DAYS / 7, f, r, t),
        "p_alive": bg.conditional_probability_alive(f, r, t),
        "clv_12m": gg.customer_lifetime_value(
            bg, f, r, t, m, time=12, discount_rate=(1 + ANNUAL_DISCOUNT) ** (1 / 12) - 1, freq="W"),
    }, index=summary.index)
    timings["score"] = time.perf_counter() - start

    start = time.perf_counter()
    scores.reset_index().to_parquet(output, index=False)
    timings["write"] = time.perf_counter() - start
    return {"timings": timings, "customers": len(scores), "p_alive_mean": float(scores["p_alive"].mean()),
            "clv_total": float(scores["clv_12m"].sum())}


# --------------------------------------------------------------------------------------------------
# crmml score
# --------------------------------------------------------------------------------------------------

_COUNTS = re.compile(r"^(as of .*|rows: .*|customers: .*)$", re.MULTILINE)


def measure_tree(command: list[str], *, env: dict | None = None, interval_s: float = 0.05) -> dict:
    """:func:`measure`, with the peak of the memory summed over the process and its descendants
    (``crmml score --jobs N``'s worker processes), sampled with psutil every ``interval_s``:
    ``peak_tree_rss_mb`` (sum of RSS: counts shared pages once per process, an upper bound) and
    ``peak_tree_pss_mb`` (sum of PSS: shared pages split between their processes)."""
    import threading

    import psutil

    peaks = {"rss": 0, "pss": 0}
    stop = threading.Event()

    def sample(pid: int) -> None:
        while not stop.is_set():
            try:
                root = psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
            rss = pss = 0
            for process in tree:
                try:
                    info = process.memory_full_info()
                except psutil.Error:  # ended between listing and reading
                    continue
                rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
            peaks["rss"], peaks["pss"] = max(peaks["rss"], rss), max(peaks["pss"], pss)
            stop.wait(interval_s)

    original = subprocess.Popen

    class Sampled(original):  # start the sampler as soon as measure() has the pid
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            threading.Thread(target=sample, args=(self.pid,), daemon=True).start()

    subprocess.Popen = Sampled
    try:
        result = measure(command, env=env)
    finally:
        subprocess.Popen = original
        stop.set()
    return {**result, "peak_tree_rss_mb": peaks["rss"] / 2**20, "peak_tree_pss_mb": peaks["pss"] / 2**20}


def crmml_score(bundle: Path, transactions: Path, output: Path, per_partition: int, *, env=None,
                jobs: int | None = None) -> dict:
    command = [*_crmml_command(), "score", "--model", str(bundle), "--transactions", str(transactions),
               "--as-of", AS_OF, "--output", str(output), "--customers-per-partition", str(per_partition)]
    if jobs is not None:
        command += ["--jobs", str(jobs)]
    print("$ " + " ".join(_shown(c) for c in command), flush=True)
    result = measure_tree(command, env=env)
    counts = _COUNTS.findall(result["stdout"])
    scored = re.search(r"customers: [\d,]+ in = ([\d,]+) scored", result["stdout"])
    partitions = re.search(r"in (\d+) partition", result["stdout"])
    import pyarrow.parquet as pq

    written = pq.ParquetFile(output).metadata.num_rows
    digest = hashlib.sha256(output.read_bytes()).hexdigest()[:16]
    return {**result, "counts": counts, "scored": int(scored[1].replace(",", "")),
            "partitions": int(partitions[1]), "written": written, "sha256": digest}


def _shown(part: str) -> str:
    try:
        return str(Path(part).relative_to(REPO)) if part.startswith("/") else part
    except ValueError:
        return part


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def _gb(mb: float) -> str:
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def compare(args, bundle: Path) -> None:
    log = make_log(args.customers, args.seed)
    import pyarrow.parquet as pq

    n_rows = pq.ParquetFile(log).metadata.num_rows
    print(f"\n== {args.customers:,} customers, {n_rows:,} rows ({_shown(str(log))}), as of {AS_OF} ==", flush=True)
    runs = {}
    for jobs in args.jobs:
        runs[jobs] = crmml_score(bundle, log, DATA_DIR / f"scores_{args.customers}_crmml_jobs{jobs}.parquet",
                                 args.customers_per_partition, jobs=jobs)
        print(f"--jobs {jobs}: {runs[jobs]['wall_s']:.1f} s, peak RSS summed over its processes "
              f"{_gb(runs[jobs]['peak_tree_rss_mb'])} (PSS {_gb(runs[jobs]['peak_tree_pss_mb'])})", flush=True)
    ours = runs[args.jobs[0]]
    print("\n".join(ours["counts"]), flush=True)
    print("lifetimes worker ...", flush=True)
    peer = _worker("lifetimes", "--data", str(log), "--train-customers", str(args.train_customers),
                   "--output", str(DATA_DIR / f"scores_{args.customers}_lifetimes.parquet"))
    peer_score_only = peer["wall_s"] - peer["timings"]["fit"]
    n = ours["scored"]
    rows = [
        "| | wall (s) | customers/s | peak RSS (sum over processes) | vs --jobs "
        f"{args.jobs[0]} time | crmml / peer time | crmml / peer RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(f"| crmml score --jobs {jobs} ({run['partitions']} partition(s) of <= {args.customers_per_partition:,}) "
          f"| {run['wall_s']:.1f} | {n / run['wall_s']:,.0f} | {_gb(run['peak_tree_rss_mb'])} "
          f"| {ours['wall_s'] / run['wall_s']:.2f}x faster | {run['wall_s'] / peer['wall_s']:.2f}x "
          f"| {run['peak_tree_rss_mb'] / peer['peak_rss_mb']:.2f}x |" for jobs, run in runs.items()),
        (f"| lifetimes, whole process (incl. fit on {args.train_customers:,}) | {peer['wall_s']:.1f} "
         f"| {peer['customers'] / peer['wall_s']:,.0f} | {_gb(peer['peak_rss_mb'])} | | | |"),
        (f"| lifetimes, without its fit ({peer['timings']['fit']:.1f} s) | {peer_score_only:.1f} "
         f"| {peer['customers'] / peer_score_only:,.0f} | | | {ours['wall_s'] / peer_score_only:.2f}x | |"),
    ]
    print("\n".join(rows))
    digests = {jobs: run["sha256"] for jobs, run in runs.items()}
    same = "byte-identical" if len(set(digests.values())) == 1 else "DIFFERENT"
    print(f"scores files of the --jobs runs: {same} (sha256 prefixes {digests})")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in peer["timings"].items())
    print(f"lifetimes stages: {stages} (+ interpreter start and imports)")
    print(f"customers: crmml scored {n:,} (wrote {ours['written']:,} rows), lifetimes {peer['customers']:,}; "
          f"lifetimes mean P(alive) {peer['p_alive_mean']:.4f}, total 12-month CLV {peer['clv_total']:,.0f}")
    print("note: crmml does strictly more per customer than the peer: the full feature set (RFM windows, gaps, "
          "BTYD features), the churn model, the value model with discounting, the tier, the flags (at-risk, "
          "win-back, lapsed, new) with their reasons in words, and a reconciled account of every input row and "
          "customer (rejections file); lifetimes computes BTYD expectations, P(alive) and CLV only.")
    if not args.keep_output:
        for side in ("crmml", "lifetimes"):
            for path in DATA_DIR.glob(f"scores_{args.customers}_{side}*"):  # (every --jobs run's)
                path.unlink()


def large(args, bundle: Path) -> None:
    directory = DATA_DIR / args.large_dir
    if not any(directory.glob("part-*.parquet")):
        print(f"\ngenerating {args.large_rows:,} rows into {_shown(str(directory))} ...", flush=True)
        made = measure([sys.executable, str(HERE / "make_large_log.py"), "--rows", str(args.large_rows),
                        "--output", str(directory), "--seed", str(args.seed)])
        print(made["stdout"].strip().splitlines()[-1] + f" (peak RSS {_gb(made['peak_rss_mb'])})", flush=True)
    import pyarrow.dataset as ds

    n_rows = ds.dataset(directory, format="parquet").count_rows()
    size = sum(p.stat().st_size for p in directory.glob("part-*.parquet"))
    print(f"\n== {n_rows:,} rows in {len(list(directory.glob('part-*.parquet')))} files "
          f"({size / 1e9:.1f} GB, {_shown(str(directory))}), as of {AS_OF} ==", flush=True)
    output = DATA_DIR / f"scores_{args.large_dir}.parquet"
    ours = crmml_score(bundle, directory, output, args.large_customers_per_partition)
    n = ours["scored"]
    verdict = "OK" if ours["peak_tree_rss_mb"] < 4096 else "OVER the 4 GB target"
    print("| rows | customers scored | partitions | wall | customers/s | rows/s | peak RSS |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {n_rows:,} | {n:,} | {ours['partitions']} (<= {args.large_customers_per_partition:,}) "
          f"| {ours['wall_s'] / 60:.1f} min | {n / ours['wall_s']:,.0f} | {n_rows / ours['wall_s']:,.0f} "
          f"| {_gb(ours['peak_tree_rss_mb'])} ({verdict}) |")
    print("\n".join(ours["counts"]))
    print(f"output: {ours['written']:,} rows, {output.stat().st_size / 1e9:.2f} GB")
    if not args.keep_output:
        output.unlink()
        output.with_name(f"{output.stem}.rejected.csv").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers of the compared log (1M)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-customers", type=int, default=None,
                        help="customers the scorer (and the lifetimes peer) is fitted on "
                             "(default 50000, at most a twentieth of --customers)")
    parser.add_argument("--transaction-model", default="bg_nbd", choices=["bg_nbd", "pareto_nbd", "mbg_nbd"],
                        help="the scorer's BTYD model (default bg_nbd, the peer's model)")
    parser.add_argument("--customers-per-partition", type=int, default=250_000,
                        help="crmml score's partition size for the comparison (default 250000, crmml score's)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2],
                        help="crmml score --jobs values to run and compare, the first one the reference "
                             "(default: 1 2)")
    parser.add_argument("--no-compare", action="store_true", help="skip the crmml vs lifetimes comparison")
    parser.add_argument("--large", action="store_true", help="also score the 100M-row log")
    parser.add_argument("--large-rows", type=int, default=100_000_000)
    parser.add_argument("--large-dir", default="log_100m", help="its directory under benchmarks/_data/")
    parser.add_argument("--large-customers-per-partition", type=int, default=1_000_000)
    parser.add_argument("--retrain", action="store_true", help="refit the cached bundle")
    parser.add_argument("--keep-output", action="store_true", help="keep the score files in benchmarks/_data/")
    parser.add_argument("--worker", choices=["train", "lifetimes"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_customers is None:
        args.train_customers = min(50_000, max(1, args.customers // 20))
    if args.worker == "train":
        print(json.dumps(train_worker(args.data, args.train_customers, args.config, args.output)))
        return
    if args.worker == "lifetimes":
        print(json.dumps(lifetimes_worker(args.data, args.train_customers, args.output)))
        return

    training_log = make_log(1_000_000, 0) if args.large and args.no_compare else make_log(args.customers, args.seed)
    bundle = DATA_DIR / f"bundle_{training_log.stem}_{args.train_customers}_{args.transaction_model}"
    if args.retrain or not (bundle / "scorer.joblib").exists():
        config = write_config(args.transaction_model)
        print(f"training on the customers with id < {args.train_customers:,} of {training_log.name} "
              f"({_shown(str(config))}) ...", flush=True)
        fitted = _worker("train", "--data", str(training_log), "--train-customers", str(args.train_customers),
                         "--config", str(config), "--output", str(bundle))
        print(f"trained: {fitted['customers']:,} customers, {fitted['rows']:,} rows; churn {fitted['churn']}, "
              f"value {fitted['value']}; fit {fitted['fit_s']:.1f} s, process {fitted['wall_s']:.1f} s, "
              f"peak RSS {_gb(fitted['peak_rss_mb'])}", flush=True)
    else:
        print(f"using the cached bundle {_shown(str(bundle))} (--retrain to refit)", flush=True)
    if not args.no_compare:
        compare(args, bundle)
    if args.large:
        large(args, bundle)


if __name__ == "__main__":
    main()
