"""Holdout metrics: scikit-learn as oracle, hand-computed tiny cases, invariants and argument errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from crmml.errors import DataValidationError
from crmml.metrics import calibration_table, churn_metrics, compare_models, decile_table, value_metrics


@pytest.fixture(scope="module")
def churn_data():
    rng = np.random.default_rng(7)
    n = 1000
    p = rng.beta(2, 5, size=n)
    y = (rng.random(n) < p).astype(int)
    return y, p


@pytest.fixture(scope="module")
def value_data():
    rng = np.random.default_rng(11)
    n = 500
    predicted = rng.gamma(2.0, 50.0, size=n)
    actual = np.where(rng.random(n) < 0.3, 0.0, predicted * rng.lognormal(0, 0.5, size=n))
    return actual, predicted


# --------------------------------------------------------------------------------------------------
# churn


def test_churn_metrics_same_as_sklearn(churn_data):
    """Oracle: sklearn.metrics on the same arrays, to floating-point precision."""
    y, p = churn_data
    m = churn_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p), rel=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-9)
    assert m["base_rate"] == pytest.approx(y.mean())
    assert m["n"] == len(y)


def test_churn_metrics_accepts_series_and_lists(churn_data):
    y, p = churn_data
    from_arrays = churn_metrics(y, p)
    assert churn_metrics(pd.Series(y, dtype="Int64"), pd.Series(p)) == pytest.approx(from_arrays)
    assert churn_metrics(list(y.astype(bool)), list(p)) == pytest.approx(from_arrays)


def test_log_loss_clips_certain_mistakes():
    """A probability of exactly 0 for a churner costs -log(1e-15) / n, not infinity."""
    m = churn_metrics([1, 0], [0.0, 0.0])
    assert m["log_loss"] == pytest.approx(-np.log(1e-15) / 2, rel=1e-6)


def test_lift_of_perfect_model_is_inverse_base_rate():
    """Hand-computed: 5 churners in 100 customers ranked first, top 10 % is 10 customers, 5 churned."""
    y = np.r_[np.ones(5), np.zeros(95)]
    p = np.linspace(1, 0, 100)
    # churn rate in top 10 = 0.5, base rate = 0.05: lift 10, which is also the cap 1 / 0.1
    assert churn_metrics(y, p)["lift_at_10"] == pytest.approx(10.0)
    y = np.r_[np.ones(40), np.zeros(60)]
    assert churn_metrics(y, p)["lift_at_10"] == pytest.approx(1 / 0.4)


def test_lift_of_perfect_model_is_capped_at_ten():
    """With 2 churners among 100 the top 10 % can at best be 2/10 churned: lift 0.2 / 0.02 = 10 < 1/0.02."""
    y = np.r_[np.ones(2), np.zeros(98)]
    assert churn_metrics(y, np.linspace(1, 0, 100))["lift_at_10"] == pytest.approx(10.0)


def test_lift_tie_rule_constant_score_is_one():
    """Ties at the cut-off count fractionally: a constant score has lift exactly 1 whatever the row order."""
    y = np.r_[np.ones(10), np.zeros(90)]
    assert churn_metrics(y, np.full(100, 0.3))["lift_at_10"] == pytest.approx(1.0)
    assert churn_metrics(y[::-1], np.full(100, 0.3))["lift_at_10"] == pytest.approx(1.0)


def test_lift_tie_rule_hand_computed():
    """20 customers, top 10 % = 2 places. One customer scores 0.9 (churner); three tie at 0.5
    (churner, active, churner) for the one remaining place: expected churners 1 + 2/3."""
    y = np.array([1, 1, 0, 1] + [0] * 16)
    p = np.array([0.9, 0.5, 0.5, 0.5] + [0.1] * 16)
    base = 3 / 20
    assert churn_metrics(y, p)["lift_at_10"] == pytest.approx((1 + 2 / 3) / 2 / base)


def test_ranking_metrics_invariant_to_monotone_transform(churn_data):
    y, p = churn_data
    m = churn_metrics(y, p)
    transformed = churn_metrics(y, p**3)
    for key in ("roc_auc", "pr_auc", "lift_at_10"):
        assert transformed[key] == pytest.approx(m[key], rel=1e-12)


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_calibration_table_same_as_sklearn(churn_data, strategy):
    """Oracle: sklearn.calibration.calibration_curve uses the same bins."""
    y, p = churn_data
    table = calibration_table(y, p, n_bins=8, strategy=strategy)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(table["observed_rate"], prob_true, rtol=1e-12)
    np.testing.assert_allclose(table["mean_predicted"], prob_pred, rtol=1e-12)
    assert list(table.columns) == ["bin", "mean_predicted", "observed_rate", "count"]
    assert table["count"].sum() == len(y)
    assert table["bin"].tolist() == list(range(1, len(table) + 1))


def test_calibration_table_quantile_bins_have_equal_counts(churn_data):
    y, p = churn_data
    counts = calibration_table(y, p, n_bins=10)["count"]
    assert counts.min() >= 99 and counts.max() <= 101


def test_calibration_table_drops_empty_bins():
    table = calibration_table([0, 1, 0, 1], [0.2, 0.2, 0.2, 0.8], n_bins=4)
    assert table["count"].sum() == 4
    assert len(table) < 4


# --------------------------------------------------------------------------------------------------
# value


def kaggle_normalized_gini(actual, pred):
    """Reference: the normalized Gini posted with Kaggle's Liberty Mutual / Porto Seguro competitions."""

    def gini(actual, pred):
        n = len(actual)
        a = np.asarray(np.c_[actual, pred, np.arange(n)], dtype=float)
        a = a[np.lexsort((a[:, 2], -1 * a[:, 1]))]
        total = a[:, 0].sum()
        gini_sum = a[:, 0].cumsum().sum() / total
        gini_sum -= (n + 1) / 2.0
        return gini_sum / n

    return gini(actual, pred) / gini(actual, actual)


def test_normalized_gini_same_as_kaggle_reference(value_data):
    actual, predicted = value_data
    assert value_metrics(actual, predicted)["normalized_gini"] == pytest.approx(
        kaggle_normalized_gini(actual, predicted), rel=1e-12
    )
    rounded = np.round(predicted, -2)  # many ties: tie-breaking by original position must match too
    assert value_metrics(actual, rounded)["normalized_gini"] == pytest.approx(
        kaggle_normalized_gini(actual, rounded), rel=1e-12
    )


def test_normalized_gini_perfect_reversed_and_constant():
    actual = np.array([5.0, 0.0, 3.0, 10.0, 1.0])
    assert value_metrics(actual, actual)["normalized_gini"] == pytest.approx(1.0)
    assert value_metrics(actual, 2 * actual + 1)["normalized_gini"] == pytest.approx(1.0)
    assert value_metrics(actual, actual.max() - actual)["normalized_gini"] == pytest.approx(-1.0)
    # tie rule: a constant prediction keeps the rows' order, so it scores the Gini of that order
    ascending = np.sort(actual)
    assert value_metrics(ascending, np.ones(5))["normalized_gini"] == pytest.approx(-1.0)
    assert value_metrics(ascending[::-1], np.ones(5))["normalized_gini"] == pytest.approx(1.0)


def test_normalized_gini_of_constant_prediction_near_zero_on_shuffled_rows():
    rng = np.random.default_rng(3)
    actual = rng.gamma(1.0, 10.0, size=20_000)
    assert abs(value_metrics(actual, np.zeros_like(actual))["normalized_gini"]) < 0.02


def test_top20_capture_hand_computed():
    """10 customers, top 20 % = the two highest predicted, holding actual 40 + 30 of 100."""
    actual = np.array([10, 40, 0, 5, 30, 5, 0, 5, 5, 0], dtype=float)
    predicted = np.array([3, 9, 1, 2, 8, 2, 1, 2, 2, 0], dtype=float)
    m = value_metrics(actual, predicted)
    assert m["top20_capture"] == pytest.approx(0.7)
    assert m["total_actual"] == 100 and m["total_predicted"] == 30
    assert m["total_error_pct"] == pytest.approx(-70.0)
    assert m["mae"] == pytest.approx(np.abs(actual - predicted).mean())


def test_top20_capture_tie_rule_constant_prediction_is_one_fifth():
    actual = np.array([100.0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    assert value_metrics(actual, np.ones(10))["top20_capture"] == pytest.approx(0.2)


def test_value_ranking_invariant_to_monotone_transform(value_data):
    actual, predicted = value_data
    m = value_metrics(actual, predicted)
    t = value_metrics(actual, np.log1p(predicted))
    assert t["normalized_gini"] == pytest.approx(m["normalized_gini"], rel=1e-12)
    assert t["top20_capture"] == pytest.approx(m["top20_capture"], rel=1e-12)


def test_value_metrics_zero_total_actual_gives_nan_shares():
    m = value_metrics([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert np.isnan(m["normalized_gini"]) and np.isnan(m["top20_capture"]) and np.isnan(m["total_error_pct"])
    assert m["mae"] == pytest.approx(2.0)


def test_decile_table_shares_sum_to_one(value_data):
    actual, predicted = value_data
    table = decile_table(actual, predicted)
    assert table["decile"].tolist() == list(range(1, 11))
    assert table["count"].sum() == len(actual)
    assert table["share_of_actual"].sum() == pytest.approx(1.0)
    assert table["cumulative_share"].iloc[-1] == pytest.approx(1.0)
    assert table["mean_predicted"].is_monotonic_decreasing
    assert list(table.columns) == [
        "decile",
        "count",
        "mean_predicted",
        "mean_actual",
        "share_of_actual",
        "cumulative_share",
    ]


def test_decile_table_hand_computed():
    """20 customers with predicted = actual = 1..20: decile 1 holds 20 and 19, share 39 / 210."""
    values = np.arange(1.0, 21.0)
    table = decile_table(values, values)
    assert table.loc[0, "count"] == 2
    assert table.loc[0, "share_of_actual"] == pytest.approx(39 / 210)
    assert table.loc[9, "mean_actual"] == pytest.approx(1.5)


def test_decile_table_few_customers_omits_empty_deciles():
    table = decile_table([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert table["decile"].tolist() == [1, 2, 3]
    assert table["share_of_actual"].sum() == pytest.approx(1.0)


def test_compare_models_one_row_per_model(value_data):
    actual, predicted = value_data
    results = {"model": value_metrics(actual, predicted), "naive": value_metrics(actual, np.ones_like(actual))}
    table = compare_models(results)
    assert table.index.tolist() == ["model", "naive"]
    assert table.index.name == "model"
    assert list(table.columns) == list(results["model"])
    mixed = compare_models({"a": {"x": 1.0}, "b": {"y": 2.0}})
    assert list(mixed.columns) == ["x", "y"] and np.isnan(mixed.loc["a", "y"])


# --------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 1, 1], [0.1, 0.2], "'y' and 'p'.*same length"),
        ([0, 1, np.nan], [0.1, 0.2, 0.3], "'y'.*NaN"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "'p'.*NaN"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "'y'.*only 0"),
        ([0, 1, 1], [0.1, 1.2, 0.3], r"'p'.*\[0, 1\]"),
        ([0, 1, 1], [-0.1, 0.2, 0.3], r"'p'.*\[0, 1\]"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "'y'.*both"),
        ([], [], "'y'.*empty"),
        (["a", "b"], [0.1, 0.2], "'y'.*numeric"),
    ],
)
def test_churn_metrics_errors_name_the_argument(y, p, match):
    with pytest.raises(ValueError, match=match):
        churn_metrics(y, p)


def test_errors_are_data_validation_errors():
    with pytest.raises(DataValidationError):
        churn_metrics([0, 1], [0.1])


@pytest.mark.parametrize("func", [value_metrics, decile_table])
@pytest.mark.parametrize(
    ("actual", "predicted", "match"),
    [
        ([1.0, 2.0], [1.0], "'actual' and 'predicted'.*same length"),
        ([1.0, np.nan], [1.0, 2.0], "'actual'.*NaN"),
        ([1.0, 2.0], [1.0, np.inf], "'predicted'.*infinite"),
        ([1.0, -2.0], [1.0, 2.0], "'actual'.*>= 0"),
        ([1.0, 2.0], [-1.0, 2.0], "'predicted'.*>= 0"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "'actual'.*one-dimensional"),
    ],
)
def test_value_errors_name_the_argument(func, actual, predicted, match):
    with pytest.raises(ValueError, match=match):
        func(actual, predicted)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"n_bins": 0}, "'n_bins'"), ({"strategy": "kmeans"}, "'strategy'")]
)
def test_calibration_table_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        calibration_table([0, 1], [0.2, 0.8], **kwargs)


@pytest.mark.parametrize("results", [{}, {"a": 1.0}, [("a", {"x": 1})]])
def test_compare_models_errors(results):
    with pytest.raises(ValueError, match="'results'"):
        compare_models(results)
