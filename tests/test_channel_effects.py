"""Channel effects in the scorer: the covariate BTYD fit's rate ratios, their intervals, the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crmml.channel_effects import EFFECT_COLUMNS, describe_effects, fit_channel_effects
from crmml.data.simulate_covariates import DEFAULT_CHANNELS, simulate_channel_log
from crmml.insights import value_by_channel


def _channel_log(kind: str, n: int = 4000, seed: int = 1):
    sim = simulate_channel_log(n, model=kind, seed=seed)
    customers = sim.customers[["customer_id", "channel"]].rename(columns={"channel": "acquisition_channel"})
    as_of = pd.Timestamp(sim.transactions["timestamp"].max()).normalize()
    return sim.transactions, customers, as_of


@pytest.mark.parametrize("kind", ["pareto_nbd", "bg_nbd"])
def test_fitted_channel_ratios_recover_the_simulated_factors_within_3_standard_errors(kind):
    transactions, customers, as_of = _channel_log(kind)
    effects = fit_channel_effects(transactions, as_of, customers, kind=kind, time_unit_days=7.0)
    assert list(effects.columns) == EFFECT_COLUMNS
    assert set(effects["reference"]) == {"web"} and set(effects["level"]) == {"referral", "paid"}
    for row in effects.itertuples():
        truth = DEFAULT_CHANNELS[row.level][1 if row.process == "purchase" else 2]
        assert abs(np.log(row.ratio) - np.log(truth)) < 3 * row.standard_error, (row.process, row.level)
        assert row.ratio_lower_95 < row.ratio < row.ratio_upper_95
    assert effects["customers"].sum() == (customers["acquisition_channel"] != "web").sum() * 2
    sentences = describe_effects(effects)
    assert len(sentences) == len(effects) and all(" against web " in s for s in sentences)


def test_no_effects_without_a_channel_column_or_with_one_channel():
    transactions, customers, as_of = _channel_log("pareto_nbd", n=500)
    assert fit_channel_effects(transactions, as_of, None, kind="pareto_nbd", time_unit_days=7.0) is None
    assert fit_channel_effects(transactions, as_of, customers.drop(columns="acquisition_channel"),
                               kind="pareto_nbd", time_unit_days=7.0) is None
    one = customers.assign(acquisition_channel="web")
    assert fit_channel_effects(transactions, as_of, one, kind="pareto_nbd", time_unit_days=7.0) is None


def test_value_by_channel_gives_an_interval_for_the_mean_value_per_customer():
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"customer_id": np.arange(300), "predicted_value": rng.gamma(1.0, 20.0, 300),
                           "tier": "iron", "at_risk": False})
    customers = pd.DataFrame({"customer_id": np.arange(300),
                              "acquisition_channel": np.where(np.arange(300) < 280, "web", "tv")})
    table = value_by_channel(scores, customers)
    web = table.loc["web"]
    assert web["mean_value_lower_95"] < web["mean_value"] < web["mean_value_upper_95"]
    values = scores["predicted_value"][:280]
    half_width = 1.959963984540054 * values.std(ddof=1) / np.sqrt(280)
    assert web["mean_value_upper_95"] - web["mean_value"] == pytest.approx(half_width)
    assert np.isnan(table.loc["tv", "mean_value_lower_95"])  # 20 customers: no normal interval


def test_the_scorer_measures_channel_effects_and_the_report_shows_them():
    from crmml.customer_model import ModelConfig
    from crmml.report import build_report
    from crmml.scorer import Scorer, ScorerConfig

    transactions, customers, as_of = _channel_log("pareto_nbd", n=1500, seed=2)
    config = ScorerConfig(model=ModelConfig(churn_learners=(), value_learners=(), churn_window_days=90,
                                            value_horizon_days=180),
                          baseline_models=("pareto_nbd",))
    scorer = Scorer(config).fit(transactions, as_of=as_of, customers=customers)
    effects = scorer.tables_["channel_effects"]
    assert set(effects.index) == {"purchase:referral", "purchase:paid", "dropout:referral", "dropout:paid"}
    report = build_report(scorer)
    assert "channel-effects" in report.figures() or any("channel-effects" in k for k in report.figures())
    html = report.to_html()
    assert "Channel effects" in html and "referral vs web: purchase rate" not in html  # (the plot is an image)
    assert "referral against web" in html and "mean_value_lower_95" in html
