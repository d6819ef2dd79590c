"""The paired bootstrap's resampled metrics are the metrics of the resampled data."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from crmml.metrics import value_metrics
from crmml.selection import _Ordering, _weighted_auc, _weighted_capture, paired_bootstrap_ses


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    n = 400
    churned = (rng.random(n) < 0.4).astype(float)
    spend = np.where(rng.random(n) < 0.5, 0.0, rng.gamma(1.0, 40.0, n))
    score = np.round(churned + rng.normal(0, 1, n), 1)  # rounded: many ties
    weights = rng.poisson(1.0, size=(3, n)).astype(np.uint8)
    return churned, spend, score, weights


def test_resampled_auc_is_the_auc_with_sample_weights_ties_counting_one_half(data):
    churned, _, score, weights = data
    got = _weighted_auc(_Ordering(churned, score, "roc_auc"), weights)
    for row, value in zip(weights, got, strict=True):
        assert value == pytest.approx(roc_auc_score(churned, score, sample_weight=row), abs=1e-12)
    continuous = score + np.linspace(0, 1e-6, len(score))  # no ties: the path without tie groups
    got = _weighted_auc(_Ordering(churned, continuous, "roc_auc"), weights)
    assert got[0] == pytest.approx(roc_auc_score(churned, continuous, sample_weight=weights[0]), abs=1e-12)


def test_resampled_gini_is_the_gini_of_the_duplicated_rows(data):
    _, spend, score, weights = data
    best = _weighted_capture(np.argsort(-spend, kind="stable"), spend, weights)
    got = _weighted_capture(np.argsort(-score, kind="stable"), spend, weights) / best
    for row, value in zip(weights, got, strict=True):
        repeated = np.repeat(np.arange(len(spend)), row)  # weights equal duplicated rows
        shifted = score[repeated] - score.min()  # value_metrics takes spend predictions (>= 0): same order
        assert value == pytest.approx(value_metrics(spend[repeated], shifted)["normalized_gini"], abs=1e-12)


def test_bootstrap_errors_are_positive_and_zero_for_the_baseline_itself(data):
    churned, spend, score, _ = data
    other = score + np.random.default_rng(1).normal(0, 1, len(score))
    ses = paired_bootstrap_ses(churned, {"btyd": score, "other": other}, ["btyd"], "roc_auc")
    assert ses["btyd"]["btyd"] == 0.0 and 0.005 < ses["btyd"]["other"] < 0.1
    ses = paired_bootstrap_ses(spend, {"btyd": score, "other": other}, ["btyd"], "normalized_gini")
    assert ses["btyd"]["btyd"] == 0.0 and ses["btyd"]["other"] > 0.005
    with pytest.raises(ValueError, match="metric"):
        paired_bootstrap_ses(churned, {"btyd": score}, ["btyd"], "accuracy")


def test_one_score_bootstrap_error_is_the_spread_of_its_resampled_metric(data):
    from crmml.selection import bootstrap_se

    churned, _, score, _ = data
    weights = np.random.default_rng(7).poisson(1.0, size=(50, len(churned)))  # the function's own draws
    direct = [roc_auc_score(churned, score, sample_weight=row) for row in weights]
    assert bootstrap_se(churned, score, "roc_auc", n_resamples=50, seed=7) == pytest.approx(np.std(direct, ddof=1),
                                                                                             rel=1e-9)
    assert np.isnan(bootstrap_se(np.zeros(50), np.arange(50.0), "roc_auc"))  # one class: undefined
