"""At-risk, win-back, lapsed and new flags, with the reasons in words.

Flags
-----
``at_risk``
    Active until recently and now likely to leave: not ``lapsed``, and churn probability (no
    purchase in the churn window) above a threshold chosen at training by a stated rule on the
    training backtest (:meth:`FlagRule.learn`):

    - ``"youden"``: the threshold that maximises Youden's J = TPR - FPR on the backtest cutoff's
      churn labels (Youden 1950, *Cancer* 3(1)); on a high churn base rate it flags most customers;
    - ``"precision"``: the lowest threshold whose flagged customers churned at least
      ``at_risk_precision`` of the time in the backtest (trustworthy flags, fewer of them);
    - ``"share"`` (default, 0.1) / ``"top_k"``: a capacity. The threshold that flags ``at_risk_share`` of the
      training population's customers who can be flagged (not lapsed), or its ``at_risk_top_k``
      likeliest to leave: as many as the retention team can call;
    - ``"fixed"``: ``at_risk_threshold`` as given.

    Whatever the rule, the threshold's **expected precision and recall** are measured on the backtest
    (the customers at the backtest cutoff who were not lapsed there, and whether they bought in the
    churn window after it) and kept in :class:`FlagRule` (``/v1/model``, the report, ``crmml train``).
    Without a backtest (too little history) the data-driven rules fall back to 0.5 and say so.
``high_value_at_risk``
    Platinum or gold and at risk: the win-back list.
``lapsed``
    No purchase for more than ``lapsed_gap_multiple`` (default 3) times the customer's own mean gap
    between purchase days; a one-time buyer is measured against the median gap of the training
    population's repeat customers. Not judged for new customers.
``new``
    Too little history to judge: no purchase yet, or a first purchase fewer than
    ``new_customer_days`` (default 90) days before the as-of date.
``tier_uncertain``
    The probability that the customer's value falls in her tier is below
    ``uncertainty.tier_uncertain_below`` (set by the scorer, :mod:`crmml.uncertainty`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from crmml.customer_rows import GAP_RATIO_CAP
from crmml.reasons import Reasons, formatted

__all__ = ["AT_RISK_RULES", "FLAGS", "FLAG_INPUTS", "FLAG_NAMES", "FlagConfig", "FlagRule", "flag_codes"]

#: ``tier_uncertain`` is set by the scorer from its tier probability (:mod:`crmml.uncertainty`).
FLAGS = ("at_risk", "high_value_at_risk", "lapsed", "new", "tier_uncertain")
#: The names of the flags set, per code of :func:`flag_codes`.
FLAG_NAMES = tuple(tuple(name for bit, name in enumerate(FLAGS) if code >> bit & 1) for code in range(2 ** len(FLAGS)))
_FLAG_TEXTS = np.array([";".join(names) for names in FLAG_NAMES], dtype=object)
AT_RISK_RULES = ("youden", "precision", "share", "top_k", "fixed")
#: Feature columns the flags read besides the churn probability and tier.
FLAG_INPUTS = ("days_since_last_purchase", "mean_gap_days", "age_days")
_FALLBACK_THRESHOLD = 0.5


@dataclass(frozen=True)
class FlagConfig:
    """Flag settings (see the module docstring)."""

    at_risk_rule: str = "share"
    at_risk_precision: float = 0.8
    at_risk_share: float | None = 0.1
    at_risk_top_k: int | None = None
    at_risk_threshold: float | None = None
    lapsed_gap_multiple: float = 3.0
    new_customer_days: int = 90

    def __post_init__(self) -> None:
        if self.at_risk_rule not in AT_RISK_RULES:
            raise ValueError(f"flags.at_risk_rule must be one of {AT_RISK_RULES}; got {self.at_risk_rule!r}.")
        if self.at_risk_rule == "fixed" and (self.at_risk_threshold is None or not 0 < self.at_risk_threshold < 1):
            raise ValueError("flags.at_risk_rule 'fixed' needs flags.at_risk_threshold in (0, 1).")
        if self.at_risk_rule == "share" and (isinstance(self.at_risk_share, bool) or self.at_risk_share is None
                                             or not 0 < self.at_risk_share < 1):
            raise ValueError(f"flags.at_risk_rule 'share' needs flags.at_risk_share in (0, 1); got {self.at_risk_share!r}.")
        if self.at_risk_rule == "top_k" and (isinstance(self.at_risk_top_k, bool)
                                             or not isinstance(self.at_risk_top_k, (int, np.integer))
                                             or self.at_risk_top_k < 1):
            raise ValueError(f"flags.at_risk_rule 'top_k' needs flags.at_risk_top_k, a whole number >= 1; "
                             f"got {self.at_risk_top_k!r}.")
        if not 0 < self.at_risk_precision < 1:
            raise ValueError(f"flags.at_risk_precision must be in (0, 1); got {self.at_risk_precision!r}.")
        if not self.lapsed_gap_multiple > 1:
            raise ValueError(f"flags.lapsed_gap_multiple must be > 1; got {self.lapsed_gap_multiple!r}.")
        if self.new_customer_days < 0:
            raise ValueError(f"flags.new_customer_days must be >= 0; got {self.new_customer_days!r}.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FlagRule:
    """Learned thresholds and the settings that apply them."""

    at_risk_threshold: float
    at_risk_rule: str  #: the rule in words, with the backtest numbers behind the threshold
    typical_gap_days: float  #: median mean gap of the training population's repeat customers
    lapsed_gap_multiple: float
    new_customer_days: int
    #: On the backtest, among customers not lapsed at its cutoff: the share of those flagged at the
    #: threshold who churned, the share of churners flagged, and the share flagged (NaN: no backtest).
    expected_precision: float = float("nan")
    expected_recall: float = float("nan")
    backtest_flagged_share: float = float("nan")
    #: The share of the training population (at ``as_of``) flagged at risk.
    flagged_share: float = float("nan")

    @classmethod
    def learn(cls, config: FlagConfig, *, churned=None, churn_probability=None, backtest_inputs=None,
              mean_gap_days=None, population=None) -> FlagRule:
        """Choose the at-risk threshold and measure its precision and recall on the backtest.

        Parameters
        ----------
        config : FlagConfig
        churned, churn_probability : array-like, optional
            The backtest's churn labels and the churn probabilities the model gave at its cutoff.
        backtest_inputs : mapping of str to array-like, optional
            The :data:`FLAG_INPUTS` of the same backtest customers at the cutoff (who was lapsed).
        mean_gap_days : array-like
            The training population's mean gaps (the typical gap of repeat customers).
        population : mapping of str to array-like, optional
            The training population at ``as_of``: ``churn_probability``, :data:`FLAG_INPUTS` and
            ``no_purchase_history``; the capacity rules count flags among them.
        """
        gaps = np.asarray(mean_gap_days if mean_gap_days is not None else [], dtype=np.float64)
        gaps = gaps[np.isfinite(gaps) & (gaps > 0)]
        typical_gap = float(np.median(gaps)) if len(gaps) else np.nan
        rule = cls(_FALLBACK_THRESHOLD, "", typical_gap, config.lapsed_gap_multiple, config.new_customer_days)
        eligible_now = p_now = None
        if population is not None:
            p_now = np.asarray(population["churn_probability"], dtype=np.float64)
            eligible_now = ~rule.lapsed(population["days_since_last_purchase"], population["mean_gap_days"],
                                        population["age_days"], population["no_purchase_history"])
        y = p = None
        if churned is not None and churn_probability is not None:
            y = np.asarray(churned, dtype=bool)
            p = np.asarray(churn_probability, dtype=np.float64)
            if backtest_inputs is not None:
                age = np.asarray(backtest_inputs["age_days"], dtype=np.float64)
                keep = ~rule.lapsed(backtest_inputs["days_since_last_purchase"], backtest_inputs["mean_gap_days"],
                                    age, ~np.isfinite(age))
                y, p = y[keep], p[keep]
        threshold, words = _at_risk_threshold(config, y, p, p_now, eligible_now)
        expected = _expected_quality(threshold, y, p)
        flagged_share = (float(np.mean((p_now > threshold) & eligible_now)) if p_now is not None and len(p_now)
                         else float("nan"))
        return dataclasses.replace(rule, at_risk_threshold=threshold, at_risk_rule=words, flagged_share=flagged_share,
                                   **expected)

    def describe(self) -> str:
        """The at-risk rule, its share of the training population and its backtest precision and recall,
        in one sentence."""
        def pct(x):
            return "not measured" if not np.isfinite(x) else f"{100 * x:.1f} %"

        return (f"at risk = churn probability above {self.at_risk_threshold:.4f} ({self.at_risk_rule}) and not "
                f"lapsed: {pct(self.flagged_share)} of the training population; on the backtest, "
                f"{pct(self.expected_precision)} of those flagged churned (precision) and "
                f"{pct(self.expected_recall)} of the churners not yet lapsed were flagged (recall)")

    def lapsed(self, days_since_last_purchase, mean_gap_days, age_days, no_purchase_history) -> np.ndarray:
        """Who is lapsed (the rule of :meth:`evaluate`), as a bool array."""
        return self._lapsed(days_since_last_purchase, mean_gap_days, age_days, no_purchase_history)[0]

    def _lapsed(self, days_since_last_purchase, mean_gap_days, age_days, no_purchase_history):
        since = np.asarray(days_since_last_purchase, dtype=np.float64)
        own_gap = np.asarray(mean_gap_days, dtype=np.float64)
        age = np.asarray(age_days, dtype=np.float64)
        no_history = np.asarray(no_purchase_history, dtype=bool)
        new = no_history | (age < self.new_customer_days)
        has_own_gap = np.isfinite(own_gap) & (own_gap > 0)
        gap = np.where(has_own_gap, own_gap, self.typical_gap_days)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            gap_multiple = np.minimum(since / gap, GAP_RATIO_CAP)  # a sub-second gap must not overflow
        lapsed = ~new & np.isfinite(gap_multiple) & (gap_multiple > self.lapsed_gap_multiple)
        return lapsed, new, gap, gap_multiple, has_own_gap

    def to_dict(self) -> dict:
        return asdict(self)

    def apply(self, *, churn_probability, tier, days_since_last_purchase, mean_gap_days, age_days,
              no_purchase_history, churn_window_days: int) -> pd.DataFrame:
        """The flag columns, ``flags`` (names joined by ``;``) and ``reasons`` (sentences joined by ``; ``)."""
        return pd.DataFrame(self.columns(
            churn_probability=churn_probability, tier=tier, days_since_last_purchase=days_since_last_purchase,
            mean_gap_days=mean_gap_days, age_days=age_days, no_purchase_history=no_purchase_history,
            churn_window_days=churn_window_days,
        ))

    def columns(self, *, churn_probability, tier, days_since_last_purchase, mean_gap_days, age_days,
                no_purchase_history, churn_window_days: int) -> dict[str, np.ndarray | list]:
        """:meth:`apply` as a dict of columns (no frame built)."""
        flags, reasons = self.evaluate(
            churn_probability=churn_probability, tier=tier, days_since_last_purchase=days_since_last_purchase,
            mean_gap_days=mean_gap_days, age_days=age_days, no_purchase_history=no_purchase_history,
            churn_window_days=churn_window_days,
        )
        return {**flags, "flags": _FLAG_TEXTS[flag_codes(flags)].tolist(), "reasons": reasons.texts().tolist()}

    def evaluate(self, *, churn_probability, tier, days_since_last_purchase, mean_gap_days, age_days,
                 no_purchase_history, churn_window_days: int) -> tuple[dict[str, np.ndarray], Reasons]:
        """The flags (bool arrays by name of :data:`FLAGS`) and their reasons, not yet in words.

        ``at_risk`` is churn probability above the threshold for a customer who is not already
        lapsed (active until recently and now likely to leave; issue 21)."""
        p = np.asarray(churn_probability, dtype=np.float64)
        tier = np.asarray(tier, dtype=object)
        since = np.asarray(days_since_last_purchase, dtype=np.float64)
        age = np.asarray(age_days, dtype=np.float64)
        no_history = np.asarray(no_purchase_history, dtype=bool)
        lapsed, new, gap, gap_multiple, has_own_gap = self._lapsed(since, mean_gap_days, age, no_history)
        at_risk = (p > self.at_risk_threshold) & ~lapsed
        high_value_at_risk = at_risk & ((tier == "platinum") | (tier == "gold"))

        threshold = f"{self.at_risk_threshold:.2f}"
        reasons = Reasons(len(p))
        reasons.add(at_risk, lambda at: [
            f"churn probability {p_i} over the next {churn_window_days} days, above the at-risk threshold {threshold}"
            for p_i in formatted(p[at], ".2f")])
        reasons.add(high_value_at_risk, lambda at: [f"{t} customer at risk: on the win-back list" for t in tier[at]])
        reasons.add(lapsed, lambda at: [
            f"no purchase for {since_i} days, {multiple_i}x "
            f"{'the usual gap' if own else 'the typical repeat customer' + chr(39) + 's gap'} ({gap_i} days)"
            for since_i, multiple_i, gap_i, own in zip(formatted(since[at], ".0f"), formatted(gap_multiple[at], ".1f"),
                                                       formatted(gap[at], ".0f"), has_own_gap[at].tolist(), strict=True)])
        reasons.add(new, lambda at: [
            "no purchase yet" if none_yet else f"first purchase {age_i} days ago: too little history to judge"
            for age_i, none_yet in zip(formatted(age[at], ".0f"), no_history[at].tolist(), strict=True)])
        flags = {"at_risk": at_risk, "high_value_at_risk": high_value_at_risk, "lapsed": lapsed, "new": new}
        return flags, reasons


def flag_codes(flags) -> np.ndarray:
    """Per customer, which :data:`FLAGS` are set, as bits (``FLAGS[k]`` is bit ``k``); ``flags`` maps
    each flag name to a bool array (a flag it lacks is unset: :meth:`FlagRule.evaluate` leaves
    ``tier_uncertain`` to the scorer)."""
    codes = np.zeros(len(flags[FLAGS[0]]), dtype=np.intp)
    for bit, name in enumerate(FLAGS):
        if name in flags:
            codes |= np.asarray(flags[name], dtype=bool).astype(np.intp) << bit
    return codes


def _at_risk_threshold(config: FlagConfig, y, p, p_now, eligible_now) -> tuple[float, str]:
    """The threshold and the rule in words. ``y``, ``p``: backtest labels and probabilities of the
    customers who could be flagged; ``p_now``, ``eligible_now``: the training population's."""
    if config.at_risk_rule == "fixed":
        return float(config.at_risk_threshold), f"fixed at {config.at_risk_threshold:g} by the config"
    if config.at_risk_rule in ("share", "top_k"):
        return _capacity_threshold(config, p_now, eligible_now)
    if y is None or p is None:
        return _FALLBACK_THRESHOLD, (f"{_FALLBACK_THRESHOLD} (no backtest labels to choose by the "
                                     f"{config.at_risk_rule!r} rule)")
    keep = np.isfinite(p)
    y, p = y[keep], p[keep]
    if y.all() or not y.any():
        return _FALLBACK_THRESHOLD, f"{_FALLBACK_THRESHOLD} (the backtest labels hold one class only)"
    thresholds, tp, fp = _operating_points(y, p)
    n_pos, n_neg = y.sum(), (~y).sum()
    if config.at_risk_rule == "youden":
        j = tp / n_pos - fp / n_neg
        k = int(np.argmax(j))
        threshold = float(max(thresholds[k], 0.0))
        return threshold, (f"{threshold:.4f}, maximising Youden's J on the backtest (TPR {tp[k] / n_pos:.3f}, "
                           f"FPR {fp[k] / n_neg:.3f}, {tp[k] + fp[k]:,} of {len(p):,} flagged)")
    precision = tp / (tp + fp)
    ok = np.flatnonzero(precision >= config.at_risk_precision)
    if not len(ok):
        k = int(np.argmax(precision))
        threshold = float(max(thresholds[k], 0.0))
        return threshold, (f"{threshold:.4f}: no threshold reaches precision {config.at_risk_precision:g} on the "
                           f"backtest; the most precise one ({precision[k]:.3f}) is used")
    k = int(ok[-1])  # the most customers flagged at the required precision
    threshold = float(max(thresholds[k], 0.0))
    return threshold, (f"{threshold:.4f}, the lowest with precision >= {config.at_risk_precision:g} on the "
                       f"backtest ({precision[k]:.3f}, recall {tp[k] / n_pos:.3f})")


def _operating_points(y: np.ndarray, p: np.ndarray):
    """For flagging ``p > t`` at each distinct score (and below every score): the thresholds ``t`` and
    the true and false positives, from the highest threshold down."""
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p_sorted) - 1]  # last index of each score run
    tp = np.cumsum(y_sorted)[distinct]
    fp = np.cumsum(~y_sorted)[distinct]
    thresholds = np.r_[p_sorted[distinct[1:]], -np.inf]  # flagging the runs up to k means p > next score
    return thresholds, tp, fp


def _capacity_threshold(config: FlagConfig, p_now, eligible_now) -> tuple[float, str]:
    """The threshold that flags the configured share or number of the customers who can be flagged
    now (ties at the threshold are all left out, so never more than asked)."""
    wanted = (f"share {config.at_risk_share:g}" if config.at_risk_rule == "share"
              else f"top {config.at_risk_top_k:,}")
    if p_now is None:
        return _FALLBACK_THRESHOLD, f"{_FALLBACK_THRESHOLD} (no training population to fit the {wanted} to)"
    p = np.sort(p_now[eligible_now & np.isfinite(p_now)])[::-1]
    if not len(p):
        return 1.0, f"1 (no customer who can be flagged, for the {wanted})"
    k = (int(np.floor(config.at_risk_share * len(p))) if config.at_risk_rule == "share"
         else min(int(config.at_risk_top_k), len(p)))
    threshold = float(p[k]) if k < len(p) else float(max(p[-1] - 1e-12, 0.0))
    flagged = int(np.sum(p > threshold))
    return threshold, (f"{threshold:.4f}, flagging the {wanted} of the {len(p):,} customers not lapsed at training "
                       f"({flagged:,} flagged)")


def _expected_quality(threshold: float, y, p) -> dict:
    """Precision, recall and share flagged at ``threshold`` on the backtest (NaN without one)."""
    nan = float("nan")
    if y is None or p is None or not len(p):
        return {"expected_precision": nan, "expected_recall": nan, "backtest_flagged_share": nan}
    flagged = p > threshold
    n_flagged, churners = int(flagged.sum()), int(y.sum())
    return {
        "expected_precision": float((flagged & y).sum() / n_flagged) if n_flagged else nan,
        "expected_recall": float((flagged & y).sum() / churners) if churners else nan,
        "backtest_flagged_share": float(flagged.mean()),
    }
