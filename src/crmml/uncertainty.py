"""How sure a score is: per-customer purchase and value intervals, P(no purchase) and tier probability.

:class:`ScoreUncertainty` holds what one fitted scorer needs (the transaction model's parameters or
seeded draws of them, the Gamma-Gamma shapes, the horizon) and :meth:`ScoreUncertainty.evaluate`
gives, per customer, the columns :data:`UNCERTAINTY_NUMBERS` over the value horizon:

``p_no_purchase``
    ``P(X = 0 | history)`` from the purchase distribution
    (:mod:`crmml.models.purchase_distribution`): the model's ``probability_no_purchase`` over the
    value horizon, or with parameter draws its mean over the draws.
``purchases_lower``, ``purchases_upper``
    The equal-tailed ``level`` interval of the count: the smallest ``k`` with ``F(k) > (1 - level)/2``
    and the smallest with ``F(k) >= (1 + level)/2``
    (:func:`~crmml.models.purchase_distribution.purchase_interval`).
``value_lower``, ``value_upper``
    The ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of the customer's value.
``tier_probability``
    ``P(value in the range of the tier the customer was assigned)``
    (:meth:`crmml.pyramid.TierRule.value_bounds`: value bands and, for lead, margin and cost to serve).

The value distribution
----------------------
Given ``k`` purchases in the horizon, their total spend under the Gamma-Gamma model (Fader, Hardie
& Lee 2005, "RFM and CLV: Using Iso-Value Curves for Customer Base Analysis", *JMR* 42(4); Hardie's
note "The Gamma-Gamma Model of Monetary Value", 2013) is a compound gamma: each transaction is
``Gamma(p, nu)``, so ``k`` of them sum to ``Gamma(p k, nu)``, and the customer's ``nu`` given ``x``
repeat transactions of mean ``m`` is ``Gamma(q' = q + p x, gamma' = gamma + x m)`` (the note's
posterior, from which its eq. 5 is the mean). Integrating ``nu`` out, ``S_k / gamma'`` is beta-prime
``(p k, q')``, i.e.::

    P(S_k <= c | k) = I_{c / (c + gamma')}(p k, q')            (regularised incomplete beta)

with mean ``k p gamma' / (q' - 1)``: ``k`` times the note's eq. 5. The customer's total spend is the
mixture over ``k`` with the purchase PMF (an atom ``P(X = 0)`` at 0). Its shape per unit of
``gamma'`` depends only on ``(x, t_x, T)``, so it is evaluated once per distinct history.

The scorer's ``predicted_value`` is the discounted spend of the shipped value model (a learner or
the BTYD product ``E[X] E[Z]``; :mod:`crmml.scorer`). The value distribution is this BTYD /
Gamma-Gamma distribution rescaled so that its mean is ``predicted_value``: the shipped model sets the
level (discounting, learner), the BTYD and spend models the shape (relative spread, the atom at 0).
So ``value / predicted_value`` is ``S / E[S]`` and the intervals and tier probability are consistent
with the value the tier was assigned from.

Evaluation
----------
Each row keeps ``k <= K``, ``K`` the smallest count with ``P(X <= K) >= 1 - tail``, and of those
all but the end terms totalling at most ``tail/2`` at each end; a history whose ``K`` exceeds
:data:`MAX_HORIZON_PURCHASES` gets NaN columns (and the scorer a reason). The incomplete beta functions ``I_u(p k, q + p x)`` are
tabulated per ``(x, k)`` on a logit grid and interpolated (error below 1e-4; :class:`_BetaCdfTable`,
kept with the scorer's constants and grown as new histories come). The quantiles are found per
distinct history by safeguarded Newton steps on ``u = w / (1 + w)`` (the beta variable), started
from the beta-prime with the mixture's first two moments, to a CDF within 2e-5 of the level; the
tier probability is one or two CDF evaluations per customer. A transaction model without a purchase distribution (the covariate
models, ...) or ``columns: false`` gives NaN columns and no flag (:attr:`ScoreUncertainty.reason`
says why); without a spend model the value columns are NaN.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import special

from crmml.models.purchase_distribution import (
    _SMALL,
    _chunks,
    _distinct,
    _mixture_pmf,
    _upper_counts,
    purchase_interval,
    supported,
)
from crmml.pyramid import TIER_NAMES
from crmml.reasons import Reasons, formatted

__all__ = ["MAX_HORIZON_PURCHASES", "UNCERTAINTY_NUMBERS", "ScoreUncertainty", "UncertaintyConfig", "uncertainty_flag"]

#: The float columns the uncertainty adds to a score row, in order.
UNCERTAINTY_NUMBERS = ("p_no_purchase", "purchases_lower", "purchases_upper", "value_lower", "value_upper",
                       "tier_probability")
#: A history whose purchase distribution over the horizon reaches beyond this many purchases (its
#: ``K`` below) gets NaN uncertainty columns and a reason: its PMF and beta terms would cost seconds
#: to minutes (x = 100,000 over ten periods reached K = 366,577 and took 105 s), and such a customer
#: is a data question, not a forecast. At the cap a history took 1.9 s the first time (the beta CDF
#: table grows) and 7 ms after (the one-customer benchmark scorer).
MAX_HORIZON_PURCHASES = 10_000
#: Newton steps before a quantile is given up as not found (NaN); a few suffice in practice.
_MAX_STEPS = 60
#: A quantile is found when the CDF is within this of its level.
_CDF_TOLERANCE = 2e-5
#: ``log w = logit u`` is kept inside these (``u`` from 1e-300 to 1 - 1e-16, as a double holds it).
_Y_MIN, _Y_MAX = float(np.log(1e-300)), float(-np.log(1e-16))


@dataclass(frozen=True)
class UncertaintyConfig:
    """The ``uncertainty:`` section of the scorer config.

    Parameters
    ----------
    columns : bool
        Compute the columns (default True). False leaves them empty (NaN, no flag) for jobs that do not
        need them: on a large batch they add about 1.6 times what the rest of scoring takes
        (``benchmarks/bench_uncertainty.py``).
    level : float
        Level of the purchase and value intervals, in (0, 1) (default 0.8: the 10th to 90th percentile).
    tier_uncertain_below : float
        ``tier_uncertain`` is set when ``tier_probability`` is below this, in [0, 1]; 0 (the default)
        turns the flag off. Off by default because a horizon's realised value is mostly its atom at 0:
        on the 1M-customer benchmark base (BG/NBD, one-year horizon) P(no purchase) is at least 0.5
        for 82 % of customers, the median ``tier_probability`` is 0.17, and a level of 0.5 flagged
        67 % of customers (99.5 % of gold, 99.9 % of iron) -- a flag on everyone tells no one
        anything. Set it where the value bands are wide against the value's spread.
    parameter_draws : int
        Draws of the transaction model's parameters mixed into each customer's distribution
        (:mod:`crmml.models.parameter_uncertainty`); 0 (default) uses the point estimate.
    seed : int
        Seed of the draws.
    tail : float
        Probability left out of each customer's distribution, in (0, 0.01] (default 1e-4).
    """

    columns: bool = True
    level: float = 0.8
    tier_uncertain_below: float = 0.0
    parameter_draws: int = 0
    seed: int = 0
    tail: float = 1e-4

    def __post_init__(self) -> None:
        def number(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"uncertainty.{name} must be a number; got {value!r}.")
            return value

        if not isinstance(self.columns, (bool, np.bool_)):
            raise ValueError(f"uncertainty.columns must be true or false; got {self.columns!r}.")
        object.__setattr__(self, "columns", bool(self.columns))
        if not 0 < number("level") < 1:
            raise ValueError(f"uncertainty.level must be in (0, 1), e.g. 0.8; got {self.level!r}.")
        if not 0 <= number("tier_uncertain_below") <= 1:
            raise ValueError(f"uncertainty.tier_uncertain_below must be in [0, 1]; got {self.tier_uncertain_below!r}.")
        for name in ("parameter_draws", "seed"):
            value = number(name)
            if value != int(value) or value < 0:
                raise ValueError(f"uncertainty.{name} must be a whole number >= 0; got {value!r}.")
            object.__setattr__(self, name, int(value))
        if not 0 < number("tail") <= 0.01:
            raise ValueError(f"uncertainty.tail must be in (0, 0.01]; got {self.tail!r}.")
        if 2 * self.tail >= (1 - self.level) / 2:
            raise ValueError(f"uncertainty.tail ({self.tail:g}) must be below (1 - level)/4 "
                             f"({(1 - self.level) / 4:g}): the interval's quantiles need the mass that the "
                             "count's cut and the terms left out (each up to tail) may take.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> UncertaintyConfig:
        known = {f.name for f in fields(cls)}
        extra = sorted(set(values) - known)
        if extra:
            raise ValueError(f"Unknown key(s) {extra} in config section 'uncertainty'; known keys: {sorted(known)}.")
        return cls(**values)


class ScoreUncertainty:
    """A scorer's uncertainty columns (see the module docstring), its per-model constants computed once.

    Parameters
    ----------
    transaction_model : fitted BTYD model
    spend_model : fitted GammaGamma or None
    horizon : float
        The value horizon in the transaction model's time units.
    config : UncertaintyConfig

    Attributes
    ----------
    reason : str or None
        Why there are no uncertainty columns (NaN), or None.
    draws_reason : str or None
        Why the parameters were not drawn although ``parameter_draws`` asked for it, or None.
    """

    def __init__(self, transaction_model, spend_model, horizon: float, config: UncertaintyConfig):
        self.config, self.horizon, self.model = config, float(horizon), transaction_model
        self.reason = self.draws_reason = None
        self.shapes = None  # Gamma-Gamma (p, q)
        self._table_lock = threading.Lock()
        if not config.columns:
            self.reason = "turned off (uncertainty.columns: false)"
            return
        if not supported(transaction_model):
            self.reason = (f"the transaction model ({type(transaction_model).__name__}) has no purchase "
                           "distribution")
            return
        if config.parameter_draws > 0:
            from crmml.models.parameter_uncertainty import draw_parameters

            drawn = draw_parameters(transaction_model, config.parameter_draws, config.seed)
            self.draws, self.draws_reason = drawn.params, drawn.reason
        else:
            self.draws = transaction_model._params()[None, :]
        if spend_model is not None:
            p, q = (float(v) for v in np.asarray(spend_model._params(), dtype=float)[:2])
            self.shapes = (p, q)
            self.table = _BetaCdfTable(p, q)  # grows with the histories scored (not saved with the scorer)
        low, high = 0.5 * (1.0 - config.level), 0.5 * (1.0 + config.level)
        self.levels = np.array([low, high])
        self.x_within_reach = self._largest_x_within_reach()

    def _largest_x_within_reach(self) -> float:
        """The largest ``x`` whose count stays within reach even at ``T = 0``: the upper count grows
        with ``x`` and falls with ``T`` (:func:`_upper_counts`), so no row with ``x`` up to this needs
        its own check (-1 when even ``x = 0`` does not stay within reach)."""
        def within(x: float) -> bool:
            upper = _upper_counts(self.draws, np.array([x]), np.zeros(1), self.horizon, self.config.tail)
            return bool(upper[0] <= MAX_HORIZON_PURCHASES)

        if not within(0.0):
            return -1.0
        low, high = 0.0, 2.0**40
        if within(high):
            return high
        while high - low > 1:
            middle = float(np.floor(0.5 * (low + high)))
            low, high = (middle, high) if within(middle) else (low, middle)
        return low

    def beyond_reach(self, x, T) -> np.ndarray:
        """Rows whose purchase distribution over the horizon reaches beyond :data:`MAX_HORIZON_PURCHASES`
        (their columns are NaN; empty when the model has no purchase distribution).

        Parameters
        ----------
        x, T : arrays of shape (n,)
            Repeat purchases and age in the model's time units.
        """
        x, T = (np.asarray(v, dtype=float) for v in (x, T))
        beyond = np.zeros(len(x), dtype=bool)
        if self.reason is not None:
            return beyond
        candidates = np.flatnonzero(~(x <= self.x_within_reach))  # (most batches: none)
        if candidates.size:
            first, inverse = _distinct([x[candidates], T[candidates]])
            upper = _upper_counts(self.draws, x[candidates][first], T[candidates][first], self.horizon,
                                  self.config.tail)
            beyond[candidates] = (upper > MAX_HORIZON_PURCHASES)[inverse]
        return beyond

    def evaluate(self, x, t_x, T, predicted_value, low, low_closed, high, high_closed,
                 beyond=None) -> dict[str, np.ndarray]:
        """The columns :data:`UNCERTAINTY_NUMBERS` per customer.

        Parameters
        ----------
        x, t_x, T : arrays of shape (n,)
            Repeat purchases, recency and age in the model's time units (the BTYD summary).
        predicted_value : array of shape (n,)
            The scorer's value, the mean of the value distribution.
        low, low_closed, high, high_closed : arrays of shape (n,)
            The assigned tier's value range (:meth:`crmml.pyramid.TierRule.value_bounds`).
        beyond : bool array of shape (n,), optional
            :meth:`beyond_reach` if already known (computed otherwise): those rows are NaN.
        """
        n = len(x)
        out = {name: np.full(n, np.nan) for name in UNCERTAINTY_NUMBERS}
        if self.reason is not None or n == 0:
            return out
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        beyond = self.beyond_reach(x, T) if beyond is None else np.asarray(beyond, dtype=bool)
        if beyond.any():  # those rows stay NaN; the others are evaluated as if alone
            kept = ~beyond
            if kept.any():
                part = self.evaluate(*(np.asarray(v)[kept] for v in (x, t_x, T, predicted_value, low, low_closed,
                                                                      high, high_closed)),
                                     beyond=np.zeros(int(kept.sum()), dtype=bool))
                for name in UNCERTAINTY_NUMBERS:
                    out[name][kept] = part[name]
            return out
        first, inverse = _distinct([x, t_x, T])
        distinct = _Distinct(len(first))
        if len(first) <= _SMALL:  # a request's few customers: one PMF, without the chunking's bookkeeping
            upper = _upper_counts(self.draws, x[first], T[first], self.horizon, self.config.tail)
            pmf = _mixture_pmf(self.model, self.draws, x[first], t_x[first], T[first], self.horizon, int(upper.max()))
            distinct.add(np.arange(len(first)), pmf, self.config.level, self.config.tail)
        else:
            for rows, pmf in _chunks(self.model, self.draws, x[first], t_x[first], T[first], self.horizon, None,
                                     self.config.tail):
                distinct.add(rows, pmf, self.config.level, self.config.tail)
        out["p_no_purchase"] = distinct.p_none[inverse]
        out["purchases_lower"] = distinct.lower[inverse].astype(float)
        out["purchases_upper"] = distinct.upper[inverse].astype(float)
        if self.shapes is None:
            return out
        value = np.asarray(predicted_value, dtype=float)
        with self._table_lock:  # the table grows (or starts afresh) under a caller's rows: one caller at a time
            spend = _SpendMixture(distinct, x[first], self.table)
            quantiles = spend.relative_quantiles(self.levels)  # (distinct rows, 2): value / predicted value
            out["tier_probability"] = spend.tier_probability(inverse, value, low, low_closed, high, high_closed)
        out["value_lower"] = value * quantiles[inverse, 0]
        out["value_upper"] = value * quantiles[inverse, 1]
        return out


class _Distinct:
    """Per distinct history: P(X = 0), the count interval, E[X] and the PMF terms ``1 <= k <= K`` but those
    at either end totalling at most ``tail/2`` each, sorted by row (pair arrays ``row``, ``k``, ``mass``).

    ``K``, the row's own largest count, is the smallest with ``P(X <= K) >= 1 - tail``: it depends on the
    row's own PMF only, not on how many columns its chunk evaluated, so a row does not depend on its batch.
    """

    def __init__(self, n: int):
        self.p_none, self.mean = np.empty(n), np.empty(n)
        self.lower, self.upper = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        self._pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, rows: np.ndarray, pmf: np.ndarray, level: float, tail: float) -> None:
        self.p_none[rows] = pmf[:, 0]
        cdf = np.cumsum(pmf, axis=1)
        upper = np.minimum(np.sum(cdf < 1.0 - tail, axis=1), pmf.shape[1] - 1)[:, None]
        counts = np.arange(pmf.shape[1], dtype=float)
        own = np.where(counts[None, :] <= upper, pmf, 0.0)
        self.mean[rows] = own @ counts
        self.lower[rows], self.upper[rows] = purchase_interval(own, level, "equal-tailed")
        terms = own[:, 1:]
        # Leave out each row's end terms (k from 1 up, and from K down) while each end's total stays
        # within tail/2: for the unimodal PMFs of these models those are its smallest terms. (A
        # spread-out PMF of thousands of counts has every term below ``tail``: a threshold on single
        # terms would leave out most of its mass and its upper quantiles would not exist.)
        from_below = np.cumsum(terms, axis=1)
        from_above = np.cumsum(terms[:, ::-1], axis=1)[:, ::-1]
        at_row, at_k = np.nonzero((from_below > 0.5 * tail) & (from_above > 0.5 * tail) & (terms > 0))
        self._pairs.append((rows[at_row], at_k + 1.0, own[at_row, at_k + 1]))

    def pairs(self):
        row, k, mass = (np.concatenate(parts) for parts in zip(*self._pairs, strict=True))
        if np.any(row[1:] < row[:-1]):  # (chunks hold their rows in their own order)
            order = np.argsort(row, kind="stable")
            row, k, mass = row[order], k[order], mass[order]
        return row, k, mass


class _BetaCdfTable:
    """``I_u(p k, q + p x)`` tabulated per ``(x, k)`` for fast evaluation, grown on demand.

    Each row is the CDF on a grid of ``z = (logit u - m) / s`` from -10 to 10 in steps of 0.05, with
    ``m``, ``s`` the mean and standard deviation of ``logit U`` for ``U ~ Beta(a, b)`` (``psi(a) - psi(b)``
    and ``sqrt(psi'(a) + psi'(b))``), and evaluated by linear interpolation: the CDF of ``logit U`` is
    close to normal, so the interpolation error is below about ``h^2/8 max|F''| < 1e-4`` (checked
    against :func:`scipy.special.betainc` in the tests); outside the grid it is 0 or 1. The rows of one
    ``x`` are contiguous in ``k``; those of ``x <= 20``, ``k <= 20`` are made at once.
    """

    _Z, _N = 10.0, 401
    #: Rows kept between calls (about 80 MB): a table past this starts afresh at the next call, so a
    #: long-running service fed ever new large histories does not grow without bound. A row's values
    #: depend on its ``(x, k)`` only, so starting afresh changes no number.
    ROWS_KEPT = 25_000

    def __init__(self, p: float, q: float):
        self.p, self.q = p, q
        self.h = 2 * self._Z / (self._N - 1)
        self.z = np.linspace(-self._Z, self._Z, self._N)
        self._start_afresh()
        self.base(np.arange(21, dtype=float), np.full(21, 20))

    def _start_afresh(self) -> None:
        self.values = np.empty((0, self._N))
        self.m, self.s = np.empty(0), np.empty(0)
        self.scale, self.offset = np.empty(0), np.empty(0)
        self.blocks: dict[float, tuple[int, int]] = {}  # x -> (first row, rows)

    def base(self, xs: np.ndarray, k_max: np.ndarray) -> np.ndarray:
        """The row of ``k = 1`` for each distinct ``x`` of ``xs``, its rows made up to ``k_max``."""
        if len(self.m) > self.ROWS_KEPT:
            self._start_afresh()
        out = np.empty(len(xs), dtype=np.int64)
        new_values, new_m, new_s = [], [], []
        next_row = len(self.m)
        for i, (x, needed) in enumerate(zip(xs.tolist(), np.asarray(k_max).tolist(), strict=True)):
            first, rows = self.blocks.get(x, (0, 0))
            if rows < needed:
                rows = max(int(needed), 2 * rows, 20)
                a = self.p * np.arange(1, rows + 1, dtype=float)
                b = self.q + self.p * x
                m = special.digamma(a) - special.digamma(b)
                s = np.sqrt(special.polygamma(1, a) + special.polygamma(1, b))
                u = special.expit(m[:, None] + s[:, None] * self.z[None, :])
                new_values.append(special.betainc(a[:, None], b, u))
                new_m.append(m)
                new_s.append(s)
                first = next_row
                next_row += rows
                self.blocks[x] = (first, rows)
            out[i] = first
        if new_values:
            self.values = np.concatenate([self.values, *new_values])
            self.m, self.s = np.concatenate([self.m, *new_m]), np.concatenate([self.s, *new_s])
            # The grid position of logit u is ``logit u * scale + offset`` (one multiply-add per term).
            self.scale = 1.0 / (self.s * self.h)
            self.offset = (self._Z - self.m / self.s) / self.h
        return out

    def cdf(self, ids: np.ndarray, logit_u: np.ndarray, density: bool):
        """``I_u`` of the rows ``ids`` at ``logit u`` (``log w`` for ``u = w/(1+w)``), and with
        ``density`` its derivative in ``logit u``."""
        scale = self.scale[ids]
        position = logit_u * scale + self.offset[ids]
        j = np.clip(position, 0, self._N - 2).astype(np.int64)
        flat = ids * self._N + j
        table = self.values.ravel()
        low = table[flat]
        step = table[flat + 1] - low
        inside = (position >= 0) & (position <= self._N - 1)
        value = np.where(inside, low + (position - j) * step, np.where(position > 0, 1.0, 0.0))
        if not density:
            return value, None
        return value, np.where(inside, step * scale, 0.0)


class _SpendMixture:
    """The distribution of ``W = S / gamma'`` per distinct history: an atom ``P(X = 0)`` at 0 and
    ``sum_k P(X = k) BetaPrime(p k, q + p x)`` (module docstring); in units of its mean ``E[W]``."""

    def __init__(self, distinct: _Distinct, x: np.ndarray, table: _BetaCdfTable):
        p, q = table.p, table.q
        self.table = table
        self.p_none = distinct.p_none
        q_post = q + p * x
        row, k, self.mass = distinct.pairs()
        self.start = np.searchsorted(row, np.arange(len(x) + 1))  # pairs of row j: start[j]:start[j+1]
        # Table rows: per distinct x, rows up to its largest k (pairs are sorted by k within a row).
        has = self.start[1:] > self.start[:-1]
        xs, x_index = np.unique(x, return_inverse=True)
        k_max = np.zeros(len(xs), dtype=np.int64)
        np.maximum.at(k_max, x_index[has], k[self.start[1:][has] - 1].astype(np.int64))
        base = table.base(xs, k_max)
        self.ids = base[x_index[row]] + k.astype(np.int64) - 1
        self.mean = np.divide(distinct.mean * p, q_post - 1.0, out=np.full(len(x), np.nan), where=q_post > 1.0)
        # The Newton start: the beta-prime with the mixture's first two moments given a purchase
        # (E[W | k] = p k / (q' - 1), E[W^2 | k] = p k (p k + 1) / ((q' - 1)(q' - 2))); for q' <= 2
        # (no variance) the beta-prime of the mean count.
        a, b = p * k, q_post[row]
        weight = np.bincount(row, self.mass, minlength=len(x))
        with np.errstate(divide="ignore", invalid="ignore"):
            first = np.bincount(row, self.mass * a / (b - 1.0), minlength=len(x)) / weight
            second = np.bincount(row, self.mass * a * (a + 1.0) / ((b - 1.0) * (b - 2.0)), minlength=len(x)) / weight
            variance = second - first**2
            start_b = 2.0 + first * (first + 1.0) / variance
            start_a = first * (start_b - 1.0)
        mean_count = np.divide(distinct.mean, 1.0 - distinct.p_none, out=np.ones(len(x)), where=distinct.p_none < 1.0)
        usable = (q_post > 2.0) & np.isfinite(start_a) & np.isfinite(start_b) & (start_a > 0) & (variance > 0)
        self.start_shapes = (np.where(usable, start_a, p * mean_count), np.where(usable, start_b, q_post))
        self.p, self.q_post = p, q_post

    def _expand(self, rows: np.ndarray):
        """The pair positions of each target's row and the target of each pair."""
        counts = self.start[rows + 1] - self.start[rows]
        target = np.repeat(np.arange(len(rows)), counts)
        first = np.repeat(self.start[rows] - np.cumsum(counts) + counts, counts)
        return first + np.arange(len(target)), target

    def _continuous(self, rows: np.ndarray, log_w: np.ndarray, density: bool = False, expanded=None):
        """``sum_{k>=1} P(X=k) I_u(p k, q')``, ``u = w/(1+w)``, for targets of rows ``rows`` at ``log w``
        (and its ``log w``-derivative); ``expanded`` is :meth:`_expand` of ``rows`` if already made."""
        at, target = self._expand(rows) if expanded is None else expanded
        weighted = self.mass[at]
        value, slope = self.table.cdf(self.ids[at], log_w[target], density)
        cdf = np.bincount(target, weighted * value, minlength=len(rows))
        if not density:
            return cdf, None
        return cdf, np.bincount(target, weighted * slope, minlength=len(rows))

    def relative_quantiles(self, levels: np.ndarray) -> np.ndarray:
        """Quantiles of ``W / E[W]`` at ``levels`` per distinct row, shape (rows, len(levels))."""
        n_rows = len(self.p_none)
        rows = np.repeat(np.arange(n_rows), len(levels))
        target = np.tile(levels, n_rows)
        w = np.zeros(len(rows))
        todo = np.flatnonzero(self.p_none[rows] < target)  # the others are 0 (the atom holds the level)
        if todo.size:
            w[todo] = self._solve(rows[todo], target[todo])
        relative = np.divide(w, self.mean[rows], out=np.where(np.isnan(self.mean[rows]), np.nan, 0.0),
                             where=self.mean[rows] > 0)  # (a mean of 0: no purchase possible, all at 0)
        return relative.reshape(n_rows, len(levels))

    def _solve(self, rows: np.ndarray, target: np.ndarray) -> np.ndarray:
        """``w`` with ``P(W <= w) = target`` by Newton steps on ``y = log w = logit u`` (where the CDF is
        closer to linear) kept inside a bracket."""
        # Start: the moment-matched beta-prime (``__init__``) at the level left above the atom.
        inner = (target - self.p_none[rows]) / (1.0 - self.p_none[rows])
        u = special.betaincinv(self.start_shapes[0][rows], self.start_shapes[1][rows], inner)
        with np.errstate(divide="ignore"):  # (u of 0 or 1: the clip's ends)
            y = np.clip(np.log(u) - np.log1p(-u), _Y_MIN, _Y_MAX)
        lo, hi = np.full(len(rows), _Y_MIN), np.full(len(rows), _Y_MAX)
        found = np.full(len(rows), np.nan)
        active = np.arange(len(rows))
        expanded = self._expand(rows)
        p_none, target = self.p_none[rows], target.copy()
        for _ in range(_MAX_STEPS):
            cdf, slope = self._continuous(rows, y, density=True, expanded=expanded)
            error = p_none + cdf - target
            done = np.abs(error) <= _CDF_TOLERANCE
            above = error > 0
            hi = np.where(above, y, hi)
            lo = np.where(above, lo, y)
            step = y - np.divide(error, slope, out=np.full(len(y), np.inf), where=slope > 0)
            inside = (step > lo) & (step < hi)
            stop = done | (hi - lo <= 1e-12)  # a bracket closed without the level: not found (NaN)
            found[active[done]] = y[done]
            y = np.where(inside, step, 0.5 * (lo + hi))
            if stop.all():
                break
            if stop.any():
                keep = ~stop
                active, y, lo, hi, rows = active[keep], y[keep], lo[keep], hi[keep], rows[keep]
                p_none, target = p_none[keep], target[keep]
                expanded = self._expand(rows)
        return np.exp(found)

    def cdf(self, rows: np.ndarray, relative: np.ndarray, closed: np.ndarray) -> np.ndarray:
        """``P(W/E[W] <= relative)`` (``<`` where not ``closed``) per target of row ``rows``."""
        out = np.where(relative >= np.inf, 1.0, 0.0)
        out = np.where((relative == 0) & closed, self.p_none[rows], out)
        inner = np.flatnonzero((relative > 0) & (relative < np.inf))
        if inner.size:
            with np.errstate(divide="ignore"):  # (a mean of 0: log w of -inf, the clip's lower end)
                log_w = np.log(relative[inner] * self.mean[rows[inner]])
            continuous, _ = self._continuous(rows[inner], np.clip(log_w, _Y_MIN, _Y_MAX))
            out[inner] = self.p_none[rows[inner]] + continuous
        return np.where(np.isnan(relative), np.nan, out)

    def tier_probability(self, rows, value, low, low_closed, high, high_closed) -> np.ndarray:
        """``P(value in the tier's range)`` per customer (the value distribution's mean is ``value``)."""
        n = len(rows)
        bounds, values = np.concatenate([high, low]), np.concatenate([value, value])
        relative = np.divide(bounds, values, out=np.full(2 * n, np.nan), where=values > 0)
        closed = np.concatenate([np.asarray(high_closed, bool), ~np.asarray(low_closed, bool)])
        both = self.cdf(np.concatenate([rows, rows]), relative, closed)
        probability = np.clip(both[:n] - both[n:], 0.0, 1.0)
        # A value of 0 is 0 with certainty (the scale is 0): its tier holds it.
        probability = np.where(value == 0, 1.0, probability)
        return np.where(np.isfinite(value) & (value >= 0), probability, np.nan)


def uncertainty_flag(columns: dict, tier: np.ndarray, config: UncertaintyConfig, reasons: Reasons) -> np.ndarray:
    """``tier_uncertain``: ``tier_probability`` below ``config.tier_uncertain_below`` (never where it is
    NaN), with its reason added to ``reasons`` in words.

    Parameters
    ----------
    columns : dict
        :meth:`ScoreUncertainty.evaluate`'s columns.
    tier : array of tier codes (positions in :data:`crmml.pyramid.TIERS`)
    config : UncertaintyConfig
    reasons : Reasons
        The score's reasons; the flag's sentences are appended.
    """
    probability = columns["tier_probability"]
    with np.errstate(invalid="ignore"):
        flag = probability < config.tier_uncertain_below
    below, percent = f"{config.tier_uncertain_below:.2f}", f"{100 * config.level:g} %"
    lower, upper = columns["value_lower"], columns["value_upper"]

    def render(at: np.ndarray) -> list[str]:
        return [
            f"{name} tier uncertain: the value lies in the {name} range with probability {p_i} (below {below}), "
            f"{percent} interval {lo_i} to {hi_i}"
            for name, p_i, lo_i, hi_i in zip(TIER_NAMES[tier[at]], formatted(probability[at], ".2f"),
                                             formatted(lower[at], ",.2f"), formatted(upper[at], ",.2f"), strict=True)
        ]

    reasons.add(flag, render)
    return flag
