"""`crmml train` + `crmml score` end to end on logs shaped unlike CDNOW (issue 15).

Each shape is simulated with :mod:`crmml.data.simulate` (fixed seeds): a single cohort acquired on one
day and trained 10, 40 and 104 weeks in, a few hundred customers, customers who almost all buy once,
a log without dropout, a log where everyone leaves, and a strong yearly season. Each run must finish,
every score must be finite, and on the data after the as-of date the shipped churn ROC AUC and value
Gini must not fall below the best single BTYD model fitted directly (BG/NBD, MBG/NBD, Pareto/NBD;
P(no purchase) for churn, expected purchases x Gamma-Gamma for value) by more than the noise of the
judged window: twice the bootstrap standard error of the shipped metric on these customers, and never
less than 0.01 (the paired standard error of the difference is printed beside it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from crmml.cli import main
from crmml.uncertainty import UNCERTAINTY_NUMBERS
from crmml.data import read_transactions
from crmml.data.simulate import SimulationParams, simulate_transactions
from crmml.labels import outcome_labels
from crmml.metrics import churn_metrics, value_metrics
from crmml.selection import paired_bootstrap_se
from crmml.timetravel import TRANSACTION_MODELS, fit_btyd_models, with_model_features

CHURN_DAYS, VALUE_DAYS = 90, 365
MIN_MARGIN = 0.01


@dataclass(frozen=True)
class Shape:
    n_customers: int
    start: str
    end: str
    as_of: str
    acquisition_end: str | None = None
    params: SimulationParams = SimulationParams()
    seasonality: float = 0.0
    seed: int = 0


def _cohort(weeks: int) -> Shape:
    as_of = (pd.Timestamp("2020-01-06") + pd.Timedelta(weeks=weeks)).date()
    return Shape(600, "2020-01-06", "2025-01-06", str(as_of), acquisition_end="2020-01-06", seed=7)


SHAPES = {
    "cohort_10_weeks": _cohort(10),
    "cohort_40_weeks": _cohort(40),
    "cohort_104_weeks": _cohort(104),
    "few_hundred": Shape(300, "2022-01-01", "2025-06-30", "2024-06-30", seed=3),
    "one_purchase": Shape(2000, "2022-01-01", "2025-06-30", "2024-06-30", params=SimulationParams(r=0.03, alpha=8.0),
                          seed=4),
    "no_dropout": Shape(1500, "2022-01-01", "2025-06-30", "2024-06-30", params=SimulationParams(a=0.01, b=100.0),
                        seed=5),
    # acquisition runs up to as_of: a log where every customer leaves goes silent otherwise, which no
    # tool can tell from missing data (train refuses a log that ends more than 7 days before as_of)
    "everyone_leaves": Shape(1500, "2022-01-01", "2025-06-30", "2024-06-30", acquisition_end="2024-06-30",
                             params=SimulationParams(a=100.0, b=1.0), seed=6),
    "seasonal": Shape(2000, "2021-01-01", "2025-06-30", "2024-06-30", seasonality=0.8, seed=8),
}


def _simulate(shape: Shape) -> pd.DataFrame:
    log = simulate_transactions(shape.n_customers, params=shape.params, start=shape.start, end=shape.end,
                                acquisition_end=shape.acquisition_end, seasonality=shape.seasonality,
                                seed=shape.seed)
    return log.transactions


def _btyd_scores(train: pd.DataFrame, features: pd.DataFrame, as_of) -> dict[str, dict[str, np.ndarray]]:
    """Each BTYD model fitted directly at ``as_of``: P(no purchase) and expected value."""
    out = {"churn": {}, "value": {}}
    for kind in TRANSACTION_MODELS:
        fitted = fit_btyd_models(train, as_of, kind=kind)
        churn = with_model_features(features, fitted, CHURN_DAYS, 7.0)
        value = with_model_features(features, fitted, VALUE_DAYS, 7.0)
        out["churn"][kind] = churn["btyd_p_no_purchase"].to_numpy()
        out["value"][kind] = (value["btyd_expected_purchases"] * value["expected_spend"]).to_numpy()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SHAPES))
def test_train_and_score_end_to_end_never_worse_than_btyd_beyond_noise(name, tmp_path):
    from crmml.features import compute_features

    shape = SHAPES[name]
    full = _simulate(shape)
    as_of = pd.Timestamp(shape.as_of)
    train = full[full["timestamp"] < as_of + pd.Timedelta(days=1)]
    train.to_csv(tmp_path / "train.csv", index=False)
    bundle, scores_path = tmp_path / "bundle", tmp_path / "scores.parquet"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["train", "--transactions", str(tmp_path / "train.csv"), "--as-of", shape.as_of,
                 "--tracking-uri", tracking, "--bundle", str(bundle)]) == 0
    assert main(["score", "--model", str(bundle), "--transactions", str(tmp_path / "train.csv"),
                 "--as-of", shape.as_of, "--output", str(scores_path)]) == 0
    scores = pd.read_parquet(scores_path).set_index("customer_id").sort_index()
    numbers = scores[["expected_purchases", "p_alive", "churn_probability", "predicted_value"]].to_numpy()
    assert np.isfinite(numbers).all(), f"{name}: non-finite scores"
    # The uncertainty columns (issue 20) on every shape: finite, ordered, probabilities in [0, 1].
    uncertainty = scores[list(UNCERTAINTY_NUMBERS)]
    assert np.isfinite(uncertainty.to_numpy()).all(), f"{name}: non-finite uncertainty columns"
    assert scores["p_no_purchase"].between(0, 1).all() and scores["tier_probability"].between(0, 1).all()
    assert (scores["purchases_lower"] <= scores["purchases_upper"]).all()
    assert (scores["value_lower"] <= scores["value_upper"]).all()
    assert ((scores["churn_probability"] >= 0) & (scores["churn_probability"] <= 1)).all()

    labels = outcome_labels(full, as_of=as_of, churn_window_days=CHURN_DAYS, value_horizon_days=VALUE_DAYS,
                            allow_incomplete=True)  # the simulation ends on the horizon's last day
    labels = labels.reindex(scores.index)
    features = compute_features(train, as_of=as_of).reindex(scores.index)
    btyd = _btyd_scores(read_transactions(train), features, as_of)

    churned = labels["churned"].to_numpy()
    if 0 < churned.sum() < len(churned):
        _check_not_worse("churn", name, churned, scores["churn_probability"].to_numpy(), btyd["churn"],
                         lambda s: churn_metrics(churned, s)["roc_auc"], "roc_auc")
    spend = np.clip(labels["spend_in_horizon"].to_numpy(dtype=float), 0, None)
    if spend.sum() > 0:
        _check_not_worse("value", name, spend, scores["predicted_value"].to_numpy(), btyd["value"],
                         lambda s: value_metrics(spend, s)["normalized_gini"], "normalized_gini")


def _check_not_worse(task, name, actual, shipped, btyd: dict, metric, metric_name) -> None:
    """The shipped score against the best BTYD model, within the noise of this one judged window: twice
    the bootstrap standard error of the shipped metric itself (floor 0.01). The paired difference's
    standard error is printed beside it (it is smaller: both scores share the window's noise)."""
    best = max(btyd, key=lambda kind: metric(btyd[kind]))
    paired = paired_bootstrap_se(actual, {"best": btyd[best], "shipped": shipped}, "best", metric_name)["shipped"]
    window = _window_se(actual, shipped, metric_name)
    margin = max(2 * window, MIN_MARGIN)
    gap = metric(shipped) - metric(btyd[best])
    print(f"{name} {task}: shipped {metric(shipped):.4f}, best BTYD ({best}) {metric(btyd[best]):.4f}, "
          f"gap {gap:+.4f}, margin {margin:.4f} (window SE {window:.4f}, paired SE {paired:.4f})")
    assert gap >= -margin, f"{name} {task}: shipped {metric_name} is {gap:+.4f} under {best} (margin {margin:.4f})"


def _window_se(actual, score, metric_name: str) -> float:
    """Bootstrap standard error of one score's metric on this window (Poisson weights, seeded)."""
    from crmml.selection import bootstrap_se

    return bootstrap_se(actual, score, metric_name, n_resamples=200, seed=0)
