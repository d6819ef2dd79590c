"""Holdout checks of the per-customer purchase distributions, for the model report (issue 20, item 4).

Three pure computations on a fitted BG/NBD, MBG/NBD or Pareto/NBD model and the calibration summary
``(frequency, recency, T)`` of the customers known at a cutoff:

- :func:`holdout_pit`: each customer's randomised probability integral transform of her holdout
  count, ``F(y-1) + V P(y)`` with ``V ~ U(0, 1)`` (Brockwell 2007; Czado, Gneiting & Held 2009,
  "Predictive Model Assessment for Count Data", *Biometrics* 65, section 2.1), uniform when the
  predictive distributions are the true ones; and, per interval level, whether the count fell in the
  customer's shortest interval (:func:`~crmml.models.purchase_distribution.purchase_interval`, the
  intervals ``crmml score`` reports) and that interval's own probability.
- :func:`interval_coverage`: nominal against observed coverage, overall and per calibration-frequency
  group. Two coverages per level: of the *randomised* central interval (the PIT inside
  ``[(1-level)/2, (1+level)/2]``), which a calibrated model covers exactly ``level`` of the time
  although counts are discrete; and of the integer intervals, which cover at least ``level``
  (``expected``: the mean of their own probabilities, what a calibrated model would show).
- :func:`cohort_band`: the cohort's cumulative purchases by each horizon, as the sum of independent
  customers' counts given the fitted parameters. The mean is the sum of the conditional
  expectations (BG/NBD eq. 10, Pareto/NBD eq. 41, the model's own closed forms); the variance is the
  sum of the customers' variances, from their conditional PMFs
  (:mod:`crmml.models.purchase_distribution`). The band is the normal approximation with those two
  moments: a sum of thousands of independent counts, none of which holds more than a small share of
  the variance, is close to normal (Lyapunov's central limit theorem), and the moments cost one
  active-customer PMF per distinct ``(frequency, T)`` pair and horizon, where an exact convolution
  would cost one per customer. The band holds sampling noise only: it leaves out the uncertainty of
  the parameters and any level error of the model (a season the calibration never saw).

Cost: the PMFs are evaluated once per distinct ``(frequency, recency, T)`` row
(:func:`holdout_pit`) or once per distinct ``(frequency, T)`` pair and horizon
(:func:`cohort_band`, where ``P(alive)`` enters through per-pair sums), never per customer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from crmml.models.base import check_horizon
from crmml.models.pareto_nbd import ParetoNBD
from crmml.models.purchase_distribution import (
    DEFAULT_TAIL,
    _cdf,
    _chunks,
    _distinct,
    _pmf_if_alive,
    _summary_arrays,
    _upper_count,
    conditional_purchase_pmf,
    purchase_interval,
)

__all__ = [
    "FREQUENCY_GROUPS",
    "LEVELS",
    "cohort_band",
    "frequency_groups",
    "holdout_pit",
    "interval_coverage",
    "level_name",
    "pit_bins",
]

#: Interval levels checked on the holdout.
LEVELS = (0.5, 0.8, 0.9, 0.95)
#: Calibration-frequency groups ``(lowest, highest, label)`` (repeat purchases before the cutoff).
FREQUENCY_GROUPS = ((0, 0, "0"), (1, 1, "1"), (2, 2, "2"), (3, 4, "3-4"), (5, 9, "5-9"), (10, np.inf, "10+"))
#: Largest ``pairs * (K + 1)`` active-customer PMF evaluated at once by :func:`cohort_band` (~30 MB).
_CHUNK_ELEMENTS = 4_000_000


def level_name(level: float) -> str:
    """``0.8`` -> ``"80"``: the suffix of the per-level columns."""
    return f"{100 * float(level):g}"


def frequency_groups(frequency) -> np.ndarray:
    """The label of :data:`FREQUENCY_GROUPS` of each calibration-period frequency."""
    frequency = np.asarray(frequency, dtype=float)
    labels = np.empty(len(frequency), dtype=object)
    for low, high, label in FREQUENCY_GROUPS:
        labels[(frequency >= low) & (frequency <= high)] = label
    return labels


def _check_levels(levels) -> tuple[float, ...]:
    levels = tuple(float(v) for v in levels)
    if not levels or not all(0.0 < v < 1.0 for v in levels):
        raise ValueError(f"levels must be one or more numbers strictly between 0 and 1; got {levels!r}.")
    return levels


def _check_counts(observed, n: int) -> np.ndarray:
    y = np.asarray(observed, dtype=float)
    if y.shape != (n,):
        raise ValueError(f"observed must hold one holdout count per customer ({n}); got shape {y.shape}.")
    if np.any(~np.isfinite(y)) or np.any(y < 0) or np.any(y != np.round(y)):
        raise ValueError("observed holdout counts must be non-negative whole numbers.")
    return y.astype(np.int64)


def holdout_pit(model, summary: pd.DataFrame, observed, horizon: float, *, levels=LEVELS, seed: int = 0,
                tail: float = DEFAULT_TAIL) -> pd.DataFrame:
    """Each customer's randomised PIT of her holdout count, and her count against her intervals.

    Parameters
    ----------
    model : BetaGeo, ModifiedBetaGeo or ParetoNBD
        Fitted at the cutoff.
    summary : pandas.DataFrame
        ``frequency``, ``recency``, ``T`` at the cutoff, in the model's time unit.
    observed : array of whole numbers
        Purchases in the holdout ``(T, T + horizon]``, one per row of ``summary``.
    horizon : float
        The holdout's length in the model's time unit.
    levels : sequence of float
        Interval levels.
    seed : int
        Seed of the PIT's uniforms, drawn once in row order (the result does not depend on how the
        distinct histories are batched).
    tail : float
        Probability left beyond the largest count of each batch of distributions; a count beyond it
        gets its exact PMF (those rows are evaluated again up to their count).

    Returns
    -------
    pandas.DataFrame
        Indexed like ``summary``: ``pit``; per level (e.g. 80) ``covered_80`` (bool: the count lies in
        the shortest 80 % interval) and ``interval_mass_80`` (that interval's probability, >= 0.8).
    """
    levels = _check_levels(levels)
    x, t_x, T = _summary_arrays(model, summary)
    y = _check_counts(observed, len(x))
    t = check_horizon(horizon)
    params = model._params()
    first, inverse = _distinct([x, t_x, T])
    n_unique = len(first)
    largest = np.zeros(n_unique, dtype=np.int64)  # K of each distinct row's PMF
    lower = np.zeros((len(levels), n_unique), dtype=np.int64)
    upper = np.zeros((len(levels), n_unique), dtype=np.int64)
    mass = np.zeros((len(levels), n_unique))
    below, at = np.zeros(len(y)), np.zeros(len(y))  # F(y - 1) and P(y) per customer
    order = np.argsort(inverse, kind="stable")  # customers grouped by distinct row
    ends = np.cumsum(np.bincount(inverse, minlength=n_unique))
    for rows, pmf in _chunks(model, params[None, :], x[first], t_x[first], T[first], t, None, tail):
        largest[rows] = pmf.shape[1] - 1
        cdf = _cdf(pmf)
        for i, level in enumerate(levels):
            lo, hi = purchase_interval(pmf, level)
            lower[i, rows], upper[i, rows] = lo, hi
            mass[i, rows] = cdf[np.arange(len(rows)), hi] - np.where(lo > 0, cdf[np.arange(len(rows)), lo - 1], 0.0)
        _fill_pit_terms(pmf, cdf, rows, order, ends, y, below, at)
    beyond = np.flatnonzero(np.bincount(inverse, weights=(y > largest[inverse]), minlength=n_unique) > 0)
    if beyond.size:  # counts past the batch's K (most likely under a poor fit): the exact PMF up to them
        top = np.zeros(n_unique, dtype=np.int64)
        np.maximum.at(top, inverse, y)
        pmf = conditional_purchase_pmf(model, params, x[first][beyond], t_x[first][beyond], T[first][beyond], t,
                                       int(top[beyond].max()))
        _fill_pit_terms(pmf, _cdf(pmf), beyond, order, ends, y, below, at)
    uniforms = np.random.default_rng(seed).uniform(size=len(y))
    out = {"pit": below + uniforms * at}
    for i, level in enumerate(levels):
        name = level_name(level)
        out[f"covered_{name}"] = (lower[i][inverse] <= y) & (y <= upper[i][inverse])
        out[f"interval_mass_{name}"] = mass[i][inverse]
    return pd.DataFrame(out, index=summary.index)


def _fill_pit_terms(pmf, cdf, rows, order, ends, y, below, at) -> None:
    """``F(y-1)`` and ``P(y)`` of the customers of the distinct ``rows`` (PMF rows in that order)."""
    starts = np.concatenate([[0], ends[:-1]])
    sizes = ends[rows] - starts[rows]
    customers = order[np.repeat(starts[rows], sizes) + _ramp(sizes)]
    position = np.repeat(np.arange(len(rows)), sizes)
    K = pmf.shape[1] - 1
    counts = y[customers]
    inside = counts <= K
    below[customers] = np.where(counts > 0, cdf[position, np.clip(counts - 1, 0, K)], 0.0)
    at[customers] = np.where(inside, pmf[position, np.minimum(counts, K)], 0.0)


def _ramp(sizes: np.ndarray) -> np.ndarray:
    """``0..s-1`` for each ``s`` of ``sizes``, concatenated."""
    total = int(sizes.sum())
    return np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def interval_coverage(pit: pd.DataFrame, groups=None, *, levels=LEVELS, min_group: int = 1) -> pd.DataFrame:
    """Nominal against observed coverage, overall and per group, from :func:`holdout_pit`'s frame.

    Parameters
    ----------
    pit : pandas.DataFrame
        :func:`holdout_pit` output (``pit`` and, per level, ``covered_*`` and ``interval_mass_*``).
    groups : array of labels, optional
        One per row (e.g. :func:`frequency_groups`); groups of fewer than ``min_group`` customers are
        left out.
    levels : sequence of float

    Returns
    -------
    pandas.DataFrame
        One row per ``(group, level)`` (``"all"`` first): ``customers``, ``nominal`` (percent),
        ``randomized`` (percent of PITs in the central ``level`` band: the nominal level for a
        calibrated model), ``observed`` (percent of counts inside the integer interval) and
        ``expected`` (the mean probability of those intervals: ``observed`` for a calibrated model).
    """
    levels = _check_levels(levels)
    values = pit["pit"].to_numpy(dtype=float)
    records = []
    for label, chosen in _selections(len(values), groups, min_group):
        for level in levels:
            name = level_name(level)
            records.append({
                "group": label, "level": name, "customers": int(chosen.sum()), "nominal": 100.0 * level,
                "randomized": 100.0 * float(np.mean(np.abs(values[chosen] - 0.5) <= 0.5 * level)),
                "observed": 100.0 * float(np.mean(pit[f"covered_{name}"].to_numpy()[chosen])),
                "expected": 100.0 * float(np.mean(pit[f"interval_mass_{name}"].to_numpy()[chosen])),
            })
    return pd.DataFrame.from_records(records).set_index(["group", "level"])


def pit_bins(pit, groups=None, *, bins: int = 10, min_group: int = 1) -> pd.DataFrame:
    """The randomised PIT's share per bin in percent (``100 / bins`` when calibrated), overall and per group.

    Returns
    -------
    pandas.DataFrame
        One row per group (``"all"`` first, then the groups of :data:`FREQUENCY_GROUPS` present, then
        any other label, each with at least ``min_group`` customers): ``customers``,
        ``pit_1..pit_<bins>`` and ``pit_max_error`` (the largest distance from ``100 / bins``, in points).
    """
    values = np.asarray(pit, dtype=float)
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    records = []
    for label, chosen in _selections(len(values), groups, min_group):
        shares = 100.0 * np.histogram(values[chosen], bins=edges)[0] / max(int(chosen.sum()), 1)
        record = {"group": label, "customers": int(chosen.sum())}
        record.update({f"pit_{i + 1}": share for i, share in enumerate(shares)})
        record["pit_max_error"] = float(np.max(np.abs(shares - 100.0 / bins)))
        records.append(record)
    return pd.DataFrame.from_records(records).set_index("group")


def _selections(n: int, groups, min_group: int) -> list[tuple[str, np.ndarray]]:
    """``("all", every row)`` then ``(label, rows)`` per group of at least ``min_group`` rows."""
    selections = [("all", np.ones(n, dtype=bool))]
    if groups is not None:
        labels = np.asarray(groups, dtype=object)
        if labels.shape != (n,):
            raise ValueError(f"groups must hold one label per row ({n}); got shape {labels.shape}.")
        known = [label for _, _, label in FREQUENCY_GROUPS]
        seen = set(labels)
        present = [g for g in known if g in seen] + [g for g in pd.unique(labels) if g not in known]
        selections += [(str(g), labels == g) for g in present if (labels == g).sum() >= min_group]
    return selections


def cohort_band(model, summary: pd.DataFrame, horizons, *, levels=(0.8, 0.95),
                tail: float = DEFAULT_TAIL) -> pd.DataFrame:
    """The cohort's total purchases by each horizon: mean, standard deviation and normal bands.

    For customer ``i`` with ``P(alive) = p_i`` and active-customer moments ``m1, m2`` of her
    ``(frequency, T)`` pair, ``E[X_i] = p_i m1`` and ``Var X_i = p_i m2 - p_i^2 m1^2``, so the cohort's
    variance is ``sum_pairs (m2 sum p_i - m1^2 sum p_i^2)``: one PMF per pair and horizon. The mean is
    the model's closed-form expectation (see the module docstring).

    Parameters
    ----------
    model : BetaGeo, ModifiedBetaGeo or ParetoNBD
        Fitted.
    summary : pandas.DataFrame
        ``frequency``, ``recency``, ``T`` of the cohort.
    horizons : sequence of float
        Horizons in the model's time unit (cumulative from ``T``).
    levels : sequence of float
        Levels of the central normal bands.
    tail : float
        Probability of each active PMF left beyond its largest count.

    Returns
    -------
    pandas.DataFrame
        One row per horizon: ``horizon``, ``expected``, ``sd`` and per level (e.g. 80) ``lower_80`` and
        ``upper_80`` (``expected -/+ z sd``, the lower floored at 0).
    """
    levels = _check_levels(levels)
    x, t_x, T = _summary_arrays(model, summary)
    params = model._params()
    first, inverse = _distinct([x, t_x, T])
    customers = np.bincount(inverse, minlength=len(first)).astype(float)
    p_alive = model._probability_alive(params, x[first], t_x[first], T[first])
    pair_first, pair_inverse = _distinct([x[first], T[first]])
    x_pair, T_pair = x[first][pair_first], T[first][pair_first]
    alive_sum = np.bincount(pair_inverse, weights=customers * p_alive, minlength=len(pair_first))
    alive_square_sum = np.bincount(pair_inverse, weights=customers * p_alive**2, minlength=len(pair_first))
    horizons = [check_horizon(h) for h in np.atleast_1d(np.asarray(horizons, dtype=float))]
    # The counts grow with the horizon: one upper count per pair, at the longest, serves them all.
    upper = _upper_count(model, params, x_pair, T_pair, max(horizons, default=0.0), tail)
    records = []
    for t in horizons:
        first_moment, second_moment = _active_moments(model, params, x_pair, T_pair, t, upper)
        mean_if_alive = model._expected_if_alive(params, x_pair, T_pair, t)
        variance = float(np.sum(second_moment * alive_sum - first_moment**2 * alive_square_sum))
        records.append({"horizon": t, "expected": float(np.sum(mean_if_alive * alive_sum)),
                        "sd": float(np.sqrt(max(variance, 0.0)))})
    band = pd.DataFrame.from_records(records, columns=["horizon", "expected", "sd"])
    for level in levels:
        z = float(special.ndtri(0.5 + 0.5 * level))
        band[f"lower_{level_name(level)}"] = np.maximum(band["expected"] - z * band["sd"], 0.0)
        band[f"upper_{level_name(level)}"] = band["expected"] + z * band["sd"]
    return band


def _pareto_active_moments(params, x, T, t: float) -> tuple[np.ndarray, np.ndarray]:
    """``E[X]`` and ``E[X^2]`` of active Pareto/NBD customers over ``t``, in closed form.

    Active at ``T``, her rate is ``lambda ~ Gamma(r+x, alpha+T)`` and her remaining lifetime ``tau``
    is exponential with a ``Gamma(s, beta+T)`` rate, independent (Fader & Hardie 2005, "A Note on
    Deriving the Pareto/NBD Model", section 4), so ``tau`` has the survival
    ``G(u) = (1 + u/beta')^-s`` and, ``X`` being Poisson with mean ``lambda min(tau, t)``,
    ``E[X] = E[lambda] E[min(tau, t)]`` and ``E[X^2] = E[X] + E[lambda^2] E[min(tau, t)^2]`` with
    ``E[min(tau, t)] = int_0^t G`` and ``E[min(tau, t)^2] = int_0^t 2u G(u) du``. In ``w = 1 + u/beta'``
    both are ``int_1^W w^-c dw = log W * exprel((1 - c) log W)``, ``W = 1 + t/beta'`` (no cancellation
    at ``c = 1``).
    """
    r, alpha, s, beta = (float(v) for v in params)
    shape, rate, scale = r + x, alpha + T, beta + T
    log_w = np.log1p(t / scale)

    def integral(c):
        return log_w * special.exprel((1.0 - c) * log_w)

    first_moment = shape / rate * scale * integral(s)
    second_moment = first_moment + shape * (shape + 1.0) / rate**2 * 2.0 * scale**2 * (integral(s - 1.0) - integral(s))
    return first_moment, second_moment


def _active_moments(model, params, x, T, t: float, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``E[X]`` and ``E[X^2]`` of active customers of each ``(x, T)`` pair over ``t``: in closed form
    for Pareto/NBD, else from the PMF up to ``upper`` per pair (pairs batched by similar counts)."""
    if isinstance(model, ParetoNBD):
        return _pareto_active_moments(params, x, T, t)
    first_moment, second_moment = np.zeros(len(x)), np.zeros(len(x))
    order = np.argsort(upper, kind="stable")
    start = 0
    while start < len(order):
        K = int(upper[order[start]])
        stop = int(np.searchsorted(upper[order], 2 * K + 8, side="right"))
        stop = min(stop, start + max(1, _CHUNK_ELEMENTS // (int(upper[order[stop - 1]]) + 1)))
        top = int(upper[order[stop - 1]])
        rows = order[start:stop]
        pmf = _pmf_if_alive(model, params, x[rows], T[rows], t, top)
        k = np.arange(top + 1, dtype=float)
        first_moment[rows], second_moment[rows] = pmf @ k, pmf @ (k * k)
        start = stop
    return first_moment, second_moment
