"""The customer scorer: predicted value, pyramid tier and at-risk flags, one row per customer.

:class:`Scorer` is the object that gets registered and served. It holds the fitted
:class:`~crmml.customer_model.CustomerModel` (BTYD, spend, churn and value models), the feature
settings, the tier cut points (:class:`~crmml.pyramid.TierRule`) and the flag thresholds
(:class:`~crmml.flags.FlagRule`), and maps transactions (plus an optional customer table) at an
as-of date to :data:`SCORE_COLUMNS`. Batch scoring, the MLflow model and the API all call
:meth:`Scorer.score` / :meth:`Scorer.score_features`: one scoring core.

Fitting (:meth:`Scorer.fit`) runs, on the rows up to ``as_of`` only:

1. a backtest of the model config at ``backtest cutoff`` (default: ``as_of`` minus the longer of
   the churn window and the value horizon), against the baselines: its metrics are the numbers
   the champion gate compares and its churn labels choose the at-risk threshold;
2. the customer model at ``as_of``;
3. the training population's scores, from which the tier cut points, the typical purchase gap and
   the seed insights (value by acquisition channel, referral value) are learned.

Predicted value
---------------
``predicted_value`` is the predicted spend over the value horizon (the shipped value model),
discounted at ``annual_discount_rate`` with the timing of the BTYD model's expected purchases:
month by month, ``sum_i (E[X(t_i)] - E[X(t_{i-1})]) / (1 + d)^(t_i / 365.25 days)`` over
``E[X(horizon)]`` is the customer's discount factor (the discrete-time CLV of
:func:`crmml.clv.customer_lifetime_value`, normalised). ``predicted_profit`` is ``margin x value
- cost_to_serve`` when a cost is known (see :mod:`crmml.pyramid`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from crmml.customer_model import CustomerModel, ModelConfig
from crmml.data.fingerprint import data_fingerprint
from crmml.data.summary import as_day
from crmml.data.transactions import as_transactions
from crmml.errors import DataValidationError
from crmml.features import btyd_summary, compute_features
from crmml.flags import FlagConfig, FlagRule
from crmml.insights import referral_summary, referral_value, value_by_channel
from crmml.pyramid import TierConfig, TierRule
from crmml.timetravel import TRANSACTION_MODELS

__all__ = ["SCORE_COLUMNS", "SCORE_NUMBERS", "Scorer", "ScorerConfig", "load_config"]

#: The columns of :meth:`Scorer.score`, in order.
SCORE_COLUMNS = [
    "customer_id",
    "expected_purchases",
    "p_alive",
    "churn_probability",
    "predicted_value",
    "predicted_profit",
    "tier",
    "at_risk",
    "high_value_at_risk",
    "lapsed",
    "new",
    "flags",
    "reasons",
    "model_version",
]
#: The float columns of :data:`SCORE_COLUMNS` (the boolean ones are :data:`crmml.flags.FLAGS`; tier,
#: flags, reasons and model_version are text).
SCORE_NUMBERS = ("expected_purchases", "p_alive", "churn_probability", "predicted_value", "predicted_profit")

#: The reason every customer scored from an RFM summary carries.
SUMMARY_REASON = "scored from an RFM summary: BTYD and spend models only"
#: Customer-table columns that describe cost, not the customer: kept out of the features.
COST_COLUMN = "cost_to_serve"
_DAYS_PER_YEAR = 365.25
_DAYS_PER_MONTH = _DAYS_PER_YEAR / 12
BUNDLE_FILE, SUMMARY_FILE = "scorer.joblib", "scorer.json"


@dataclass(frozen=True)
class ScorerConfig:
    """Everything :meth:`Scorer.fit` needs besides the data; the YAML configs in ``models/``.

    Parameters
    ----------
    model : ModelConfig
        Horizons, feature windows, BTYD model and learners.
    tiers : TierConfig
    flags : FlagConfig
    annual_discount_rate : float
        Discount rate of predicted value, per year (default 0.10).
    backtest_cutoff : str or None
        The backtest's cutoff date; default ``as_of`` minus the longer label window.
    baseline_models : tuple of str
        BTYD models fitted as baselines in the backtest.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    tiers: TierConfig = field(default_factory=TierConfig)
    flags: FlagConfig = field(default_factory=FlagConfig)
    annual_discount_rate: float = 0.10
    backtest_cutoff: str | None = None
    baseline_models: tuple[str, ...] = tuple(TRANSACTION_MODELS)

    def __post_init__(self) -> None:
        if not 0 <= self.annual_discount_rate < np.inf:
            raise ValueError(f"annual_discount_rate must be >= 0; got {self.annual_discount_rate!r}.")
        object.__setattr__(self, "baseline_models", tuple(self.baseline_models))
        unknown = [m for m in self.baseline_models if m not in TRANSACTION_MODELS]
        if unknown:
            raise ValueError(f"baseline_models has unknown model(s) {unknown}; choose from {sorted(TRANSACTION_MODELS)}.")

    def to_dict(self) -> dict:
        return {
            "model": self.model.to_dict(),
            "tiers": self.tiers.to_dict(),
            "flags": self.flags.to_dict(),
            "annual_discount_rate": self.annual_discount_rate,
            "backtest_cutoff": self.backtest_cutoff,
            "baseline_models": list(self.baseline_models),
        }

    @classmethod
    def from_dict(cls, values: dict | None) -> ScorerConfig:
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown config key(s) {unknown}; known keys: {sorted(known)}.")
        parts = {"model": ModelConfig, "tiers": TierConfig, "flags": FlagConfig}
        for name, kind in parts.items():
            section = values.get(name) or {}
            if not isinstance(section, dict):
                raise ValueError(f"Config section {name!r} must be a mapping; got {section!r}.")
            allowed = {f.name for f in fields(kind)}
            extra = sorted(set(section) - allowed)
            if extra:
                raise ValueError(f"Unknown key(s) {extra} in config section {name!r}; known keys: {sorted(allowed)}.")
            values[name] = kind.from_dict(section) if hasattr(kind, "from_dict") else kind(**section)
        if values.get("backtest_cutoff") is not None:
            values["backtest_cutoff"] = str(values["backtest_cutoff"])
        return cls(**values)

    def with_model(self, **changes) -> ScorerConfig:
        """A copy with some :class:`ModelConfig` fields changed (the CLI's overrides)."""
        model = ModelConfig.from_dict({**self.model.to_dict(), **changes})
        return ScorerConfig(model, self.tiers, self.flags, self.annual_discount_rate, self.backtest_cutoff,
                            self.baseline_models)


def load_config(path: str | Path) -> ScorerConfig:
    """Read a YAML training config (see ``models/default.yaml``)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"No config file at {path}")
    try:
        values = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if values is not None and not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of config sections.")
    try:
        return ScorerConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


class Scorer:
    """Predicted value, tier and flags per customer (see the module docstring).

    Attributes
    ----------
    as_of_ : pandas.Timestamp
    model_ : CustomerModel
    tier_rule_ : TierRule
    flag_rule_ : FlagRule
    backtest_ : dict or None
        ``cutoff``, ``metrics`` (the shipped model's, flat: ``churn_roc_auc``, ...),
        ``baselines`` ({scorer: {metric: value}}) and, until saved, ``result`` (the
        :class:`~crmml.backtest.BacktestResult`); None with the reason in ``backtest_skipped_``.
    tables_ : dict of str to DataFrame
        ``tiers``, and with a customer table ``channels``, ``referrals``, ``referral_summary``.
    fingerprint_ : dict
        :func:`crmml.data.fingerprint.data_fingerprint` of the training data.
    attribute_columns_ : list of str
        Customer-table columns the features read.
    attribute_features_ : list of str
        The feature columns made from them (``tenure_days`` from ``signup_date``, ...).
    model_id_ : str
        A hash of the data fingerprint, the config and the as-of date.
    model_version : str
        Reported in every score row: ``<name>/<version>`` once registered, else ``local-<model_id>``.
    """

    def __init__(self, config: ScorerConfig | None = None):
        self.config = config if config is not None else ScorerConfig()

    # ------------------------------------------------------------------------------------------
    def fit(self, transactions, *, as_of, customers: pd.DataFrame | None = None, progress=None, **read_kwargs):
        """Backtest, fit and calibrate tiers and flags on the rows up to ``as_of``.

        Parameters
        ----------
        transactions : Transactions, DataFrame or path
        as_of : date-like
        customers : pandas.DataFrame, optional
            The customer table; a ``cost_to_serve`` column is used for tiers, not as a feature.
        progress : callable, optional
            ``progress(step: str)`` is called as each step starts.

        Returns
        -------
        self
        """
        step = progress or (lambda _: None)
        cfg = self.config
        log = as_transactions(transactions, **read_kwargs)
        as_of_day = as_day(as_of, "as_of")
        if as_of_day < log.first_timestamp.normalize():
            raise DataValidationError(
                f"as_of {as_of_day.date()} is before the first transaction ({log.first_timestamp.date()})."
            )
        table, costs = _split_costs(customers)
        self.fingerprint_ = data_fingerprint(log, customers)
        self.as_of_ = as_of_day

        step("backtest")
        self.backtest_, self.backtest_skipped_ = self._backtest(log, table, as_of_day)
        step("fit models")
        self.model_ = CustomerModel(cfg.model).fit(log, as_of=as_of_day, customers=table)
        step("score the training population")
        features = compute_features(log, as_of=as_of_day, customers=table,
                                    windows_days=cfg.model.feature_windows_days)
        self.attribute_columns_ = [] if table is None else [c for c in table.columns if c != "customer_id"]
        self.attribute_features_ = _attribute_features(features)
        predicted = self._predictions(features)
        self.tier_rule_ = TierRule.learn(predicted["predicted_value"].to_numpy(), cfg.tiers)
        churned = churn = None
        if self.backtest_ is not None:
            churned, churn = self.backtest_.pop("churn_labels")
        self.flag_rule_ = FlagRule.learn(cfg.flags, churned=churned, churn_probability=churn,
                                         mean_gap_days=features["mean_gap_days"].to_numpy())
        self.model_id_ = _model_id(self.fingerprint_, cfg, as_of_day)
        self.model_version = f"local-{self.model_id_[:12]}"
        scores = self._score(features, predicted, _costs_for(features.index, costs))
        step("insights")
        value = scores["predicted_value"].to_numpy()
        self.tables_ = {"tiers": self.tier_rule_.table(value, scores["tier"].to_numpy())}
        insights = {
            "channels": value_by_channel(scores, customers),
            "referrals": referral_value(scores, customers, top=100),
            "referral_summary": referral_summary(scores, customers),
        }
        self.tables_.update({name: t for name, t in insights.items() if t is not None})
        self.n_customers_ = len(scores)
        return self

    def _backtest(self, log, table, as_of_day):
        """The config's backtest at the cutoff, or None and why not."""
        from crmml.backtest import MODEL_SCORER, backtest

        cfg = self.config
        longest = max(cfg.model.churn_window_days, cfg.model.value_horizon_days)
        end = min(as_of_day, log.last_timestamp.normalize())
        cutoff = as_day(cfg.backtest_cutoff, "backtest_cutoff") if cfg.backtest_cutoff else end - pd.Timedelta(days=longest)
        if cutoff + pd.Timedelta(days=longest) > end:
            return None, f"the backtest cutoff {cutoff.date()} leaves less than {longest} days of data before as_of"
        if cutoff < log.first_timestamp.normalize() + pd.Timedelta(days=cfg.model.min_window_days):
            return None, (f"the backtest cutoff {cutoff.date()} is less than {cfg.model.min_window_days} days after "
                          f"the first transaction ({log.first_timestamp.date()})")
        result = backtest(log, cutoffs=[cutoff], config=cfg.model, customers=table,
                          baseline_models=cfg.baseline_models)
        rows = result.metrics.drop(columns="cutoff")
        by_scorer: dict[str, dict[str, float]] = {}
        for record in rows.to_dict("records"):
            task, scorer = record.pop("task"), record.pop("scorer")
            for metric, number in record.items():
                if isinstance(number, (int, float)) and math.isfinite(number):
                    by_scorer.setdefault(scorer, {})[f"{task}_{metric}"] = float(number)
        frame = result.scores[cutoff]
        return {
            "cutoff": str(cutoff.date()),
            "metrics": by_scorer.pop(MODEL_SCORER),
            "baselines": by_scorer,
            "result": result,  # the BacktestResult, for plots (not saved in the bundle)
            "churn_labels": (frame["churned"].to_numpy(), frame[f"churn:{MODEL_SCORER}"].to_numpy()),
        }, None

    # ------------------------------------------------------------------------------------------
    def score(self, transactions, *, as_of=None, customers: pd.DataFrame | None = None,
              summaries: pd.DataFrame | None = None, **read_kwargs) -> pd.DataFrame:
        """One row per customer at ``as_of`` (default: the training as-of date): :data:`SCORE_COLUMNS`.

        Customers are those with a purchase on or before ``as_of``, the customer table's (those
        without purchases are scored as new) and those of ``summaries`` (RFM summaries, see
        :func:`~crmml.features.compute_features`; they are scored by the BTYD and spend models
        alone, as the learners need the purchase days, and their reasons say so). A customer's row
        depends only on its own rows and attributes.
        """
        self._check_fitted()
        log = as_transactions(transactions, **read_kwargs)
        as_of_day = self.as_of_ if as_of is None else as_day(as_of, "as_of")
        table, costs = _split_costs(customers)
        features = compute_features(log, as_of=as_of_day, customers=table, summaries=summaries,
                                    windows_days=self.config.model.feature_windows_days,
                                    require_purchases=summaries is None and table is None)
        from_summary = None if summaries is None else features.index.isin(summaries["customer_id"])
        return self.score_features(features, cost_to_serve=_costs_for(features.index, costs),
                                   from_summary=from_summary)

    def score_features(self, features: pd.DataFrame, cost_to_serve: np.ndarray | None = None,
                       from_summary: np.ndarray | None = None) -> pd.DataFrame:
        """:meth:`score` from :func:`crmml.features.compute_features` rows.

        Customer-table features the model was trained with and ``features`` lacks are scored as
        unknown (missing) and listed in ``result.attrs["missing_attributes"]``. Rows marked in
        ``from_summary`` (bool per row) are scored by the BTYD and spend models alone.
        """
        self._check_fitted()
        missing = [c for c in self.attribute_features_ if c not in features.columns]
        if missing:
            features = features.assign(**{c: np.nan for c in missing})
        scores = self._score(features, self._predictions(features, from_summary), cost_to_serve, from_summary)
        scores.attrs["missing_attributes"] = missing
        return scores

    def _predictions(self, features: pd.DataFrame, from_summary: np.ndarray | None = None) -> pd.DataFrame:
        predicted = self.model_.predict_features(features)
        if from_summary is not None and from_summary.any():
            for shipped, btyd in (("churn_probability", "btyd_churn_probability"),
                                  ("predicted_purchases", "btyd_expected_purchases"),
                                  ("predicted_spend", "btyd_predicted_spend")):
                predicted[shipped] = np.where(from_summary, predicted[btyd], predicted[shipped])
        predicted["discount_factor"] = self._discount_factors(features)
        predicted["predicted_value"] = predicted["predicted_spend"] * predicted["discount_factor"]
        return predicted

    def _discount_factors(self, features: pd.DataFrame) -> np.ndarray:
        """Per customer, discounted over undiscounted expected purchases (see the module docstring)."""
        cfg = self.config.model
        rate = self.config.annual_discount_rate
        if rate == 0 or not len(features):
            return np.ones(len(features))
        n_steps = max(1, math.ceil(cfg.value_horizon_days / _DAYS_PER_MONTH))
        step_days = cfg.value_horizon_days / n_steps
        times_days = step_days * np.arange(1, n_steps + 1)
        discount = (1.0 + rate) ** -(times_days / _DAYS_PER_YEAR)
        coefficients = discount - np.r_[discount[1:], 0.0]
        model = self.model_.btyd_.transaction_model
        summary = btyd_summary(features, time_unit_days=cfg.time_unit_days)
        horizons = times_days / cfg.time_unit_days
        both = model.predict_horizons(summary, [horizons[-1]], no_purchase=False,  # one pass over the customers
                                      sums={"discounted": (horizons, coefficients)})
        discounted, total = both["sum", "discounted"], both["expected_purchases", horizons[-1]]
        return np.divide(discounted, total, out=np.ones(len(total)), where=total > 0)

    def _score(self, features: pd.DataFrame, predicted: pd.DataFrame, cost_to_serve,
               from_summary: np.ndarray | None = None) -> pd.DataFrame:
        value = predicted["predicted_value"].to_numpy()
        profit, tier, lead = self.tier_rule_.evaluate(value, cost_to_serve)
        flags = self.flag_rule_.columns(
            churn_probability=predicted["churn_probability"].to_numpy(),
            tier=tier,
            days_since_last_purchase=features["days_since_last_purchase"].to_numpy(dtype=float),
            mean_gap_days=features["mean_gap_days"].to_numpy(dtype=float),
            age_days=features["age_days"].to_numpy(dtype=float),
            no_purchase_history=features["no_purchase_history"].to_numpy(dtype=bool),
            churn_window_days=self.config.model.churn_window_days,
        )
        reasons = _reasons_after(lead, np.array(flags["reasons"], dtype=object))
        if from_summary is not None and from_summary.any():
            reasons = _reasons_after(np.where(from_summary, SUMMARY_REASON, "").astype(object), reasons)
        out = pd.DataFrame({
            "customer_id": features.index.to_numpy(),
            "expected_purchases": predicted["predicted_purchases"].to_numpy(),
            "p_alive": predicted["p_alive"].to_numpy(),
            "churn_probability": predicted["churn_probability"].to_numpy(),
            "predicted_value": value,
            "predicted_profit": profit,
            "tier": tier,
            "at_risk": flags["at_risk"],
            "high_value_at_risk": flags["high_value_at_risk"],
            "lapsed": flags["lapsed"],
            "new": flags["new"],
            "flags": np.array(flags["flags"], dtype=object),
            "reasons": reasons,
            "model_version": self.model_version,
        })
        return out

    # ------------------------------------------------------------------------------------------
    def summary(self) -> dict:
        """What was fitted, chosen and measured (JSON-ready)."""
        self._check_fitted()
        backtest = None
        if self.backtest_ is not None:
            backtest = {k: self.backtest_[k] for k in ("cutoff", "metrics", "baselines")}
        return {
            "model_id": self.model_id_,
            "model_version": self.model_version,
            "as_of": str(self.as_of_.date()),
            "n_customers": self.n_customers_,
            "config": self.config.to_dict(),
            "fingerprint": self.fingerprint_,
            "attribute_columns": self.attribute_columns_,
            "models": self.model_.summary(),
            "tiers": self.tier_rule_.to_dict(),
            "flags": {k: (float(v) if isinstance(v, (float, np.floating)) else v)
                      for k, v in self.flag_rule_.to_dict().items()},
            "backtest": backtest,
            "backtest_skipped": self.backtest_skipped_,
        }

    def save(self, path: str | Path) -> Path:
        """Write a local bundle: ``scorer.joblib`` (the object) and ``scorer.json`` (:meth:`summary`)."""
        import joblib

        self._check_fitted()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, folder / BUNDLE_FILE, compress=3)
        (folder / SUMMARY_FILE).write_text(json.dumps(self.summary(), indent=2, default=str))
        return folder

    @classmethod
    def load(cls, path: str | Path) -> Scorer:
        """Read a bundle written by :meth:`save` (a folder, or its ``scorer.joblib``)."""
        import joblib

        file = Path(path)
        if file.is_dir():
            file = file / BUNDLE_FILE
        if not file.is_file():
            raise FileNotFoundError(f"No crmml model bundle at {path} (expected a folder with {BUNDLE_FILE})")
        try:
            scorer = joblib.load(file)
        except Exception as exc:  # truncated, empty or foreign bytes: UnpicklingError, EOFError, IndexError, ...
            raise ValueError(f"{file} is not a readable crmml model bundle (empty, truncated or not a bundle: "
                             f"{type(exc).__name__})") from None
        if not isinstance(scorer, cls):
            raise ValueError(f"{file} holds a {type(scorer).__name__}, not a crmml Scorer.")
        return scorer

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if state.get("backtest_") is not None:  # per-customer backtest scores stay out of the bundle
            state["backtest_"] = {k: v for k, v in state["backtest_"].items() if k != "result"}
        return state

    def _check_fitted(self) -> None:
        if not hasattr(self, "tier_rule_"):
            raise RuntimeError("This Scorer is not fitted yet; call fit() first.")


def _reasons_after(first: np.ndarray, reasons: np.ndarray) -> np.ndarray:
    """Per customer, the ``first`` reason (when not empty) and then ``reasons``, joined by ``; ``."""
    return np.where(first == "", reasons, np.where(reasons == "", first, first + "; " + reasons))


def _attribute_features(features: pd.DataFrame) -> list[str]:
    """The customer-table columns of a :func:`~crmml.features.compute_features` frame (they follow
    ``no_purchase_history``)."""
    columns = list(features.columns)
    return columns[columns.index("no_purchase_history") + 1:]


def _split_costs(customers: pd.DataFrame | None):
    """The customer table without ``cost_to_serve``, and the costs by customer id."""
    if customers is None:
        return None, None
    if not isinstance(customers, pd.DataFrame):
        raise TypeError(f"customers must be a pandas DataFrame. Got {type(customers).__name__} instead.")
    if COST_COLUMN not in customers.columns:
        return customers, None
    if "customer_id" not in customers.columns:
        return customers.drop(columns=COST_COLUMN), None  # the feature code names the missing column
    costs = pd.to_numeric(customers[COST_COLUMN], errors="coerce")
    bad = customers[COST_COLUMN].notna() & (costs.isna() | (costs < 0))
    if bad.any():
        ids = customers.loc[bad, "customer_id"].tolist()[:5]
        raise DataValidationError(f"The customer table's {COST_COLUMN!r} must be costs >= 0; customer ids {ids} "
                                  "are not.", column=COST_COLUMN, rows=ids)
    return customers.drop(columns=COST_COLUMN), pd.Series(costs.to_numpy(), index=customers["customer_id"])


def _costs_for(index: pd.Index, costs: pd.Series | None) -> np.ndarray | None:
    return None if costs is None else costs.reindex(index).to_numpy(dtype=np.float64)


def _model_id(fingerprint: dict, config: ScorerConfig, as_of: pd.Timestamp) -> str:
    data = {k: v for k, v in fingerprint.items() if k != "source"}  # the same rows from anywhere
    payload = json.dumps({"data": data, "config": config.to_dict(), "as_of": str(as_of.date())},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
