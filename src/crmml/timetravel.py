"""Time-travel training sets: features at past cutoffs, labels from windows that end at the as-of date.

A supervised model that scores customers at ``as_of`` must learn from the past only. For a label
window of ``w`` days it is trained on the features at ``cutoff = as_of - w`` and the labels of
``(cutoff, as_of]``, so no row dated after ``as_of`` is ever read (the BTYD models behind the
features are themselves fitted on the rows up to each cutoff).

When the history before ``as_of`` is too short for a full window (the CDNOW cohort is 39 weeks old at
its calibration end and the holdout is 39 weeks long), the plan pools several shorter windows that
fit and the models see the window length as a feature (``horizon_days``), so they can rescale to the
target window. When not even the shortest window fits, the plan says so and the caller falls back to
the BTYD score. :class:`TrainingPlan` records which of the three happened and why.

A window *fits* when the customers known at its cutoff are at least ``min_known_share`` of those
known at ``as_of``: training on a cutoff where most of today's customers did not exist yet would
describe a different population.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from crmml.data import rfm_summary
from crmml.data.summary import as_day
from crmml.data.transactions import Transactions, as_transactions
from crmml.errors import DataValidationError
from crmml.features import attribute_values, compute_features, model_columns
from crmml.labels import outcome_labels
from crmml.models import (
    BetaGeo,
    BetaGeoCovariates,
    GammaGamma,
    ModifiedBetaGeo,
    ModifiedBetaGeoCovariates,
    ParetoNBD,
    ParetoNBDCovariates,
)

__all__ = [
    "BTYDModels",
    "COVARIATE_MODELS",
    "Snapshots",
    "TRANSACTION_MODELS",
    "TrainingPlan",
    "ValidationFold",
    "covariate_summary",
    "fit_btyd_models",
    "plan_validation_folds",
    "plan_training_windows",
    "training_frame",
    "with_model_features",
    "with_model_features_at",
]

#: The transaction models a config can name.
TRANSACTION_MODELS = {"bg_nbd": BetaGeo, "mbg_nbd": ModifiedBetaGeo, "pareto_nbd": ParetoNBD}
#: The covariate version of each (Fader & Hardie 2007, "Incorporating Time-Invariant Covariates into the
#: Pareto/NBD and BG/NBD Models"): the attributes scale both the purchase and the dropout process.
COVARIATE_MODELS = {"bg_nbd": BetaGeoCovariates, "mbg_nbd": ModifiedBetaGeoCovariates,
                    "pareto_nbd": ParetoNBDCovariates}


@dataclass(frozen=True)
class BTYDModels:
    """The BTYD transaction model and Gamma-Gamma spend model fitted on the rows up to ``as_of``."""

    as_of: pd.Timestamp
    transaction_model: object
    spend_model: GammaGamma | None
    penalizer: float  #: L2 penalty of the transaction model's fit (0: unpenalised, the default)
    n_customers: int
    #: Why the transaction model's fit is a limit or not fully identified (its ``fit_warning_``), or None.
    fit_warning: str | None = None
    #: The same for the spend model.
    spend_fit_warning: str | None = None
    #: The covariates of a covariate transaction model: ``names`` and the customers left out of its
    #: fit for a missing value (``n_missing``); None for a plain model.
    covariates: dict | None = None


def covariate_summary(summary: pd.DataFrame, features: pd.DataFrame, covariates) -> pd.DataFrame:
    """``summary`` (indexed by ``customer_id``) with one column per covariate, each customer's value
    from the :func:`~crmml.features.compute_features` rows ``features`` as the covariate models read
    it at scoring (:func:`~crmml.features.attribute_values`); missing where the customer has no row
    or no value."""
    rows = features.reindex(summary.index)
    return summary.assign(**{name: attribute_values(rows, name) for name in covariates})


def fit_btyd_models(
    log: Transactions, as_of, *, kind: str = "pareto_nbd", time_unit_days: float = 7.0,
    features: pd.DataFrame | None = None, covariates=(),
) -> BTYDModels:
    """Fit the transaction model ``kind`` and (with amounts) Gamma-Gamma on the rows up to ``as_of``.

    The summary is :func:`~crmml.data.rfm_summary` with daily periods in units of
    ``time_unit_days``. Both fits are unpenalised: a flat or boundary optimum (a young cohort where
    nobody has dropped out yet leaves Pareto/NBD's ``s, beta`` unidentified) is kept as the limit it
    is, with a :class:`~crmml.models.base.FitWarning` whose sentence is recorded in
    :attr:`BTYDModels.fit_warning` (no L2 fallback: a penalty on parameters of very different scales
    would move them by amounts that depend on the units).

    With ``covariates`` (customer attributes, read from the features at ``as_of``, ``features``), the
    transaction model is :data:`COVARIATE_MODELS` ``[kind]`` with the attributes in both processes,
    fitted on the customers whose attributes are all known (a customer without a value is scored at
    the reference level later, and is left out of the fit rather than counted as one); the spend model
    is the same as without.
    """
    if kind not in TRANSACTION_MODELS:
        raise ValueError(f"transaction_model must be one of {sorted(TRANSACTION_MODELS)}; got {kind!r}.")
    as_of_day = as_day(as_of, "as_of")
    summary = rfm_summary(log, as_of=as_of_day, freq="D", freq_multiplier=time_unit_days)
    covariates = list(covariates)
    record = None
    if covariates:
        if features is None:
            raise ValueError("fit_btyd_models: covariates need the features (with the attributes) at as_of.")
        attributes = covariate_summary(summary, features, covariates)
        known = np.ones(len(attributes), dtype=bool)
        for name in covariates:
            known &= attributes[name].notna().to_numpy()
        if not known.any():
            raise DataValidationError(f"No customer with purchases at {as_of_day.date()} has a value of every "
                                      f"covariate {covariates}; the covariate model cannot be fitted.",
                                      column=covariates[0])
        transaction_model = COVARIATE_MODELS[kind](covariates, covariates)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transaction_model.fit(attributes[known])
        fit_warning = "; ".join(str(w.message) for w in caught) or None
        for warning in caught:  # said again, from here, as a plain model's FitWarning is
            warnings.warn(warning.message, warning.category, stacklevel=2)
        record = {"names": covariates, "n_missing": int((~known).sum())}
    else:
        transaction_model = TRANSACTION_MODELS[kind]().fit(summary)
        fit_warning = transaction_model.fit_warning_
    spend_model = GammaGamma().fit(summary) if log.has_amount else None
    return BTYDModels(
        as_of_day,
        transaction_model,
        spend_model,
        transaction_model.penalizer,
        len(summary),
        fit_warning=fit_warning,
        spend_fit_warning=None if spend_model is None else spend_model.fit_warning_,
        covariates=record,
    )


@dataclass(frozen=True)
class TrainingPlan:
    """Which label windows train a supervised model that scores at ``end``, and why.

    Attributes
    ----------
    end : pandas.Timestamp
        The as-of date the model will score at; every window ends there.
    target_days : int
        The label window the model predicts (churn window or value horizon).
    windows_days : tuple of int
        The training windows; window ``w`` has its cutoff at ``end - w``.
    mode : {"full", "rescaled", "btyd_only"}
        ``full``: the target window fits and is the only one. ``rescaled``: shorter windows that fit,
        pooled, the window length a feature. ``btyd_only``: no window fits; use the BTYD score.
    reason : str
        One sentence for the record.
    """

    end: pd.Timestamp
    target_days: int
    windows_days: tuple[int, ...]
    mode: str
    reason: str
    known_share: dict[int, float] = field(default_factory=dict)

    @property
    def cutoffs(self) -> list[pd.Timestamp]:
        return [self.end - pd.Timedelta(days=w) for w in self.windows_days]

    @property
    def longest_days(self) -> int:
        return max(self.windows_days, default=0)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["end"] = str(self.end.date())
        record["windows_days"] = list(self.windows_days)
        record["known_share"] = {str(k): round(v, 4) for k, v in self.known_share.items()}
        return record


def plan_training_windows(
    age_days,
    end,
    target_days: int,
    *,
    min_window_days: int = 28,
    min_known_share: float = 0.9,
    n_windows: int = 4,
    min_history_days: int = 0,
) -> TrainingPlan:
    """Plan the time-travel windows for a target window, from the customers' ages at ``end``.

    Parameters
    ----------
    age_days : array-like
        Days from each customer's first purchase day to ``end`` (``age_days`` of the features).
    end : date-like
        The scoring date.
    target_days : int
        The label window to predict.
    min_window_days : int
        Shortest window worth training on.
    min_known_share : float in (0, 1]
        A window fits when at least this share of the customers known at ``end`` are known at its
        cutoff (bought on or before it).
    n_windows : int
        Number of pooled windows when rescaling: evenly spaced from a third of the longest window
        that fits (but at least ``min_window_days``) to that longest window.
    min_history_days : int
        A customer counts as known at a cutoff only with a first purchase at least this many days
        before it, so no window starts with its customers at (nearly) zero history. The customers
        known at ``end`` are likewise those at least this old.
    """
    end_day = as_day(end, "end")
    _check_days(target_days, "target_days")
    _check_days(min_window_days, "min_window_days")
    if not 0 < min_known_share <= 1:
        raise ValueError(f"min_known_share must be in (0, 1]; got {min_known_share!r}.")
    if isinstance(min_history_days, bool) or not isinstance(min_history_days, (int, np.integer)) or min_history_days < 0:
        raise ValueError(f"min_history_days must be a whole number of days >= 0; got {min_history_days!r}.")
    ages = np.sort(np.asarray(age_days, dtype=np.float64))
    ages = ages[np.isfinite(ages) & (ages >= min_history_days)] - min_history_days  # history beyond the minimum
    if len(ages) == 0:
        why = "no customers before the as-of date" if not min_history_days else (
            f"no customer has {min_history_days} days of history at the as-of date")
        return TrainingPlan(end_day, target_days, (), "btyd_only", why)

    def share(window: int) -> float:  # customers whose first purchase day is on or before end - window
        return float(len(ages) - np.searchsorted(ages, window, side="left")) / len(ages)

    # the longest whole window whose cutoff still knows min_known_share of the customers
    needed = int(np.ceil(min_known_share * len(ages)))  # customers the cutoff must know
    longest = int(np.floor(ages[len(ages) - needed]))
    while longest > 0 and share(longest) < min_known_share:
        longest -= 1
    if share(target_days) >= min_known_share:
        return TrainingPlan(
            end_day, target_days, (target_days,), "full",
            f"the {target_days}-day window fits ({share(target_days):.0%} of customers known at its cutoff)",
            {target_days: share(target_days)},
        )
    if longest < min_window_days:
        return TrainingPlan(
            end_day, target_days, (), "btyd_only",
            f"no window of {min_window_days} days or more fits: a {min_window_days}-day cutoff knows only "
            f"{share(min_window_days):.0%} of the customers (at least {min_known_share:.0%} needed)",
            {min_window_days: share(min_window_days)},
        )
    shortest = max(min_window_days, longest // 3)
    windows = tuple(sorted({int(round(w)) for w in np.linspace(shortest, longest, max(1, n_windows))}))
    return TrainingPlan(
        end_day, target_days, windows, "rescaled",
        f"the {target_days}-day window does not fit ({share(target_days):.0%} of customers known at its "
        f"cutoff, at least {min_known_share:.0%} needed); pooled windows of {windows[0]}-{windows[-1]} days "
        "with the window length as a feature",
        {w: share(w) for w in windows},
    )


@dataclass(frozen=True)
class ValidationFold:
    """One out-of-time validation fold: candidates trained by ``plan`` (data up to ``cutoff`` only),
    scored at ``cutoff`` and judged on ``(cutoff, cutoff + window_days]``."""

    cutoff: pd.Timestamp
    window_days: int
    plan: TrainingPlan

    def to_dict(self) -> dict:
        return {"cutoff": str(self.cutoff.date()), "window_days": self.window_days, "plan": self.plan.to_dict()}


def plan_validation_folds(age_days, end, plan: TrainingPlan, *, n_folds: int = 2, min_window_days: int = 28,
                          min_known_share: float = 0.9, n_windows: int = 4, min_history_days: int = 0,
                          step_days: int = 7) -> list[ValidationFold]:
    """Out-of-time folds that test what ``plan`` will do, one judged window after another back in time.

    The shipped model is trained on windows ending at ``end`` and predicts the ``plan.target_days``
    after it. A fold repeats that construction at an earlier cutoff ``c``: candidates trained on a plan
    that ends at ``c`` (so on data up to ``c`` only) predict the ``v`` days after ``c``, and are judged
    on what happened in ``(c, c + v]``. With a full plan ``v`` is the target window; when the target
    does not fit (young customers, a rescaled plan) ``v`` is the longest window, in steps of
    ``step_days`` from the plan's longest down to ``min_window_days``, for which a plan at
    ``c = end - v`` can be trained. Fold ``k`` has its cutoff at ``end - (k + 1) v``; folds stop at the
    first one whose plan cannot be trained. No fold: the caller ships the BTYD score.

    Parameters
    ----------
    age_days : array-like
        Days from each customer's first purchase day to ``end``.
    end : date-like
    plan : TrainingPlan
        The plan at ``end`` (full or rescaled).
    n_folds : int
    min_window_days, min_known_share, n_windows, min_history_days
        As in :func:`plan_training_windows`.
    step_days : int
        Granularity of the judged window when the target does not fit.
    """
    end_day = as_day(end, "end")
    ages = np.asarray(age_days, dtype=np.float64)
    ages = ages[np.isfinite(ages)]
    options = dict(min_window_days=min_window_days, min_known_share=min_known_share, n_windows=n_windows,
                   min_history_days=min_history_days)
    if plan.mode == "full":
        lengths = [plan.target_days]
    elif plan.mode == "rescaled":
        lengths = list(range(plan.longest_days, min_window_days - 1, -step_days))
    else:
        return []
    for window in lengths:
        folds = []
        for k in range(n_folds):
            back = window * (k + 1)
            at_cutoff = ages[ages >= back] - back
            fold_plan = plan_training_windows(at_cutoff, end_day - pd.Timedelta(days=back), window, **options)
            if fold_plan.mode == "btyd_only":
                break
            folds.append(ValidationFold(end_day - pd.Timedelta(days=back), window, fold_plan))
        if folds:
            return folds
    return []


def with_model_features(features: pd.DataFrame, btyd: BTYDModels, horizon_days: int,
                        time_unit_days: float) -> pd.DataFrame:
    """``features`` plus the BTYD columns over ``horizon_days`` and a ``horizon_days`` column: the rows
    every learner reads, in training and in scoring."""
    return with_model_features_at(features, btyd, [horizon_days], time_unit_days)[0][horizon_days]


def with_model_features_at(features: pd.DataFrame, btyd: BTYDModels, horizons_days, time_unit_days: float,
                           *, frames_at=None) -> tuple[dict, dict]:
    """:func:`with_model_features` at several horizons, every BTYD quantity computed once
    (:func:`crmml.features.model_columns`).

    Returns
    -------
    frames : dict
        By horizon: the :func:`with_model_features` frame, for each horizon of ``frames_at``
        (default: all of ``horizons_days``).
    columns : dict
        By horizon of ``horizons_days``: the model columns as arrays.
    """
    columns = model_columns(features, btyd.transaction_model, btyd.spend_model, horizons_days=horizons_days,
                            time_unit_days=time_unit_days)
    frames = {}
    for horizon in (columns if frames_at is None else dict.fromkeys(frames_at)):
        extra = dict(columns[horizon])
        replaced = [c for c in extra if c in features.columns]
        base = features.drop(columns=replaced) if replaced else features
        if "horizon_days" not in base.columns:  # else set in place below, where the features have it
            extra["horizon_days"] = np.full(len(features), float(horizon))
        frame = pd.concat([base, pd.DataFrame(extra, index=features.index)], axis=1)
        if "horizon_days" in base.columns:
            frame["horizon_days"] = float(horizon)
        frames[horizon] = frame
    return frames, columns


def _check_days(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive whole number of days; got {value!r}.")


class Snapshots:
    """Features and BTYD fits at cutoff dates, each computed once and reused across horizons.

    Parameters
    ----------
    log : Transactions, DataFrame or path
    customers : pandas.DataFrame or None
    transaction_model : str
        Key of :data:`TRANSACTION_MODELS`.
    time_unit_days : float
    feature_windows_days : tuple of int
    covariates : tuple of str
        Customer attributes of the transaction model (:func:`fit_btyd_models`); empty: the plain model.
    """

    def __init__(self, log: Transactions, customers, *, transaction_model: str, time_unit_days: float,
                 feature_windows_days, covariates=()):
        self.log = as_transactions(log)
        self.customers = customers
        self.transaction_model = transaction_model
        self.time_unit_days = time_unit_days
        self.feature_windows_days = tuple(feature_windows_days)
        self.covariates = tuple(covariates)
        self._base: dict[pd.Timestamp, pd.DataFrame] = {}
        self._models: dict[pd.Timestamp, BTYDModels] = {}
        self._labels: dict[tuple[pd.Timestamp, int], pd.DataFrame] = {}

    def with_covariates(self, covariates) -> Snapshots:
        """The same snapshots with the transaction model fitted with ``covariates``: the features
        and labels already computed are shared (the BTYD fits are not)."""
        other = Snapshots(self.log, self.customers, transaction_model=self.transaction_model,
                          time_unit_days=self.time_unit_days, feature_windows_days=self.feature_windows_days,
                          covariates=covariates)
        other._base, other._labels = self._base, self._labels
        return other

    def models(self, as_of: pd.Timestamp) -> BTYDModels:
        if as_of not in self._models:
            self._models[as_of] = fit_btyd_models(
                self.log, as_of, kind=self.transaction_model, time_unit_days=self.time_unit_days,
                features=self.base_features(as_of) if self.covariates else None, covariates=self.covariates,
            )
        return self._models[as_of]

    def base_features(self, as_of: pd.Timestamp) -> pd.DataFrame:
        if as_of not in self._base:
            self._base[as_of] = compute_features(
                self.log, as_of=as_of, customers=self.customers, windows_days=self.feature_windows_days,
                time_unit_days=self.time_unit_days,
            )
        return self._base[as_of]

    def labels(self, cutoff: pd.Timestamp, window_days: int, customer_ids: pd.Index) -> pd.DataFrame:
        """``churned``, ``purchases`` and ``spend`` in ``(cutoff, cutoff + window_days]`` of the customers
        ``customer_ids`` (the rows of the features at ``cutoff``), computed once per window."""
        key = (cutoff, window_days)
        if key not in self._labels:
            outcome = outcome_labels(
                self.log, as_of=cutoff, churn_window_days=window_days, value_horizon_days=window_days,
                allow_incomplete=True,  # windows end at a plan's end, which its caller has checked the log reaches
                customer_ids=customer_ids if self.customers is not None else None,
            ).reindex(customer_ids)
            self._labels[key] = pd.DataFrame(
                {
                    "churned": outcome["churned"].to_numpy(),
                    "purchases": outcome["purchases_in_window"].to_numpy(),
                    "spend": outcome["spend_in_horizon"].to_numpy(),
                },
                index=customer_ids,
            )
        return self._labels[key]

    def features(self, as_of: pd.Timestamp, horizon_days: int, models: BTYDModels | None = None) -> pd.DataFrame:
        """Features at ``as_of`` with the model columns over ``horizon_days`` and a ``horizon_days`` column.

        ``models`` defaults to the BTYD models fitted at ``as_of``."""
        base = self.base_features(as_of)
        fitted = models if models is not None else self.models(as_of)
        frame = with_model_features(base, fitted, horizon_days, self.time_unit_days)
        frame.attrs = dict(base.attrs)
        return frame


@dataclass
class TrainingFrame:
    """Pooled time-travel rows: features at each cutoff and the labels of its window."""

    features: pd.DataFrame  #: one row per (window, customer), with ``horizon_days``
    labels: pd.DataFrame  #: ``churned``, ``purchases``, ``spend`` over each row's window
    plan: TrainingPlan


def training_frame(snapshots: Snapshots, plan: TrainingPlan) -> TrainingFrame:
    """The rows of ``plan``: for window ``w``, features at ``plan.end - w`` over a ``w``-day horizon and
    the labels of ``(plan.end - w, plan.end]``. Reads no row dated after ``plan.end``."""
    features, labels = [], []
    for window, cutoff in zip(plan.windows_days, plan.cutoffs, strict=True):
        rows = snapshots.features(cutoff, window)
        features.append(rows)
        labels.append(snapshots.labels(cutoff, window, rows.index))
    if not features:
        raise ValueError(f"The plan has no training windows ({plan.reason}).")
    return TrainingFrame(pd.concat(features), pd.concat(labels), plan)
