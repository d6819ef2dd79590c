"""Choosing what ships: a learner only when it beats the BTYD baseline by more than the noise.

:class:`CustomerModel` scores every candidate on one or more **out-of-time validation folds** (each
candidate trained on data up to the fold's cutoff only, judged on the window after it) and hands the
per-customer scores here. For each fold, the noise of each candidate's difference from the baseline is
measured by a **paired Poisson bootstrap** over customers (Hanley & MacGibbon 2006; every resample
reweights the same customers for all candidates, so the shared noise cancels in the difference).
Over the folds the mean difference and its standard error are combined, and
:func:`choose_candidate` ships a candidate only when its mean difference from the baseline exceeds
``z`` standard errors (default 2, about 97.7 % one-sided) and an absolute floor; otherwise the
baseline ships. The decision, the folds, the noise and the reason are returned for the record.

The bootstrap metrics are the weighted versions of :func:`crmml.metrics.churn_metrics`' ROC AUC
(Mann-Whitney with ties counted one half) and of :func:`crmml.metrics.value_metrics`' normalized
Gini (customers ordered by score, ties by position), evaluated for a block of resamples at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Decision", "FoldScores", "PRIMARY_METRIC", "bootstrap_se", "choose_candidate", "paired_bootstrap_se",
           "paired_bootstrap_ses"]

#: The metric that ranks candidates, per task (higher is better).
PRIMARY_METRIC = {"churn": "roc_auc", "value": "normalized_gini"}
#: Smallest margin over the baseline that can ship, per task, whatever the measured noise.
MIN_MARGIN = {"churn": 0.002, "value": 0.01}
#: Standard errors of the paired difference a learner must clear.
Z_MARGIN = 2.0
_RESAMPLES = 200
_BLOCK = 25  # resamples evaluated at once (memory: block x customers doubles)
#: Customers the bootstrap resamples at most; on more, a random subset is resampled and the standard
#: error scaled by sqrt(subset / all) (the metrics' standard errors shrink as 1/sqrt(n)).
_MAX_BOOTSTRAP_CUSTOMERS = 20_000


@dataclass(frozen=True)
class FoldScores:
    """One validation fold: the candidates' point metrics and the noise of their difference from the
    baseline.

    Attributes
    ----------
    cutoff : str
        The fold's cutoff (candidates trained on data up to it).
    window_days : int
        The judged window after the cutoff.
    n_customers : int
    metrics : dict
        Per candidate, its metrics (the task's full metric dict).
    diff_se : dict
        Per baseline (a BTYD score), per candidate: the bootstrap standard error of
        ``primary(candidate) - primary(baseline)`` (:func:`paired_bootstrap_ses`).
    """

    cutoff: str
    window_days: int
    n_customers: int
    metrics: dict[str, dict[str, float]]
    diff_se: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Decision:
    """What ships for one task, and why (see the module docstring)."""

    shipped: str
    reason: str
    baseline: str
    metric: str
    mean: dict[str, float] = field(default_factory=dict)  #: per candidate, the mean primary metric over folds
    mean_diff: dict[str, float] = field(default_factory=dict)  #: per candidate, mean difference from the baseline
    diff_se: dict[str, float] = field(default_factory=dict)  #: its standard error over the folds
    margin: dict[str, float] = field(default_factory=dict)  #: what it had to clear

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap_se(actual, scores: dict[str, np.ndarray], baseline: str, metric: str, *,
                        n_resamples: int = _RESAMPLES, seed: int = 0) -> dict[str, float]:
    """Bootstrap standard error of ``metric(score) - metric(scores[baseline])`` for every score: one
    baseline of :func:`paired_bootstrap_ses`."""
    return paired_bootstrap_ses(actual, scores, (baseline,), metric, n_resamples=n_resamples, seed=seed)[baseline]


def paired_bootstrap_ses(actual, scores: dict[str, np.ndarray], baselines, metric: str, *,
                         n_resamples: int = _RESAMPLES, seed: int = 0) -> dict[str, dict[str, float]]:
    """Bootstrap standard errors of ``metric(score) - metric(scores[baseline])`` for every score and
    every one of ``baselines``, from the same resamples.

    Parameters
    ----------
    actual : array-like
        Churn labels (0/1) for ``"roc_auc"``, holdout spend (>= 0) for ``"normalized_gini"``.
    scores : dict of str to array-like
        Candidates' scores on the same customers, the baseline's among them.
    baselines : sequence of str
        Names in ``scores``.
    metric : {"roc_auc", "normalized_gini"}
    n_resamples : int
        Poisson(1) weight vectors, shared by all candidates (paired).
    seed : int

    Returns
    -------
    dict
        Per baseline, per candidate (the baseline's own is 0), the standard error; NaN when the metric
        is undefined on the data (one class, no spend).
    """
    values, scale = _resampled_metrics(actual, scores, metric, n_resamples, seed)
    out = {}
    for baseline in baselines:
        out[baseline] = {}
        for name in scores:
            out[baseline][name] = scale * _std(values[name] - values[baseline])
    return out


def bootstrap_se(actual, score, metric: str, *, n_resamples: int = _RESAMPLES, seed: int = 0) -> float:
    """Bootstrap standard error of one score's ``metric`` (the resamples of :func:`paired_bootstrap_ses`);
    NaN when the metric is undefined on the data."""
    values, scale = _resampled_metrics(actual, {"score": score}, metric, n_resamples, seed)
    return scale * _std(values["score"])


def _std(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def _resampled_metrics(actual, scores: dict, metric: str, n_resamples: int, seed: int):
    """Each score's ``metric`` under ``n_resamples`` Poisson(1) weight vectors shared by all scores, and
    the factor that scales a standard error on the resampled subset (at most
    ``_MAX_BOOTSTRAP_CUSTOMERS`` customers) to all customers."""
    actual = np.asarray(actual, dtype=np.float64)
    if metric not in ("roc_auc", "normalized_gini"):
        raise ValueError(f"metric must be 'roc_auc' or 'normalized_gini'; got {metric!r}.")
    rng = np.random.default_rng(seed)
    n = len(actual)
    subset, scale = slice(None), 1.0
    if n > _MAX_BOOTSTRAP_CUSTOMERS:
        subset = np.sort(rng.choice(n, size=_MAX_BOOTSTRAP_CUSTOMERS, replace=False))
        scale = float(np.sqrt(_MAX_BOOTSTRAP_CUSTOMERS / n))
        actual = actual[subset]
    prepared = {name: _Ordering(actual, np.asarray(s, dtype=np.float64)[subset], metric)
                for name, s in scores.items()}
    best = _Ordering(actual, actual, metric) if metric == "normalized_gini" else None
    values = {name: [] for name in scores}
    for start in range(0, n_resamples, _BLOCK):
        # Poisson(1) counts fit a byte (P(count > 255) is nil): a byte gathered per customer, not eight
        counts = rng.poisson(1.0, size=(min(_BLOCK, n_resamples - start), len(actual)))
        weights = counts.astype(np.uint8) if counts.max(initial=0) <= 255 else counts
        if best is None:
            for name, ordering in prepared.items():
                values[name].append(_weighted_auc(ordering, weights))
        else:
            reference = _weighted_capture(best.order, actual, weights)  # the best ordering's, shared
            for name, ordering in prepared.items():
                with np.errstate(invalid="ignore", divide="ignore"):
                    values[name].append(_weighted_capture(ordering.order, actual, weights) / reference)
    return {name: np.concatenate(v) for name, v in values.items()}, scale


class _Ordering:
    """A score's ordering of the customers, prepared once for every resample."""

    def __init__(self, actual: np.ndarray, score: np.ndarray, metric: str):
        if metric == "roc_auc":
            order = np.argsort(score, kind="stable")  # ascending; ties grouped
            ordered = score[order]
            starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
            self.order, self.starts = order, starts
            self.positive = (actual[order] > 0.5).astype(np.uint8)
        else:
            self.order = np.argsort(-score, kind="stable")  # descending, ties by position


def _weighted_auc(ordering: _Ordering, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under each row of integer ``weights`` (Mann-Whitney, ties one half), in exact integer sums."""
    w = weights[:, ordering.order]
    pos = w * ordering.positive
    neg = w - pos
    if len(ordering.starts) == len(ordering.order):  # no ties: every customer is its own group
        group_neg, group_pos = neg.astype(np.int64), pos.astype(np.int64)
    else:
        group_neg = np.add.reduceat(neg, ordering.starts, axis=1, dtype=np.int64)
        group_pos = np.add.reduceat(pos, ordering.starts, axis=1, dtype=np.int64)
    below = np.cumsum(group_neg, axis=1) - group_neg  # negatives strictly below each tie group
    twice_wins = np.sum(group_pos * (2 * below + group_neg), axis=1)
    total = group_pos.sum(axis=1) * group_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 0.5 * twice_wins / total


def _weighted_capture(order: np.ndarray, actual: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Gini of the spend captured along ``order`` under each row of ``weights``: the weighted share of
    spend above each customer, less one half. Its ratio to the best ordering's (customers by their
    actual spend) is the normalized Gini."""
    w = weights[:, order]
    captured = w * actual[order]
    cumulative = np.cumsum(captured, axis=1)
    total, count = cumulative[:, -1], w.sum(axis=1, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(w * (cumulative - 0.5 * captured), axis=1) / (total * count) - 0.5


def choose_candidate(folds: list[FoldScores], task: str, *, baselines=("btyd",),
                     z: float = Z_MARGIN) -> Decision:
    """What ships for ``task`` from the validation ``folds``.

    The baseline is the one of ``baselines`` (BTYD scores, e.g. P(no purchase) and the ``-E[X]``
    ranking) with the best mean primary metric over the folds: choosing among BTYD scores needs no
    margin, since any of them is the structural forecast. A learner ships instead only when its mean
    difference from that baseline exceeds ``max(z * SE, MIN_MARGIN[task])``; among those that clear,
    the best mean ships.

    The standard error of the mean difference over ``K`` folds is ``sqrt(sum_k se_k^2) / K`` (folds
    treated as independent; ``se_k`` from :attr:`FoldScores.diff_se` of the chosen baseline).
    """
    metric = PRIMARY_METRIC[task]
    if not folds:
        return Decision(baselines[0], "no validation fold: the baseline ships", baselines[0], metric)
    names = list(folds[0].metrics)

    def mean_of(name):
        return float(np.mean([f.metrics[name][metric] for f in folds]))

    mean = {name: mean_of(name) for name in names}
    candidates = [b for b in baselines if b in mean and np.isfinite(mean[b])] or [baselines[0]]
    baseline = max(candidates, key=lambda b: (mean[b], -candidates.index(b)))
    among = ""
    if len(candidates) > 1:
        among = (f" ({baseline} is the best BTYD score: "
                 + ", ".join(f"{b} {mean[b]:.4f}" for b in candidates) + f" mean {metric})")
    mean_diff, diff_se, margin = {}, {}, {}
    for name in names:
        values = np.array([f.metrics[name][metric] for f in folds], dtype=np.float64)
        base = np.array([f.metrics[baseline][metric] for f in folds], dtype=np.float64)
        ses = np.array([f.diff_se.get(baseline, {}).get(name, np.nan) for f in folds], dtype=np.float64)
        mean_diff[name] = float(np.mean(values - base))
        diff_se[name] = float(np.sqrt(np.sum(ses**2)) / len(folds))
        margin[name] = float(max(z * diff_se[name], MIN_MARGIN[task])) if name not in candidates else 0.0
    learners = [n for n in names if n not in candidates]
    clear = [n for n in learners if np.isfinite(mean_diff[n]) and np.isfinite(diff_se[n]) and mean_diff[n] > margin[n]]
    where = f"over {len(folds)} out-of-time fold(s) ({', '.join(f'{f.window_days} days after {f.cutoff}' for f in folds)})"
    if not clear:
        best = max((n for n in learners if np.isfinite(mean_diff[n])), default=None, key=lambda n: mean_diff[n])
        if best is None:
            why = f"no learner could be scored {where}"
        else:
            why = (f"no candidate beats {baseline} by more than the noise {where}: best {best} "
                   f"{mean_diff[best]:+.4f} {metric} against a margin of {margin[best]:.4f} "
                   f"({z:g} x SE {diff_se[best]:.4f}, floor {MIN_MARGIN[task]})")
        return Decision(baseline, f"{baseline} ships: {why}{among}", baseline, metric, mean, mean_diff, diff_se,
                        margin)
    shipped = max(clear, key=lambda n: (mean[n], n))
    why = (f"{shipped} ships: {metric} {mean[shipped]:.4f} against {baseline} {mean[baseline]:.4f} {where}, "
           f"a gain of {mean_diff[shipped]:+.4f} above the margin {margin[shipped]:.4f} "
           f"({z:g} x paired-bootstrap SE {diff_se[shipped]:.4f}, floor {MIN_MARGIN[task]}){among}")
    return Decision(shipped, why, baseline, metric, mean, mean_diff, diff_se, margin)
