"""Churn probability and predicted value per customer: the BTYD baseline, a supervised model, the choice.

:class:`CustomerModel` fits, at an as-of date:

1. the BTYD transaction model and the Gamma-Gamma spend model on the rows up to ``as_of``;
2. for churn (no purchase in ``churn_window_days``) and for value (spend over ``value_horizon_days``),
   a time-travel plan (:func:`crmml.timetravel.plan_training_windows`), then a **validation**
   (:meth:`CustomerModel._validation`): with a full window, a forward backtest one window back; with
   rescaled windows, training on the shorter windows and scoring the longest, the extrapolation the
   shipped model will make. Nothing after ``as_of`` is read;
3. the candidate that ships, by a fixed rule (:data:`SELECTION_RULES`, recorded in
   :attr:`CustomerModel.churn_choice_` / :attr:`value_choice_`): the highest ROC AUC (churn) or
   normalized Gini (value) on the validation window, near-ties broken by the Brier score (churn) or
   the absolute error of the total (value); the BTYD score wins exact ties and is the only candidate
   when no window fits;
4. the chosen learner, refitted on the windows that end at ``as_of``. A value learner trained on
   rescaled windows keeps its ranking but takes its total from the BTYD model
   (:meth:`CustomerModel._btyd_level`).

Candidates. Churn: ``btyd`` (the BTYD model's P(no purchase in the window)), each configured
classifier, and ``blend:<classifier>`` (the mean of the two probabilities). Value: ``btyd`` (expected
purchases x Gamma-Gamma expected spend over the horizon) and each configured Poisson regressor; a
value regressor comes with a purchase-count regressor of the same kind for the predicted purchases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd

from crmml.data.summary import as_day
from crmml.data.transactions import as_transactions
from crmml.errors import DataValidationError
from crmml.labels import outcome_labels
from crmml.learners import (
    CHURN_LEARNERS,
    VALUE_LEARNERS,
    make_churn_learner,
    make_value_learner,
)
from crmml.metrics import churn_metrics, value_metrics
from crmml.timetravel import (
    TRANSACTION_MODELS,
    Snapshots,
    TrainingPlan,
    plan_training_windows,
    training_frame,
)

__all__ = ["Choice", "CustomerModel", "ModelConfig", "PREDICTION_COLUMNS", "SELECTION_RULES", "choose_candidate"]

#: Columns of :meth:`CustomerModel.predict`, in order.
PREDICTION_COLUMNS = [
    "churn_probability",
    "btyd_churn_probability",
    "p_alive",
    "predicted_purchases",
    "btyd_expected_purchases",
    "predicted_spend",
    "btyd_predicted_spend",
    "no_purchase_history",
]

#: Per task: the metric that ranks candidates (higher is better), how close to the best counts as a
#: tie, and what breaks it (lower is better; for value the absolute total error, since the value is
#: reported in currency and a ranking-only winner can be badly off in level).
SELECTION_RULES = {
    "churn": ("roc_auc", 0.002, "brier"),
    "value": ("normalized_gini", 0.01, "abs_total_error_pct"),
}

# How far the log may end before as_of when fitting: labels after the last row would read as churn.
_MAX_DAYS_WITHOUT_DATA = 7


@dataclass(frozen=True)
class ModelConfig:
    """What :class:`CustomerModel` fits. Every field has a default; the YAML configs set them by name.

    Parameters
    ----------
    churn_window_days : int
        Churn means no purchase in this many days after the as-of date.
    value_horizon_days : int
        Predicted value is the spend over this many days.
    transaction_model : {"pareto_nbd", "bg_nbd", "mbg_nbd"}
        The BTYD model behind the features and the baselines.
    time_unit_days : float
        The BTYD models' time unit in days.
    feature_windows_days : tuple of int
        Recent-activity windows of the features.
    churn_learners, value_learners : tuple of str
        Supervised candidates (see :mod:`crmml.learners`); empty means BTYD only.
    min_window_days, min_known_share, n_rescaled_windows : int, float, int
        The time-travel plan (:func:`crmml.timetravel.plan_training_windows`).
    seed : int
        Seed of every randomised learner.
    """

    churn_window_days: int = 90
    value_horizon_days: int = 365
    transaction_model: str = "pareto_nbd"
    time_unit_days: float = 7.0
    feature_windows_days: tuple[int, ...] = (30, 90, 180, 365)
    churn_learners: tuple[str, ...] = ("logistic", "gradient_boosting")
    value_learners: tuple[str, ...] = ("poisson_glm", "poisson_gbm")
    min_window_days: int = 28
    min_known_share: float = 0.9
    n_rescaled_windows: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("churn_window_days", "value_horizon_days", "min_window_days", "n_rescaled_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive whole number; got {value!r}.")
        if self.transaction_model not in TRANSACTION_MODELS:
            raise ValueError(
                f"ModelConfig.transaction_model must be one of {sorted(TRANSACTION_MODELS)}; "
                f"got {self.transaction_model!r}."
            )
        object.__setattr__(self, "churn_learners", tuple(self.churn_learners))
        object.__setattr__(self, "value_learners", tuple(self.value_learners))
        object.__setattr__(self, "feature_windows_days", tuple(self.feature_windows_days))
        for name, allowed in (("churn_learners", CHURN_LEARNERS), ("value_learners", VALUE_LEARNERS)):
            unknown = [v for v in getattr(self, name) if v not in allowed]
            if unknown:
                raise ValueError(f"ModelConfig.{name} has unknown learner(s) {unknown}; choose from {allowed}.")
        if not 0 < self.min_known_share <= 1:
            raise ValueError(f"ModelConfig.min_known_share must be in (0, 1]; got {self.min_known_share!r}.")
        if not 0 < self.time_unit_days < np.inf:
            raise ValueError(f"ModelConfig.time_unit_days must be positive; got {self.time_unit_days!r}.")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown model config key(s) {unknown}; known keys: {sorted(known)}.")
        return cls(**values)


@dataclass(frozen=True)
class Choice:
    """Which candidate ships for one task, by which rule, on which evidence."""

    task: str  #: "churn" or "value"
    shipped: str  #: "btyd", a learner name, or "blend:<learner>"
    rule: str
    plan: TrainingPlan  #: the windows the shipped learner was trained on
    validation_plan: TrainingPlan | None = None
    validation_metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def learner(self) -> str | None:
        return None if self.shipped == "btyd" else self.shipped.removeprefix("blend:")

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "shipped": self.shipped,
            "rule": self.rule,
            "plan": self.plan.to_dict(),
            "validation_plan": None if self.validation_plan is None else self.validation_plan.to_dict(),
            "validation_metrics": self.validation_metrics,
        }


class CustomerModel:
    """BTYD, spend, churn and value models for one as-of date (see the module docstring).

    Parameters
    ----------
    config : ModelConfig, optional

    Attributes
    ----------
    as_of_ : pandas.Timestamp
    btyd_ : crmml.timetravel.BTYDModels
    churn_choice_, value_choice_ : Choice
    churn_learner_ : fitted pipeline or None
    value_learner_, purchases_learner_ : fitted pipelines or None
    n_customers_ : int
        Customers at ``as_of`` (with a purchase, or in the customer table).
    """

    def __init__(self, config: ModelConfig | None = None):
        self.config = config if config is not None else ModelConfig()

    # ------------------------------------------------------------------------------------------
    def fit(self, transactions, *, as_of, customers: pd.DataFrame | None = None, **read_kwargs):
        """Fit every model on the rows dated on or before ``as_of`` (later rows are never read).

        Returns
        -------
        self
        """
        log = as_transactions(transactions, **read_kwargs)
        as_of_day = as_day(as_of, "as_of")
        last_day = log.last_timestamp.normalize()
        if last_day < as_of_day - pd.Timedelta(days=_MAX_DAYS_WITHOUT_DATA):
            raise DataValidationError(
                f"The transactions end on {last_day.date()}, more than {_MAX_DAYS_WITHOUT_DATA} days before "
                f"as_of={as_of_day.date()}: the days in between would teach the models that everyone churned. "
                "Use an as_of within the data."
            )
        snapshots = self._snapshots(log, customers)
        self.as_of_ = as_of_day
        self.btyd_ = snapshots.models(as_of_day)
        base = snapshots.base_features(as_of_day)
        self.n_customers_ = len(base)
        ages = base["age_days"].dropna().to_numpy()
        cfg = self.config

        self.churn_choice_, self.churn_learner_ = self._fit_task(
            "churn", snapshots, ages, cfg.churn_window_days, cfg.churn_learners
        )
        if log.has_amount:
            self.value_choice_, self.value_learner_ = self._fit_task(
                "value", snapshots, ages, cfg.value_horizon_days, cfg.value_learners
            )
        else:
            plan = plan_training_windows(ages, as_of_day, cfg.value_horizon_days)
            self.value_choice_ = Choice("value", "btyd", "the log has no amounts: no spend to learn", plan)
            self.value_learner_ = None
        self.purchases_learner_ = None
        self.value_level_ = {"source": "btyd" if self.value_learner_ is None else "learner",
                             "spend_scale": 1.0, "purchases_scale": 1.0}
        if self.value_learner_ is not None:
            frame = training_frame(snapshots, self.value_choice_.plan)
            self.purchases_learner_ = make_value_learner(self.value_choice_.learner, seed=cfg.seed).fit(
                frame.features, frame.labels["purchases"].to_numpy()
            )
            if self.value_choice_.plan.mode == "rescaled":
                self.value_level_ = self._btyd_level(base)
        return self

    def _btyd_level(self, base: pd.DataFrame) -> dict:
        """Scales that give the learner's predictions, summed over the customers at ``as_of``, the BTYD
        model's totals.

        Used when the value learner was trained on rescaled windows: its ranking carries over, but its
        level is an extrapolation across the customers' ageing (on CDNOW, pooled, longest-only,
        two-longest and shortest windows put the holdout spend total at +24 %, +299 %, +94 % and -11 %),
        while the BTYD total is the structural forecast. Fixed at training, so a customer's value never
        depends on who else is scored.
        """
        self.value_level_ = {"source": "learner", "spend_scale": 1.0, "purchases_scale": 1.0}
        scores = self.predict_features(base)
        spend_scale = scores["btyd_predicted_spend"].sum() / scores["predicted_spend"].sum()
        purchases_scale = scores["btyd_expected_purchases"].sum() / scores["predicted_purchases"].sum()
        return {"source": "learner ranking, BTYD total", "spend_scale": float(spend_scale),
                "purchases_scale": float(purchases_scale)}

    def _snapshots(self, log, customers) -> Snapshots:
        cfg = self.config
        return Snapshots(
            log, customers, transaction_model=cfg.transaction_model, time_unit_days=cfg.time_unit_days,
            feature_windows_days=cfg.feature_windows_days,
        )

    def _fit_task(self, task: str, snapshots: Snapshots, ages: np.ndarray, target_days: int, learners):
        cfg = self.config
        as_of_day = self.as_of_
        plan = self._plan(ages, as_of_day, target_days)
        if plan.mode == "btyd_only" or not learners:
            why = plan.reason if plan.mode == "btyd_only" else "no supervised learner configured"
            return Choice(task, "btyd", f"BTYD only: {why}", plan), None

        validation = self._validation(snapshots, plan)
        if isinstance(validation, str):
            return Choice(task, "btyd", f"BTYD only: {validation}", plan), None
        validation_plan, train, held_out = validation
        held_out_rows, outcome = held_out.features, held_out.labels
        held_out_days = int(held_out_rows["horizon_days"].iloc[0])
        cutoff = held_out.plan.cutoffs[0]
        btyd_at_cutoff = snapshots.models(cutoff)
        learner_rows = snapshots.features(cutoff, validation_plan.longest_days, models=btyd_at_cutoff)
        scores = {}
        if task == "churn":
            scores["btyd"] = held_out_rows["btyd_p_no_purchase"].to_numpy()
            for name in learners:
                learner = make_churn_learner(name, seed=cfg.seed).fit(train.features, train.labels["churned"].to_numpy())
                scores[name] = rescaled_churn(learner.predict_proba(learner_rows)[:, 1], learner_rows, held_out_rows)
            for name in learners:
                scores[f"blend:{name}"] = 0.5 * (scores[name] + scores["btyd"])
            actual = outcome["churned"].to_numpy()
            metrics = {name: churn_metrics(actual, s) for name, s in scores.items()}
        else:
            scores["btyd"] = (held_out_rows["btyd_expected_purchases"] * held_out_rows["expected_spend"]).to_numpy()
            for name in learners:
                learner = make_value_learner(name, seed=cfg.seed).fit(train.features, _spend_target(train.labels))
                scores[name] = rescaled_amount(learner.predict(learner_rows), learner_rows, held_out_rows)
            actual = _spend_target(outcome)
            metrics = {name: value_metrics(actual, s) for name, s in scores.items()}
        shipped = choose_candidate(metrics, task)
        primary, tolerance, secondary = SELECTION_RULES[task]
        rule = (
            f"highest {primary} on the validation window ({held_out_days} days after "
            f"{cutoff.date()}; candidates trained on the windows "
            f"{list(validation_plan.windows_days)} ending {validation_plan.end.date()}); within {tolerance} of "
            f"the best, the smallest {secondary}; the BTYD score wins ties"
        )
        choice = Choice(task, shipped, rule, plan, validation_plan,
                        {name: {k: float(v) for k, v in m.items()} for name, m in metrics.items()})
        if shipped == "btyd":
            return choice, None
        final = training_frame(snapshots, plan)
        if task == "churn":
            learner = make_churn_learner(choice.learner, seed=cfg.seed).fit(
                final.features, final.labels["churned"].to_numpy()
            )
        else:
            learner = make_value_learner(choice.learner, seed=cfg.seed).fit(final.features, _spend_target(final.labels))
        return choice, learner

    def _validation(self, snapshots: Snapshots, plan: TrainingPlan):
        """The candidates' training rows and held-out rows, or why there are none.

        ``full`` plan: a forward backtest one target window back, candidates trained on the plan for
        ``as_of - target`` and scored on ``(as_of - target, as_of]``. ``rescaled`` plan: the shipped
        model will extrapolate to a window longer than any it saw, so the candidates are trained on
        the plan's shorter windows and scored on its longest. Nothing after ``as_of`` is read.
        """
        end = plan.end
        if plan.mode == "full":
            cutoff = end - pd.Timedelta(days=plan.target_days)
            ages = snapshots.base_features(cutoff)["age_days"].dropna().to_numpy()
            validation_plan = self._plan(ages, cutoff, plan.target_days)
            if validation_plan.mode == "btyd_only":
                return f"no validation possible at {cutoff.date()} ({validation_plan.reason})"
            held_out_days = plan.target_days
        else:
            if len(plan.windows_days) < 2:
                return "a single rescaled window leaves none to validate on"
            *shorter, held_out_days = plan.windows_days
            validation_plan = TrainingPlan(
                end, held_out_days, tuple(shorter), "rescaled",
                f"validation: from the windows {shorter} to the {held_out_days}-day window",
            )
            cutoff = end - pd.Timedelta(days=held_out_days)
        held_out_plan = TrainingPlan(cutoff + pd.Timedelta(days=held_out_days), held_out_days, (held_out_days,),
                                     "full", "held out")
        return validation_plan, training_frame(snapshots, validation_plan), training_frame(snapshots, held_out_plan)

    def _plan(self, ages, end, target_days) -> TrainingPlan:
        cfg = self.config
        return plan_training_windows(
            ages, end, target_days, min_window_days=cfg.min_window_days, min_known_share=cfg.min_known_share,
            n_windows=cfg.n_rescaled_windows,
        )

    # ------------------------------------------------------------------------------------------
    def predict(self, transactions, *, as_of=None, customers: pd.DataFrame | None = None, **read_kwargs):
        """Per-customer churn probability, predicted purchases and spend at ``as_of``.

        Parameters
        ----------
        transactions : Transactions, DataFrame or path
        as_of : date-like, optional
            Defaults to the training as-of date. Rows after it are not read.
        customers : pandas.DataFrame, optional
            The customer table (customers in it without purchases are scored as new).

        Returns
        -------
        pandas.DataFrame
            Indexed by ``customer_id``, the columns :data:`PREDICTION_COLUMNS`: the shipped churn
            probability (no purchase in ``churn_window_days``) and its BTYD baseline, P(alive), the
            shipped and BTYD purchases and spend over ``value_horizon_days``.
        """
        self._check_fitted()
        log = as_transactions(transactions, **read_kwargs)
        as_of_day = self.as_of_ if as_of is None else as_day(as_of, "as_of")
        snapshots = self._snapshots(log, customers)
        return self.predict_features(snapshots.base_features(as_of_day))

    def predict_features(self, features) -> pd.DataFrame:
        """:meth:`predict` from :func:`crmml.features.compute_features` rows (a frame, or
        :class:`~crmml.customer_rows.CustomerRows`; model columns not needed: they are added here
        from this model's ``btyd_``, at every horizon the learners need). See
        :func:`crmml.prediction.predict_rows`."""
        from crmml.customer_rows import CustomerRows
        from crmml.prediction import predict_rows

        rows = features if isinstance(features, CustomerRows) else CustomerRows.from_frame(features)
        predicted, _ = predict_rows(self, rows)
        predicted["no_purchase_history"] = rows.no_history
        return pd.DataFrame(predicted, index=pd.Index(rows.ids, name="customer_id"))

    def summary(self) -> dict:
        """What was fitted and chosen, for the record (JSON-ready)."""
        self._check_fitted()
        return {
            "as_of": str(self.as_of_.date()),
            "config": self.config.to_dict(),
            "n_customers": self.n_customers_,
            "transaction_model": {
                "kind": self.config.transaction_model,
                "params": {k: float(v) for k, v in self.btyd_.transaction_model.params_.items()},
                "penalizer": self.btyd_.penalizer,
            },
            "spend_model": None if self.btyd_.spend_model is None else {
                k: float(v) for k, v in self.btyd_.spend_model.params_.items()
            },
            "churn": self.churn_choice_.to_dict(),
            "value": self.value_choice_.to_dict(),
            "value_level": self.value_level_,
        }

    def _check_fitted(self) -> None:
        if not hasattr(self, "btyd_"):
            raise RuntimeError("This CustomerModel is not fitted yet; call fit() first.")


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


def choose_candidate(metrics: dict[str, dict[str, float]], task: str) -> str:
    """The shipped candidate by :data:`SELECTION_RULES` (``btyd`` wins exact ties)."""
    primary, tolerance, secondary = SELECTION_RULES[task]

    def tiebreak(name: str) -> float:
        if secondary == "abs_total_error_pct":
            return abs(metrics[name]["total_error_pct"])
        return metrics[name][secondary]

    usable = {name: m for name, m in metrics.items() if np.isfinite(m[primary])}
    if not usable:
        return "btyd"
    best = max(m[primary] for m in usable.values())
    close = [name for name, m in usable.items() if m[primary] >= best - tolerance]
    return min(close, key=lambda name: (tiebreak(name), name != "btyd"))


def _spend_target(labels: pd.DataFrame) -> np.ndarray:
    """Spend in the window, refunds beyond purchases counted as 0 (a Poisson target is >= 0)."""
    return np.clip(labels["spend"].to_numpy(dtype=np.float64), 0, None)
