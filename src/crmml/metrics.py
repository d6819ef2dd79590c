"""Holdout metrics for the churn score and the value prediction.

Pure functions of arrays (lists, NumPy arrays or pandas Series); nothing here fits or imports a model.

Churn: ``y`` is the observed label (1 = churned in the holdout period, 0 = still active) and ``p`` the
predicted probability of churn. :func:`churn_metrics` gives ranking (ROC AUC, average precision,
lift), and probability quality (Brier score, log loss); :func:`calibration_table` gives the reliability
diagram's numbers.

Value: ``actual`` is each customer's holdout spend and ``predicted`` its prediction, both >= 0.
:func:`value_metrics` gives ranking (normalized Gini, top-20 % capture) and level (MAE, total error);
:func:`decile_table` gives the gains table. :func:`compare_models` lays several models' metric
dictionaries side by side.

Ties in a score are handled deterministically and the rule is stated in each function:

- shares of the top ``q`` of customers (:func:`churn_metrics`' lift, :func:`value_metrics`' top-20 %
  capture) count the customers tied at the cut-off fractionally, i.e. they take the *expected* value
  over a random order of the ties, so a constant score gives exactly the random answer;
- orderings that must assign every customer to one place (the normalized Gini, :func:`decile_table`)
  break ties by original position (first row first), as Kaggle's reference normalized Gini does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from crmml.errors import DataValidationError

__all__ = [
    "calibration_table",
    "churn_metrics",
    "compare_models",
    "decile_table",
    "value_metrics",
]

LOG_LOSS_EPS = 1e-15
"""Probabilities are clipped to ``[LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]`` before taking logs."""


# --------------------------------------------------------------------------------------------------
# validation


def _as_array(values, name: str, func: str) -> np.ndarray:
    """1-D float array with no NaN or infinity, or a DataValidationError naming ``name``."""
    try:
        if isinstance(values, (pd.Series, pd.Index)):
            array = values.to_numpy(dtype=float, na_value=np.nan)
        else:
            array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise DataValidationError(
            f"The {name!r} argument of {func} must be numeric. Got {type(values).__name__} with non-numeric values."
        ) from None
    if array.ndim != 1:
        raise DataValidationError(f"The {name!r} argument of {func} must be one-dimensional. Got shape {array.shape}.")
    if array.size == 0:
        raise DataValidationError(f"The {name!r} argument of {func} is empty.")
    bad = ~np.isfinite(array)
    if bad.any():
        kind = "NaN" if np.isnan(array[bad]).any() else "infinite"
        positions = np.flatnonzero(bad)[:5].tolist()
        raise DataValidationError(
            f"The {name!r} argument of {func} contains {int(bad.sum())} {kind} value(s), first at positions {positions}.",
            rows=positions,
        )
    return array


def _same_length(a: np.ndarray, b: np.ndarray, names: tuple[str, str], func: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise DataValidationError(
            f"The {names[0]!r} and {names[1]!r} arguments of {func} must have the same length. "
            f"Got {a.shape[0]} and {b.shape[0]}."
        )


def _check_labels(y: np.ndarray, func: str) -> None:
    bad = (y != 0) & (y != 1)
    if bad.any():
        positions = np.flatnonzero(bad)[:5].tolist()
        raise DataValidationError(
            f"The 'y' argument of {func} must contain only 0 (active) and 1 (churned). "
            f"Got {np.unique(y[bad])[:5].tolist()} at positions {positions}.",
            rows=positions,
        )


def _check_range(values: np.ndarray, name: str, func: str, *, upper: float | None = None) -> None:
    bad = values < 0 if upper is None else (values < 0) | (values > upper)
    if bad.any():
        positions = np.flatnonzero(bad)[:5].tolist()
        meaning = ">= 0" if upper is None else f"in [0, {upper:g}]"
        raise DataValidationError(
            f"The {name!r} argument of {func} must be {meaning}. "
            f"Got {values[bad][:5].tolist()} at positions {positions}.",
            rows=positions,
        )


def churn_inputs(y, p, func: str) -> tuple[np.ndarray, np.ndarray]:
    y = _as_array(y, "y", func)
    p = _as_array(p, "p", func)
    _same_length(y, p, ("y", "p"), func)
    _check_labels(y, func)
    _check_range(p, "p", func, upper=1.0)
    return y, p


def value_inputs(actual, predicted, func: str) -> tuple[np.ndarray, np.ndarray]:
    actual = _as_array(actual, "actual", func)
    predicted = _as_array(predicted, "predicted", func)
    _same_length(actual, predicted, ("actual", "predicted"), func)
    _check_range(actual, "actual", func)
    _check_range(predicted, "predicted", func)
    return actual, predicted


# --------------------------------------------------------------------------------------------------
# shared ranking helpers


def _top_share_sum(values: np.ndarray, score: np.ndarray, k: float) -> float:
    """Expected sum of ``values`` over the ``k`` highest-``score`` items, ties taken at random.

    Items scoring strictly above the cut-off score count fully; the ``m`` items tied at the cut-off
    share the ``r`` remaining places, so each counts with weight ``r / m``. The result is
    deterministic and equal to the average over every ordering of the ties.
    """
    n = score.shape[0]
    if k >= n:
        return float(values.sum())
    threshold = np.sort(score)[::-1][int(math.ceil(k)) - 1]
    above = score > threshold
    tied = score == threshold
    remaining = k - above.sum()
    return float(values[above].sum() + values[tied].sum() * remaining / tied.sum())


def descending_order(score: np.ndarray) -> np.ndarray:
    """Indices sorting ``score`` from highest to lowest, ties in original order (a stable sort)."""
    return np.argsort(-score, kind="stable")


# --------------------------------------------------------------------------------------------------
# churn


def churn_metrics(y, p) -> dict[str, float]:
    """Ranking and probability-quality metrics of a churn score on a holdout period.

    Parameters
    ----------
    y : array-like of {0, 1}
        Observed churn: 1 = churned, 0 = active.
    p : array-like of float in [0, 1]
        Predicted probability of churn.

    Returns
    -------
    dict
        ``roc_auc``
            Area under the ROC curve, :func:`sklearn.metrics.roc_auc_score`: the probability that a
            random churner scores above a random non-churner, ties counting one half
            (Hanley & McNeil 1982, *Radiology* 143(1)).
        ``pr_auc``
            Average precision, :func:`sklearn.metrics.average_precision_score`:
            ``AP = sum_k (R_k - R_{k-1}) P_k`` over score thresholds (a step-wise PR-curve area, without
            the optimistic linear interpolation).
        ``brier``
            ``mean((p - y)^2)`` (Brier 1950, *Monthly Weather Review* 78(1)),
            :func:`sklearn.metrics.brier_score_loss`.
        ``log_loss``
            ``-mean(y log p + (1 - y) log(1 - p))`` with ``p`` clipped to ``[1e-15, 1 - 1e-15]`` so a
            confident mistake costs about 34.5 nats instead of infinity.
        ``lift_at_10``
            ``(churn rate among the 10 % highest-scoring customers) / base_rate``. The top group
            holds ``k = n / 10`` customers (fractional ``k`` allowed); customers tied at the cut-off
            score count with weight ``(places left) / (number tied)``, the expected lift over a random
            order of the ties. A constant score therefore has lift exactly 1, and a perfect score has
            ``min(1 / base_rate, 10)``.
        ``base_rate``
            ``mean(y)``.
        ``n``
            Number of customers.

    Raises
    ------
    DataValidationError
        (a ``ValueError``) if ``y`` and ``p`` differ in length, contain NaN or infinity, ``y`` holds a
        value other than 0 or 1, ``p`` lies outside [0, 1], or ``y`` holds only one class (AUC and
        lift are then undefined).
    """
    func = "churn_metrics"
    y, p = churn_inputs(y, p, func)
    n = y.shape[0]
    n_churned = int(y.sum())
    if n_churned in (0, n):
        raise DataValidationError(
            f"The 'y' argument of {func} must contain both churners (1) and active customers (0); "
            f"got {n_churned} churners among {n}. AUC and lift are undefined with one class."
        )
    base_rate = n_churned / n
    clipped = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    log_loss = -float(np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped)))
    k = 0.1 * n
    lift = _top_share_sum(y, p, k) / k / base_rate
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": log_loss,
        "lift_at_10": float(lift),
        "base_rate": float(base_rate),
        "n": n,
    }


def calibration_table(y, p, n_bins: int = 10, strategy: str = "quantile") -> pd.DataFrame:
    """Mean predicted churn probability against the observed churn rate, bin by bin.

    The binning is that of :func:`sklearn.calibration.calibration_curve`, so the two agree: edges are
    the ``0, 1/n_bins, ..., 1`` quantiles of ``p`` (``strategy="quantile"``, equal-count bins) or
    ``linspace(0, 1, n_bins + 1)`` (``strategy="uniform"``); a probability equal to an inner edge goes
    to the lower bin. Empty bins (e.g. from repeated quantile edges when ``p`` has many ties) are
    dropped, so there may be fewer than ``n_bins`` rows.

    Parameters
    ----------
    y : array-like of {0, 1}
        Observed churn.
    p : array-like of float in [0, 1]
        Predicted probability of churn.
    n_bins : int, default 10
        Number of bins before empty ones are dropped.
    strategy : {"quantile", "uniform"}, default "quantile"

    Returns
    -------
    DataFrame
        One row per non-empty bin, lowest probabilities first: ``bin`` (1, 2, ...), ``mean_predicted``
        (mean ``p``), ``observed_rate`` (mean ``y``), ``count``. A calibrated score has
        ``mean_predicted ≈ observed_rate`` in every bin.
    """
    func = "calibration_table"
    y, p = churn_inputs(y, p, func)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"The 'n_bins' argument of {func} must be an integer >= 1. Got {n_bins!r} instead.")
    if strategy == "quantile":
        edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValueError(f"The 'strategy' argument of {func} must be 'quantile' or 'uniform'. Got {strategy!r} instead.")
    bin_ids = np.searchsorted(edges[1:-1], p)
    count = np.bincount(bin_ids, minlength=n_bins)
    sum_p = np.bincount(bin_ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(bin_ids, weights=y, minlength=n_bins)
    keep = count > 0
    return pd.DataFrame(
        {
            "bin": np.arange(1, int(keep.sum()) + 1),
            "mean_predicted": sum_p[keep] / count[keep],
            "observed_rate": sum_y[keep] / count[keep],
            "count": count[keep].astype(np.int64),
        }
    )


# --------------------------------------------------------------------------------------------------
# value


def _gini(actual: np.ndarray, score: np.ndarray) -> float:
    """Kaggle's (unnormalized) Gini of ``actual`` ordered by ``score``, highest first, ties by position.

    ``G = (sum_{i=1}^{n} C_i / C_n - (n + 1) / 2) / n``, where ``C_i`` is the cumulative sum of
    ``actual`` over the first ``i`` customers of the ordering.
    """
    n = actual.shape[0]
    ordered = actual[descending_order(score)]
    return float((np.cumsum(ordered).sum() / ordered.sum() - (n + 1) / 2) / n)


def value_metrics(actual, predicted) -> dict[str, float]:
    """Ranking and level metrics of a value (holdout spend) prediction.

    Parameters
    ----------
    actual : array-like of float >= 0
        Observed holdout spend per customer.
    predicted : array-like of float >= 0
        Predicted spend over the same period.

    Returns
    -------
    dict
        ``normalized_gini``
            ``G(actual, predicted) / G(actual, actual)``, the normalized Gini of Kaggle's
            "Porto Seguro" and "Liberty Mutual" competitions, with
            ``G(a, s) = (sum_i C_i / C_n - (n + 1) / 2) / n`` and ``C_i`` the cumulative ``a`` over
            the first ``i`` customers when sorted by ``s`` from highest to lowest. It is 1 for a
            perfect ordering and -1 for the reversed one (when ``actual`` has no ties), about 0 for a
            random one. Ties in ``predicted`` are broken by original position (first row first), as
            in Kaggle's reference code, so a *constant* prediction scores the Gini of the rows' own
            order: close to 0 for a shuffled frame, but -1 if the rows happen to be sorted by
            ascending spend. NaN when every ``actual`` is equal (there is nothing to rank).
        ``top20_capture``
            Share of total ``actual`` held by the 20 % of customers with the highest ``predicted``
            (``k = n / 5`` customers, fractional ``k`` allowed, customers tied at the cut-off counted
            with weight ``(places left) / (number tied)``). 0.2 for a constant prediction; NaN when
            total ``actual`` is 0.
        ``mae``
            ``mean(|actual - predicted|)``.
        ``total_predicted``, ``total_actual``
            Sums over customers.
        ``total_error_pct``
            ``100 * (total_predicted - total_actual) / total_actual``: positive means over-prediction.
            NaN when total ``actual`` is 0.

    Raises
    ------
    DataValidationError
        (a ``ValueError``) on a length mismatch, NaN or infinity, or a negative value.
    """
    actual, predicted = value_inputs(actual, predicted, "value_metrics")
    n = actual.shape[0]
    total_actual = float(actual.sum())
    total_predicted = float(predicted.sum())
    if total_actual > 0:
        best = _gini(actual, actual)
        normalized_gini = _gini(actual, predicted) / best if best > 0 else float("nan")
        top20 = _top_share_sum(actual, predicted, 0.2 * n) / total_actual
        error_pct = 100.0 * (total_predicted - total_actual) / total_actual
    else:
        normalized_gini = top20 = error_pct = float("nan")
    return {
        "normalized_gini": float(normalized_gini),
        "top20_capture": float(top20),
        "mae": float(np.mean(np.abs(actual - predicted))),
        "total_predicted": total_predicted,
        "total_actual": total_actual,
        "total_error_pct": float(error_pct),
    }


def decile_table(actual, predicted) -> pd.DataFrame:
    """Gains table: customers cut into ten equal groups by predicted value, highest first.

    Customers are sorted by ``predicted`` from highest to lowest (ties in original order, first row
    first) and split into ten groups whose sizes differ by at most one, larger groups first
    (:func:`numpy.array_split`); with fewer than ten customers some deciles are empty and omitted.

    Parameters
    ----------
    actual : array-like of float >= 0
        Observed holdout spend.
    predicted : array-like of float >= 0
        Predicted spend.

    Returns
    -------
    DataFrame
        One row per non-empty decile: ``decile`` (1 = highest predicted), ``count``,
        ``mean_predicted``, ``mean_actual``, ``share_of_actual`` (the decile's sum of ``actual`` over
        the total, summing to 1) and ``cumulative_share`` (running sum, ending at 1). The shares are
        NaN when total ``actual`` is 0.
    """
    actual, predicted = value_inputs(actual, predicted, "decile_table")
    order = descending_order(predicted)
    total = actual.sum()
    rows = []
    for decile, idx in enumerate(np.array_split(order, 10), start=1):
        if idx.size == 0:
            continue
        rows.append(
            {
                "decile": decile,
                "count": int(idx.size),
                "mean_predicted": float(predicted[idx].mean()),
                "mean_actual": float(actual[idx].mean()),
                "share_of_actual": float(actual[idx].sum() / total) if total > 0 else float("nan"),
            }
        )
    table = pd.DataFrame(rows)
    table["cumulative_share"] = table["share_of_actual"].cumsum()
    return table


def compare_models(results: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Several models' metric dictionaries side by side, one row per model.

    Parameters
    ----------
    results : mapping of str to mapping
        Model name to its metrics, e.g. ``{"bgnbd": value_metrics(a, p1), "rfm": value_metrics(a, p2)}``.

    Returns
    -------
    DataFrame
        Index ``model`` in the order given; columns are the union of the metric names in first-seen
        order, NaN where a model lacks a metric.
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("The 'results' argument of compare_models must be a non-empty dict of model name to metrics.")
    for name, metrics in results.items():
        if not isinstance(metrics, Mapping):
            raise ValueError(
                f"The 'results' argument of compare_models must map each model to a dict of metrics. "
                f"Got {type(metrics).__name__} for model {name!r}."
            )
    columns = list(dict.fromkeys(key for metrics in results.values() for key in metrics))
    table = pd.DataFrame([dict(m) for m in results.values()], index=list(results), columns=columns)
    table.index.name = "model"
    return table
