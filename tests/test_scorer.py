"""The scorer: value, pyramid tiers, flags and reasons; tier stability; bundles; configs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crmml.customer_model import ModelConfig
from crmml.data.simulate import simulate_customer_base
from crmml.errors import DataValidationError
from crmml.flags import FlagConfig, FlagRule
from crmml.pyramid import TierConfig, TierRule
from crmml.scorer import SCORE_COLUMNS, Scorer, ScorerConfig, load_config
from crmml.uncertainty import UncertaintyConfig

AS_OF = pd.Timestamp("2025-06-30")
FAST = ScorerConfig(
    model=ModelConfig(churn_window_days=90, value_horizon_days=180, churn_learners=("logistic",),
                      value_learners=("poisson_glm",), transaction_model="bg_nbd"),
    baseline_models=("bg_nbd",),
    uncertainty=UncertaintyConfig(tier_uncertain_below=0.5),  # (the flag is off by default)
)
TABLE_COLUMNS = ["customer_id", "acquisition_channel", "region", "signup_date", "referred_by"]


@pytest.fixture(scope="module")
def base():
    sim = simulate_customer_base(2500, start="2023-01-01", end="2025-06-30", acquisition_end="2025-05-31", seed=11)
    customers = sim.customers[TABLE_COLUMNS].copy()
    rng = np.random.default_rng(0)
    customers["cost_to_serve"] = np.where(rng.random(len(customers)) < 0.5, 5.0, np.nan)
    return sim.transactions, customers


@pytest.fixture(scope="module")
def scorer(base):
    transactions, customers = base
    return Scorer(FAST).fit(transactions, as_of=AS_OF, customers=customers)


@pytest.fixture(scope="module")
def scores(scorer, base):
    transactions, customers = base
    return scorer.score(transactions, as_of=AS_OF, customers=customers)


def test_scores_have_the_documented_columns_and_valid_values(scores, base):
    assert list(scores.columns) == SCORE_COLUMNS
    assert scores["customer_id"].is_unique and len(scores) == base[1]["customer_id"].nunique()
    assert scores["churn_probability"].between(0, 1).all() and scores["p_alive"].between(0, 1).all()
    assert (scores["predicted_value"] >= 0).all() and (scores["expected_purchases"] >= 0).all()
    assert set(scores["tier"]) <= {"platinum", "gold", "iron", "lead"}
    assert (scores["high_value_at_risk"] == (scores["at_risk"] & scores["tier"].isin(["platinum", "gold"]))).all()
    assert scores["model_version"].str.startswith("local-").all()


def test_flags_and_reasons_agree(scores):
    for flag in ("at_risk", "high_value_at_risk", "lapsed", "new", "tier_uncertain"):
        listed = scores["flags"].str.split(";").apply(lambda names, f=flag: f in names)
        assert (listed == scores[flag]).all(), flag
    lapsed = scores[scores["lapsed"]]
    assert len(lapsed) and lapsed["reasons"].str.contains(r"no purchase for \d+ days, \d+\.\dx the").all()
    at_risk = scores[scores["at_risk"]]
    assert at_risk["reasons"].str.contains("above the at-risk threshold").all()
    uncertain = scores[scores["tier_uncertain"]]
    assert len(uncertain) and uncertain.apply(lambda s: f"{s['tier']} tier uncertain: the value lies in the "
                                              f"{s['tier']} range with probability {s['tier_probability']:.2f}"
                                              in s["reasons"], axis=1).all()
    assert scores.loc[~scores["at_risk"] & ~scores["lapsed"] & ~scores["new"] & ~scores["tier_uncertain"]
                      & (scores["tier"] != "lead"), "reasons"].eq("").all()


def test_tier_cut_points_come_from_the_training_population(scorer, scores):
    rule = scorer.tier_rule_
    assert rule.platinum_min_value > rule.gold_min_value > rule.lead_max_value_without_costs
    known_cost = scores["predicted_profit"].notna()
    # Lead: unprofitable where the cost is known, the proxy elsewhere.
    assert (scores.loc[known_cost & (scores["tier"] == "lead"), "predicted_profit"] <= 0).all()
    assert (scores.loc[known_cost & (scores["tier"] != "lead"), "predicted_profit"] > 0).all()
    proxy = scores[~known_cost]
    assert ((proxy["tier"] == "lead") == (proxy["predicted_value"] <= rule.lead_max_value_without_costs)).all()
    top = scores[scores["tier"] == "platinum"]["predicted_value"]
    assert (top >= rule.platinum_min_value).all()
    table = scorer.tables_["tiers"]
    assert table["customers"].sum() == len(scores) and abs(table["value_share"].sum() - 1) < 1e-9


def test_a_customer_scored_alone_gets_the_same_row_and_tier(scorer, scores, base):
    """Tier stability: cut points are stored, and referral counts travel with the customer's row."""
    transactions, customers = base
    ranked = scores.sort_values("predicted_value")
    picks = [*ranked["customer_id"].iloc[[0, len(ranked) // 2, -1]]]
    referrers = customers["referred_by"].dropna().astype("int64")
    picks.append(int(referrers.value_counts().index[0]))  # a customer who brought others
    n_referrals = referrers.value_counts()
    for customer in picks:
        rows = transactions[transactions["customer_id"] == customer]
        table = customers[customers["customer_id"] == customer].assign(
            n_referrals=float(n_referrals.get(customer, 0)))
        alone = scorer.score(rows, as_of=AS_OF, customers=table)
        assert len(alone) == 1
        expected = scores[scores["customer_id"] == customer].reset_index(drop=True)
        pd.testing.assert_frame_equal(alone.reset_index(drop=True), expected, check_exact=False, rtol=1e-9)


def test_predicted_value_is_discounted_spend(scorer, base):
    transactions, customers = base
    raw = scorer.model_.predict(transactions, as_of=AS_OF, customers=customers.drop(columns="cost_to_serve"))
    scores = scorer.score(transactions, as_of=AS_OF, customers=customers).set_index("customer_id")
    ratio = scores["predicted_value"] / raw["predicted_spend"].reindex(scores.index)
    half_year = (1.10) ** -0.5  # 180 days at 10 % a year: every factor between this and 1
    assert ratio.between(half_year - 1e-9, 1 + 1e-9).all() and ratio.std() > 0


def test_at_risk_threshold_flags_a_tenth_and_is_measured_on_the_backtest(scorer):
    rule = scorer.flag_rule_
    assert "share 0.1" in rule.at_risk_rule and 0 < rule.at_risk_threshold < 1
    assert 0 < rule.flagged_share <= 0.1 and 0 <= rule.expected_precision <= 1 and 0 <= rule.expected_recall <= 1
    cutoff = pd.Timestamp(scorer.backtest_["cutoff"])  # the longer window before the data's last day
    assert AS_OF - pd.Timedelta(days=187) <= cutoff <= AS_OF - pd.Timedelta(days=180)
    assert {"churn_roc_auc", "value_normalized_gini"} <= set(scorer.backtest_["metrics"])
    assert "BG/NBD P(no purchase)" in scorer.backtest_["baselines"]


def test_youden_and_precision_rules_on_known_labels():
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.8])
    youden = FlagRule.learn(FlagConfig(at_risk_rule="youden"), churned=y, churn_probability=p)
    assert youden.at_risk_threshold == pytest.approx(0.4)  # flag > 0.4: TPR 0.75, FPR 0
    precise = FlagRule.learn(FlagConfig(at_risk_rule="precision", at_risk_precision=0.75), churned=y,
                             churn_probability=p)
    assert precise.at_risk_threshold == pytest.approx(0.3)  # flag > 0.3: 4 of 5 churned
    fixed = FlagRule.learn(FlagConfig(at_risk_rule="fixed", at_risk_threshold=0.65))
    assert fixed.at_risk_threshold == 0.65 and "fixed" in fixed.at_risk_rule
    fallback = FlagRule.learn(FlagConfig(at_risk_rule="youden"))
    assert fallback.at_risk_threshold == 0.5 and "no backtest" in fallback.at_risk_rule
    assert "no training population" in FlagRule.learn(FlagConfig()).at_risk_rule


def test_capacity_rules_flag_the_share_or_top_k_not_lapsed_and_measure_precision_on_the_backtest():
    """Issue 21: a retention team states how many it can call; lapsed customers are neither flagged
    nor counted, and the threshold's precision and recall come from the backtest's customers who were
    not lapsed at its cutoff."""
    rng = np.random.default_rng(3)
    n = 1000
    population = {"churn_probability": rng.uniform(0, 1, n), "no_purchase_history": np.zeros(n, dtype=bool),
                  "days_since_last_purchase": np.where(np.arange(n) < 200, 500.0, 10.0),  # 200 long lapsed
                  "mean_gap_days": np.full(n, 30.0), "age_days": np.full(n, 400.0)}
    eligible = np.arange(n) >= 200
    share = FlagRule.learn(FlagConfig(at_risk_rule="share", at_risk_share=0.1), mean_gap_days=population["mean_gap_days"],
                           population=population)
    flagged = (population["churn_probability"] > share.at_risk_threshold) & eligible
    assert flagged.sum() == 80 and share.flagged_share == pytest.approx(0.08)  # 10 % of the 800 not lapsed
    top = FlagRule.learn(FlagConfig(at_risk_rule="top_k", at_risk_top_k=25), mean_gap_days=population["mean_gap_days"],
                         population=population)
    assert ((population["churn_probability"] > top.at_risk_threshold) & eligible).sum() == 25
    assert np.isnan(top.expected_precision) and "top 25" in top.at_risk_rule
    # the backtest: 4 customers, the last one lapsed at the cutoff (it would count as a flagged churner)
    y = np.array([True, False, True, True])
    p = np.array([0.9, 0.8, 0.2, 0.95])
    inputs = {"days_since_last_purchase": np.array([5.0, 5.0, 5.0, 400.0]), "mean_gap_days": np.full(4, 30.0),
              "age_days": np.full(4, 300.0)}
    fixed = FlagRule.learn(FlagConfig(at_risk_rule="fixed", at_risk_threshold=0.5), churned=y, churn_probability=p,
                           backtest_inputs=inputs, mean_gap_days=population["mean_gap_days"], population=population)
    assert fixed.expected_precision == pytest.approx(0.5) and fixed.expected_recall == pytest.approx(0.5)
    assert fixed.backtest_flagged_share == pytest.approx(2 / 3)
    assert "50.0 % of those flagged churned" in fixed.describe()
    with pytest.raises(ValueError, match="at_risk_share"):
        FlagConfig(at_risk_rule="share", at_risk_share=None)
    with pytest.raises(ValueError, match="at_risk_top_k"):
        FlagConfig(at_risk_rule="top_k", at_risk_top_k=0)


def test_lapsed_uses_the_customers_own_gap_and_new_customers_are_not_judged():
    rule = FlagRule(0.5, "test", typical_gap_days=40.0, lapsed_gap_multiple=3.0, new_customer_days=90)
    out = rule.apply(
        churn_probability=[0.2, 0.2, 0.2, 0.2], tier=np.array(["iron"] * 4, dtype=object),
        days_since_last_purchase=[142, 100, 130, 50], mean_gap_days=[45.8, 50, np.nan, 10],
        age_days=[400, 300, 200, 60], no_purchase_history=[False] * 4, churn_window_days=90,
    )
    assert out["lapsed"].tolist() == [True, False, True, False]
    assert out["new"].tolist() == [False, False, False, True]
    assert out.loc[0, "reasons"] == "no purchase for 142 days, 3.1x the usual gap (46 days)"
    assert "typical repeat customer's gap (40 days)" in out.loc[2, "reasons"]
    assert out.loc[3, "reasons"] == "first purchase 60 days ago: too little history to judge"


def test_tier_rule_shares_and_costs():
    values = np.arange(1, 101, dtype=float)
    rule = TierRule.learn(values, TierConfig(platinum_share=0.1, gold_share=0.1, margin=0.5))
    tiers = rule.assign(values)
    assert (tiers == "platinum").sum() == 10 and (tiers == "gold").sum() == 10
    assert (tiers == "lead").sum() == 25  # the proxy without costs
    costs = np.full(100, 30.0)
    with_costs = rule.assign(values, costs)
    assert ((with_costs == "lead") == (0.5 * values - 30 <= 0)).all()
    assert "predicted profit" in rule.evaluate(values, costs)[2][0]
    with pytest.raises(ValueError, match="must not exceed 1"):
        TierConfig(platinum_share=0.5, gold_share=0.4, lead_share_without_costs=0.25)


def test_bundle_round_trip_and_determinism(scorer, scores, base, tmp_path):
    transactions, customers = base
    loaded = Scorer.load(scorer.save(tmp_path / "bundle"))
    pd.testing.assert_frame_equal(loaded.score(transactions, as_of=AS_OF, customers=customers), scores)
    again = Scorer(FAST).fit(transactions, as_of=AS_OF, customers=customers)
    assert again.model_id_ == scorer.model_id_
    pd.testing.assert_frame_equal(again.score(transactions, as_of=AS_OF, customers=customers), scores)
    with pytest.raises(FileNotFoundError, match="No crmml model bundle"):
        Scorer.load(tmp_path / "nowhere")


def test_fitting_with_two_jobs_gives_the_same_scorer(scorer, scores, base):
    """--jobs 2 fits the backtest's model in a worker process beside the shipped one: same model."""
    transactions, customers = base
    parallel = Scorer(FAST).fit(transactions, as_of=AS_OF, customers=customers, jobs=2)
    assert parallel.model_id_ == scorer.model_id_
    assert parallel.model_.summary() == scorer.model_.summary()
    assert parallel.backtest_["metrics"] == scorer.backtest_["metrics"]
    assert parallel.flag_rule_.to_dict() == scorer.flag_rule_.to_dict()
    pd.testing.assert_frame_equal(parallel.score(transactions, as_of=AS_OF, customers=customers), scores)


def test_side_by_side_raises_the_workers_warnings_and_errors_here():
    import warnings
    from functools import partial

    from crmml.batch_pool import side_by_side

    with pytest.warns(UserWarning, match="raised in the worker"):
        assert side_by_side(partial(warnings.warn, "raised in the worker"), lambda: 2, jobs=2) == (None, 2)
    with pytest.raises(ValueError, match="invalid literal"):
        side_by_side(partial(int, "not a number"), lambda: 2, jobs=2)
    assert side_by_side(partial(int, "7"), lambda: 2, jobs=1) == (7, 2)


def test_missing_attributes_are_scored_as_unknown_and_reported(scorer, base):
    transactions, _ = base
    scores = scorer.score(transactions, as_of=AS_OF)
    assert set(scores.attrs["missing_attributes"]) == {"acquisition_channel", "region", "tenure_days",
                                                       "has_referrer", "n_referrals"}
    assert scores["churn_probability"].between(0, 1).all()


def test_insight_tables(scorer, scores):
    channels = scorer.tables_["channels"]
    assert channels["customers"].sum() == len(scores)
    assert abs(channels["value_share"].sum() - 1) < 1e-9
    referrals = scorer.tables_["referrals"]
    assert (referrals["referred_value"].diff().dropna() <= 1e-9).all()  # sorted by value brought
    summary = scorer.tables_["referral_summary"]
    assert summary.loc["referred by a customer", "customers"] + summary.loc["not referred", "customers"] == len(scores)


def test_bad_inputs_are_clear_errors(scorer, base):
    transactions, customers = base
    with pytest.raises(DataValidationError, match="before the first transaction"):
        Scorer(FAST).fit(transactions, as_of="2020-01-01")
    with pytest.raises(DataValidationError, match="cost_to_serve"):
        scorer.score(transactions, as_of=AS_OF, customers=customers.assign(cost_to_serve=-1.0))


def test_yaml_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  churn_window_days: 60\ntiers:\n  platinum_share: 0.05\n")
    config = load_config(path)
    assert config.model.churn_window_days == 60 and config.tiers.platinum_share == 0.05
    assert config.flags == FlagConfig()
    path.write_text("model:\n  churn_windw_days: 60\n")
    with pytest.raises(ValueError, match="churn_windw_days"):
        load_config(path)
    path.write_text("model: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(path)
