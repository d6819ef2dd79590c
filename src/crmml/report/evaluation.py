"""The holdout behind the report's evaluation charts: predictions at a cutoff beside what came next.

A :class:`HoldoutEvaluation` holds, per customer, the churn, value and purchase predictions of the
model and of the baselines at a cutoff, the outcomes in the windows after it, and the cumulative
tracking curve, in the column layout of :attr:`crmml.backtest.BacktestResult.scores`
(``churn:<scorer>``, ``value:<scorer>``, ``purchases:<scorer>``, ``churned``,
``spend_in_horizon``, ``purchases_in_horizon``, ``frequency``). It comes from one of three places:

- the **training backtest** a freshly fitted :class:`~crmml.scorer.Scorer` still carries
  (``backtest_["result"]``; it is not saved in the bundle);
- an **out-of-time test** of the fitted model itself, when the data reach past the model's as-of
  date by the longer label window: the registered model's predictions at its own as-of against
  what its customers did next (baselines: recency, past spend and the model's own BTYD scores);
- a **backtest of the model's config** (refitted) at the report's as-of date minus the longer
  label window, as training does, when the data do not reach that far past the model's as-of.

All three carry, for a BG/NBD, MBG/NBD or Pareto/NBD transaction model, each known customer's
randomised PIT and interval hits (``purchases_pit``, ``purchases_covered_80``, ...;
:func:`crmml.backtest.holdout_pit_columns`) and the tracking curve's normal band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crmml.backtest import (
    BTYD_LABELS,
    backtest,
    churn_probabilities,
    holdout_pit_columns,
    holdout_tracking,
    model_scores,
    value_predictions,
)
from crmml.backtest import holdout_spend as spend_in_horizon
from crmml.data.summary import as_day
from crmml.errors import CrmmlError
from crmml.features import compute_features
from crmml.labels import outcome_labels
from crmml.scorer import COST_COLUMN

__all__ = ["EvaluationUnavailable", "HoldoutEvaluation", "evaluate_on_transactions", "from_backtest_result"]


class EvaluationUnavailable(CrmmlError):
    """The data cannot give a holdout for this model (the message says why)."""


@dataclass
class HoldoutEvaluation:
    """Predictions at ``cutoff`` and outcomes after it (see the module docstring).

    Attributes
    ----------
    kind : str
        ``training backtest``, ``out-of-time test`` or ``backtest``.
    cutoff : pandas.Timestamp
    churn_window_days, value_horizon_days : int
    description : str
        One sentence saying what was fitted when and judged on which days.
    scores : pandas.DataFrame
        One row per customer known at the cutoff.
    tracking : pandas.DataFrame or None
        :func:`crmml.backtest.holdout_tracking`: ``date``, ``actual``, ``btyd_expected``.
    """

    kind: str
    cutoff: pd.Timestamp
    churn_window_days: int
    value_horizon_days: int
    description: str
    scores: pd.DataFrame
    tracking: pd.DataFrame | None

    def churn_scores(self) -> dict[str, np.ndarray]:
        """Churn probabilities by scorer: the model's and the BTYD models' P(no purchase)."""
        return churn_probabilities(self.scores)

    def value_scores(self) -> dict[str, np.ndarray]:
        """Predicted spend over the value horizon (or a spend ranking) by scorer."""
        return value_predictions(self.scores)

    def churned(self) -> np.ndarray:
        return self.scores["churned"].to_numpy()

    def holdout_spend(self) -> np.ndarray:
        return spend_in_horizon(self.scores)


def from_backtest_result(result, *, kind: str, churn_window_days: int, value_horizon_days: int,
                         description: str) -> HoldoutEvaluation:
    """The first cutoff of a :class:`~crmml.backtest.BacktestResult` as a :class:`HoldoutEvaluation`."""
    cutoff = next(iter(result.scores))
    return HoldoutEvaluation(kind, cutoff, churn_window_days, value_horizon_days, description,
                             result.scores[cutoff], result.tracking.get(cutoff))


def evaluate_on_transactions(scorer, log, *, as_of, customers: pd.DataFrame | None = None) -> HoldoutEvaluation:
    """The report's holdout on ``log``, using no row after ``as_of``.

    An out-of-time test of the fitted model when ``min(as_of, last transaction)`` is at least the
    model's as-of date plus the longer label window; otherwise a backtest of the model's config at
    that day minus the longer window (the training backtest itself, reused when the scorer still
    carries it and the cutoff is the same).

    Parameters
    ----------
    scorer : Scorer
        Fitted.
    log : Transactions
    as_of : date-like
    customers : pandas.DataFrame, optional
        The customer table (its ``cost_to_serve`` column is ignored).

    Raises
    ------
    EvaluationUnavailable
        When the data before ``as_of`` are too short for either.
    """
    cfg = scorer.config.model
    longest = max(cfg.churn_window_days, cfg.value_horizon_days)
    end = min(as_day(as_of, "as_of"), log.last_timestamp.normalize())
    table = None if customers is None else customers.drop(columns=COST_COLUMN, errors="ignore")
    if scorer.as_of_ + pd.Timedelta(days=longest) <= end:
        return _out_of_time(scorer, log, table)
    trained = scorer.backtest_ or {}
    same_day = as_day(as_of, "as_of") == scorer.as_of_
    cutoff = as_day(trained["cutoff"], "cutoff") if same_day and trained else end - pd.Timedelta(days=longest)
    first_allowed = log.first_timestamp.normalize() + pd.Timedelta(days=cfg.min_window_days)
    if cutoff + pd.Timedelta(days=longest) > end or cutoff < first_allowed:
        raise EvaluationUnavailable(
            f"the data up to {end.date()} hold no {longest}-day holdout after the model's as-of date "
            f"{scorer.as_of_.date()}, nor a backtest cutoff at least {cfg.min_window_days} days after the "
            f"first transaction ({log.first_timestamp.date()})")
    description = (f"Backtest of this model's config: refitted on the rows up to {cutoff.date()} and judged "
                   f"on the next {cfg.churn_window_days} days (churn) and {cfg.value_horizon_days} days (value).")
    windows = {"churn_window_days": cfg.churn_window_days, "value_horizon_days": cfg.value_horizon_days}
    if same_day and trained.get("result") is not None:
        return from_backtest_result(trained["result"], kind="training backtest", **windows,
                                    description=description.replace("Backtest", "The training backtest", 1))
    result = backtest(log, cutoffs=[cutoff], config=cfg, customers=table,
                      baseline_models=scorer.config.baseline_models)
    return from_backtest_result(result, kind="backtest", **windows, description=description)


def _out_of_time(scorer, log, table) -> HoldoutEvaluation:
    """The fitted model's own predictions at its as-of date against the windows after it."""
    cfg = scorer.config.model
    cutoff = scorer.as_of_
    features = compute_features(log, as_of=cutoff, customers=table, windows_days=cfg.feature_windows_days)
    missing = [c for c in scorer.attribute_features_ if c not in features.columns]
    predicted = scorer.model_.predict_features(features.assign(**{c: np.nan for c in missing}))
    labels = outcome_labels(log, as_of=cutoff, churn_window_days=cfg.churn_window_days,
                            value_horizon_days=cfg.value_horizon_days,
                            customer_ids=None if table is None else features.index).reindex(features.index)
    btyd = BTYD_LABELS.get(cfg.transaction_model, cfg.transaction_model)
    frame = model_scores(features, predicted)  # the backtest's columns; its BTYD baseline is the model's own
    frame[f"churn:{btyd} P(no purchase)"] = predicted["btyd_churn_probability"]
    frame[f"value:{btyd}+GG"] = predicted["btyd_predicted_spend"]
    frame = pd.concat([frame, labels, features[["frequency"]]], axis=1)
    frame = frame.join(holdout_pit_columns(scorer.model_, features, labels["purchases_in_horizon"],
                                           cfg.value_horizon_days))
    tracking = holdout_tracking(log, scorer.model_, features, cfg.value_horizon_days)
    description = (f"Out-of-time test of this fitted model: its predictions at its as-of date {cutoff.date()} "
                   f"against the next {cfg.churn_window_days} days (churn) and {cfg.value_horizon_days} days "
                   "(value); nothing refitted.")
    return HoldoutEvaluation("out-of-time test", cutoff, cfg.churn_window_days, cfg.value_horizon_days,
                             description, frame, tracking)
