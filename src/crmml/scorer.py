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
import re
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from crmml.channel_effects import effect_records, fit_channel_effects
from crmml.covariate_fallback import add_covariate_fallbacks
from crmml.customer_columns import CustomerColumns, table_record
from crmml.customer_model import CustomerModel, ModelConfig
from crmml.customer_rows import CustomerRows, _positions, customer_rows
from crmml.customer_table import (
    COST_COLUMN,
    TableArrays,
    check_ids,
    checked_costs,
    table_arrays,
    table_columns,
    training_table,
)
from crmml.data.fingerprint import data_fingerprint
from crmml.data.summary import as_day
from crmml.data.transactions import LogColumns, as_transactions
from crmml.defaults import UNSPECIFIED_CURRENCY
from crmml.errors import DataValidationError
from crmml.features import MODEL_COLUMNS, feature_columns
from crmml.flags import _FLAG_TEXTS, FLAG_INPUTS, FLAG_NAMES, FLAGS, FlagConfig, FlagRule, flag_codes
from crmml.insights import referral_summary, referral_value, value_by_channel
from crmml.learner_matrix import LearnerRows, unseen_categories
from crmml.prediction import predict_rows
from crmml.pyramid import TIER_NAMES, TierConfig, TierRule
from crmml.reasons import Reasons
from crmml.timetravel import TRANSACTION_MODELS
from crmml.uncertainty import (
    MAX_HORIZON_PURCHASES,
    UNCERTAINTY_NUMBERS,
    ScoreUncertainty,
    UncertaintyConfig,
    uncertainty_flag,
)

__all__ = ["COST_COLUMN", "SCORE_COLUMNS", "SCORE_NUMBERS", "Scorer", "ScorerConfig", "Scores", "load_config"]

#: The columns of :meth:`Scorer.score`, in order.
SCORE_COLUMNS = [
    "customer_id",
    "expected_purchases",
    "p_alive",
    "churn_probability",
    "predicted_value",
    "predicted_profit",
    *UNCERTAINTY_NUMBERS,
    "tier",
    *FLAGS,
    "flags",
    "reasons",
    "model_version",
]
#: The float columns of :data:`SCORE_COLUMNS` (the boolean ones are :data:`crmml.flags.FLAGS`; tier,
#: flags, reasons and model_version are text).
SCORE_NUMBERS = ("expected_purchases", "p_alive", "churn_probability", "predicted_value", "predicted_profit",
                 *UNCERTAINTY_NUMBERS)

#: The reason every customer scored from an RFM summary carries.
SUMMARY_REASON = "scored from an RFM summary: BTYD and spend models only"
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
    columns : LogColumns
        The transaction log's column names and time zone (the ``columns:`` section), used by the
        command line to read the data; :meth:`to_dict` lists it only when it is not the default.
    customer_columns : CustomerColumns
        The customer table's column names (the ``customer_columns:`` section), used likewise.
    currency : str
        The currency of the log's amounts (``EUR``, ``USD``, ...): a label, not a conversion, shown
        with every value the scorer's doors print or return (default ``unspecified``).
    uncertainty : UncertaintyConfig
        Interval level, the ``tier_uncertain`` level, parameter draws (the ``uncertainty:`` section,
        :mod:`crmml.uncertainty`); :meth:`to_dict` lists it only when it is not the default.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    tiers: TierConfig = field(default_factory=TierConfig)
    flags: FlagConfig = field(default_factory=FlagConfig)
    annual_discount_rate: float = 0.10
    backtest_cutoff: str | None = None
    baseline_models: tuple[str, ...] = tuple(TRANSACTION_MODELS)
    columns: LogColumns = LogColumns()  # a class default: bundles pickled before it existed load with it
    customer_columns: CustomerColumns = CustomerColumns()  # (likewise)
    currency: str = UNSPECIFIED_CURRENCY  # (likewise)
    uncertainty: UncertaintyConfig = UncertaintyConfig()  # (likewise)

    def __post_init__(self) -> None:
        if not isinstance(self.currency, str) or not re.fullmatch(r"\S(.{0,18}\S)?", self.currency):
            raise ValueError(f"currency must be a label of 1-20 characters without blanks at either end "
                             f"(EUR, USD, ...); got {self.currency!r}.")
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
            **({"columns": self.columns.to_dict()} if self.columns != LogColumns() else {}),
            **({"customer_columns": self.customer_columns.to_dict()}
               if self.customer_columns != CustomerColumns() else {}),
            "currency": self.currency,
            **({"uncertainty": self.uncertainty.to_dict()} if self.uncertainty != UncertaintyConfig() else {}),
        }

    def value_unit(self, *, short: bool = False) -> str:
        """What a predicted value is, for labels: ``"spend over the next 365 days, discounted at 10 %/yr,
        in EUR"``, or with ``short`` (an axis) ``"365-day spend, EUR"``; ``"the data's currency"``
        (short: ``"currency unspecified"``) when :attr:`currency` is unspecified."""
        unspecified = self.currency == UNSPECIFIED_CURRENCY
        days = f"{self.model.value_horizon_days:g}"
        if short:
            return f"{days}-day spend, " + ("currency unspecified" if unspecified else self.currency)
        currency = "the data's currency" if unspecified else self.currency
        return f"spend over the next {days} days, discounted at {100 * self.annual_discount_rate:g} %/yr, in {currency}"

    @classmethod
    def from_dict(cls, values: dict | None) -> ScorerConfig:
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown config key(s) {unknown}; known keys: {sorted(known)}.")
        parts = {"model": ModelConfig, "tiers": TierConfig, "flags": FlagConfig, "uncertainty": UncertaintyConfig}
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
        for name, kind in (("columns", LogColumns), ("customer_columns", CustomerColumns)):
            if name in values:
                section = values[name] or {}
                if not isinstance(section, dict):
                    raise ValueError(f"Config section {name!r} must be a mapping; got {section!r}.")
                values[name] = kind.from_dict(section)
        return cls(**values)

    def with_model(self, **changes) -> ScorerConfig:
        """A copy with some :class:`ModelConfig` fields changed (the CLI's overrides)."""
        model = ModelConfig.from_dict({**self.model.to_dict(), **changes})
        return replace(self, model=model)


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
    customer_table_ : dict or None
        Which table columns training used as what and which it left out, with why
        (:func:`crmml.customer_columns.table_record`); None without a table.
    model_id_ : str
        A hash of the data fingerprint, the config and the as-of date.
    model_version : str
        Reported in every score row: ``<name>/<version>`` once registered, else ``local-<model_id>``.
    """

    def __init__(self, config: ScorerConfig | None = None):
        self.config = config if config is not None else ScorerConfig()

    # ------------------------------------------------------------------------------------------
    def fit(self, transactions, *, as_of, customers: pd.DataFrame | None = None, progress=None, jobs: int = 1,
            **read_kwargs):
        """Backtest, fit and calibrate tiers and flags on the rows up to ``as_of``.

        Parameters
        ----------
        transactions : Transactions, DataFrame or path
        as_of : date-like
        customers : pandas.DataFrame, optional
            The customer table, canonical column names; a ``cost_to_serve`` column is used for
            tiers, not as a feature. Dates other than ``signup_date`` and text with too many
            distinct values are left out, each with a :class:`~crmml.errors.CustomerTableWarning`
            (:func:`crmml.customer_table.training_table`); ``customer_table_`` says what was used.
        progress : callable, optional
            ``progress(step: str)`` is called as each step starts.
        jobs : int, default 1
            Cores to use: with 2 or more, the backtest runs in a worker process while this one fits
            the shipped model and scores the training population (:func:`crmml.batch_pool.side_by_side`);
            the fitted scorer is the same.

        Returns
        -------
        self
        """
        step = progress or (lambda _: None)
        cfg = self.config
        log = as_transactions(transactions, **read_kwargs).kept_in_memory()  # read many times
        as_of_day = as_day(as_of, "as_of")
        if as_of_day < log.first_timestamp.normalize():
            raise DataValidationError(
                f"as_of {as_of_day.date()} is before the first transaction ({log.first_timestamp.date()})."
            )
        table, costs = _split_costs(customers)
        table, left_out = training_table(table)  # warns on each column left out
        self.fingerprint_ = data_fingerprint(log, customers)
        self.as_of_ = as_of_day

        def fit_and_score():  # what does not need the backtest: done while it runs beside
            step("fit models")
            self.model_ = _fit_model(cfg.model, log, as_of_day, table)
            step("score the training population")
            arrays = self._table(table, as_of_day)
            rows = self._rows(log, as_of_day, arrays, None)
            return arrays, rows, self._predictions(rows)

        if jobs > 1:
            from crmml.batch_pool import side_by_side

            step("backtest, in a second process")
            (self.backtest_, self.backtest_skipped_), (arrays, rows, predicted) = side_by_side(
                partial(_backtest, cfg, log, table, as_of_day), fit_and_score, jobs=jobs,
            )
        else:
            step("backtest")
            self.backtest_, self.backtest_skipped_ = _backtest(cfg, log, table, as_of_day)
            arrays, rows, predicted = fit_and_score()
        self.attribute_columns_ = [] if table is None else [c for c in table.columns if c != "customer_id"]
        self.attribute_features_ = list(rows.attributes)
        self.customer_table_ = None if table is None else table_record(
            cfg.customer_columns, customers.columns, self.attribute_features_,
            {**left_out, **dict.fromkeys(arrays.dropped_columns, "not a number, text or boolean")})
        self.tier_rule_ = TierRule.learn(predicted["predicted_value"], cfg.tiers)
        churned = churn = inputs = None
        if self.backtest_ is not None:
            churned, churn, inputs = self.backtest_.pop("churn_labels")
        population = {"churn_probability": predicted["churn_probability"], "no_purchase_history": rows.no_history,
                      **{name: rows[name] for name in FLAG_INPUTS}}
        self.flag_rule_ = FlagRule.learn(cfg.flags, churned=churned, churn_probability=churn, backtest_inputs=inputs,
                                         mean_gap_days=rows["mean_gap_days"], population=population)
        self.model_id_ = _model_id(self.fingerprint_, cfg, as_of_day)
        self.model_version = f"local-{self.model_id_[:12]}"
        # The tables below read values, tiers and flags: the uncertainty columns (seconds on many
        # customers) are left out of this scoring of the training population.
        scores = self._scored(rows, predicted, _costs_for(rows.ids, costs), uncertainty=False).to_frame()
        step("insights")
        value = scores["predicted_value"].to_numpy()
        self.tables_ = {"tiers": self.tier_rule_.table(value, scores["tier"].to_numpy())}
        insights = {
            "channels": value_by_channel(scores, customers),
            "referrals": referral_value(scores, customers, top=100),
            "referral_summary": referral_summary(scores, customers),
        }
        self.tables_.update({name: t for name, t in insights.items() if t is not None})
        effects = fit_channel_effects(log, as_of_day, customers, kind=cfg.model.transaction_model,
                                      time_unit_days=cfg.model.time_unit_days)
        if effects is not None:
            self.tables_["channel_effects"] = effects
        self.n_customers_ = len(scores)
        return self

    # ------------------------------------------------------------------------------------------
    def score(self, transactions, *, as_of=None, customers: pd.DataFrame | None = None,
              summaries: pd.DataFrame | None = None, lists: bool = False, **read_kwargs) -> pd.DataFrame:
        """One row per customer at ``as_of`` (default: the training as-of date): :data:`SCORE_COLUMNS`.

        Customers are those with a purchase on or before ``as_of``, the customer table's (those
        without purchases are scored as new) and those of ``summaries`` (RFM summaries, see
        :func:`~crmml.features.compute_features`; they are scored by the BTYD and spend models
        alone, as the learners need the purchase days, and their reasons say so). A customer's row
        depends only on its own rows and attributes. ``lists``: flags and reasons as lists (see
        :meth:`Scores.to_frame`).
        """
        self._check_fitted()
        log = as_transactions(transactions, **read_kwargs)
        as_of_day = self.as_of_ if as_of is None else as_day(as_of, "as_of")
        table, costs = self._table_and_costs(customers, as_of_day)
        rows = self._rows(log, as_of_day, table, summaries)
        return self.score_rows(rows, _costs_for(rows.ids, costs)).to_frame(lists=lists)

    def score_features(self, features: pd.DataFrame, cost_to_serve: np.ndarray | None = None,
                       from_summary: np.ndarray | None = None) -> pd.DataFrame:
        """:meth:`score` from :func:`crmml.features.compute_features` rows.

        Customer-table features the model was trained with and ``features`` lacks are scored as
        unknown (missing) and listed in ``result.attrs["missing_attributes"]``. Rows marked in
        ``from_summary`` (bool per row) are scored by the BTYD and spend models alone.
        """
        self._check_fitted()
        rows = CustomerRows.from_frame(features)
        if from_summary is not None:
            rows.from_summary = np.asarray(from_summary, dtype=bool)
        return self.score_rows(rows, cost_to_serve).to_frame()

    def score_rows(self, rows: CustomerRows, cost_to_serve: np.ndarray | None = None) -> Scores:
        """The scoring core: :class:`Scores` of :class:`~crmml.customer_rows.CustomerRows` (what
        :meth:`score`, :meth:`score_features`, the service and the batch engines call).

        Attributes the model was trained with and the rows lack are scored as unknown and listed in
        ``missing_attributes``; categories the learners never saw (scored as unknown too) are marked
        per row in ``unknown_categories`` (rows from an RFM summary, which the learners do not
        score, are never marked). A covariate transaction model scores a missing or unseen
        attribute at its reference level: the customer's reasons say so and unseen categories are
        marked too (:func:`crmml.covariate_fallback.add_covariate_fallbacks`).
        """
        self._check_fitted()
        missing = [c for c in self.attribute_features_ if c not in rows]
        for name in missing:
            rows.numbers[name] = np.full(len(rows), np.nan)
        scores = self._scored(rows, self._predictions(rows), cost_to_serve)
        scores.missing_attributes = missing
        model = self.model_
        unseen = unseen_categories([model.churn_learner_, model.value_learner_, model.purchases_learner_],
                                   LearnerRows(len(rows), rows.numbers, rows.categories))
        if rows.from_summary is not None:  # the learners do not score these rows
            unseen = {c: m & ~rows.from_summary for c, m in unseen.items()}
            unseen = {c: m for c, m in unseen.items() if m.any()}
        scores.unknown_categories = unseen
        add_covariate_fallbacks(scores, model.btyd_.transaction_model, rows)
        return scores

    def _table(self, table: pd.DataFrame | None, as_of_day: pd.Timestamp) -> TableArrays | None:
        if table is None:
            return None
        return table_arrays(table, as_of_day, self._taken())

    def _taken(self) -> list[str]:
        """Names a customer-table column may not have."""
        return [*feature_columns(self.config.model.feature_windows_days), *MODEL_COLUMNS, "no_purchase_history"]

    def _table_and_costs(self, customers: pd.DataFrame | None, as_of_day: pd.Timestamp):
        """The customer table's attributes (:func:`~crmml.customer_table.table_columns`) and its
        ``(ids, costs to serve)`` (None without the column), each column read once."""
        if customers is None:
            return None, None
        ids = check_ids(customers)
        costs = None
        if COST_COLUMN in customers.columns:
            costs = (ids, checked_costs(customers[COST_COLUMN], ids))
        columns = {name: customers[name] for name in customers.columns if name not in ("customer_id", COST_COLUMN)}
        return table_columns(ids, columns, as_of_day, self._taken()), costs

    def _rows(self, log, as_of_day: pd.Timestamp, table: TableArrays | None, summaries) -> CustomerRows:
        rows = customer_rows(log, as_of_day, list(self.config.model.feature_windows_days), table=table,
                             summaries=summaries, require_purchases=summaries is None and table is None)
        if not len(rows):
            raise DataValidationError(f"No customer to score at as_of {as_of_day.date()}.")
        return rows

    def _predictions(self, rows: CustomerRows) -> dict[str, np.ndarray]:
        """The model's predictions (summary rows: BTYD and spend only), discounted value included."""
        cfg = self.config.model
        rate = self.config.annual_discount_rate
        sums, horizon = None, None
        if rate != 0:
            n_steps = max(1, math.ceil(cfg.value_horizon_days / _DAYS_PER_MONTH))
            times_days = cfg.value_horizon_days / n_steps * np.arange(1, n_steps + 1)
            discount = (1.0 + rate) ** -(times_days / _DAYS_PER_YEAR)
            coefficients = discount - np.r_[discount[1:], 0.0]
            horizon = float(times_days[-1])
            sums = {"discounted": (times_days / cfg.time_unit_days, coefficients)}
        predicted, extra = predict_rows(self.model_, rows, horizons_days=[] if horizon is None else [horizon],
                                        sums=sums)
        from_summary = rows.from_summary
        if from_summary is not None and from_summary.any():
            for shipped, btyd in (("churn_probability", "btyd_churn_probability"),
                                  ("predicted_purchases", "btyd_expected_purchases"),
                                  ("predicted_spend", "btyd_predicted_spend")):
                predicted[shipped] = np.where(from_summary, predicted[btyd], predicted[shipped])
        factor = np.ones(len(rows))
        if horizon is not None:  # discounted over undiscounted expected purchases (module docstring)
            total, discounted = extra[horizon]["btyd_expected_purchases"], extra["sum", "discounted"]
            factor = np.divide(discounted, total, out=np.ones(len(total)), where=total > 0)
        predicted["discount_factor"] = factor
        predicted["predicted_value"] = predicted["predicted_spend"] * factor
        return predicted

    def _scored(self, rows: CustomerRows, predicted: dict, cost_to_serve, *, uncertainty: bool = True) -> Scores:
        """The score rows; ``uncertainty=False`` leaves the uncertainty columns NaN and ``tier_uncertain``
        false, as ``uncertainty.columns: false`` does, with no reason (for the training tables)."""
        value = predicted["predicted_value"]
        profit, tier, reasons = self.tier_rule_.evaluate_codes(value, cost_to_serve)
        flags, flag_reasons = self.flag_rule_.evaluate(
            churn_probability=predicted["churn_probability"],
            tier=TIER_NAMES[tier],
            days_since_last_purchase=rows["days_since_last_purchase"],
            mean_gap_days=rows["mean_gap_days"],
            age_days=rows["age_days"],
            no_purchase_history=rows.no_history,
            churn_window_days=self.config.model.churn_window_days,
        )
        reasons.extend(flag_reasons)
        if uncertainty:
            uncertainty = self._uncertainty(rows, value, tier, cost_to_serve, reasons)
            flags["tier_uncertain"] = uncertainty_flag(uncertainty, tier, self.config.uncertainty, reasons)
        else:
            uncertainty = {name: np.full(len(rows), np.nan) for name in UNCERTAINTY_NUMBERS}
            flags["tier_uncertain"] = np.zeros(len(rows), dtype=bool)
        if rows.from_summary is not None and rows.from_summary.any():
            summary = Reasons(len(rows))
            summary.add_text(rows.from_summary, SUMMARY_REASON)
            summary.extend(reasons)
            reasons = summary
        numbers = {
            "expected_purchases": predicted["predicted_purchases"],
            "p_alive": predicted["p_alive"],
            "churn_probability": predicted["churn_probability"],
            "predicted_value": value,
            "predicted_profit": profit,
            **uncertainty,
        }
        return Scores(rows.ids, numbers, tier, flags, reasons, self.model_version)

    def _uncertainty(self, rows: CustomerRows, value: np.ndarray, tier: np.ndarray, cost_to_serve,
                     reasons: Reasons) -> dict:
        """:data:`~crmml.uncertainty.UNCERTAINTY_NUMBERS` of the rows (:mod:`crmml.uncertainty`); a row
        beyond its reach (:data:`~crmml.uncertainty.MAX_HORIZON_PURCHASES`) is NaN with a reason."""
        unit = self.config.model.time_unit_days
        x, t_x, T = (np.fmax(np.asarray(rows[name], dtype=float), 0.0) / scale  # (NaN: no purchase yet, 0)
                     for name, scale in (("frequency", 1.0), ("recency_days", unit), ("age_days", unit)))
        bounds = self.tier_rule_.value_bounds(tier, cost_to_serve)
        beyond = self.score_uncertainty().beyond_reach(x, T)
        reasons.add_text(beyond, f"no intervals or tier probability: the purchase history reaches beyond "
                                 f"{MAX_HORIZON_PURCHASES:,} purchases over the value horizon")
        return self.score_uncertainty().evaluate(x, t_x, T, value, *bounds, beyond=beyond)

    def score_uncertainty(self) -> ScoreUncertainty:
        """The scorer's :class:`~crmml.uncertainty.ScoreUncertainty`, made once (not saved: bundles
        from before it make it on first use)."""
        made = self.__dict__.get("_score_uncertainty")
        if made is None:
            btyd, cfg = self.model_.btyd_, self.config
            made = ScoreUncertainty(btyd.transaction_model, btyd.spend_model,
                                    cfg.model.value_horizon_days / cfg.model.time_unit_days, cfg.uncertainty)
            self._score_uncertainty = made
        return made

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
            "customer_table": getattr(self, "customer_table_", None),  # (None in bundles from before it)
            "models": self.model_.summary(),
            "tiers": self.tier_rule_.to_dict(),
            "flags": {k: ((float(v) if np.isfinite(v) else None) if isinstance(v, (float, np.floating)) else v)
                      for k, v in self.flag_rule_.to_dict().items()},  # (None: not measured, no backtest)
            "uncertainty": {**self.config.uncertainty.to_dict(), "unavailable": self.score_uncertainty().reason,
                            "draws_not_made": self.score_uncertainty().draws_reason},
            "backtest": backtest,
            "backtest_skipped": self.backtest_skipped_,
            "channel_effects": effect_records(self.tables_.get("channel_effects")),
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
        scorer.score_uncertainty()  # the per-model constants, once at load rather than on the first request
        return scorer

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_score_uncertainty", None)  # made again on first use (Scorer.score_uncertainty)
        if state.get("backtest_") is not None:  # per-customer backtest scores stay out of the bundle
            state["backtest_"] = {k: v for k, v in state["backtest_"].items() if k != "result"}
        return state

    def _check_fitted(self) -> None:
        if not hasattr(self, "tier_rule_"):
            raise RuntimeError("This Scorer is not fitted yet; call fit() first.")


def _fit_model(config: ModelConfig, log, as_of_day, table) -> CustomerModel:
    """The shipped :class:`CustomerModel` (a module function: it may run beside the backtest)."""
    return CustomerModel(config).fit(log, as_of=as_of_day, customers=table)


def _backtest(cfg: ScorerConfig, log, table, as_of_day):
    """The config's backtest at the cutoff, or None and why not (a module function: it may run in a worker)."""
    from crmml.backtest import MODEL_SCORER, backtest

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
        "churn_labels": (frame["churned"].to_numpy(), frame[f"churn:{MODEL_SCORER}"].to_numpy(),
                         {name: frame[name].to_numpy() for name in FLAG_INPUTS}),
    }, None


def _split_costs(customers: pd.DataFrame | None):
    """The customer table without ``cost_to_serve``, and ``(ids, costs)`` (None without costs)."""
    if customers is None:
        return None, None
    if not isinstance(customers, pd.DataFrame):
        raise TypeError(f"customers must be a pandas DataFrame. Got {type(customers).__name__} instead.")
    if COST_COLUMN not in customers.columns:
        return customers, None
    if "customer_id" not in customers.columns:
        return customers.drop(columns=COST_COLUMN), None  # the feature code names the missing column
    ids = check_ids(customers)
    return customers.drop(columns=COST_COLUMN), (ids, checked_costs(customers[COST_COLUMN], ids))


def _costs_for(ids: np.ndarray, costs) -> np.ndarray | None:
    """The costs of the customers ``ids`` (NaN where unknown)."""
    if costs is None:
        return None
    cost_ids, values = costs
    position = _positions(ids, cost_ids)
    return np.where(position >= 0, values[position], np.nan)


class Scores:
    """The scores of some customers as columns: numbers, tier codes, flags and reasons not yet in words.

    :meth:`to_frame` is :data:`SCORE_COLUMNS` (the reasons rendered once); the service renders
    the reasons as lists instead.
    """

    def __init__(self, ids, numbers: dict, tier: np.ndarray, flags: dict, reasons: Reasons, model_version: str):
        self.ids, self.numbers, self.tier, self.flags = ids, numbers, tier, flags
        self.reasons, self.model_version = reasons, model_version
        self.missing_attributes: list[str] = []
        #: Per categorical column with any: a bool per row, a category the learners never saw.
        self.unknown_categories: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def flag_codes(self) -> np.ndarray:
        return flag_codes(self.flags)

    def to_frame(self, *, lists: bool = False) -> pd.DataFrame:
        """:data:`SCORE_COLUMNS`; ``attrs["missing_attributes"]`` lists the attributes scored as unknown.

        ``flags`` and ``reasons`` are text joined by ``;`` / ``"; "`` (a file's columns), or with
        ``lists`` lists of names and of sentences (the service's and the MLflow model's answers)."""
        columns = {"customer_id": self.ids, **self.numbers, "tier": TIER_NAMES[self.tier]}
        columns.update({name: self.flags[name] for name in FLAGS})
        codes = self.flag_codes()
        if lists:
            columns["flags"] = [list(FLAG_NAMES[code]) for code in codes.tolist()]
            columns["reasons"] = self.reasons.lists()
        else:
            columns["flags"] = _FLAG_TEXTS[codes]
            columns["reasons"] = self.reasons.texts()
        columns["model_version"] = self.model_version
        frame = pd.DataFrame(columns, copy=False)
        frame.attrs["missing_attributes"] = list(self.missing_attributes)
        return frame


def _model_id(fingerprint: dict, config: ScorerConfig, as_of: pd.Timestamp) -> str:
    data = {k: v for k, v in fingerprint.items() if k != "source"}  # the same rows from anywhere
    payload = json.dumps({"data": data, "config": config.to_dict(), "as_of": str(as_of.date())},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
