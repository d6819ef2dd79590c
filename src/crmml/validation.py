"""Out-of-time validation of the churn and value candidates, fold by fold.

For each :class:`~crmml.timetravel.ValidationFold` the candidates are trained on the fold's plan
(data up to the fold's cutoff only), the BTYD baseline is the BTYD model fitted at the cutoff, and
everything is judged on what the customers known at the cutoff did in the window after it. The
per-fold metrics and the paired-bootstrap noise go to :func:`crmml.selection.choose_candidate`.

Candidates. Churn: ``btyd`` (the BTYD model's P(no purchase in the window)), each configured
classifier (``btyd_expected`` is the BTYD expected purchases turned into a probability by a
one-feature logistic fit, i.e. the ``-E[X]`` ranking as a calibrated churn probability), and
``blend:<classifier>`` (the mean of the classifier's and the BTYD probability). Value: ``btyd``
(expected purchases x Gamma-Gamma expected spend) and each configured Poisson regressor. ``btyd``
and ``btyd_expected`` are the BTYD scores (:data:`BTYD_SCORES`): the noise of every candidate's
difference is measured from each of them, and the better one is the baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from crmml.learners import make_churn_learner, make_value_learner
from crmml.metrics import churn_metrics, value_metrics
from crmml.selection import PRIMARY_METRIC, FoldScores, paired_bootstrap_ses
from crmml.timetravel import Snapshots, TrainingPlan, ValidationFold, training_frame

__all__ = ["BTYD_SCORES", "fit_learner", "rescaled_amount", "rescaled_churn", "spend_target", "validate_fold"]

#: Learners that are monotone maps of a BTYD score (no blend with the BTYD score is tried).
_BTYD_MAPS = ("btyd_expected",)
#: The BTYD scores among the candidates: the baseline is the better of them (no margin between them;
#: :func:`crmml.selection.choose_candidate`).
BTYD_SCORES = ("btyd", *_BTYD_MAPS)


def spend_target(labels: pd.DataFrame) -> np.ndarray:
    """Spend in the window, refunds beyond purchases counted as 0 (a Poisson target is >= 0)."""
    return np.clip(labels["spend"].to_numpy(dtype=np.float64), 0, None)


def fit_learner(task: str, name: str, frame, *, seed: int, target: str | None = None):
    """A fresh learner of ``task`` fitted on a :class:`~crmml.timetravel.TrainingFrame`.

    Cross-validation inside a learner (the boosted classifier's calibration folds) is grouped by
    customer: a customer appears once per pooled window, and must not sit on both sides of a split.
    ``target`` picks the value label (``spend`` by default, or ``purchases``).
    """
    if task == "churn":
        learner = make_churn_learner(name, seed=seed)
        y = frame.labels["churned"].to_numpy()
    else:
        learner = make_value_learner(name, seed=seed)
        y = spend_target(frame.labels) if target in (None, "spend") else frame.labels[target].to_numpy(dtype=float)
    cv = learner.get_params().get("model__cv")
    if isinstance(cv, int):
        groups = pd.factorize(frame.features.index)[0]
        n_splits = min(cv, len(np.unique(groups)))
        if n_splits >= 2:
            learner.set_params(model__cv=list(GroupKFold(n_splits=n_splits).split(frame.features, y, groups)))
    return learner.fit(frame.features, y)


def validate_fold(task: str, snapshots: Snapshots, fold: ValidationFold, learners, *, seed: int) -> FoldScores | None:
    """Train every candidate on ``fold.plan`` and judge it on the window after ``fold.cutoff``.

    Returns None when the fold cannot be judged (one class of churn labels, no spend).
    """
    window, cutoff = fold.window_days, fold.cutoff
    held_out = training_frame(snapshots, TrainingPlan(cutoff + pd.Timedelta(days=window), window, (window,),
                                                      "full", "held out"))
    train = training_frame(snapshots, fold.plan)
    rows = held_out.features
    learner_rows = snapshots.features(cutoff, fold.plan.longest_days, models=snapshots.models(cutoff))
    scores: dict[str, np.ndarray] = {}
    if task == "churn":
        actual = held_out.labels["churned"].to_numpy()
        if actual.min() == actual.max():
            return None
        scores["btyd"] = rows["btyd_p_no_purchase"].to_numpy()
        for name in learners:
            learner = fit_learner("churn", name, train, seed=seed)
            scores[name] = rescaled_churn(learner.predict_proba(learner_rows)[:, 1], learner_rows, rows)
        for name in learners:
            if name not in _BTYD_MAPS:
                scores[f"blend:{name}"] = 0.5 * (scores[name] + scores["btyd"])
        metrics = {name: churn_metrics(actual, s) for name, s in scores.items()}
    else:
        actual = spend_target(held_out.labels)
        if not actual.sum() > 0:
            return None
        scores["btyd"] = (rows["btyd_expected_purchases"] * rows["expected_spend"]).to_numpy()
        for name in learners:
            learner = fit_learner("value", name, train, seed=seed)
            scores[name] = rescaled_amount(learner.predict(learner_rows), learner_rows, rows)
        metrics = {name: value_metrics(actual, s) for name, s in scores.items()}
    noise = paired_bootstrap_ses(actual, scores, [b for b in BTYD_SCORES if b in scores], PRIMARY_METRIC[task],
                                 seed=seed)
    return FoldScores(str(cutoff.date()), int(window), int(len(actual)),
                      {name: {k: float(v) for k, v in m.items()} for name, m in metrics.items()}, noise)


def rescaled_churn(p_churn: np.ndarray, learner_rows, target_rows) -> np.ndarray:
    """P(no purchase in the target window) from a learner's P(no purchase in its shorter window).

    No purchase in the target window means none in the learner's window and none in the rest, so
    ``P_target = P_learner * P_btyd(none in target) / P_btyd(none in learner window)``: the BTYD
    model's conditional probability of staying silent for the remaining days. The identity when the
    windows are equal. ``learner_rows`` and ``target_rows`` are frames (or dicts of arrays) with the
    model columns over the two windows.
    """
    ratio = np.asarray(target_rows["btyd_p_no_purchase"]) / np.asarray(learner_rows["btyd_p_no_purchase"])
    return np.clip(p_churn * ratio, 0.0, 1.0)


def rescaled_amount(predicted: np.ndarray, learner_rows, target_rows) -> np.ndarray:
    """Spend or purchases over the target horizon from a learner's prediction over its shorter window,
    scaled by the BTYD model's ratio of expected purchases over the two horizons (per customer); the
    rows are frames (or dicts of arrays) with the model columns."""
    ratio = np.asarray(target_rows["btyd_expected_purchases"]) / np.asarray(learner_rows["btyd_expected_purchases"])
    return predicted * ratio
