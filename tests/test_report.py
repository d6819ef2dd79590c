"""The model report (`crmml report`): what each section shows with and without data, the report a
training run logs to MLflow, bad inputs, and the rendered page in a real headless browser.

The browser test drives Debian's chromium (installed by conftest's ``chromium`` fixture when missing)
with Playwright, serves the report from a loopback HTTP server, and leaves a full-page screenshot at
``tests/artifacts/report_screenshot.png`` (git-ignored).
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser_support import CHROMIUM_ARGS

from crmml.cli import main
from crmml.data.simulate import simulate_customer_base
from crmml.report import SECTION_KEYS, build_report
from crmml.scorer import Scorer

pytest.importorskip("mlflow")

MODEL_AS_OF = "2024-12-31"  # the data run to 2025-06-30: a 180-day holdout after the model's as-of date
# Quick to fit (the logistic churn learner, BTYD value), with a BTYD baseline in the backtest.
CONFIG = """
model:
  churn_window_days: 90
  value_horizon_days: 180
  transaction_model: bg_nbd
  churn_learners: [logistic]
  value_learners: []
baseline_models: [bg_nbd]
"""
EVALUATION_SECTIONS = ("tracking", "purchase-fan", "calibration-by-frequency", "interval-calibration", "churn",
                       "gains")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`crmml train` on a simulated base as of 2024-12-31, registered in a SQLite MLflow, plus a bundle."""
    folder = tmp_path_factory.mktemp("report")
    sim = simulate_customer_base(800, start="2023-01-01", end="2025-06-30", acquisition_end="2025-05-31", seed=7)
    transactions, customers = folder / "transactions.parquet", folder / "customers.csv"
    sim.transactions.to_parquet(transactions)
    table = sim.customers[["customer_id", "acquisition_channel", "region", "signup_date", "referred_by"]]
    table.to_csv(customers, index=False)
    (folder / "config.yaml").write_text(CONFIG)
    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    assert main(["train", "--transactions", str(transactions), "--customers", str(customers), "--as-of", MODEL_AS_OF,
                 "--config", str(folder / "config.yaml"), "--tracking-uri", tracking,
                 "--bundle", str(folder / "bundle")]) == 0
    return {"folder": folder, "transactions": transactions, "customers": customers, "table": pd.read_csv(customers),
            "tracking": tracking, "scorer": Scorer.load(folder / "bundle")}


def test_training_run_logs_the_report_and_its_figures(trained):
    from mlflow import MlflowClient

    client = MlflowClient(trained["tracking"])
    run_id = client.get_model_version("crmml-scorer", "1").run_id
    assert "crmml.report" not in client.get_run(run_id).data.tags  # set only when the report failed
    listed = {Path(a.path).name for a in client.list_artifacts(run_id, "report")}
    assert {"report.html", "figures"} <= listed
    figures = {Path(a.path).name for a in client.list_artifacts(run_id, "report/figures")}
    expected = {"tracking_tracking.png", "calibration-by-frequency_by_frequency.png", "churn_roc_pr.png",
                "churn_calibration.png", "gains_gains.png", "tiers_pyramid.png", "channels_channels.png",
                "referrals_referrals.png", "purchase-fan_fan.png", "interval-calibration_coverage.png"}
    assert expected <= figures
    page = Path(client.download_artifacts(run_id, "report/report.html", str(trained["folder"]))).read_text()
    assert all(f'<section id="{key}">' in page for key in SECTION_KEYS)
    assert "The training backtest" in page and "not available" not in page  # the training data fill every section


def test_cli_report_from_the_bundle_alone_lists_what_needs_data(trained, tmp_path, capsys):
    output = tmp_path / "model.html"
    assert main(["report", "--model", str(trained["folder"] / "bundle"), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert ("not available: tracking, purchase-fan, calibration-by-frequency, interval-calibration, churn, gains, "
            "win-back") in printed
    assert output.read_text().count("not available: needs --transactions") == 7


def test_report_from_the_bundle_alone_says_what_needs_transactions(trained):
    report = build_report(trained["scorer"])
    assert [s.key for s in report.sections] == list(SECTION_KEYS)
    for key in (*EVALUATION_SECTIONS, "win-back"):
        section = report.section(key)
        assert section.unavailable.startswith("not available: needs --transactions") and not section.figures
    unit = trained["scorer"].config.value_unit()  # what a value is: horizon, discounting, currency
    assert "days, discounted at 10 %/yr, in the data's currency" in unit
    for key in ("tiers", "channels", "referrals"):
        assert report.section(key).unavailable is None and len(report.section(key).figures) >= 1
        assert f"Predicted value is {unit}." in report.section(key).source
    assert [f.name for f in report.section("channels").figures] == ["channels", "channel-effects"]
    parameters = dict(report.section("parameters").tables)
    [transaction_caption] = [c for c in parameters if c.startswith("Transaction model (bg_nbd)")]
    table = parameters[transaction_caption]
    assert list(table.index) == ["r", "alpha", "a", "b"]
    assert np.isfinite(table["standard_error"]).all() and (table["standard_error"] > 0).all()
    assert (table["lower_95"] < table["estimate"]).all() and (table["estimate"] < table["upper_95"]).all()


def test_report_on_later_data_is_an_out_of_time_test_of_the_model(trained):
    report = build_report(trained["scorer"], transactions=trained["transactions"], as_of="2025-06-30",
                          customers=trained["table"])
    assert all(s.unavailable is None for s in report.sections)
    churn = report.section("churn")
    assert churn.source.startswith("Out-of-time test of this fitted model") and "2024-12-31" in churn.source
    metrics = dict(churn.tables)["Churn metrics on this holdout"]
    assert 0.6 < metrics.loc["crmml", "roc_auc"] <= 1
    win_back = report.section("win-back")
    [(_, listed)] = win_back.tables
    assert set(listed["tier"]) <= {"platinum", "gold"} and listed["predicted_value"].is_monotonic_decreasing
    tiers = dict(report.section("tiers").tables)["Customers and value per tier"]
    assert tiers["value_share"].sum() == pytest.approx(1.0)


def test_interval_sections_judge_each_customers_distribution_on_the_holdout(trained):
    """The out-of-time holdout: every known customer has a PIT in (0, 1); the coverage table has the four
    levels overall with the integer intervals covering at least their level minus noise; the fan's
    band contains the model's mean and is the normal band of its standard deviation."""
    from crmml.holdout_intervals import LEVELS

    report = build_report(trained["scorer"], transactions=trained["transactions"], as_of="2025-06-30")
    calibration = report.section("interval-calibration")
    assert calibration.unavailable is None and [f.name for f in calibration.figures] == ["coverage"]
    coverage, bins = (table for _, table in calibration.tables)
    overall = coverage.loc["all"]
    assert list(overall.index) == ["50", "80", "90", "95"] and list(overall["nominal"]) == [100 * v for v in LEVELS]
    assert (overall["expected"] >= overall["nominal"] - 1e-9).all()  # integer intervals hold at least their level
    assert bins.loc["all", [f"pit_{i}" for i in range(1, 11)]].sum() == pytest.approx(100.0, abs=0.5)
    assert bins.loc["all", "customers"] == overall["customers"].iloc[0] > 100
    fan = report.section("purchase-fan")
    [(_, curve)] = fan.tables
    assert ((curve["band_lower_95"] <= curve["band_lower_80"]) & (curve["band_lower_80"] <= curve["btyd_expected"])
            & (curve["btyd_expected"] <= curve["band_upper_80"]) & (curve["band_upper_80"] <= curve["band_upper_95"])).all()
    width = (curve["band_upper_95"] - curve["band_lower_95"]) / (2 * curve["btyd_sd"])
    assert np.allclose(width, 1.96, atol=0.06)  # table values rounded to 0.1


def test_interval_sections_say_why_they_are_empty(trained):
    """A transaction model without purchase distributions (a covariate model) and a holdout without
    known customers: both sections say why, without a figure."""
    from types import SimpleNamespace

    from crmml.models import BetaGeoCovariates
    from crmml.report.evaluation import HoldoutEvaluation
    from crmml.report.intervals import interval_sections

    scorer = trained["scorer"]
    curve = pd.DataFrame({"day": [7], "date": [pd.Timestamp("2024-07-11")], "actual": [0.0], "btyd_expected": [1.0]})
    scores = pd.DataFrame({"frequency": [np.nan], "purchases_in_horizon": [1.0]})
    evaluation = HoldoutEvaluation("backtest", pd.Timestamp("2024-07-04"), 90, 180, "A holdout.", scores, curve)
    covariate = SimpleNamespace(model_=SimpleNamespace(btyd_=SimpleNamespace(transaction_model=BetaGeoCovariates())))
    for owner, reason in ((covariate, "the transaction model (BetaGeoCovariates) has no conditional purchase "
                                      "distribution"),
                          (scorer, "no customer had purchases before the cutoff 2024-07-04")):
        context = SimpleNamespace(scorer=owner, evaluation=evaluation, evaluation_unavailable=None)
        sections = interval_sections(context)
        assert [s.key for s in sections] == ["interval-calibration", "purchase-fan"]
        for section in sections:
            assert section.unavailable.startswith("not available: ") and reason in section.unavailable
            assert not section.figures


def test_report_inside_the_holdout_backtests_the_config(trained):
    report = build_report(trained["scorer"], transactions=trained["transactions"], as_of="2025-03-31")
    gains = report.section("gains")
    assert gains.source.startswith("Backtest of this model's config") and "2024-10-02" in gains.source
    assert len(gains.figures) == 1
    # Without a customer table the channel and referral views are the training population's.
    assert report.section("channels").source.startswith("The training population (no --customers given")


@pytest.mark.parametrize("case", ["as-of without data", "not html", "unknown model", "as-of before data"])
def test_cli_report_bad_inputs_exit_2_with_one_line_and_no_output(trained, case, tmp_path, capsys):
    output = tmp_path / ("report.txt" if case == "not html" else "report.html")
    model = "models:/no-such-model@champion" if case == "unknown model" else "models:/crmml-scorer@champion"
    argv = ["report", "--model", model, "--tracking-uri", trained["tracking"], "--output", str(output)]
    if case == "as-of without data":
        argv += ["--as-of", "2025-06-30"]
    elif case == "as-of before data":
        argv += ["--transactions", str(trained["transactions"]), "--as-of", "2001-01-01"]
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("crmml report: error:") and len(error.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_pyramid_channel_and_referral_charts_name_a_missing_column(tmp_path):
    from crmml.errors import DataValidationError
    from crmml.plots import plot_referral_value, plot_tier_pyramid, plot_value_by_channel

    tiers = pd.DataFrame({"customers": [10, 10, 55, 25], "predicted_value": [600.0, 150.0, 200.0, 50.0]},
                         index=pd.Index(["platinum", "gold", "iron", "lead"], name="tier"))
    fig = plot_tier_pyramid(tiers, path=tmp_path / "pyramid.png")
    [ax] = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["platinum", "gold", "iron", "lead"]
    assert (tmp_path / "pyramid.png").stat().st_size > 0
    for plot, table in ((plot_tier_pyramid, tiers.drop(columns="customers")),
                        (plot_value_by_channel, tiers.drop(columns="predicted_value")),
                        (plot_referral_value, tiers)):
        with pytest.raises(DataValidationError, match="Required column (customers|predicted_value|mean_value)"):
            plot(table)


# --------------------------------------------------------------------------------------------------
# The rendered page in a real browser
# --------------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server for ``tmp_path`` in a thread; its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=tmp_path))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_report_renders_every_section_and_image_in_a_headless_browser(trained, chromium, served, tmp_path, capsys):
    from playwright.sync_api import sync_playwright

    output = tmp_path / "report.html"
    assert main(["report", "--model", "models:/crmml-scorer@champion", "--tracking-uri", trained["tracking"],
                 "--transactions", str(trained["transactions"]), "--customers", str(trained["customers"]),
                 "--as-of", "2025-06-30", "--output", str(output)]) == 0
    assert "not available" not in capsys.readouterr().out
    page_text = output.read_text()
    assert not re.search(r"https?://", page_text)  # self-contained: nothing to fetch
    assert not re.search(r'(?:src|href)="(?!data:|#)', page_text)

    problems, requests = [], []
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report_screenshot.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            response = page.goto(f"{served}/report.html", wait_until="load")
            assert response is not None and response.ok
            for key in SECTION_KEYS:
                section = page.locator(f"section#{key}")
                assert section.is_visible(), key
                assert section.locator("h2").is_visible(), key
                assert section.locator("p.unavailable").count() == 0, key
                if key not in ("overview", "parameters", "win-back"):
                    assert section.locator("img").count() >= 1, key
            assert page.locator("section#win-back table tbody tr").count() >= 1
            images = page.evaluate(
                "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))")
            # tracking, purchase fan, by frequency, interval calibration, ROC/PR, calibration, gains, pyramid,
            # channels, channel effects, referrals
            assert len(images) == 11
            assert all(i["complete"] and i["width"] > 0 for i in images), images
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert all(url.startswith((served, "data:")) for url in requests), requests
    shutil.copyfile(output, ARTIFACTS / "report.html")
    assert screenshot.stat().st_size > 50_000
    print(f"report screenshot: {screenshot}")
