"""Charts of the per-customer purchase distributions on a holdout (issue 20, item 4).

Same conventions as :mod:`crmml.plots`: each function builds a pyplot-free
:class:`matplotlib.figure.Figure` on an Agg canvas, returns it and, with ``path``, writes a PNG;
matplotlib is imported only when a chart is drawn.

- :func:`plot_interval_calibration`: nominal against observed coverage of the purchase intervals by
  calibration-frequency group, and the histogram of the randomised PIT
  (:func:`crmml.holdout_intervals.interval_coverage`, :func:`~crmml.holdout_intervals.holdout_pit`;
  Czado, Gneiting & Held 2009, "Predictive Model Assessment for Count Data", *Biometrics* 65, Figure 1);
- :func:`plot_purchase_fan`: the cohort's cumulative purchases, actual against the model's mean and
  its predictive bands (:func:`crmml.holdout_intervals.cohort_band`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from crmml.errors import DataValidationError
from crmml.plots import _finish, _new_figure

__all__ = ["plot_interval_calibration", "plot_purchase_fan"]

_COVERAGE_COLUMNS = ("customers", "nominal", "randomized", "observed", "expected")


def plot_interval_calibration(coverage: pd.DataFrame, pit, *, bins: int = 10, tolerance: float = 3.0,
                              path: str | os.PathLike | None = None):
    """Coverage of the purchase intervals by group, and the randomised PIT's histogram.

    Parameters
    ----------
    coverage : pandas.DataFrame
        :func:`crmml.holdout_intervals.interval_coverage`: indexed by ``(group, level)`` with columns
        ``customers``, ``nominal``, ``randomized``, ``observed``, ``expected`` (percent); group
        ``"all"`` first.
    pit : array-like of float
        The randomised PITs of all customers (values in [0, 1]).
    bins : int
        Histogram bins.
    tolerance : float
        Half-width in percentage points of the shaded band around the uniform share.
    path : path-like, optional
        Where to write the PNG.

    Returns
    -------
    Figure
        Left axes: one line per group, the randomised intervals' observed coverage against the nominal
        level (on the diagonal when calibrated), plus the integer intervals of all customers, observed
        (squares) and what a calibrated model would cover (crosses). Right axes: the share of PITs per
        bin in percent, a line at ``100 / bins`` and the band ``+/- tolerance``.
    """
    missing = [c for c in _COVERAGE_COLUMNS if c not in coverage.columns]
    if missing:
        raise DataValidationError(f"Required column {missing[0]} missing from the coverage table "
                                  "(plot_interval_calibration).")
    if not isinstance(coverage.index, pd.MultiIndex) or "all" not in coverage.index.get_level_values(0):
        raise DataValidationError("The coverage table must be indexed by (group, level) with an 'all' group "
                                  "(plot_interval_calibration).")
    values = np.asarray(pit, dtype=float)
    if values.size == 0 or np.any(~np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise ValueError("pit must be a non-empty array of values in [0, 1] (plot_interval_calibration).")
    fig, (ax_coverage, ax_pit) = _new_figure(2, width=5.5)
    ax_coverage.plot([0, 100], [0, 100], color="grey", linestyle=":", linewidth=1, label="calibrated")
    for group in dict.fromkeys(coverage.index.get_level_values(0)):
        rows = coverage.loc[group]
        label = f"{'all customers' if group == 'all' else 'frequency ' + str(group)} ({int(rows['customers'].iloc[0]):,})"
        ax_coverage.plot(rows["nominal"], rows["randomized"], marker="o", markersize=4,
                         linewidth=2.2 if group == "all" else 1.0, label=label)
    overall = coverage.loc["all"]
    ax_coverage.scatter(overall["nominal"], overall["observed"], marker="s", color="black", zorder=3,
                        label="integer intervals, observed")
    ax_coverage.scatter(overall["nominal"], overall["expected"], marker="x", color="red", zorder=3,
                        label="integer intervals, if calibrated")
    low = float(min(coverage["nominal"].min(), coverage["randomized"].min())) - 5
    ax_coverage.set(xlim=(low, 100), ylim=(low, 100), xlabel="Nominal level (%)", ylabel="Observed coverage (%)",
                    title="Purchase intervals on the holdout")
    ax_coverage.legend(fontsize=7, loc="upper left")
    edges = np.linspace(0.0, 1.0, bins + 1)
    shares = 100.0 * np.histogram(values, bins=edges)[0] / values.size
    uniform = 100.0 / bins
    ax_pit.bar(edges[:-1], shares, width=1.0 / bins, align="edge", edgecolor="white", alpha=0.8, label="holdout")
    ax_pit.axhspan(uniform - tolerance, uniform + tolerance, color="grey", alpha=0.3, zorder=3,
                   label=f"uniform +/- {tolerance:g} points")
    ax_pit.axhline(uniform, color="black", linestyle="--", linewidth=1, zorder=4)
    ax_pit.set(xlim=(0, 1), ylim=(0, max(shares.max(), uniform + tolerance) * 1.15),
               xlabel="Randomised PIT", ylabel="Share of customers (%)",
               title=f"PIT histogram ({values.size:,} customers)")
    ax_pit.legend(fontsize=7, loc="lower right")
    return _finish(fig, path)


def plot_purchase_fan(times, expected, actual, bands: Mapping[str, tuple], *,
                      path: str | os.PathLike | None = None):
    """Cumulative purchases of a cohort: the model's mean with its predictive bands, and the actual curve.

    Parameters
    ----------
    times : array-like
        Time points (numbers or dates).
    expected, actual : array-like of float
        The model's mean and the actual cumulative purchases at each time point.
    bands : mapping of label to (lower, upper)
        Predictive bands, widest first (e.g. ``{"95 %": (lo95, hi95), "80 %": (lo80, hi80)}``).
    path : path-like, optional
        Where to write the PNG.

    Returns
    -------
    Figure
        One axes: shaded bands, the lines "Model (mean)" and "Actual".
    """
    times = np.asarray(times)
    expected = np.asarray(expected, dtype=float)
    actual = np.asarray(actual, dtype=float)
    if not (len(times) == len(expected) == len(actual)) or len(times) == 0:
        raise ValueError("times, expected and actual must be non-empty and equally long (plot_purchase_fan).")
    if not isinstance(bands, Mapping) or not bands:
        raise ValueError("bands must be a non-empty dict of label to (lower, upper) (plot_purchase_fan).")
    fig, ax = _new_figure()
    for (label, (lower, upper)), alpha in zip(bands.items(), np.linspace(0.2, 0.45, len(bands)), strict=True):
        lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
        if lower.shape != expected.shape or upper.shape != expected.shape:
            raise ValueError(f"band {label!r} must have one lower and one upper value per time point "
                             "(plot_purchase_fan).")
        ax.fill_between(times, lower, upper, color="tab:blue", alpha=alpha, linewidth=0, label=f"{label} band")
    ax.plot(times, expected, color="tab:blue", linewidth=1.5, label="Model (mean)")
    ax.plot(times, actual, color="black", linewidth=1.5, label="Actual")
    ax.set(xlabel="Date" if np.issubdtype(times.dtype, np.datetime64) else "Time",
           ylabel="Cumulative purchases", title="Cohort purchases with the model's predictive band")
    ax.legend(loc="upper left")
    if np.issubdtype(times.dtype, np.datetime64):
        fig.autofmt_xdate()
    return _finish(fig, path)
