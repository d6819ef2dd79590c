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

from crmml.cli_columns import (
    add_log_column_arguments,
    add_table_column_arguments,
    log_column_flags,
    log_columns,
    printing_table_warnings,
    table_column_flags,
    table_columns,
)
from crmml.defaults import DEFAULT_TRACKING_URI, tracking_uri_or_default
from crmml.errors import CrmmlError, first_line

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crmml`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (CrmmlError, FileNotFoundError, NotADirectoryError, ValueError) as error:
        print(f"crmml {args.command}: error: {first_line(error)}", file=sys.stderr)
        return EXIT_USAGE


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crmml", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="the main job end to end on CDNOW: train, register, promote, batch-score, report"
    )
    demo.add_argument("--workdir", default="demo", help="where the data and scores go (default ./demo)")
    demo.add_argument("--tracking-uri", default=None, help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})")
    demo.add_argument("--config", default=None, help="training config (default models/default.yaml if present)")
    demo.add_argument("--top", type=int, default=10, help="rows of the win-back list to show (default 10)")
    demo.set_defaults(handler=_run_demo)

    cdnow = commands.add_parser("cdnow", help="fit the BTYD models on the CDNOW sample; compare with published values")
    cdnow.add_argument("--top", type=int, default=15, help="customers to show (default 15)")
    cdnow.add_argument("--discount-rate", type=float, default=0.10, help="annual discount rate (default 0.10)")
    cdnow.add_argument("--margin", type=float, default=1.0, help="profit margin on revenue (default 1.0)")
    cdnow.set_defaults(handler=_run_cdnow)

    train = commands.add_parser("train", help="train a scorer, log it to MLflow, register it, apply the champion gate")
    _add_data_arguments(train)
    train.add_argument("--config", default=None, help="YAML training config, e.g. models/default.yaml")
    train.add_argument("--churn-window", type=_days, default=None, help="e.g. 90D (overrides the config)")
    train.add_argument("--value-horizon", type=_days, default=None, help="e.g. 365D (overrides the config)")
    train.add_argument("--tracking-uri", default=None, help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})")
    train.add_argument("--experiment", default="crmml", help="MLflow experiment (default crmml)")
    train.add_argument("--model-name", default="crmml-scorer", help="registered model name (default crmml-scorer)")
    train.add_argument("--promote", default="auto", choices=["auto", "always", "never"],
                       help="auto: champion only if its backtest is at least the champion's")
    train.add_argument("--bundle", default=None, help="also save a local model bundle in this folder")
    train.add_argument("--jobs", type=_positive, default=None,
                       help="cores to use (default: the usable cores); with 2 or more the backtest's model is "
                            "fitted in a second process beside the shipped one; the model is the same for every value")
    train.set_defaults(handler=_run_train)

    score = commands.add_parser("score", help="score every customer with a registered model (out of core)")
    score.add_argument("--model", required=True,
                       help="models:/crmml-scorer@champion, models:/<name>/<version> or a local bundle folder")
    _add_data_arguments(score)
    score.add_argument("--output", required=True,
                       help="scores file (.parquet or .csv), written atomically; with --engine spark also a lake "
                            "path (a URI such as s3a://bucket/scores, or a folder) that Spark writes as a Parquet dataset")
    score.add_argument("--tracking-uri", default=None, help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})")
    score.add_argument("--customers-per-partition", type=_positive, default=250_000,
                       help="customers scored at a time by one job (memory; default 250000); the partitions "
                            "number ceil(customers / this), at most 256 and at most one per 50 customers")
    score.add_argument("--jobs", type=_positive, default=None,
                       help="partitions scored at once, each in its own process with an equal share of DuckDB's "
                            "threads and memory limit (default: the usable cores); the output is the same for "
                            "every value. Only as many jobs as partitions run: lower --customers-per-partition "
                            "to use more cores on a small log")
    score.add_argument("--engine", default="local", choices=["local", "spark"],
                       help="local: DuckDB out of core (default); spark: a Spark session (pip install 'crmml[spark]')")
    score.add_argument("--spark-master", default=None,
                       help="with --engine spark: e.g. local[4], spark://host:7077, yarn (default: the session "
                            "spark-submit configured, else local[2])")
    score.set_defaults(handler=_run_score)

    report = commands.add_parser("report", help="one self-contained HTML model card of a registered model")
    report.add_argument("--model", required=True,
                        help="models:/crmml-scorer@champion, models:/<name>/<version> or a local bundle folder")
    report.add_argument("--transactions", default=None,
                        help="data to score and judge the model on (CSV/Parquet file, glob or directory); without "
                             "it the holdout charts and the win-back list are not available")
    report.add_argument("--customers", default=None, help="customer table (CSV/Parquet), with --transactions")
    report.add_argument("--as-of", default=None,
                        help="the report's date, with --transactions (default: the model's as-of date)")
    report.add_argument("--time-format", default=None, help="strptime format of the time column, e.g. %%Y%%m%%d")
    add_log_column_arguments(report, "the model's training columns")
    add_table_column_arguments(report, "the model's training columns")
    report.add_argument("--top", type=int, default=20, help="rows of the win-back list to show (default 20)")
    report.add_argument("--output", required=True, help="the HTML file to write (atomically)")
    report.add_argument("--tracking-uri", default=None, help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})")
    report.set_defaults(handler=_run_report)

    summary = commands.add_parser("summary", help="per-customer RFM summary of a transaction log")
    summary.add_argument("--transactions", required=True, help="CSV/Parquet file, glob or directory")
    summary.add_argument("--output", required=True, help="where to write the summary (.csv or .parquet)")
    summary.add_argument("--as-of", default=None, help="observation end date (default: last transaction)")
    summary.add_argument("--freq", default="D", choices=["D", "W", "M"], help="purchase period (default D)")
    summary.add_argument("--freq-multiplier", type=float, default=1, help="periods per time unit (7: days to weeks)")
    summary.add_argument("--time-format", default=None, help="strptime format of the time column, e.g. %%Y%%m%%d")
    add_log_column_arguments(summary)
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
    backtest.add_argument("--churn-window", type=_days, default=None, help="e.g. 90D (default 90D; CDNOW 273D)")
    backtest.add_argument("--value-horizon", type=_days, default=None, help="e.g. 365D (default 365D; CDNOW 273D)")
    backtest.add_argument("--time-format", default=None, help="strptime format of the time column, e.g. %%Y%%m%%d")
    add_log_column_arguments(backtest)
    add_table_column_arguments(backtest)
    backtest.add_argument("--transaction-model", default="pareto_nbd", choices=["pareto_nbd", "bg_nbd", "mbg_nbd"])
    backtest.add_argument("--plots", default=None, help="directory for the PNG plots and decile tables")
    backtest.add_argument("--output", default=None, help="write the metrics table here (.csv)")
    backtest.set_defaults(handler=_run_backtest)

    serve = commands.add_parser("serve", help="the scoring service: FastAPI on uvicorn, for a registered model")
    serve.add_argument("--model", default=None,
                       help="models:/crmml-scorer@champion, models:/<name>/<version> or a local bundle folder "
                            "(default: $CRMML_MODEL_URI)")
    serve.add_argument("--tracking-uri", default=None,
                       help=f"MLflow tracking URI (default: $CRMML_TRACKING_URI, $MLFLOW_TRACKING_URI or "
                            f"{DEFAULT_TRACKING_URI})")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes (default: $CRMML_WORKERS or 1; one per core is a good start)")
    serve.add_argument("--reload-interval", type=float, default=None,
                       help="seconds between registry polls for a moved alias (default: $CRMML_RELOAD_INTERVAL_SECONDS"
                            " or 0, off)")
    serve.add_argument("--access-log", action="store_true", help="log every request (off by default: /metrics counts them)")
    serve.set_defaults(handler=_run_serve)
    return parser


def _run_serve(args: argparse.Namespace) -> int:
    from crmml.service.server import run_server

    return run_server(model=args.model, tracking_uri=args.tracking_uri, host=args.host, port=args.port,
                      workers=args.workers, reload_interval=args.reload_interval, access_log=args.access_log)


def _run_cdnow(args: argparse.Namespace) -> int:
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
    columns = log_columns(args)
    summary, report = rfm_summary(
        args.transactions,
        as_of=args.as_of,
        freq=args.freq,
        freq_multiplier=args.freq_multiplier,
        time_format=args.time_format,
        return_report=True,
        **columns.read_kwargs(),
    )
    print(columns.describe())
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
    from crmml.jobs import read_customer_table

    default_days = CDNOW_HOLDOUT_DAYS if args.cdnow else None
    config = ModelConfig(
        churn_window_days=args.churn_window or default_days or 90,
        value_horizon_days=args.value_horizon or default_days or 365,
        transaction_model=args.transaction_model,
    )
    table_mapping = table_columns(args)  # (the table's options need --customers)
    if args.cdnow:
        if args.cutoff or args.customers or args.time_format or any(v is not None for v in
                                                                    log_column_flags(args).values()):
            raise ValueError("--cdnow fixes the data and the cutoff; drop --cutoff, --customers and the column options.")
        result = cdnow_backtest(config, plots=args.plots)
        print("CDNOW protocol: 23,570 customers, cutoff 1997-09-30, holdout 1997-10-01 to 1998-06-30\n")
    else:
        if not args.cutoff:
            raise ValueError("--transactions needs at least one --cutoff DATE.")
        customers = read_customer_table(args.customers, table_mapping)
        columns = log_columns(args)
        print(columns.describe())
        if customers is not None:
            print(table_mapping.describe(customers.columns))
        read_kwargs = {"time_format": args.time_format} if args.time_format else {}
        with printing_table_warnings(args.command):
            result = backtest(args.transactions, cutoffs=args.cutoff, config=config, customers=customers,
                              **read_kwargs, **columns.read_kwargs())
        if args.plots:
            write_plots(result, args.plots)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", _readable_number):
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


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transactions", required=True, help="CSV/Parquet file, glob or directory")
    parser.add_argument("--customers", default=None, help="customer table (CSV/Parquet, one row per customer)")
    parser.add_argument("--as-of", required=True, help="the as-of date (YYYY-MM-DD); later rows are not read")
    parser.add_argument("--time-format", default=None, help="strptime format of the time column, e.g. %%Y%%m%%d")
    training = parser.prog.endswith("train")
    add_log_column_arguments(parser, "the config's columns: section" if training else "the model's training columns")
    add_table_column_arguments(parser, "the config's customer_columns: section" if training
                               else "the model's training columns")


def _days(text: str) -> int:
    """``90D`` or ``90`` -> 90."""
    value = text.strip().upper().removesuffix("D")
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of days such as 90D; got {text!r}")
    return int(value)


def _positive(text: str) -> int:
    """A positive whole number."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number; got {text!r}")
    return int(text)


def _tracking_uri(args: argparse.Namespace) -> str:
    return tracking_uri_or_default(args.tracking_uri)


def _run_train(args: argparse.Namespace) -> int:
    from crmml.batch_pool import default_jobs
    from crmml.customer_columns import describe_table
    from crmml.jobs import train_job
    from crmml.progress import progress_display

    with printing_table_warnings(args.command), progress_display() as progress:
        result = train_job(
            transactions=args.transactions, customers=args.customers, as_of=args.as_of, config=args.config,
            churn_window_days=args.churn_window, value_horizon_days=args.value_horizon,
            tracking_uri=_tracking_uri(args), experiment=args.experiment, model_name=args.model_name,
            promote=args.promote, bundle=args.bundle, time_format=args.time_format, progress=progress.step,
            columns=log_column_flags(args), jobs=args.jobs or default_jobs(),
            customer_columns=table_column_flags(args),
        )
    scorer, record = result.scorer, result.record
    print(scorer.config.columns.describe())
    for line in describe_table(getattr(scorer, "customer_table_", None), scorer.config.customer_columns):
        print(line)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", _readable_number):
        print(f"trained on {scorer.fingerprint_['rows_valid']:,} rows, {scorer.n_customers_:,} customers, "
              f"as of {scorer.as_of_.date()}; data hash {scorer.fingerprint_['content_hash']}")
        choices = scorer.model_.summary()
        print(f"churn: shipped {choices['churn']['shipped']}; value: shipped {choices['value']['shipped']}")
        covariates = choices["transaction_model"].get("covariates")
        if covariates is not None:
            print(f"transaction model ({choices['transaction_model']['kind']}): {covariates['reason']}")
        if scorer.backtest_ is not None:
            print(f"\nbacktest at {scorer.backtest_['cutoff']} (crmml and baselines):")
            print(result.backtest_table().to_string(), end="\n\n")
        else:
            print(f"backtest skipped: {scorer.backtest_skipped_}")
        print(scorer.flag_rule_.describe())
        print(f"tiers (training population; predicted_value: {scorer.config.value_unit()}):")
        print(scorer.tables_["tiers"].to_string(), end="\n\n")
    print(f"registered {record.model_name} version {record.version} (aliases: {', '.join(record.aliases)}); "
          f"run {record.run_id}")
    print(f"gate: {record.gate.reason}")
    return 0


def _run_score(args: argparse.Namespace) -> int:
    from crmml.batch_pool import default_jobs
    from crmml.jobs import score_job
    from crmml.progress import progress_display

    if args.engine == "spark":
        return _run_score_on_spark(args)
    with progress_display() as progress:
        result = score_job(
            model=args.model, transactions=args.transactions, customers=args.customers, as_of=args.as_of,
            output=args.output, tracking_uri=_tracking_uri(args), time_format=args.time_format,
            customers_per_partition=args.customers_per_partition, progress=progress.advance,
            jobs=args.jobs or default_jobs(), columns=log_column_flags(args),
            customer_columns=table_column_flags(args),
        )
    print(f"model {result.model_version}")
    print(result.columns.describe())
    if args.customers is not None:
        print(result.customer_columns.describe())
    print(result.report)
    if result.missing_attributes:
        print(f"note: scored without the attributes {result.missing_attributes} the model was trained with "
              "(pass --customers)")
    return 0


def _run_score_on_spark(args: argparse.Namespace) -> int:
    if args.jobs is not None:
        raise ValueError("--jobs is for the local engine; with --engine spark, --spark-master sets the parallelism.")
    try:
        from crmml.spark.jobs import score_job_spark
    except ImportError as error:  # the optional extra is not installed: one line, exit code 2
        raise ValueError(first_line(error)) from error
    result = score_job_spark(
        model=args.model, transactions=args.transactions, customers=args.customers, as_of=args.as_of,
        output=args.output, tracking_uri=_tracking_uri(args), time_format=args.time_format,
        master=args.spark_master, columns=log_column_flags(args), customer_columns=table_column_flags(args),
    )
    print(f"model {result.model_version} (engine spark)")
    print(result.columns.describe())
    if args.customers is not None:
        print(result.customer_columns.describe())
    print(result.report)
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from crmml.jobs import read_customer_table
    from crmml.registry import load_scorer
    from crmml.report import build_report

    output = Path(args.output)
    if output.suffix.lower() not in {".html", ".htm"}:
        raise ValueError(f"--output must end in .html; got {output.name!r}.")
    if args.transactions is None and (args.as_of or args.customers or args.time_format):
        raise ValueError("--as-of, --customers and --time-format describe the report's data: they need --transactions.")
    if not output.parent.is_dir():
        raise NotADirectoryError(f"--output: no folder {output.parent}")
    columns_given = any(v is not None for v in log_column_flags(args).values())
    if args.transactions is None and columns_given:
        raise ValueError("The column options describe the report's data: they need --transactions.")
    scorer = load_scorer(args.model, tracking_uri=_tracking_uri(args))
    read_kwargs = {"time_format": args.time_format} if args.time_format else {}
    if args.transactions is not None:
        columns = log_columns(args, scorer.config.columns)
        read_kwargs.update(columns.read_kwargs())
        print(columns.describe())
    table_mapping = table_columns(args, scorer.config.customer_columns)
    customers = read_customer_table(args.customers, table_mapping)
    if customers is not None:
        print(table_mapping.describe(customers.columns))
    with printing_table_warnings(args.command):  # (the evaluation backtests the config on the report's data)
        report = build_report(scorer, transactions=args.transactions, as_of=args.as_of,
                              customers=customers, top=args.top, **read_kwargs)
    report.write_html(output)
    missing = [s.key for s in report.sections if s.unavailable]
    print(f"model {scorer.model_version}: wrote {output} ({len(report.sections)} sections"
          + (f"; not available: {', '.join(missing)})" if missing else ")"))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from crmml.jobs import demo_data, demo_report
    from crmml.scorer import ScorerConfig, load_config

    workdir = Path(args.workdir)
    files = demo_data(workdir)
    config = args.config or ("models/default.yaml" if Path("models/default.yaml").is_file() else None)
    tracking = ["--tracking-uri", args.tracking_uri] if args.tracking_uri else []
    print(f"CDNOW master log ({files['transactions']}) with a simulated customer table ({files['customers']})\n")
    train = ["train", "--transactions", str(files["transactions"]), "--customers", str(files["customers"]),
             "--as-of", files["as_of"], "--promote", "always", *tracking, *(["--config", config] if config else [])]
    print("$ crmml " + " ".join(train))
    if main(train) != 0:
        return EXIT_USAGE
    scores = workdir / "scores.parquet"
    score = ["score", "--model", "models:/crmml-scorer@champion", "--transactions", str(files["transactions"]),
             "--customers", str(files["customers"]), "--as-of", files["as_of"], "--output", str(scores), *tracking]
    print("\n$ crmml " + " ".join(score))
    if main(score) != 0:
        return EXIT_USAGE
    report = demo_report(scores, files["customers"], top=args.top)
    unit = (load_config(config) if config else ScorerConfig()).value_unit()
    print(f"\npredicted_value in every table: {unit}")
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.max_colwidth", 90,
                           "display.float_format", _readable_number):
        for title, table in report.items():
            print(f"\n{title}:")
            print(table.to_string())
    return 0


def _readable_number(value: float) -> str:
    """Tables in fixed notation: money and counts with two decimals and thousands separators, shares
    and probabilities (below 1) with three significant decimals (pandas would switch a whole column
    to 7.94e-01 notation when its values span several magnitudes)."""
    if value != value or abs(value) >= 1:  # NaN, or money and counts
        return f"{value:,.2f}"
    return f"{value:.4f}" if abs(value) >= 0.001 or value == 0 else f"{value:.2e}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
