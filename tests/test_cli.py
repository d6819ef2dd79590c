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
