"""Churn probability and predicted value per customer: the BTYD baseline, a supervised model, the choice.

:class:`CustomerModel` fits, at an as-of date:

1. the BTYD transaction model and the Gamma-Gamma spend model on the rows up to ``as_of``;
2. for churn (no purchase in ``churn_window_days``) and for value (spend over ``value_horizon_days``),
   a time-travel plan (:func:`crmml.timetravel.plan_training_windows`): the label windows that end on
   the last day with data (never later than ``as_of``), counting a customer as known at a cutoff only
   with ``min_history_days`` of history;
3. **out-of-time validation** (:func:`crmml.timetravel.plan_validation_folds`,
   :func:`crmml.validation.validate_fold`): the same construction repeated at earlier cutoffs, every
   candidate trained on data up to a fold's cutoff and judged on the window after it, with the noise
   of its difference from the BTYD score measured by a paired bootstrap;
4. the choice (:func:`crmml.selection.choose_candidate`, recorded in :attr:`CustomerModel.churn_choice_`
   / :attr:`value_choice_` with every fold and the noise): the baseline is the better BTYD score over
   the folds (churn: P(no purchase) or the ``-E[X]`` ranking; value: E[X] x E[spend]); a learner ships
   only when its mean ROC AUC (churn) or normalized Gini (value) beats the baseline's by more than
   twice the standard error of the difference; otherwise the baseline ships, and P(no purchase) /
   E[X] x E[spend] ship when no fold fits (young customers) or there is no learner;
5. the chosen learner, refitted on the windows that end at the last day with data. A value learner
   trained on rescaled windows keeps its ranking but takes its total from the BTYD model
   (:meth:`CustomerModel._btyd_level`).

Before all this, with ``transaction_covariates`` configured, the transaction model itself is chosen
(:func:`crmml.transaction_choice.choose_transaction_covariates`, recorded in
:attr:`CustomerModel.transaction_choice_`): the BTYD model with the customer attributes as covariates
ships only when it beats the plain one out of time by more than the noise, by the same rule; every
BTYD score and feature then comes from the model that shipped.

Above ``max_validation_customers`` / ``max_training_customers`` customers, the folds and the final
learner fit use a hash sample of the customers; the BTYD models and the scores use everyone. Candidates
are listed in :mod:`crmml.validation`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd

from crmml.data.summary import as_day
from crmml.data.transactions import as_transactions, duckdb_session, partition_number_sql
from crmml.errors import DataValidationError
from crmml.features import MODEL_COLUMNS
from crmml.learners import CHURN_LEARNERS, VALUE_LEARNERS
from crmml.selection import choose_candidate
from crmml.timetravel import (
    TRANSACTION_MODELS,
    Snapshots,
    TrainingPlan,
    plan_training_windows,
    plan_validation_folds,
    training_frame,
)
from crmml.transaction_choice import TransactionChoice, choose_transaction_covariates
from crmml.validation import BTYD_SCORES, fit_learner, validate_fold

__all__ = ["Choice", "CustomerModel", "ModelConfig", "PREDICTION_COLUMNS"]

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
    min_window_days, min_known_share, n_rescaled_windows, min_history_days : int, float, int, int
        The time-travel plan (:func:`crmml.timetravel.plan_training_windows`).
    n_validation_folds : int
        Out-of-time validation folds (:func:`crmml.timetravel.plan_validation_folds`).
    max_validation_customers, max_training_customers : int
        Above these many customers, the validation folds and the final learner fit use a hash sample of
        the customers (:meth:`crmml.data.Transactions.partition`); the BTYD models and the scores
        always use everyone.
    seed : int
        Seed of every randomised learner.
    transaction_covariates : tuple of str
        Customer-table columns (features, e.g. ``acquisition_channel``) the covariate version of the
        transaction model reads in both processes; it ships only when it beats the plain model out of
        time (:mod:`crmml.transaction_choice`). Empty (the default): the plain model, no choice.
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
    min_history_days: int = 14
    n_validation_folds: int = 2
    max_validation_customers: int = 25_000
    max_training_customers: int = 200_000
    seed: int = 0
    transaction_covariates: tuple[str, ...] = ()  # a class default: bundles pickled before it existed load with it

    def __post_init__(self) -> None:
        for name in ("churn_window_days", "value_horizon_days", "min_window_days", "n_rescaled_windows",
                     "n_validation_folds", "max_validation_customers", "max_training_customers"):
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
        covariates = self.transaction_covariates
        if isinstance(covariates, str) or not all(isinstance(c, str) and c for c in covariates):
            raise ValueError(f"ModelConfig.transaction_covariates must be a list of customer-table column names; "
                             f"got {covariates!r}.")
        object.__setattr__(self, "transaction_covariates", tuple(covariates))
        if len(set(self.transaction_covariates)) != len(self.transaction_covariates):
            raise ValueError(f"ModelConfig.transaction_covariates names a column twice: {list(covariates)}.")
        reserved = [c for c in self.transaction_covariates if c in (*MODEL_COLUMNS, "customer_id", "no_purchase_history")]
        if reserved:
            raise ValueError(f"ModelConfig.transaction_covariates must name customer-table attributes; {reserved} "
                             "are not.")
        for name, allowed in (("churn_learners", CHURN_LEARNERS), ("value_learners", VALUE_LEARNERS)):
            unknown = [v for v in getattr(self, name) if v not in allowed]
            if unknown:
                raise ValueError(f"ModelConfig.{name} has unknown learner(s) {unknown}; choose from {allowed}.")
        if isinstance(self.min_history_days, bool) or not isinstance(self.min_history_days, (int, np.integer)) \
                or self.min_history_days < 0:
            raise ValueError(f"ModelConfig.min_history_days must be a whole number >= 0; got {self.min_history_days!r}.")
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
    folds: tuple = ()  #: the out-of-time folds: cutoff, window, plan, each candidate's metrics, the noise
    decision: dict | None = None  #: :class:`crmml.selection.Decision` as a dict (means, differences, margins)

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
            "folds": list(self.folds),
            "decision": self.decision,
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
        log = as_transactions(transactions, **read_kwargs).kept_in_memory()  # read many times
        as_of_day = as_day(as_of, "as_of")
        last_day = log.last_timestamp.normalize()
        if last_day < as_of_day - pd.Timedelta(days=_MAX_DAYS_WITHOUT_DATA):
            raise DataValidationError(
                f"The transactions end on {last_day.date()}, more than {_MAX_DAYS_WITHOUT_DATA} days before "
                f"as_of={as_of_day.date()}: the days in between would teach the models that everyone churned. "
                "Use an as_of within the data."
            )
        cfg = self.config
        snapshots = self._snapshots(log, customers)
        self.as_of_ = as_of_day
        base = snapshots.base_features(as_of_day)
        self.n_customers_ = len(base)
        # Label windows end on the last day with data: days without data are not days without purchases.
        label_end = min(as_of_day, last_day)
        self.transaction_choice_ = None
        if cfg.transaction_covariates:
            self.transaction_choice_ = self._transaction_choice(snapshots, log, customers, base, label_end)
            if self.transaction_choice_.shipped:
                snapshots = snapshots.with_covariates(cfg.transaction_covariates)
        self.btyd_ = snapshots.models(as_of_day)
        ages = base["age_days"].dropna().to_numpy() - (as_of_day - label_end).days
        validation = self._sampled(snapshots, log, customers, len(base), cfg.max_validation_customers)
        training = self._sampled(snapshots, log, customers, len(base), cfg.max_training_customers)
        self.churn_choice_, self.churn_learner_ = self._fit_task(
            "churn", validation, training, ages, label_end, cfg.churn_window_days, _churn_candidates(cfg)
        )
        if log.has_amount:
            self.value_choice_, self.value_learner_ = self._fit_task(
                "value", validation, training, ages, label_end, cfg.value_horizon_days, cfg.value_learners
            )
        else:
            plan = self._plan(ages, label_end, cfg.value_horizon_days)
            self.value_choice_ = Choice("value", "btyd", "the log has no amounts: no spend to learn", plan)
            self.value_learner_ = None
        self.purchases_learner_ = None
        self.value_level_ = {"source": "btyd" if self.value_learner_ is None else "learner",
                             "spend_scale": 1.0, "purchases_scale": 1.0}
        if self.value_learner_ is not None:
            frame = training_frame(training, self.value_choice_.plan)
            self.purchases_learner_ = fit_learner("value", self.value_choice_.learner, frame, seed=cfg.seed,
                                                  target="purchases")
            if self.value_choice_.plan.mode == "rescaled":
                self.value_level_ = self._btyd_level(base)
        return self

    def _transaction_choice(self, snapshots: Snapshots, log, customers, base: pd.DataFrame,
                            end: pd.Timestamp) -> TransactionChoice:
        """:func:`~crmml.transaction_choice.choose_transaction_covariates` on the customers (a hash sample
        above ``max_validation_customers``), judged over the churn window before ``end``."""
        cfg = self.config
        absent = [c for c in cfg.transaction_covariates if c not in base.columns]
        if absent:
            found = list(base.columns[base.columns.get_loc("no_purchase_history") + 1:])
            raise DataValidationError(
                f"ModelConfig.transaction_covariates names {absent}, which the customer table does not give "
                f"(attributes found: {found if customers is not None else 'no customer table'}).", column=absent[0])
        sample = self._sampled(snapshots, log, customers, len(base), cfg.max_validation_customers)
        return choose_transaction_covariates(sample, sample.with_covariates(cfg.transaction_covariates), end,
                                             window_days=cfg.churn_window_days, seed=cfg.seed)

    def _sampled(self, snapshots: Snapshots, log, customers, n_customers: int, limit: int) -> Snapshots:
        """``snapshots``, or snapshots of a hash sample of about ``limit`` customers when there are more."""
        if n_customers <= limit:
            return snapshots
        count = int(np.ceil(n_customers / limit))
        part = log.partition(0, count)
        return self._snapshots(part, None if customers is None else _table_partition(customers, count),
                               snapshots.covariates)

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

    def _snapshots(self, log, customers, covariates=()) -> Snapshots:
        cfg = self.config
        return Snapshots(
            log, customers, transaction_model=cfg.transaction_model, time_unit_days=cfg.time_unit_days,
            feature_windows_days=cfg.feature_windows_days, covariates=covariates,
        )

    def _fit_task(self, task: str, validation: Snapshots, training: Snapshots, ages: np.ndarray,
                  end: pd.Timestamp, target_days: int, learners):
        """Plan, validate out of time, choose (:func:`crmml.selection.choose_candidate`) and fit the
        shipped learner on the windows that end at ``end``."""
        cfg = self.config
        plan = self._plan(ages, end, target_days)
        if plan.mode == "btyd_only" or not learners:
            why = plan.reason if plan.mode == "btyd_only" else "no supervised learner configured"
            return Choice(task, "btyd", f"BTYD only: {why}", plan), None
        folds = plan_validation_folds(
            ages, end, plan, n_folds=cfg.n_validation_folds, min_window_days=cfg.min_window_days,
            min_known_share=cfg.min_known_share, n_windows=cfg.n_rescaled_windows,
            min_history_days=cfg.min_history_days,
        )
        if not folds:
            why = (f"BTYD only: no out-of-time validation fold fits before {end.date()} (a plan like {plan.mode} "
                   f"windows {list(plan.windows_days)} cannot be trained one window earlier), so no learner "
                   "can be shown to beat the BTYD score")
            return Choice(task, "btyd", why, plan), None
        scored = [validate_fold(task, validation, fold, learners, seed=cfg.seed) for fold in folds]
        judged = [(fold, score) for fold, score in zip(folds, scored, strict=True) if score is not None]
        if not judged:
            why = "BTYD only: the validation windows hold one class of outcome only (nothing to rank)"
            return Choice(task, "btyd", why, plan, folds=tuple(f.to_dict() for f in folds)), None
        decision = choose_candidate([score for _, score in judged], task, baselines=BTYD_SCORES)
        choice = Choice(
            task, decision.shipped, decision.reason, plan, judged[0][0].plan,
            {name: {"mean_" + decision.metric: decision.mean[name]} | dict(judged[0][1].metrics[name])
             for name in decision.mean},
            folds=tuple(fold.to_dict() | {"metrics": score.metrics, "diff_se": score.diff_se[decision.baseline]}
                        for fold, score in judged),
            decision=decision.to_dict(),
        )
        if decision.shipped == "btyd":
            return choice, None
        return choice, fit_learner(task, choice.learner, training_frame(training, plan), seed=cfg.seed)

    def _plan(self, ages, end, target_days) -> TrainingPlan:
        cfg = self.config
        return plan_training_windows(
            ages, end, target_days, min_window_days=cfg.min_window_days, min_known_share=cfg.min_known_share,
            n_windows=cfg.n_rescaled_windows, min_history_days=cfg.min_history_days,
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
        return self.predict_features(snapshots.base_features(as_of_day))  # (the BTYD columns: self.btyd_'s)

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
                "covariates": self._covariates_record(),
            },
            "spend_model": None if self.btyd_.spend_model is None else {
                k: float(v) for k, v in self.btyd_.spend_model.params_.items()
            },
            "churn": self.churn_choice_.to_dict(),
            "value": self.value_choice_.to_dict(),
            "value_level": self.value_level_,
        }

    def _covariates_record(self) -> dict | None:
        """The transaction model's covariate choice for :meth:`summary` (None when none was configured)."""
        choice = getattr(self, "transaction_choice_", None)  # (absent in bundles from before it)
        if choice is None:
            return None
        record = choice.to_dict()
        if choice.shipped:
            record["fitted"] = self.btyd_.covariates
        return record

    def _check_fitted(self) -> None:
        if not hasattr(self, "btyd_"):
            raise RuntimeError("This CustomerModel is not fitted yet; call fit() first.")




def _churn_candidates(config: ModelConfig) -> tuple[str, ...]:
    """The configured churn learners, with ``btyd_expected`` (the ``-E[X]`` ranking as a probability)
    first whenever any learner is configured."""
    learners = tuple(config.churn_learners)
    if learners and "btyd_expected" not in learners:
        learners = ("btyd_expected", *learners)
    return learners


def _table_partition(customers: pd.DataFrame, count: int) -> pd.DataFrame:
    """The customer-table rows of hash partition 0 of ``count`` (the rule of
    :meth:`crmml.data.Transactions.partition`)."""
    if "customer_id" not in customers.columns:
        return customers  # the feature code names the missing column
    with duckdb_session() as con:
        con.register("crmml_table_ids", pd.DataFrame({"customer_id": customers["customer_id"].to_numpy()}))
        part = con.sql(f"SELECT {partition_number_sql('customer_id', count)} AS p FROM crmml_table_ids").fetchnumpy()["p"]
    return customers[np.asarray(part) == 0]
