"""Calibration of per-customer purchase distributions against observed holdout counts (issue 20).

The randomised probability integral transform of a count ``y`` under a predictive PMF ``p`` with CDF
``F`` is ``F(y-1) + V p(y)``, ``V ~ U(0, 1)``; it is uniform on (0, 1) exactly when the predictive
distributions are the true ones (Brockwell 2007; Czado, Gneiting & Held 2009, "Predictive Model
Assessment for Count Data", *Biometrics* 65, section 2.1). :func:`calibration_table` tabulates it in
bins, with the coverage of the intervals of :func:`~crmml.models.purchase_distribution.purchase_interval`,
overall and per group of customers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crmml.models.purchase_distribution import _cdf, purchase_interval, randomized_pit

__all__ = ["calibration_table"]


def calibration_table(pmf: np.ndarray, observed, groups=None, *, levels=(0.8, 0.5), bins: int = 10,
                      min_group: int = 500, seed: int = 0, kind: str = "shortest") -> pd.DataFrame:
    """How well observed counts agree with their predictive distributions, overall and per group.

    Parameters
    ----------
    pmf : ndarray of shape (n, K+1)
        Predictive distributions (``K`` at least the largest observed count).
    observed : array of n counts
    groups : array of n labels, optional
        E.g. calibration-period frequency bands; groups with fewer than ``min_group`` customers are left out.
    levels : sequence of float
        Interval levels to check.
    bins : int
        Bins of the randomised PIT (:func:`randomized_pit`, drawn once with ``seed`` for all rows).

    Returns
    -------
    pandas.DataFrame
        One row for ``"all"`` and one per group: ``customers``; ``pit_1..pit_<bins>``, the share of
        PITs in each bin in percent (``100 / bins`` if calibrated); ``pit_max_error``, the largest
        distance from it in percentage points; per level (e.g. 80): ``coverage_80``, the percentage of
        observed counts inside the interval (:func:`purchase_interval` of ``kind``; at least the level
        for a calibrated model, more because counts are discrete), ``expected_coverage_80``, the
        average of the intervals' own probabilities (what a calibrated model would show), and
        ``pit_coverage_80``, the share of PITs in the central ``level`` band (the coverage of the
        randomised interval, the level itself for a calibrated model).
    """
    pmf = np.asarray(pmf, dtype=float)
    observed = np.asarray(observed)
    pit = randomized_pit(pmf, observed, seed)
    cdf = _cdf(pmf)
    rows_index = np.arange(len(observed))
    columns: dict[str, np.ndarray] = {}
    for level in levels:
        lower, upper = purchase_interval(pmf, level, kind)
        name = f"{100 * level:g}"
        columns[f"coverage_{name}"] = (lower <= observed) & (observed <= upper)
        below = np.where(lower > 0, cdf[rows_index, np.maximum(lower - 1, 0)], 0.0)
        columns[f"expected_coverage_{name}"] = cdf[rows_index, upper] - below
        columns[f"pit_coverage_{name}"] = np.abs(pit - 0.5) <= 0.5 * level
    labels = np.full(len(observed), "all", dtype=object) if groups is None else np.asarray(groups, dtype=object)
    selections = [("all", np.ones(len(observed), dtype=bool))]
    if groups is not None:
        for label in pd.unique(labels):
            chosen = labels == label
            if chosen.sum() >= min_group:
                selections.append((str(label), chosen))
    records = []
    edges = np.linspace(0.0, 1.0, bins + 1)
    for label, chosen in selections:
        shares = 100.0 * np.histogram(pit[chosen], bins=edges)[0] / chosen.sum()
        record = {"group": label, "customers": int(chosen.sum())}
        record.update({f"pit_{i + 1}": share for i, share in enumerate(shares)})
        record["pit_max_error"] = float(np.max(np.abs(shares - 100.0 / bins)))
        for key, values in columns.items():
            record[key] = 100.0 * float(np.mean(values[chosen]))
        records.append(record)
    return pd.DataFrame.from_records(records).set_index("group")
