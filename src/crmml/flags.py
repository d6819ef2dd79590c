"""At-risk, win-back, lapsed and new flags, with the reasons in words.

Flags
-----
``at_risk``
    Active until recently and now likely to leave: not ``lapsed``, and churn probability (no
    purchase in the churn window) above a threshold chosen at training by a stated rule on the
    training backtest (:meth:`FlagRule.learn`):

    - ``"youden"`` (default): the threshold that maximises Youden's J = TPR - FPR on the backtest
      cutoff's churn labels (Youden 1950, *Cancer* 3(1)); it does not move with the churn base rate;
    - ``"precision"``: the lowest threshold whose flagged customers churned at least
      ``at_risk_precision`` of the time in the backtest (trustworthy flags, fewer of them);
    - ``"fixed"``: ``at_risk_threshold`` as given.

    Without a backtest (too little history) the rule falls back to 0.5 and says so.
``high_value_at_risk``
    Platinum or gold and at risk: the win-back list.
``lapsed``
    No purchase for more than ``lapsed_gap_multiple`` (default 3) times the customer's own mean gap
    between purchase days; a one-time buyer is measured against the median gap of the training
    population's repeat customers. Not judged for new customers.
``new``
    Too little history to judge: no purchase yet, or a first purchase fewer than
    ``new_customer_days`` (default 90) days before the as-of date.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from crmml.customer_rows import GAP_RATIO_CAP
from crmml.reasons import Reasons, formatted

__all__ = ["AT_RISK_RULES", "FLAGS", "FLAG_NAMES", "FlagConfig", "FlagRule", "flag_codes"]

FLAGS = ("at_risk", "high_value_at_risk", "lapsed", "new")
#: The names of the flags set, per code of :func:`flag_codes`.
FLAG_NAMES = tuple(tuple(name for bit, name in enumerate(FLAGS) if code >> bit & 1) for code in range(2 ** len(FLAGS)))
_FLAG_TEXTS = np.array([";".join(names) for names in FLAG_NAMES], dtype=object)
AT_RISK_RULES = ("youden", "precision", "fixed")
_FALLBACK_THRESHOLD = 0.5


@dataclass(frozen=True)
class FlagConfig:
    """Flag settings (see the module docstring)."""

    at_risk_rule: str = "youden"
    at_risk_precision: float = 0.8
    at_risk_threshold: float | None = None
    lapsed_gap_multiple: float = 3.0
    new_customer_days: int = 90

    def __post_init__(self) -> None:
        if self.at_risk_rule not in AT_RISK_RULES:
            raise ValueError(f"flags.at_risk_rule must be one of {AT_RISK_RULES}; got {self.at_risk_rule!r}.")
        if self.at_risk_rule == "fixed" and (self.at_risk_threshold is None or not 0 < self.at_risk_threshold < 1):
            raise ValueError("flags.at_risk_rule 'fixed' needs flags.at_risk_threshold in (0, 1).")
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

    @classmethod
    def learn(cls, config: FlagConfig, *, churned=None, churn_probability=None, mean_gap_days=None) -> FlagRule:
        """Choose the at-risk threshold on backtest labels and the typical gap on the training features."""
        gaps = np.asarray(mean_gap_days if mean_gap_days is not None else [], dtype=np.float64)
        gaps = gaps[np.isfinite(gaps) & (gaps > 0)]
        typical_gap = float(np.median(gaps)) if len(gaps) else np.nan
        threshold, rule = _at_risk_threshold(config, churned, churn_probability)
        return cls(threshold, rule, typical_gap, config.lapsed_gap_multiple, config.new_customer_days)

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
        own_gap = np.asarray(mean_gap_days, dtype=np.float64)
        age = np.asarray(age_days, dtype=np.float64)
        no_history = np.asarray(no_purchase_history, dtype=bool)

        new = no_history | (age < self.new_customer_days)
        has_own_gap = np.isfinite(own_gap) & (own_gap > 0)
        gap = np.where(has_own_gap, own_gap, self.typical_gap_days)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            gap_multiple = np.minimum(since / gap, GAP_RATIO_CAP)  # a sub-second gap must not overflow
        lapsed = ~new & np.isfinite(gap_multiple) & (gap_multiple > self.lapsed_gap_multiple)
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
    each flag name to a bool array."""
    codes = np.zeros(len(flags[FLAGS[0]]), dtype=np.intp)
    for bit, name in enumerate(FLAGS):
        codes |= np.asarray(flags[name], dtype=bool).astype(np.intp) << bit
    return codes


def _at_risk_threshold(config: FlagConfig, churned, probability) -> tuple[float, str]:
    if config.at_risk_rule == "fixed":
        return float(config.at_risk_threshold), f"fixed at {config.at_risk_threshold:g} by the config"
    if churned is None or probability is None:
        return _FALLBACK_THRESHOLD, (f"{_FALLBACK_THRESHOLD} (no backtest labels to choose by the "
                                     f"{config.at_risk_rule!r} rule)")
    y = np.asarray(churned, dtype=bool)
    p = np.asarray(probability, dtype=np.float64)
    keep = np.isfinite(p)
    y, p = y[keep], p[keep]
    if y.all() or not y.any():
        return _FALLBACK_THRESHOLD, f"{_FALLBACK_THRESHOLD} (the backtest labels hold one class only)"
    # Candidate thresholds: flag p > t for each distinct score t (and t below every score).
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p_sorted) - 1]  # last index of each score run
    tp = np.cumsum(y_sorted)[distinct]
    fp = np.cumsum(~y_sorted)[distinct]
    thresholds = np.r_[p_sorted[distinct[1:]], -np.inf]  # flagging the runs up to k means p > next score
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
