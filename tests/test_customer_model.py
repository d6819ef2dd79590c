"""Churn and value models: time-travel plans, no leakage, determinism, the customer table, the choice rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crmml.backtest import backtest
from crmml.customer_model import PREDICTION_COLUMNS, CustomerModel, ModelConfig
from crmml.data.simulate import SimulationParams, simulate_customer_base, simulate_transactions
from crmml.learners import DesignMatrix
from crmml.selection import FoldScores, choose_candidate, paired_bootstrap_se
from crmml.timetravel import Snapshots, plan_training_windows, plan_validation_folds, training_frame
from crmml.validation import rescaled_churn

AS_OF = pd.Timestamp("2025-03-31")
FAST = ModelConfig(
    churn_window_days=90, value_horizon_days=90, churn_learners=("logistic",), value_learners=("poisson_glm",),
    transaction_model="bg_nbd",
)


@pytest.fixture(scope="module")
def small_log():
    sim = simulate_transactions(
        1500, params=SimulationParams(r=1.0, alpha=8.0), start="2023-01-01", end="2025-06-30",
        acquisition_end="2024-12-31", seed=7,
    )
    return sim.transactions


@pytest.fixture(scope="module")
def fitted(small_log):
    return CustomerModel(FAST).fit(small_log, as_of=AS_OF)


# -- the time-travel plan --------------------------------------------------------------------------


def test_plan_uses_the_full_window_when_the_history_allows():
    ages = np.linspace(0, 1000, 5001)  # steady acquisition over ~3 years
    plan = plan_training_windows(ages, "2025-01-01", 90, min_known_share=0.9)
    assert plan.mode == "full" and plan.windows_days == (90,)
    assert plan.cutoffs == [pd.Timestamp("2025-01-01") - pd.Timedelta(days=90)]


def test_plan_rescales_when_the_cohort_is_too_young_and_records_why():
    ages = np.linspace(183, 273, 2000)  # CDNOW-like: one cohort, 26 to 39 weeks old
    plan = plan_training_windows(ages, "1997-09-30", 273, min_known_share=1.0, n_windows=4)
    assert plan.mode == "rescaled"
    assert plan.windows_days[-1] == 183 and len(plan.windows_days) == 4
    assert all(28 <= w <= 183 for w in plan.windows_days)
    assert "does not fit" in plan.reason and plan.to_dict()["windows_days"] == list(plan.windows_days)


def test_plan_falls_back_to_btyd_when_nothing_fits():
    plan = plan_training_windows(np.linspace(0, 20, 100), "2025-01-01", 90)
    assert plan.mode == "btyd_only" and plan.windows_days == ()
    model = CustomerModel(FAST)
    young = simulate_transactions(400, start="2025-01-01", end="2025-02-10", acquisition_end="2025-02-01", seed=1)
    model.fit(young.transactions, as_of="2025-02-10")
    assert model.churn_choice_.shipped == "btyd" and model.churn_learner_ is None
    assert "BTYD only" in model.churn_choice_.rule
    scores = model.predict(young.transactions)
    np.testing.assert_array_equal(scores["churn_probability"], scores["btyd_churn_probability"])


# -- leakage ---------------------------------------------------------------------------------------


def _scrambled_after(log: pd.DataFrame, as_of: pd.Timestamp, seed: int) -> pd.DataFrame:
    """The log with every row after as_of re-dated, re-valued and re-assigned at random (still after)."""
    rng = np.random.default_rng(seed)
    after = log["timestamp"] > as_of + pd.Timedelta(days=1)
    later = log[after].copy()
    later["customer_id"] = rng.permutation(later["customer_id"].to_numpy())
    later["amount"] = rng.permutation(later["amount"].to_numpy()) * 3
    offsets = rng.integers(2, 90, len(later)).astype("timedelta64[D]")
    later["timestamp"] = (as_of + pd.Timedelta(days=1)) + offsets
    return pd.concat([log[~after], later]).sample(frac=1, random_state=seed)


def test_training_and_scores_never_read_a_row_after_as_of(small_log, fitted):
    truncated = small_log[small_log["timestamp"] < AS_OF + pd.Timedelta(days=1)]
    scrambled = _scrambled_after(small_log, AS_OF, seed=3)
    expected = fitted.predict(small_log)
    for log in (truncated, scrambled):
        model = CustomerModel(FAST).fit(log, as_of=AS_OF)
        assert model.summary() == fitted.summary()
        pd.testing.assert_frame_equal(model.predict(log), expected)


def test_features_at_a_cutoff_ignore_later_rows(small_log):
    cutoff = AS_OF - pd.Timedelta(days=90)
    frames = []
    for log in (small_log, _scrambled_after(small_log, cutoff, seed=5)):
        snapshots = Snapshots(log, None, transaction_model="bg_nbd", time_unit_days=7.0,
                              feature_windows_days=(30, 90))
        frames.append(snapshots.features(cutoff, 90))
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_training_labels_end_at_the_plan_end(small_log):
    plan = plan_training_windows([400.0] * 10, AS_OF, 90)
    snapshots = Snapshots(small_log, None, transaction_model="bg_nbd", time_unit_days=7.0, feature_windows_days=(30,))
    frame = training_frame(snapshots, plan)
    cutoff = AS_OF - pd.Timedelta(days=90)
    window = small_log[(small_log["timestamp"] >= cutoff + pd.Timedelta(days=1))
                       & (small_log["timestamp"] < AS_OF + pd.Timedelta(days=1))]
    bought = window.groupby("customer_id").size().reindex(frame.labels.index, fill_value=0)
    np.testing.assert_array_equal(frame.labels["churned"], (bought == 0).astype(int))


# -- determinism and outputs -----------------------------------------------------------------------


def test_same_data_and_seed_give_identical_scores(small_log):
    config = ModelConfig(
        churn_window_days=90, value_horizon_days=90, transaction_model="bg_nbd",
        churn_learners=("logistic", "gradient_boosting"), value_learners=("poisson_glm", "poisson_gbm"), seed=11,
    )
    first = CustomerModel(config).fit(small_log, as_of=AS_OF)
    second = CustomerModel(config).fit(small_log, as_of=AS_OF)
    assert first.summary() == second.summary()
    pd.testing.assert_frame_equal(first.predict(small_log), second.predict(small_log))


def test_predictions_are_probabilities_and_non_negative_values(small_log, fitted):
    scores = fitted.predict(small_log)
    assert list(scores.columns) == PREDICTION_COLUMNS
    for column in ("churn_probability", "btyd_churn_probability", "p_alive"):
        assert scores[column].between(0, 1).all(), column
    assert (scores[["predicted_purchases", "predicted_spend"]] >= 0).all().all()
    summary = fitted.summary()
    assert summary["churn"]["shipped"] in summary["churn"]["validation_metrics"]


@pytest.mark.parametrize("name", ["btyd_expected", "logistic", "gradient_boosting"])
def test_every_churn_learner_predicts_the_same_on_arrays_as_its_pipeline(small_log, name):
    """The scoring core's array path (crmml.learner_matrix) and scikit-learn's pipeline agree for every
    churn learner that can ship, the ``-E[X]`` map (with its column selection) among them."""
    from crmml.learner_matrix import LearnerRows, predict_learners_on_rows
    from crmml.validation import fit_learner

    snapshots = Snapshots(small_log, None, transaction_model="bg_nbd", time_unit_days=7.0,
                          feature_windows_days=(30, 90, 180, 365))
    plan = plan_training_windows(snapshots.base_features(AS_OF)["age_days"].to_numpy(), AS_OF, 90)
    frame = training_frame(snapshots, plan)
    learner = fit_learner("churn", name, frame, seed=0)
    features = frame.features.reset_index(drop=True)
    numbers = {c: features[c].to_numpy(dtype=float) for c in features if pd.api.types.is_numeric_dtype(features[c])}
    numbers["btyd_value"] = numbers["btyd_expected_purchases"] * numbers["expected_spend"]  # (as crmml.prediction)
    rows = LearnerRows(len(features), numbers)
    (on_arrays,) = predict_learners_on_rows([learner], rows, "predict_proba")
    np.testing.assert_allclose(on_arrays, learner.predict_proba(features), rtol=1e-9, atol=1e-12)


def test_rescaled_churn_is_the_identity_on_equal_windows_and_shrinks_on_longer():
    rows = pd.DataFrame({"btyd_p_no_purchase": [0.9, 0.5]})
    longer = pd.DataFrame({"btyd_p_no_purchase": [0.8, 0.25]})
    p = np.array([0.7, 0.4])
    np.testing.assert_allclose(rescaled_churn(p, rows, rows), p)
    np.testing.assert_allclose(rescaled_churn(p, rows, longer), p * np.array([0.8 / 0.9, 0.5]))


def _fold(metrics: dict, se: dict, cutoff="2025-01-01") -> FoldScores:
    return FoldScores(cutoff, 90, 1000, {k: {"roc_auc": v} for k, v in metrics.items()}, {"btyd": se})


def test_a_learner_ships_only_when_it_beats_btyd_by_more_than_the_noise():
    noisy = _fold({"btyd": 0.760, "logistic": 0.768, "blend:logistic": 0.765},
                  {"btyd": 0.0, "logistic": 0.005, "blend:logistic": 0.002})
    decision = choose_candidate([noisy], "churn")
    # logistic gains 0.008 < 2 x 0.005; the blend gains 0.005 > 2 x 0.002 and clears
    assert decision.shipped == "blend:logistic"
    assert decision.margin["logistic"] == pytest.approx(0.010) and "blend:logistic ships" in decision.reason
    within = _fold({"btyd": 0.760, "logistic": 0.765}, {"btyd": 0.0, "logistic": 0.004})
    decision = choose_candidate([within], "churn")
    assert decision.shipped == "btyd" and "no candidate beats btyd by more than the noise" in decision.reason
    # two folds: the mean gain 0.006 against sqrt(0.004^2 + 0.004^2) / 2 = 0.0028 standard error
    two = choose_candidate([within, _fold({"btyd": 0.700, "logistic": 0.707}, {"logistic": 0.004}, "2024-10-01")],
                           "churn")
    assert two.shipped == "logistic" and two.diff_se["logistic"] == pytest.approx(np.sqrt(2) * 0.004 / 2)
    floor = choose_candidate([_fold({"btyd": 0.7, "logistic": 0.7015}, {"logistic": 1e-6})], "churn")
    assert floor.shipped == "btyd"  # below the 0.002 floor however small the noise
    assert choose_candidate([], "churn").shipped == "btyd"


def test_the_better_btyd_score_is_the_baseline_and_learners_must_beat_it():
    """Issue 15: the better of P(no purchase) and -E[X] ships without a margin between them; a learner
    must clear the margin over the better one, with the noise of its difference from that one."""
    fold = FoldScores("2025-01-01", 90, 1000,
                      {k: {"roc_auc": v} for k, v in {"btyd": 0.760, "btyd_expected": 0.766, "logistic": 0.770}.items()},
                      {"btyd": {"btyd": 0.0, "btyd_expected": 0.001, "logistic": 0.001},
                       "btyd_expected": {"btyd": 0.001, "btyd_expected": 0.0, "logistic": 0.003}})
    decision = choose_candidate([fold], "churn", baselines=("btyd", "btyd_expected"))
    # logistic gains 0.010 over btyd (SE 0.001) but only 0.004 over btyd_expected (SE 0.003): no ship
    assert decision.shipped == decision.baseline == "btyd_expected"
    assert decision.margin["logistic"] == pytest.approx(0.006) and decision.margin["btyd_expected"] == 0.0
    assert "btyd_expected is the best BTYD score" in decision.reason
    # with the old single baseline, the same fold ships the learner
    assert choose_candidate([fold], "churn").shipped == "logistic"


def test_paired_bootstrap_noise_shrinks_with_more_customers_and_vanishes_for_the_same_score():
    rng = np.random.default_rng(0)
    se = {}
    for n in (1000, 16000):
        y = rng.random(n) < 0.5
        a, b = y + rng.normal(0, 1, n), y + rng.normal(0, 1, n)
        se[n] = paired_bootstrap_se(y, {"btyd": a, "other": b, "same": a.copy()}, "btyd", "roc_auc")
    assert se[1000]["same"] == 0.0 and se[16000]["same"] == 0.0
    assert se[16000]["other"] < se[1000]["other"] / 2.5  # about 1 / sqrt(16) = 1 / 4


def test_validation_folds_are_out_of_time_and_stop_where_no_plan_fits():
    ages = np.linspace(0, 1000, 5001)
    plan = plan_training_windows(ages, "2025-01-01", 90, min_history_days=14)
    folds = plan_validation_folds(ages, "2025-01-01", plan, n_folds=3, min_history_days=14)
    assert [f.cutoff for f in folds] == [pd.Timestamp("2025-01-01") - pd.Timedelta(days=90 * k) for k in (1, 2, 3)]
    assert all(f.window_days == 90 and f.plan.end == f.cutoff for f in folds)
    cohort = np.full(600, 280.0)  # one cohort, 40 weeks old: the 365-day horizon is rescaled
    plan = plan_training_windows(cohort, "2025-01-01", 365, min_history_days=14)
    assert plan.mode == "rescaled" and plan.longest_days == 266
    folds = plan_validation_folds(cohort, "2025-01-01", plan, min_history_days=14)
    assert folds and all(f.cutoff + pd.Timedelta(days=f.window_days) <= pd.Timestamp("2025-01-01") for f in folds)
    assert all(min(f.plan.windows_days) >= 28 for f in folds)
    young = plan_training_windows(np.full(50, 40.0), "2025-01-01", 90, min_history_days=14)
    assert young.mode == "btyd_only"  # 26 days of history beyond the minimum: no 28-day window fits
    assert plan_validation_folds(np.full(50, 40.0), "2025-01-01", young) == []


# -- the customer table ----------------------------------------------------------------------------

# Channels that differ in purchase rate and dropout: for a young customer the channel says more
# than a few weeks of history. Region is noise.
CHANNELS = {
    "referral": (0.3, SimulationParams(r=4.0, alpha=8.0, a=1.0, b=20.0)),
    "organic": (0.4, SimulationParams(r=4.0, alpha=40.0, a=1.0, b=6.0)),
    "paid_social": (0.3, SimulationParams(r=4.0, alpha=400.0, a=2.0, b=2.0)),
}


@pytest.fixture(scope="module")
def channel_base():
    sim = simulate_customer_base(
        3000, segments=CHANNELS, start="2023-01-01", end="2025-06-30", acquisition_end="2025-03-15", seed=3
    )
    return sim.transactions, sim.customers[["customer_id", "acquisition_channel", "region"]]


def test_the_model_that_reads_the_customer_table_beats_the_transaction_only_model(channel_base):
    transactions, customers = channel_base
    config = ModelConfig(churn_window_days=90, value_horizon_days=90, churn_learners=("logistic",),
                         value_learners=("poisson_glm",))
    with_table = backtest(transactions, cutoffs=[AS_OF], config=config, customers=customers,
                          baseline_models=("bg_nbd",)).table("churn").loc[(AS_OF, "crmml")]
    without = backtest(transactions, cutoffs=[AS_OF], config=config,
                       baseline_models=("bg_nbd",)).table("churn").loc[(AS_OF, "crmml")]
    assert with_table["roc_auc"] > without["roc_auc"] + 0.01
    assert with_table["brier"] < without["brier"]


def test_unknown_categories_and_customers_without_purchases_are_scored(channel_base):
    transactions, customers = channel_base
    as_of = pd.Timestamp("2024-10-31")
    log = transactions[transactions["timestamp"] <= as_of]
    known = customers[customers["customer_id"].isin(log["customer_id"])]
    model = CustomerModel(FAST).fit(log, as_of=as_of, customers=known)
    scoring = pd.concat([
        known.assign(acquisition_channel=known["acquisition_channel"].replace("organic", "podcast")),
        pd.DataFrame({"customer_id": [10**6], "acquisition_channel": ["tv"], "region": ["mars"]}),
    ])
    scores = model.predict(log, customers=scoring)
    assert len(scores) == len(scoring)
    assert scores.loc[10**6, "no_purchase_history"]
    assert scores["churn_probability"].between(0, 1).all()
    assert np.isfinite(scores["predicted_spend"]).all()


def test_design_matrix_encodes_an_unseen_category_as_zeros():
    train = pd.DataFrame({"frequency": [1.0, 2.0, np.nan], "channel": pd.Categorical(["a", "b", "a"])})
    design = DesignMatrix().fit(train)
    out = design.transform(pd.DataFrame({"frequency": [3.0], "channel": pd.Categorical(["z"])}))
    names = list(design.get_feature_names_out())
    assert names == ["frequency", "frequency_missing", "channel=a", "channel=b"]
    np.testing.assert_allclose(out, [[np.log1p(3.0), 0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="channel"):
        design.transform(pd.DataFrame({"frequency": [3.0]}))
