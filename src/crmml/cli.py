"""``crmml`` command line: a thin door onto the library.

Every subcommand parses its arguments, calls the core and formats the result. Errors a user can
cause (bad files, bad columns, bad values) end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from crmml.errors import CrmmlError

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crmml`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (CrmmlError, FileNotFoundError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"crmml {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crmml", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="fit the models on the bundled CDNOW data and print customer values")
    demo.add_argument("--top", type=int, default=15, help="customers to show (default 15)")
    demo.add_argument("--discount-rate", type=float, default=0.10, help="annual discount rate (default 0.10)")
    demo.add_argument("--margin", type=float, default=1.0, help="profit margin on revenue (default 1.0)")
    demo.set_defaults(handler=_run_demo)

    summary = commands.add_parser("summary", help="per-customer RFM summary of a transaction log")
    summary.add_argument("--transactions", required=True, help="CSV/Parquet file, glob or directory")
    summary.add_argument("--output", required=True, help="where to write the summary (.csv or .parquet)")
    summary.add_argument("--as-of", default=None, help="observation end date (default: last transaction)")
    summary.add_argument("--freq", default="D", choices=["D", "W", "M"], help="purchase period (default D)")
    summary.add_argument("--freq-multiplier", type=float, default=1, help="periods per time unit (7: days to weeks)")
    summary.add_argument("--customer-col", default="customer_id")
    summary.add_argument("--time-col", default="timestamp")
    summary.add_argument("--amount-col", default="amount", help="'' for a log without amounts")
    summary.add_argument("--time-format", default=None, help="strptime format of the time column, e.g. %%Y%%m%%d")
    summary.set_defaults(handler=_run_summary)

    backtest = commands.add_parser(
        "backtest", help="fit churn and value models at past cutoffs and compare them with the baselines"
    )
    source = backtest.add_mutually_exclusive_group(required=True)
    source.add_argument("--cdnow", action="store_true",
                        help="the CDNOW protocol: full master file, cutoff 1997-09-30, 273-day holdout")
    source.add_argument("--transactions", help="CSV/Parquet file, glob or directory")
    backtest.add_argument("--cutoff", action="append", default=[], help="a past as-of date (repeatable)")
    backtest.add_argument("--customers", default=None, help="customer table (CSV/Parquet, one row per customer)")
    backtest.add_argument("--churn-window", type=int, default=None, help="days (default 90; CDNOW 273)")
    backtest.add_argument("--value-horizon", type=int, default=None, help="days (default 365; CDNOW 273)")
    backtest.add_argument("--transaction-model", default="pareto_nbd", choices=["pareto_nbd", "bg_nbd", "mbg_nbd"])
    backtest.add_argument("--plots", default=None, help="directory for the PNG plots and decile tables")
    backtest.add_argument("--output", default=None, help="write the metrics table here (.csv)")
    backtest.set_defaults(handler=_run_backtest)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from crmml.demo import run_cdnow_demo

    result = run_cdnow_demo(annual_discount_rate=args.discount_rate, margin=args.margin)
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 4):
        print("CDNOW 1/10 sample: 2,357 customers, calibration to 1997-09-30, holdout to 1998-06-30 (weeks)\n")
        print("Fitted parameters (published values: Fader, Hardie & Lee 2005; Batislam et al. 2007):")
        print(result.parameters.to_string(index=False), end="\n\n")
        print("Holdout check: repeat transactions in weeks 40-78 (conditional) and weeks 1-78 (unconditional):")
        print(result.holdout.to_string(index=False), end="\n\n")
        print(f"Top {args.top} customers by 52-week CLV (BG/NBD x Gamma-Gamma):")
        print(result.customers.head(args.top).to_string(), end="\n\n")
        total = result.customers["clv_52w"].sum()
        top_fifth = result.customers["clv_52w"].head(len(result.customers) // 5).sum()
        print(f"Total 52-week CLV: {total:,.0f}; the top 20 % of customers hold {100 * top_fifth / total:.1f} % of it.")
    return 0


def _run_summary(args: argparse.Namespace) -> int:
    from crmml.data import rfm_summary

    output = Path(args.output)
    if output.suffix not in {".csv", ".parquet"}:
        raise ValueError(f"--output must end in .csv or .parquet; got {output.name!r}.")
    summary, report = rfm_summary(
        args.transactions,
        as_of=args.as_of,
        freq=args.freq,
        freq_multiplier=args.freq_multiplier,
        customer_col=args.customer_col,
        time_col=args.time_col,
        amount_col=args.amount_col or None,
        time_format=args.time_format,
        return_report=True,
    )
    temporary = output.with_name(f".{output.name}.partial")
    if output.suffix == ".csv":
        summary.to_csv(temporary)
    else:
        summary.to_parquet(temporary)
    temporary.replace(output)
    print(report)
    print(f"wrote {len(summary):,} customers to {output}")
    return 0


def _run_backtest(args: argparse.Namespace) -> int:
    from crmml.backtest import CDNOW_HOLDOUT_DAYS, backtest, cdnow_backtest, write_plots
    from crmml.customer_model import ModelConfig

    default_days = CDNOW_HOLDOUT_DAYS if args.cdnow else None
    config = ModelConfig(
        churn_window_days=args.churn_window or default_days or 90,
        value_horizon_days=args.value_horizon or default_days or 365,
        transaction_model=args.transaction_model,
    )
    if args.cdnow:
        if args.cutoff or args.customers:
            raise ValueError("--cdnow fixes the data and the cutoff; drop --cutoff and --customers.")
        result = cdnow_backtest(config, plots=args.plots)
        print("CDNOW protocol: 23,570 customers, cutoff 1997-09-30, holdout 1997-10-01 to 1998-06-30\n")
    else:
        if not args.cutoff:
            raise ValueError("--transactions needs at least one --cutoff DATE.")
        customers = _read_table(args.customers) if args.customers else None
        result = backtest(args.transactions, cutoffs=args.cutoff, config=config, customers=customers)
        if args.plots:
            write_plots(result, args.plots)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 4):
        for task, columns in (
            ("churn", ["roc_auc", "pr_auc", "brier", "log_loss", "lift_at_10"]),
            ("value", ["normalized_gini", "top20_capture", "mae", "total_predicted", "total_actual", "total_error_pct"]),
            ("transactions", ["total_predicted", "total_actual", "total_error_pct"]),
        ):
            table = result.table(task)
            print(f"{task}:")
            print(table[[c for c in columns if c in table]].to_string(), end="\n\n")
        for cutoff, summary in result.models.items():
            for task in ("churn", "value"):
                choice = summary[task]
                print(f"{cutoff.date()} {task}: shipped {choice['shipped']} ({choice['plan']['mode']} windows "
                      f"{choice['plan']['windows_days']}); rule: {choice['rule']}")
    if args.output:
        result.metrics.to_csv(args.output, index=False)
    if args.plots:
        print(f"plots in {args.plots}")
    return 0


def _read_table(path: str) -> pd.DataFrame:
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"No customer table at {path}")
    if file.suffix == ".parquet":
        return pd.read_parquet(file)
    if file.suffix == ".csv":
        return pd.read_csv(file)
    raise ValueError(f"The customer table must be .csv or .parquet; got {file.name!r}.")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
