"""Backtests: fit a config at past cutoffs, score, and compare with the classic baselines.

:func:`backtest` fits a :class:`~crmml.customer_model.CustomerModel` at each cutoff on the rows up
to the cutoff, then measures its scores against what the customers did next, beside the baselines a
data scientist would otherwise use:

- churn: ``recency`` (days since the last purchase), and for each BTYD model its P(no purchase in
  the window) and its expected purchases (ranked low to high, ``-E[X]``);
- value: ``past spend`` (total spend to the cutoff: a ranking, not a forecast) and each BTYD model's
  expected purchases x Gamma-Gamma expected spend;
- transactions: the total predicted purchases against the actual total;
- purchase distributions (BG/NBD, MBG/NBD and Pareto/NBD transaction models): each known customer's
  randomised PIT of her holdout purchases and her count against her 50/80/90/95 % intervals
  (:func:`holdout_pit_columns`), and a normal band around the cumulative tracking curve
  (:func:`holdout_tracking`; :mod:`crmml.holdout_intervals`).

:func:`cdnow_backtest` is the CDNOW protocol: the full ``CDNOW_master`` log (23,570 customers of the
first quarter of 1997), calibration to 1997-09-30, a 273-day (39-week) holdout to 1998-06-30, churn =
no purchase in the holdout, value = holdout spend (Fader, Hardie & Lee 2005, "Counting your customers
the easy way", *Marketing Science* 24(2)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crmml.customer_model import CustomerModel, ModelConfig
from crmml.customer_table import training_table
from crmml.features import btyd_summary, model_columns
from crmml.flags import FLAG_INPUTS
from crmml.holdout_intervals import LEVELS, cohort_band, holdout_pit, level_name
from crmml.data.summary import as_day, purchase_occasions
from crmml.data.transactions import as_transactions
from crmml.labels import outcome_labels
from crmml.metrics import churn_metrics, decile_table, value_metrics
from crmml.models.purchase_distribution import supported
from crmml.timetravel import TRANSACTION_MODELS, fit_btyd_models

__all__ = [
    "BTYD_LABELS",
    "CDNOW_CUTOFF",
    "CDNOW_HOLDOUT_DAYS",
    "MODEL_SCORER",
    "BacktestResult",
    "backtest",
    "cdnow_backtest",
    "holdout_pit_columns",
    "holdout_tracking",
    "model_scores",
]

CDNOW_CUTOFF = "1997-09-30"
CDNOW_HOLDOUT_DAYS = 273  # 1997-10-01 to 1998-06-30: 39 weeks

#: How the backtest names each BTYD model in its scorer columns.
BTYD_LABELS = {"bg_nbd": "BG/NBD", "mbg_nbd": "MBG/NBD", "pareto_nbd": "Pareto/NBD"}
MODEL_SCORER = "crmml"


@dataclass
class BacktestResult:
    """Metrics per cutoff, task and scorer, and the per-customer scores behind them."""

    metrics: pd.DataFrame  #: one row per (cutoff, task, scorer); metric columns
    scores: dict[pd.Timestamp, pd.DataFrame] = field(default_factory=dict)  #: per cutoff: scores and labels
    models: dict[pd.Timestamp, dict] = field(default_factory=dict)  #: per cutoff: CustomerModel.summary()
    tracking: dict[pd.Timestamp, pd.DataFrame] = field(default_factory=dict)  #: per cutoff: holdout_tracking()

    def table(self, task: str) -> pd.DataFrame:
        """The metrics of one task (``churn``, ``value`` or ``transactions``), scorers as rows."""
        rows = self.metrics[self.metrics["task"] == task].dropna(axis=1, how="all")
        return rows.drop(columns="task").set_index(["cutoff", "scorer"])

    def baselines_beaten(self, task: str, metric: str, *, lower_is_better: bool = False) -> pd.Series:
        """Per cutoff and baseline: whether the shipped model's ``metric`` is at least the baseline's."""
        rows = self.table(task)[metric].unstack("scorer")
        model = rows.pop(MODEL_SCORER)
        beaten = rows.le(model, axis=0) if not lower_is_better else rows.ge(model, axis=0)
        return beaten.stack()


def backtest(
    transactions,
    *,
    cutoffs,
    config: ModelConfig | None = None,
    customers: pd.DataFrame | None = None,
    baseline_models=tuple(TRANSACTION_MODELS),
    **read_kwargs,
) -> BacktestResult:
    """Fit ``config`` at each cutoff (rows up to it only) and score it against the following windows.

    Parameters
    ----------
    transactions : Transactions, DataFrame or path
        Must reach the end of every cutoff's churn window and value horizon.
    cutoffs : date-like or sequence of date-like
    config : ModelConfig, optional
    customers : pandas.DataFrame, optional
        The customer table (one row per customer). Dates other than ``signup_date`` and text with
        too many distinct values are left out, with a warning each
        (:func:`crmml.customer_table.training_table`).
    baseline_models : sequence of str
        BTYD models fitted at each cutoff as baselines (keys of
        :data:`crmml.timetravel.TRANSACTION_MODELS`).

    Returns
    -------
    BacktestResult
    """
    config = config if config is not None else ModelConfig()
    log = as_transactions(transactions, **read_kwargs).kept_in_memory()  # read at every cutoff
    customers, _ = training_table(customers)
    cutoff_days = [as_day(c, "cutoffs") for c in ([cutoffs] if isinstance(cutoffs, (str, pd.Timestamp)) else cutoffs)]
    if not cutoff_days:
        raise ValueError("backtest needs at least one cutoff.")
    rows, scores, summaries, tracking = [], {}, {}, {}
    for cutoff in cutoff_days:
        labels = outcome_labels(
            log, as_of=cutoff, churn_window_days=config.churn_window_days,
            value_horizon_days=config.value_horizon_days,
        )  # checks first that the log reaches the end of both windows
        model = CustomerModel(config).fit(log, as_of=cutoff, customers=customers)
        snapshots = model._snapshots(log, customers)
        features = snapshots.base_features(cutoff)
        predicted = model.predict_features(features)
        if customers is not None:
            labels = outcome_labels(
                log, as_of=cutoff, churn_window_days=config.churn_window_days,
                value_horizon_days=config.value_horizon_days, customer_ids=features.index,
            )
        labels = labels.reindex(features.index)
        frame = _baseline_scores(log, features, predicted, config, baseline_models, cutoff, model.btyd_)
        frame = pd.concat([frame, labels, features[["frequency", *FLAG_INPUTS]]], axis=1)  # the flags' inputs, for
        # their precision on the backtest (crmml.flags.FlagRule.learn)
        frame = frame.join(holdout_pit_columns(model, features, labels["purchases_in_horizon"],
                                               config.value_horizon_days))
        rows.extend(_metric_rows(frame, cutoff))
        scores[cutoff] = frame
        summaries[cutoff] = model.summary()
        tracking[cutoff] = holdout_tracking(log, model, features, config.value_horizon_days)
    return BacktestResult(pd.DataFrame(rows), scores, summaries, tracking)


def holdout_tracking(log, model: CustomerModel, features: pd.DataFrame, horizon_days: int,
                     step_days: int = 7) -> pd.DataFrame:
    """Cumulative purchases after the cutoff, actual against the BTYD model's expectation, every
    ``step_days`` days to ``horizon_days``, for the customers with purchases at the cutoff.

    Actual counts are purchase days (the data layer's occasions) after the cutoff; the expectation is
    the sum over customers of the model's conditional expected purchases by each day. For a
    transaction model with purchase distributions, ``btyd_sd`` and the normal bands ``band_lower_80``,
    ``band_upper_80``, ``band_lower_95``, ``band_upper_95`` of the total
    (:func:`crmml.holdout_intervals.cohort_band`: independent customers, fitted parameters).
    """
    cutoff = model.as_of_
    known = features.index[~features["no_purchase_history"].to_numpy(dtype=bool)]
    days = np.unique(np.append(np.arange(step_days, horizon_days, step_days), horizon_days))
    cutoff_period = int(cutoff.to_datetime64().astype("datetime64[D]").astype(np.int64))
    counts = np.zeros(horizon_days + 1)
    end = cutoff + pd.Timedelta(days=horizon_days)
    for batch in purchase_occasions(log, as_of=end, freq="D"):
        ids = pd.Index(batch.customer_id.to_pandas())
        keep = ids.isin(known)[batch.customer] & (batch.period > cutoff_period)
        counts += np.bincount(batch.period[keep] - cutoff_period, minlength=horizon_days + 1)[: horizon_days + 1]
    actual = np.cumsum(counts)[days]
    rows = features.loc[known]
    columns = model_columns(rows, model.btyd_.transaction_model, horizons_days=[float(d) for d in days],
                            time_unit_days=model.config.time_unit_days)  # P(alive) once for every day
    expected = [float(columns[float(d)]["btyd_expected_purchases"].sum()) for d in days]
    curve = pd.DataFrame({"day": days, "date": cutoff + pd.to_timedelta(days, unit="D"),
                          "actual": actual, "btyd_expected": expected})
    transaction_model = model.btyd_.transaction_model
    if len(rows) and supported(transaction_model):
        time_unit = model.config.time_unit_days
        band = cohort_band(transaction_model, btyd_summary(rows, time_unit_days=time_unit), days / time_unit)
        curve["btyd_sd"] = band["sd"].to_numpy()
        for name in ("80", "95"):
            curve[f"band_lower_{name}"] = band[f"lower_{name}"].to_numpy()
            curve[f"band_upper_{name}"] = band[f"upper_{name}"].to_numpy()
    return curve


def holdout_pit_columns(model: CustomerModel, features: pd.DataFrame, purchases: pd.Series,
                        horizon_days: int, *, seed: int = 0) -> pd.DataFrame:
    """Per customer with purchases at the cutoff: the randomised PIT of ``purchases`` (her purchase
    days in the ``horizon_days`` after it) under the BTYD transaction model's conditional distribution,
    and per level of :data:`crmml.holdout_intervals.LEVELS` (e.g. 80) whether it fell in her shortest
    80 % interval and that interval's probability.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``features``: ``purchases_pit``, ``purchases_covered_80``,
        ``purchases_interval_mass_80``, ... (NaN for customers without purchases at the cutoff). No
        columns when the transaction model has no purchase distribution (covariate models) or no
        customer had purchases.
    """
    transaction_model = model.btyd_.transaction_model
    known = ~features["no_purchase_history"].to_numpy(dtype=bool)
    out = pd.DataFrame(index=features.index)
    if not known.any() or not supported(transaction_model):
        return out
    time_unit = model.config.time_unit_days
    rows = features[known]
    pit = holdout_pit(transaction_model, btyd_summary(rows, time_unit_days=time_unit),
                      purchases.reindex(rows.index).to_numpy(), horizon_days / time_unit, seed=seed)
    out["purchases_pit"] = pd.Series(pit["pit"].to_numpy(), index=rows.index)
    for level in LEVELS:
        name = level_name(level)
        out[f"purchases_covered_{name}"] = pd.Series(pit[f"covered_{name}"].to_numpy(dtype=float), index=rows.index)
        out[f"purchases_interval_mass_{name}"] = pd.Series(pit[f"interval_mass_{name}"].to_numpy(), index=rows.index)
    return out


def model_scores(features: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    """Per customer: the model's churn, value and purchase predictions and the two model-free
    baselines (``churn:recency``, ``value:past spend``), in the column layout of
    :attr:`BacktestResult.scores`."""
    out = pd.DataFrame(index=features.index)
    out[f"churn:{MODEL_SCORER}"] = predicted["churn_probability"]
    since = features["days_since_last_purchase"]
    out["churn:recency"] = since.fillna(since.max())  # no purchase yet: as silent as the most silent
    out[f"value:{MODEL_SCORER}"] = predicted["predicted_spend"]
    out["value:past spend"] = features["total_spend"]
    out[f"purchases:{MODEL_SCORER}"] = predicted["predicted_purchases"]
    return out


def _baseline_scores(log, features, predicted, config, baseline_models, cutoff, model_btyd) -> pd.DataFrame:
    """Per customer: the model's and every baseline's churn, value and purchase predictions.

    The baseline of the model's own transaction model is the model's BTYD fit at the cutoff
    (``model_btyd``, the same fit on the same rows) unless that fit has covariates."""
    out = model_scores(features, predicted)
    for kind in baseline_models:
        if kind == config.transaction_model and model_btyd.covariates is None:
            fitted = model_btyd
        else:
            fitted = fit_btyd_models(log, cutoff, kind=kind, time_unit_days=config.time_unit_days)
        name = BTYD_LABELS[kind]
        both = model_columns(features, fitted.transaction_model, fitted.spend_model,  # P(alive) once
                             horizons_days=[config.churn_window_days, config.value_horizon_days],
                             time_unit_days=config.time_unit_days)
        churn_rows, value_rows = both[config.churn_window_days], both[config.value_horizon_days]
        out[f"churn:{name} P(no purchase)"] = churn_rows["btyd_p_no_purchase"]
        out[f"churn:{name} -E[X]"] = -churn_rows["btyd_expected_purchases"]
        if "expected_spend" in value_rows:
            out[f"value:{name}+GG"] = value_rows["btyd_expected_purchases"] * value_rows["expected_spend"]
        out[f"purchases:{name}"] = value_rows["btyd_expected_purchases"]
    return out


def _metric_rows(frame: pd.DataFrame, cutoff: pd.Timestamp) -> list[dict]:
    rows = []
    churned = frame["churned"].to_numpy()
    spend = holdout_spend(frame)
    purchases = frame["purchases_in_horizon"].to_numpy(dtype=np.float64)
    for column in frame.columns:
        task, _, scorer = column.partition(":")
        if not scorer:
            continue
        values = frame[column].to_numpy(dtype=np.float64)
        row = {"cutoff": cutoff, "task": task, "scorer": scorer}
        if task == "churn":
            if _is_probability(scorer):
                row.update(churn_metrics(churned, values))
            else:  # a ranking, not a probability: AUCs and lift only
                metrics = churn_metrics(churned, _as_unit_interval(values))
                row.update({k: metrics[k] for k in ("roc_auc", "pr_auc", "lift_at_10")})
        elif task == "value":
            if np.isnan(values).all():
                continue
            row.update(value_metrics(spend, np.nan_to_num(values, nan=0.0)))
        else:
            row.update(
                total_predicted=float(values.sum()), total_actual=float(purchases.sum()),
                total_error_pct=float(100 * (values.sum() / purchases.sum() - 1)),
            )
            row["task"] = "transactions"
        rows.append(row)
    return rows


def _as_unit_interval(values: np.ndarray) -> np.ndarray:
    """A monotone map of a ranking score into [0, 1] (its rank share), for the ranking metrics."""
    return pd.Series(values).rank(method="average", pct=True).to_numpy()


def cdnow_backtest(config: ModelConfig | None = None, *, plots: str | Path | None = None) -> BacktestResult:
    """The CDNOW protocol (see the module docstring), optionally writing the plots to ``plots``.

    ``config`` defaults to :class:`ModelConfig` with a 273-day churn window and value horizon; its
    windows must both be 273 days.
    """
    from crmml.datasets import load_cdnow_transactions

    config = config if config is not None else ModelConfig(
        churn_window_days=CDNOW_HOLDOUT_DAYS, value_horizon_days=CDNOW_HOLDOUT_DAYS
    )
    if config.churn_window_days != CDNOW_HOLDOUT_DAYS or config.value_horizon_days != CDNOW_HOLDOUT_DAYS:
        raise ValueError(f"The CDNOW protocol uses a {CDNOW_HOLDOUT_DAYS}-day churn window and value horizon.")
    log = load_cdnow_transactions(sample=False)[["customer_id", "timestamp", "amount"]]
    result = backtest(log, cutoffs=[CDNOW_CUTOFF], config=config)
    if plots is not None:
        write_plots(result, plots)
    return result


def churn_probabilities(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The churn scores of a :attr:`BacktestResult.scores` frame that are probabilities, by scorer:
    the model's and each BTYD model's P(no purchase) (for ROC/PR and calibration charts)."""
    return {scorer: frame[c].to_numpy(dtype=np.float64) for c in frame.columns
            for task, _, scorer in [c.partition(":")] if task == "churn" and _is_probability(scorer)}


def _is_probability(churn_scorer: str) -> bool:
    """Whether a churn scorer gives probabilities (the model, each BTYD P(no purchase)), not a ranking."""
    return churn_scorer == MODEL_SCORER or "P(no purchase)" in churn_scorer


def value_predictions(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The value scores of a :attr:`BacktestResult.scores` frame by scorer (missing as 0; scorers
    without any prediction left out)."""
    return {c.partition(":")[2]: np.nan_to_num(frame[c].to_numpy(dtype=np.float64)) for c in frame.columns
            if c.startswith("value:") and not frame[c].isna().all()}


def holdout_spend(frame: pd.DataFrame) -> np.ndarray:
    """The spend in the value horizon of a :attr:`BacktestResult.scores` frame (net refunds floored at 0)."""
    return np.clip(frame["spend_in_horizon"].to_numpy(dtype=np.float64), 0, None)


def write_plots(result: BacktestResult, directory: str | Path) -> list[Path]:
    """Per cutoff, PNG files in ``directory``: ROC/PR and calibration curves of the churn scores, gains
    chart of the value scores, purchases by calibration frequency, cumulative holdout tracking; and
    the decile table of the shipped value model as CSV. Returns the paths written."""
    from crmml.plots import (
        plot_calibration_by_frequency,
        plot_calibration_curve,
        plot_cumulative_tracking,
        plot_gains,
        plot_roc_pr,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for cutoff, frame in result.scores.items():
        stem = f"{cutoff.date()}"
        probabilities = churn_probabilities(frame)
        y = frame["churned"].to_numpy()
        written.append(directory / f"roc_pr_{stem}.png")
        plot_roc_pr(y, probabilities, path=written[-1])
        written.append(directory / f"calibration_{stem}.png")
        plot_calibration_curve(y, probabilities, path=written[-1])
        values, spend = value_predictions(frame), holdout_spend(frame)
        written.append(directory / f"gains_{stem}.png")
        plot_gains(spend, values, path=written[-1])
        table = decile_table(spend, values[MODEL_SCORER])
        written.append(directory / f"purchases_by_frequency_{stem}.png")
        plot_calibration_by_frequency(
            frame.dropna(subset=["frequency"]), f"purchases:{MODEL_SCORER}", "purchases_in_horizon", "frequency",
            path=written[-1],
        )
        if cutoff in result.tracking:
            curve = result.tracking[cutoff]
            written.append(directory / f"tracking_{stem}.png")
            plot_cumulative_tracking(curve["date"], curve["btyd_expected"], curve["actual"], path=written[-1])
        written.append(directory / f"deciles_{stem}.csv")
        table.to_csv(written[-1])
    return written
