"""Diagnostic plots for the transaction, churn and value models.

Each function builds a :class:`matplotlib.figure.Figure` on an Agg canvas, returns it and, when
``path`` is given, writes it as a PNG. The figures are created without :mod:`matplotlib.pyplot`, so
they never enter pyplot's list of open figures (nothing to close, no leak in long batch runs) and the
process-wide backend is left alone: a notebook still displays a returned figure inline, and a script
saves it with ``path=`` or ``fig.savefig``. matplotlib is imported inside the functions, so importing
:mod:`crmml.plots` costs nothing and works without it.

- :func:`plot_calibration_by_frequency`: mean predicted against mean actual holdout transactions by
  calibration-period frequency (Fader, Hardie & Lee 2005, "Counting your customers the easy way",
  *Marketing Science* 24(2), Figure 3);
- :func:`plot_cumulative_tracking`: cumulative repeat transactions over time (same paper, Figure 2);
- :func:`plot_roc_pr`, :func:`plot_calibration_curve`: churn score ranking and reliability;
- :func:`plot_gains`: cumulative share of holdout value captured by the top customers;
- :func:`plot_tier_pyramid`, :func:`plot_value_by_channel`, :func:`plot_referral_value`: the
  customer pyramid, value by acquisition channel and referral value (the model report's charts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from crmml.errors import DataValidationError
from crmml.metrics import churn_inputs, descending_order, value_inputs, calibration_table

__all__ = [
    "plot_calibration_by_frequency",
    "plot_calibration_curve",
    "plot_channel_effects",
    "plot_cumulative_tracking",
    "plot_gains",
    "plot_referral_value",
    "plot_roc_pr",
    "plot_tier_pyramid",
    "plot_value_by_channel",
]


def _new_figure(ncols: int = 1, *, width: float = 6.0, height: float = 4.5):
    """A pyplot-free figure on an Agg canvas and its axes."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("crmml.plots needs matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _finish(fig, path: str | os.PathLike | None):
    if path is not None:
        fig.savefig(path, format="png", dpi=100)
    return fig


def _check_scores(scores, name: str, func: str) -> Mapping:
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError(f"The {name!r} argument of {func} must be a non-empty dict of model name to array.")
    return scores


def plot_calibration_by_frequency(
    summary_holdout_df: pd.DataFrame,
    predicted_col: str,
    actual_col: str,
    frequency_col: str,
    max_frequency: int = 7,
    *,
    path: str | os.PathLike | None = None,
):
    """Mean predicted and actual holdout transactions by calibration-period frequency.

    The classic BTYD holdout check (Fader, Hardie & Lee 2005, Figure 3): customers are grouped by
    their number of repeat transactions in the calibration period, ``0, 1, ..., max_frequency``, with
    every frequency ``>= max_frequency`` pooled into the last group (labelled ``"7+"`` for the default), and the
    group means of the predicted and of the actual holdout transactions are drawn as two lines.

    Parameters
    ----------
    summary_holdout_df : DataFrame
        One row per customer.
    predicted_col, actual_col, frequency_col : str
        Columns holding the predicted holdout transactions, the actual holdout transactions and the
        calibration-period frequency.
    max_frequency : int, default 7
        Frequencies at or above it are pooled.
    path : path-like, optional
        Where to write the PNG.

    Returns
    -------
    Figure
        One axes with two lines, "Model" and "Actual".
    """
    func = "plot_calibration_by_frequency"
    for col in (predicted_col, actual_col, frequency_col):
        if col not in summary_holdout_df.columns:
            raise DataValidationError(f"Required column {col} missing from the frame given to {func}.", column=col)
    if isinstance(max_frequency, bool) or not isinstance(max_frequency, (int, np.integer)) or max_frequency < 1:
        raise ValueError(f"The 'max_frequency' argument of {func} must be an integer >= 1. Got {max_frequency!r} instead.")
    frequency = pd.to_numeric(summary_holdout_df[frequency_col]).clip(upper=max_frequency).astype(int)
    means = (
        summary_holdout_df[[predicted_col, actual_col]]
        .astype(float)
        .groupby(frequency.to_numpy())
        .mean()
        .sort_index()
    )
    labels = [f"{k}+" if k == max_frequency else str(k) for k in means.index]
    positions = np.arange(len(means))

    fig, ax = _new_figure()
    ax.plot(positions, means[predicted_col].to_numpy(), marker="o", linestyle="--", label="Model")
    ax.plot(positions, means[actual_col].to_numpy(), marker="s", label="Actual")
    ax.set_xticks(positions, labels)
    ax.set_xlabel("Repeat transactions in calibration period")
    ax.set_ylabel("Mean transactions in holdout period")
    ax.set_title("Conditional expectations: model vs holdout")
    ax.legend()
    return _finish(fig, path)


def plot_cumulative_tracking(
    times,
    predicted_cumulative,
    actual_cumulative,
    calibration_end=None,
    *,
    path: str | os.PathLike | None = None,
):
    """Cumulative repeat transactions over time, model against actual.

    Parameters
    ----------
    times : array-like
        Time points (numbers or dates), one per value.
    predicted_cumulative, actual_cumulative : array-like of float
        Cumulative repeat transactions at each time point.
    calibration_end : scalar, optional
        Where to draw a dotted vertical line separating calibration from holdout.
    path : path-like, optional
        Where to write the PNG.

    Returns
    -------
    Figure
        One axes with the lines "Model" and "Actual" (plus the vertical line when ``calibration_end``
        is given).
    """
    func = "plot_cumulative_tracking"
    times = np.asarray(times)
    predicted = np.asarray(predicted_cumulative, dtype=float)
    actual = np.asarray(actual_cumulative, dtype=float)
    for name, values in (("predicted_cumulative", predicted), ("actual_cumulative", actual)):
        if values.shape != times.shape:
            raise DataValidationError(
                f"The {name!r} argument of {func} must have the same length as 'times'. "
                f"Got {values.shape[0] if values.ndim else 0} and {times.shape[0] if times.ndim else 0}."
            )

    fig, ax = _new_figure(width=7.0)
    ax.plot(times, actual, label="Actual")
    ax.plot(times, predicted, linestyle="--", label="Model")
    if calibration_end is not None:
        ax.axvline(calibration_end, color="grey", linestyle=":", label="End of calibration")
    ax.set_xlabel("Time")
    ax.set_ylabel("Cumulative repeat transactions")
    ax.set_title("Tracking cumulative repeat transactions")
    ax.legend()
    return _finish(fig, path)


def plot_roc_pr(y, scores: Mapping, *, path: str | os.PathLike | None = None):
    """ROC and precision-recall curves of several churn scores, side by side.

    Parameters
    ----------
    y : array-like of {0, 1}
        Observed churn.
    scores : dict of str to array-like
        Model name to predicted churn probability.
    path : path-like, optional
        Where to write the PNG.

    Returns
    -------
    Figure
        Two axes. Left: one ROC curve per model, labelled with its AUC, and the chance diagonal.
        Right: one precision-recall curve per model, labelled with its average precision, and the
        base-rate line.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    func = "plot_roc_pr"
    scores = _check_scores(scores, "scores", func)
    checked = {name: churn_inputs(y, p, func) for name, p in scores.items()}
    y_arr = next(iter(checked.values()))[0]
    base_rate = float(y_arr.mean())

    fig, (ax_roc, ax_pr) = _new_figure(2, width=5.0)
    for name, (y_m, p_m) in checked.items():
        fpr, tpr, _ = roc_curve(y_m, p_m)
        ax_roc.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y_m, p_m):.3f})")
        precision, recall, _ = precision_recall_curve(y_m, p_m)
        ax_pr.step(recall, precision, where="post", label=f"{name} (AP {average_precision_score(y_m, p_m):.3f})")
    ax_roc.plot([0, 1], [0, 1], color="grey", linestyle=":", label="Chance")
    ax_roc.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax_pr.axhline(base_rate, color="grey", linestyle=":", label=f"Base rate ({base_rate:.3f})")
    ax_pr.set(xlabel="Recall", ylabel="Precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    ax_roc.legend(loc="lower right")
    ax_pr.legend(loc="best")  # the curves sit high or low with the base rate: the emptiest place
    return _finish(fig, path)


def plot_calibration_curve(
    y,
    scores: Mapping,
    n_bins: int = 10,
    *,
    strategy: str = "quantile",
    path: str | os.PathLike | None = None,
):
    """Reliability diagram: observed churn rate against mean predicted probability, bin by bin.

    The bins are those of :func:`crmml.metrics.calibration_table` (equal-count by default).

    Parameters
    ----------
    y : array-like of {0, 1}
        Observed churn.
    scores : dict of str to array-like
        Model name to predicted churn probability.
    n_bins : int, default 10
    strategy : {"quantile", "uniform"}, default "quantile"
    path : path-like, optional
        Where to write the PNG.

    Returns
    -------
    Figure
        One axes with one line per model and the "Perfectly calibrated" diagonal.
    """
    scores = _check_scores(scores, "scores", "plot_calibration_curve")
    tables = {name: calibration_table(y, p, n_bins=n_bins, strategy=strategy) for name, p in scores.items()}

    fig, ax = _new_figure(width=5.5, height=5.0)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="Perfectly calibrated")
    for name, table in tables.items():
        ax.plot(table["mean_predicted"], table["observed_rate"], marker="o", label=name)
    ax.set(
        xlabel="Mean predicted churn probability",
        ylabel="Observed churn rate",
        title="Calibration",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    return _finish(fig, path)


def plot_gains(actual, predicted: Mapping, *, path: str | os.PathLike | None = None):
    """Cumulative gains: share of total holdout value held by the top share of customers.

    For each model, customers are sorted by predicted value from highest to lowest (ties in original
    order, as in :func:`crmml.metrics.decile_table`) and the curve passes through
    ``(i / n, C_i / C_n)``, ``C_i`` the cumulative actual value of the first ``i``. The random
    ordering is the diagonal; the perfect ordering (by actual value itself) bounds every curve from
    above. The area between a curve and the diagonal, over that of the perfect curve, is the
    normalized Gini of :func:`crmml.metrics.value_metrics`.

    Parameters
    ----------
    actual : array-like of float >= 0
        Observed holdout value; its total must be positive.
    predicted : dict of str to array-like of float >= 0
        Model name to predicted value.
    path : path-like, optional
        Where to write the PNG.

    Returns
    -------
    Figure
        One axes with one line per model, "Perfect" and "Random".
    """
    func = "plot_gains"
    predicted = _check_scores(predicted, "predicted", func)
    checked = {name: value_inputs(actual, p, func) for name, p in predicted.items()}
    actual_arr = next(iter(checked.values()))[0]
    total = actual_arr.sum()
    if not total > 0:
        raise DataValidationError(f"The 'actual' argument of {func} must have a positive total. Got {total!r}.")
    n = actual_arr.shape[0]
    share_customers = np.arange(n + 1) / n

    def curve(score: np.ndarray) -> np.ndarray:
        return np.r_[0.0, np.cumsum(actual_arr[descending_order(score)]) / total]

    fig, ax = _new_figure(width=5.5, height=5.0)
    for name, (_, p_m) in checked.items():
        ax.plot(share_customers, curve(p_m), label=name)
    ax.plot(share_customers, curve(actual_arr), color="black", linestyle="--", linewidth=1, label="Perfect")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="Random")
    ax.set(
        xlabel="Share of customers (highest predicted first)",
        ylabel="Cumulative share of actual value",
        title="Gains",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right")
    return _finish(fig, path)


def _share_columns(table: pd.DataFrame, func: str) -> tuple[np.ndarray, np.ndarray]:
    """Shares of customers and of predicted value per row of a table with those two columns."""
    for col in ("customers", "predicted_value"):
        if col not in table.columns:
            raise DataValidationError(f"Required column {col} missing from the table given to {func}.", column=col)
    customers = table["customers"].to_numpy(dtype=np.float64)
    value = table["predicted_value"].to_numpy(dtype=np.float64)
    n, total = customers.sum(), value.sum()
    return (customers / n if n > 0 else np.zeros_like(customers)), (value / total if total else np.zeros_like(value))


def _paired_bars(ax, labels, customer_share, value_share, *, horizontal: bool) -> None:
    """Share of customers and share of predicted value, side by side, labelled in per cent."""
    positions = np.arange(len(labels))
    height = 0.38
    bar = ax.barh if horizontal else ax.bar
    for offset, shares, name in ((-height / 2, customer_share, "Share of customers"),
                                 (height / 2, value_share, "Share of predicted value")):
        bars = bar(positions + offset, shares, height, label=name)
        ax.bar_label(bars, labels=[f"{100 * s:.1f} %" for s in shares], padding=2, fontsize=8)
    if horizontal:
        ax.set_yticks(positions, labels)
        ax.invert_yaxis()  # first row on top
        ax.set_xlim(0, max(1e-9, float(np.max(np.r_[customer_share, value_share]))) * 1.2)
    else:
        ax.set_xticks(positions, labels)
        ax.set_ylim(0, max(1e-9, float(np.max(np.r_[customer_share, value_share]))) * 1.2)
    ax.legend(loc="lower right" if horizontal else "upper right")


def plot_tier_pyramid(tier_table: pd.DataFrame, *, path: str | os.PathLike | None = None):
    """The customer pyramid: each tier's share of customers beside its share of predicted value.

    Parameters
    ----------
    tier_table : DataFrame
        Indexed by tier, top of the pyramid first (``platinum``, ``gold``, ``iron``, ``lead``), with
        ``customers`` and ``predicted_value`` columns (as :meth:`crmml.pyramid.TierRule.table`).
    path : path-like, optional
        Where to write the PNG.

    Returns
    -------
    Figure
        One axes with two horizontal bars per tier, top tier on top.
    """
    customer_share, value_share = _share_columns(tier_table, "plot_tier_pyramid")
    fig, ax = _new_figure(width=7.0, height=4.0)
    _paired_bars(ax, [str(t) for t in tier_table.index], customer_share, value_share, horizontal=True)
    ax.set(xlabel="Share", title="Customer pyramid: customers and predicted value by tier")
    return _finish(fig, path)


def plot_value_by_channel(channel_table: pd.DataFrame, *, path: str | os.PathLike | None = None):
    """Each acquisition channel's share of customers beside its share of predicted value.

    Parameters
    ----------
    channel_table : DataFrame
        Indexed by channel, with ``customers`` and ``predicted_value`` columns (as
        :func:`crmml.insights.value_by_channel`); rows are drawn in the table's order.
    path : path-like, optional
        Where to write the PNG.

    Returns
    -------
    Figure
        One axes with two bars per channel.
    """
    customer_share, value_share = _share_columns(channel_table, "plot_value_by_channel")
    fig, ax = _new_figure(width=7.0, height=4.0)
    _paired_bars(ax, [str(c) for c in channel_table.index], customer_share, value_share, horizontal=False)
    ax.set(ylabel="Share", title="Value by acquisition channel")
    return _finish(fig, path)


def plot_referral_value(referral_groups: pd.DataFrame, *, value_unit: str | None = None,
                        path: str | os.PathLike | None = None):
    """Mean predicted value of referred against unreferred customers, and of referrers against the rest.

    Parameters
    ----------
    referral_groups : DataFrame
        Indexed by group, with ``customers`` and ``mean_value`` columns (as
        :func:`crmml.insights.referral_summary`).
    value_unit : str, optional
        What a value is, on the axis label (:meth:`crmml.scorer.ScorerConfig.value_unit`, short).
    path : path-like, optional
        Where to write the PNG.

    Returns
    -------
    Figure
        One axes with one bar per group, labelled with its mean value and number of customers.
    """
    for col in ("customers", "mean_value"):
        if col not in referral_groups.columns:
            raise DataValidationError(
                f"Required column {col} missing from the table given to plot_referral_value.", column=col)
    mean_value = np.nan_to_num(referral_groups["mean_value"].to_numpy(dtype=np.float64))
    counts = referral_groups["customers"].to_numpy()
    positions = np.arange(len(referral_groups))
    fig, ax = _new_figure(width=7.0, height=4.0)
    bars = ax.bar(positions, mean_value, color=[f"C{i // 2}" for i in range(len(positions))])
    ax.bar_label(bars, labels=[f"{v:,.2f}\n({n:,} customers)" for v, n in zip(mean_value, counts, strict=True)],
                 padding=2, fontsize=8)
    ax.set_xticks(positions, [str(g) for g in referral_groups.index])
    ax.set_ylim(0, max(1e-9, float(mean_value.max(initial=0.0))) * 1.3)
    ax.set(ylabel="Mean predicted value" + (f" ({value_unit})" if value_unit else ""), title="Referral value")
    return _finish(fig, path)


def plot_channel_effects(effects: pd.DataFrame, *, path: str | os.PathLike | None = None):
    """Forest plot of the acquisition channels' effects: each ratio with its 95 % interval, log scale.

    Parameters
    ----------
    effects : DataFrame
        As :func:`crmml.channel_effects.fit_channel_effects`: ``process``, ``effect``, ``level``,
        ``reference``, ``ratio``, ``ratio_lower_95``, ``ratio_upper_95``; one row per point.
    path : path-like, optional
        Where to write the PNG.

    Returns
    -------
    Figure
        One axes, a row per effect (grouped by process), a dashed line at 1 (no difference from the
        reference channel).
    """
    for col in ("process", "effect", "level", "reference", "ratio", "ratio_lower_95", "ratio_upper_95"):
        if col not in effects.columns:
            raise DataValidationError(
                f"Required column {col} missing from the table given to plot_channel_effects.", column=col)
    ratio = effects["ratio"].to_numpy(dtype=np.float64)
    lower = np.where(np.isfinite(effects["ratio_lower_95"]), effects["ratio_lower_95"], ratio)
    upper = np.where(np.isfinite(effects["ratio_upper_95"]), effects["ratio_upper_95"], ratio)
    positions = np.arange(len(effects))[::-1]
    fig, ax = _new_figure(width=7.0, height=1.2 + 0.45 * len(effects))
    colours = [f"C{0 if process == 'purchase' else 3}" for process in effects["process"]]
    ax.hlines(positions, lower, upper, colors=colours, linewidth=2)
    ax.scatter(ratio, positions, color=colours, zorder=3)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(positions, [f"{row.level} vs {row.reference}: {row.effect}" for row in effects.itertuples()])
    ax.set(xlabel="Ratio to the reference channel (95 % interval, log scale)", title="Channel effects")
    return _finish(fig, path)
