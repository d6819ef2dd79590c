"""The CDNOW demo (against the published holdout results) and the thin `crmml` command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmml.cli import main
from crmml.data import rfm_summary
from crmml.demo import PUBLISHED_CDNOW, run_cdnow_demo


@pytest.fixture(scope="module")
def demo():
    return run_cdnow_demo()


def test_demo_parameters_close_to_published_cdnow_estimates(demo):
    """Every estimate within the precision printed in the sources (see crmml.demo.PUBLISHED_CDNOW)."""
    table = demo.parameters.dropna(subset=["published"])
    assert set(table["model"]) == set(PUBLISHED_CDNOW)
    is_ll = table["parameter"] == "log_likelihood"
    np.testing.assert_allclose(table.loc[~is_ll, "estimate"], table.loc[~is_ll, "published"], atol=5.1e-3)
    np.testing.assert_allclose(table.loc[is_ll, "estimate"], table.loc[is_ll, "published"], atol=0.05)


def test_cumulative_forecast_close_to_fader_hardie_lee_2005(demo):
    """Fader, Hardie & Lee (2005): 2,457 + 1,882 repeat transactions by week 78; the unconditional
    forecast under-shoots by about 4 % (BG/NBD) and 2 % (Pareto/NBD)."""
    holdout = demo.holdout.set_index("model")
    assert holdout["week78_cumulative_actual"].iloc[0] == 2457 + 1882
    assert holdout.loc["BG/NBD", "week78_error_pct"] == pytest.approx(-4, abs=0.5)
    assert holdout.loc["Pareto/NBD", "week78_error_pct"] == pytest.approx(-2, abs=0.5)


def test_demo_customer_table_is_consistent(demo):
    customers = demo.customers
    assert len(customers) == 2357
    assert customers["clv_52w"].is_monotonic_decreasing
    assert customers["p_alive"].between(0, 1).all()
    assert (customers["clv_52w"] >= 0).all()
    # Ranking by predicted value finds the holdout's big spenders: the top fifth by CLV holds far
    # more than a fifth of the actual holdout spend.
    top = customers.head(len(customers) // 5)
    assert top["holdout_spend"].sum() / customers["holdout_spend"].sum() > 0.6


def test_cli_demo_prints_parameters_holdout_and_customers(capsys):
    assert main(["cdnow", "--top", "4"]) == 0
    out = capsys.readouterr().out
    for expected in ("Fitted parameters", "Pareto/NBD", "Holdout check", "Top 4 customers", "top 20 %"):
        assert expected in out


def test_console_script_is_installed():
    executable = Path(sys.executable).parent / "crmml"
    assert executable.exists()
    result = subprocess.run([str(executable), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "summary" in result.stdout


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_summary_writes_the_same_summary_as_the_library(tmp_path, suffix, capsys):
    log = pd.DataFrame(
        {
            "cust": ["a", "a", "a", "b", "c", "c"],
            "day": ["2024-01-01", "2024-01-05", "2024-02-01", "2024-01-10", "2024-01-03", "2024-03-01"],
            "value": [10.0, 5.0, 7.5, 3.0, 4.0, -1.0],
        }
    )
    source = tmp_path / "log.csv"
    log.to_csv(source, index=False)
    output = tmp_path / f"summary{suffix}"
    argv = ["summary", "--transactions", str(source), "--output", str(output), "--as-of", "2024-03-31"]
    argv += ["--customer-col", "cust", "--time-col", "day", "--amount-col", "value"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 customers" in printed
    written = pd.read_csv(output, index_col=0) if suffix == ".csv" else pd.read_parquet(output)
    expected = rfm_summary(source, as_of="2024-03-31", customer_col="cust", time_col="day", amount_col="value")
    columns = ["frequency", "recency", "T", "monetary_value"]
    np.testing.assert_allclose(written[columns].to_numpy(), expected[columns].to_numpy())


def test_cli_bad_inputs_exit_2_with_one_line_and_no_output(tmp_path, capsys):
    output = tmp_path / "summary.csv"
    missing = tmp_path / "nope.csv"
    assert main(["summary", "--transactions", str(missing), "--output", str(output)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.csv" in err and err.startswith("crmml summary: error:")

    wrong_columns = tmp_path / "wrong.csv"
    pd.DataFrame({"id": [1], "when": ["2024-01-01"], "amount": [1.0]}).to_csv(wrong_columns, index=False)
    assert main(["summary", "--transactions", str(wrong_columns), "--output", str(output)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "customer_id" in err

    assert main(["summary", "--transactions", str(wrong_columns), "--output", str(tmp_path / "x.txt")]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err
    assert not output.exists() and not list(tmp_path.glob(".*partial"))


BUNDLE = Path(__file__).parent / "fixtures" / "bundle_0_1_0"


def test_cli_score_an_amount_too_large_to_sum_exits_2_naming_amount_and_row(tmp_path, capsys):
    """Issue 21 F1: it was a DuckDB ConversionException traceback (exit 1)."""
    log = pd.read_csv(BUNDLE / "transactions.csv")
    log.loc[4, "amount"] = 1e28
    source = tmp_path / "log.csv"
    log.to_csv(source, index=False)
    output = tmp_path / "scores.parquet"
    argv = ["score", "--model", str(BUNDLE), "--transactions", str(source), "--as-of", "2025-06-30",
            "--output", str(output), "--jobs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("crmml score: error:")
    assert "'amount'" in err and "row 5 of" in err and "1e+28" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


def test_cli_score_rejects_a_bad_jobs_value(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["score", "--model", str(BUNDLE), "--transactions", "x.csv", "--as-of", "2025-06-30",
              "--output", str(tmp_path / "s.parquet"), "--jobs", "0"])
    assert exited.value.code == 2 and "positive whole number" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_score_with_jobs_writes_the_same_files_as_one_job(tmp_path, capsys):
    """--jobs 2 (worker processes) and --jobs 1 (none): byte-identical scores and rejections; the
    note on attributes the model misses comes back from the workers."""
    written = {}
    for jobs in ("1", "2"):
        output = tmp_path / jobs / "scores.csv"
        output.parent.mkdir()
        argv = ["score", "--model", str(BUNDLE), "--transactions", str(BUNDLE / "transactions.csv"),
                "--as-of", "2025-06-30", "--output", str(output), "--customers-per-partition", "200", "--jobs", jobs]
        assert main(argv) == 0
        printed = capsys.readouterr().out
        assert "in 3 partition(s)" in printed and "note: scored without the attributes" in printed
        written[jobs] = (output.read_bytes(), (output.parent / "scores.rejected.csv").read_bytes())
    assert written["1"] == written["2"]
    assert len(pd.read_csv(tmp_path / "1" / "scores.csv")) == 600

# --------------------------------------------------------------------------------------------------
# A shop's own column names, time zone and order ids, on every data command
# --------------------------------------------------------------------------------------------------

SHOP_AS_OF = "2025-06-30"
SHOP_CONFIG = (Path(__file__).resolve().parents[1] / "models" / "small.yaml").read_text() + """
columns:
  customer: user
  time: order_ts
  amount: revenue
  order: order_no
  timezone: Europe/Berlin
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A Berlin shop's export: its own column names, local times with their UTC offset (written as
    text), order numbers and refunds dated 1-10 days after their order; and the same log naive in
    local time with canonical names (what the mapping must amount to)."""
    from crmml.data.simulate import simulate_customer_base

    folder = tmp_path_factory.mktemp("shop")
    sim = simulate_customer_base(300, start="2023-01-01", end="2025-06-30", acquisition_end="2025-05-31", seed=8)
    local = sim.transactions[["customer_id", "timestamp", "amount"]].reset_index(drop=True)
    local["order_id"] = [f"B-{i:06d}" for i in range(len(local))]
    refunds = local.sample(120, random_state=3)
    refunds = refunds.assign(amount=-refunds["amount"].round(2),
                             timestamp=refunds["timestamp"] + pd.to_timedelta(np.arange(120) % 10 + 1, unit="D"))
    local = pd.concat([local, refunds], ignore_index=True)
    export = pd.DataFrame({
        "user": local["customer_id"],
        "order_ts": local["timestamp"].dt.tz_localize("Europe/Berlin", ambiguous=True, nonexistent="shift_forward")
        .map(lambda t: t.isoformat()),
        "revenue": local["amount"],
        "order_no": local["order_id"],
    })
    path = folder / "orders.csv"
    export.to_csv(path, index=False)
    (folder / "shop.yaml").write_text(SHOP_CONFIG)
    return {"folder": folder, "orders": path, "local": local, "tracking": f"sqlite:///{folder / 'mlflow.db'}"}


SHOP_FLAGS = ["--customer-col", "user", "--time-col", "order_ts", "--amount-col", "revenue", "--order-col",
              "order_no", "--timezone", "Europe/Berlin"]


def test_cli_summary_maps_columns_time_zone_and_order_ids(shop, capsys):
    output = shop["folder"] / "summary.parquet"
    argv = ["summary", "--transactions", str(shop["orders"]), "--output", str(output), "--as-of", SHOP_AS_OF]
    assert main([*argv, *SHOP_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert ("columns: customer id = 'user', timestamp = 'order_ts' (time zone Europe/Berlin), amount = 'revenue', "
            "order id = 'order_no'") in printed
    expected = rfm_summary(shop["local"].assign(timestamp=shop["local"]["timestamp"].dt.floor("s")),
                           as_of=SHOP_AS_OF, order_col="order_id")
    written = pd.read_parquet(output)
    pd.testing.assert_frame_equal(written, expected, check_index_type=False)
    assert "refund_rows_netted_by_order=" in printed and "refund_rows_netted_by_order=0" not in printed


def test_every_data_command_takes_the_column_options():
    from crmml.cli import _build_parser

    parser = _build_parser()
    common = ["--transactions", "x.csv", *SHOP_FLAGS]
    for argv in (["train", *common, "--as-of", SHOP_AS_OF],
                 ["score", *common, "--as-of", SHOP_AS_OF, "--model", "m", "--output", "s.parquet"],
                 ["report", *common, "--model", "m", "--output", "r.html"],
                 ["backtest", *common, "--cutoff", "2025-01-01", "--churn-window", "90D", "--value-horizon", "365D"],
                 ["summary", *common, "--output", "s.csv"]):
        args = parser.parse_args(argv)
        assert (args.customer_col, args.time_col, args.amount_col, args.order_col, args.timezone) == (
            "user", "order_ts", "revenue", "order_no", "Europe/Berlin"), argv[0]
    assert parser.parse_args(["backtest", "--cdnow", "--churn-window", "90D"]).churn_window == 90


def test_an_unknown_time_zone_or_config_key_exits_2_with_one_line(shop, tmp_path, capsys):
    argv = ["summary", "--transactions", str(shop["orders"]), "--output", str(tmp_path / "s.csv"), *SHOP_FLAGS]
    assert main([*argv, "--timezone", "Europe/Berlni"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Unknown time zone 'Europe/Berlni'" in err
    config = tmp_path / "bad.yaml"
    config.write_text("columns:\n  customer_column: user\n")
    assert main(["train", "--transactions", str(shop["orders"]), "--as-of", SHOP_AS_OF, "--config", str(config),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "customer_column" in err and "known keys" in err
    assert not (tmp_path / "m.db").exists()


@pytest.mark.slow
def test_train_and_score_a_shop_log_with_its_own_columns_and_time_zone(shop, capsys):
    """End to end: train reads the mapping from the config's columns: section, score from the model."""
    pytest.importorskip("mlflow")
    folder = shop["folder"]
    assert main(["train", "--transactions", str(shop["orders"]), "--as-of", SHOP_AS_OF, "--config",
                 str(folder / "shop.yaml"), "--tracking-uri", shop["tracking"], "--promote", "always"]) == 0
    printed = capsys.readouterr().out
    assert "timestamp = 'order_ts' (time zone Europe/Berlin)" in printed and "order id = 'order_no'" in printed
    scores = folder / "scores.parquet"
    assert main(["score", "--model", "models:/crmml-scorer@champion", "--transactions", str(shop["orders"]),
                 "--as-of", SHOP_AS_OF, "--output", str(scores), "--tracking-uri", shop["tracking"]]) == 0
    printed = capsys.readouterr().out
    assert "columns: customer id = 'user'" in printed and "(time zone Europe/Berlin)" in printed
    written = pd.read_parquet(scores)
    buyers = rfm_summary(shop["local"], as_of=SHOP_AS_OF, order_col="order_id").index
    assert set(buyers) <= set(written["customer_id"])
    _check_the_training_run(shop["tracking"])


def _check_the_training_run(tracking):
    """The run and the version say what they are; the data is a dataset input; metric names are the report's."""
    from mlflow import MlflowClient

    from crmml.registry import metric_name, registry_to_read

    client = MlflowClient(registry_to_read(tracking))
    version = client.get_model_version("crmml-scorer", "1")
    run = client.get_run(version.run_id)
    for description in (version.description, run.data.tags["mlflow.note.content"]):
        assert description.startswith("crmml scorer trained as of 2025-06-30 on ") and "orders.csv" in description
        assert "time zone Europe/Berlin" in description and "next 90 days" in description
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.name == "transactions" and "orders.csv" in dataset.dataset.source
    assert {tag.key: tag.value for tag in dataset.tags}["mlflow.data.context"] == "training"
    names = client.download_artifacts(run.info.run_id, "backtest/metric_names.json")
    import json

    mapping = json.loads(Path(names).read_text())
    baselines = {entry["scorer"] for entry in mapping.values()} - {"crmml"}
    assert "BG/NBD P(no purchase)" in baselines
    for name, entry in mapping.items():
        scorer = None if entry["scorer"] == "crmml" else entry["scorer"]
        assert name == metric_name(scorer, entry["metric"]) and name in run.data.metrics
    assert "baseline.BG/NBD P_no purchase_.churn_roc_auc" in run.data.metrics


# --------------------------------------------------------------------------------------------------
# The registry's URI: one default, named in every error, never created by a read
# --------------------------------------------------------------------------------------------------


def test_one_default_tracking_uri():
    from crmml import cli, defaults, registry
    from crmml.service.settings import ServiceSettings

    assert cli.DEFAULT_TRACKING_URI is defaults.DEFAULT_TRACKING_URI is registry.DEFAULT_TRACKING_URI
    assert ServiceSettings.model_fields["tracking_uri"].default == defaults.DEFAULT_TRACKING_URI


def test_scoring_from_another_folder_names_the_registry_and_creates_no_database(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    log = elsewhere / "log.csv"
    pd.DataFrame({"customer_id": [1], "timestamp": ["2024-01-01"], "amount": [1.0]}).to_csv(log, index=False)
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = ["score", "--model", "models:/crmml-scorer@champion", "--transactions", str(log), "--as-of",
            "2024-01-31", "--output", str(elsewhere / "scores.parquet")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "sqlite:///mlflow.db" in err and str(elsewhere / "mlflow.db") in err and "--tracking-uri" in err
    assert not (elsewhere / "mlflow.db").exists()
    assert main(["report", "--model", "models:/crmml-scorer/1", "--output", str(elsewhere / "r.html")]) == 2
    assert "sqlite:///mlflow.db" in capsys.readouterr().err
    assert not (elsewhere / "mlflow.db").exists()


def test_a_model_missing_from_an_existing_registry_names_the_registry(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from crmml.registry import ModelNotFoundError, load_scorer

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # creates the (empty) registry
    with pytest.raises(ModelNotFoundError, match=f"from the registry at {uri}: .*crmml-scorer"):
        load_scorer("models:/crmml-scorer@champion", tracking_uri=uri)


# --------------------------------------------------------------------------------------------------
# Progress in a job log
# --------------------------------------------------------------------------------------------------


def test_progress_prints_one_line_per_step_with_elapsed_time_when_not_on_a_terminal(capsys):
    from crmml.progress import progress_display

    with progress_display() as progress:  # under pytest neither stdout nor stderr is a terminal
        progress.step("read the data")
        progress.advance(1, 2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].endswith("s] read the data") and lines[1].endswith("scored part 1 of 2")
    assert float(lines[0].strip("[").split(" s]")[0]) >= 0
    with progress_display(enabled=False) as progress:
        progress.step("quiet")
    assert capsys.readouterr().out == ""


def test_progress_lines_count_from_the_start():
    import io

    from crmml.progress import Progress

    ticks = iter([100.0, 101.5, 163.25])
    stream = io.StringIO()
    progress = Progress(lines=stream, clock=lambda: next(ticks))
    progress.step("read the data")
    progress.step("fit the models")
    assert stream.getvalue().splitlines() == ["[      1.5 s] read the data", "[     63.2 s] fit the models"]
