"""The customer pyramid: ``platinum``, ``gold``, ``iron`` and ``lead`` tiers by predicted value.

The tiers follow Zeithaml, Rust & Lemon (2001), "The customer pyramid: creating and serving
profitable customers", *California Management Review* 43(4): platinum are the most profitable
customers, gold the next layer, iron the rest that still pay their way, and lead the customers who
cost more than they bring. "Know your top 10-20 %": by default platinum is the top 10 % of the
training population by predicted value and gold the next 10 %.

Cut points are **amounts of predicted value**, learned once from the training population
(:meth:`TierRule.learn`) and stored in the model, so a customer's tier depends on that customer
alone, never on who else is scored in the same batch.

Lead
----
``lead`` means unprofitable: predicted profit ``margin * predicted_value - cost_to_serve <= 0``,
with ``cost_to_serve`` (in currency over the value horizon) from the customer table's
``cost_to_serve`` column, else from the configured per-customer cost. Without any cost data the
documented proxy is the bottom ``lead_share_without_costs`` of the training population by predicted
value (default 25 %): the customers whose expected revenue is too small to pay for being served.
Lead takes precedence over the other tiers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from crmml.reasons import Reasons, formatted

__all__ = ["TIERS", "TIER_NAMES", "TierConfig", "TierRule"]

#: Tiers from the top of the pyramid down.
TIERS = ("platinum", "gold", "iron", "lead")
#: The tier names as an object array, indexed by tier code.
TIER_NAMES = np.array(TIERS, dtype=object)


@dataclass(frozen=True)
class TierConfig:
    """How the pyramid is cut (shares of the training population, top down).

    Parameters
    ----------
    platinum_share : float
        Share of the training population, by predicted value, in platinum (default 0.10).
    gold_share : float
        Share in gold, below platinum (default 0.10: together the top 20 %).
    margin : float
        Profit margin on revenue, in [0, 1] (default 1: predicted value is revenue).
    cost_to_serve : float or None
        Cost of serving one customer over the value horizon, in the data's currency, for customers
        without a ``cost_to_serve`` in the customer table. None: no cost data.
    lead_share_without_costs : float
        The proxy without cost data: the bottom share of the training population by predicted value
        that counts as lead (default 0.25).
    """

    platinum_share: float = 0.10
    gold_share: float = 0.10
    margin: float = 1.0
    cost_to_serve: float | None = None
    lead_share_without_costs: float = 0.25

    def __post_init__(self) -> None:
        for name in ("platinum_share", "gold_share", "lead_share_without_costs"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"tiers.{name} must be in [0, 1); got {value!r}.")
        if self.platinum_share + self.gold_share + self.lead_share_without_costs > 1:
            raise ValueError("tiers: platinum_share + gold_share + lead_share_without_costs must not exceed 1.")
        if not 0 <= self.margin <= 1:
            raise ValueError(f"tiers.margin must be in [0, 1]; got {self.margin!r}.")
        if self.cost_to_serve is not None and not 0 <= self.cost_to_serve < np.inf:
            raise ValueError(f"tiers.cost_to_serve must be a cost >= 0 or null; got {self.cost_to_serve!r}.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TierRule:
    """Cut points in currency, learned from a training population (see the module docstring)."""

    platinum_min_value: float
    gold_min_value: float
    lead_max_value_without_costs: float  #: the proxy's cut: value at or below it is lead without cost data
    margin: float
    cost_to_serve: float | None

    @classmethod
    def learn(cls, predicted_value: np.ndarray, config: TierConfig) -> TierRule:
        """Cut points at the training population's value quantiles."""
        values = np.asarray(predicted_value, dtype=np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            raise ValueError("No finite predicted value to learn tier cut points from.")
        platinum = float(np.quantile(values, 1 - config.platinum_share)) if config.platinum_share else np.inf
        gold = float(np.quantile(values, 1 - config.platinum_share - config.gold_share)) if config.gold_share else platinum
        lead = float(np.quantile(values, config.lead_share_without_costs)) if config.lead_share_without_costs else -np.inf
        return cls(platinum, gold, lead, config.margin, config.cost_to_serve)

    def predicted_profit(self, predicted_value: np.ndarray, cost_to_serve: np.ndarray | None = None) -> np.ndarray:
        """``margin * value - cost``; NaN where no cost is known (the proxy decides lead there)."""
        cost = self._costs(len(predicted_value), cost_to_serve)
        return self.margin * np.asarray(predicted_value, dtype=np.float64) - cost

    def assign(self, predicted_value: np.ndarray, cost_to_serve: np.ndarray | None = None) -> np.ndarray:
        """The tier of each customer, from its own value (and cost) only."""
        return self.evaluate(predicted_value, cost_to_serve)[1]

    def evaluate(self, predicted_value: np.ndarray, cost_to_serve: np.ndarray | None = None):
        """Predicted profit, tier, and why a customer is lead in words ("" for the other tiers)."""
        profit, codes, reasons = self.evaluate_codes(predicted_value, cost_to_serve)
        return profit, TIER_NAMES[codes], reasons.texts()

    def evaluate_codes(self, predicted_value: np.ndarray, cost_to_serve: np.ndarray | None = None):
        """Predicted profit, tier codes (positions in :data:`TIERS`) and the lead reasons, not yet in
        words (:class:`~crmml.reasons.Reasons`)."""
        value = np.asarray(predicted_value, dtype=np.float64)
        profit = self.predicted_profit(value, cost_to_serve)
        known = np.isfinite(profit)
        lead = np.where(known, profit <= 0, value <= self.lead_max_value_without_costs)
        codes = np.full(len(value), 2, dtype=np.int8)  # iron
        codes[value >= self.gold_min_value] = 1
        codes[value >= self.platinum_min_value] = 0
        codes[lead] = 3
        reasons = Reasons(len(value))
        margin, floor = self.margin, f"{self.lead_max_value_without_costs:,.2f}"

        def lead_reasons(at: np.ndarray) -> list[str]:
            costs = formatted(margin * value[at] - profit[at], ",.2f")
            return [
                (f"predicted profit {profit_i} <= 0 (value {value_i} x margin {margin:g} - cost to serve {cost_i})"
                 if known_i else
                 f"predicted value {value_i} is in the bottom of the training population (<= {floor}; no cost data)")
                for value_i, profit_i, cost_i, known_i in zip(formatted(value[at], ",.2f"),
                                                              formatted(profit[at], ",.2f"), costs,
                                                              known[at].tolist(), strict=True)
            ]

        reasons.add(lead, lead_reasons)
        return profit, codes, reasons

    def value_bounds(self, codes: np.ndarray, cost_to_serve: np.ndarray | None = None):
        """The range of predicted value that puts each customer in the tier ``codes`` gave it.

        The inverse of :meth:`evaluate_codes` for one customer's cost: lead is ``value <= L`` with
        ``L = cost / margin`` where a cost is known (every value when the margin is 0), else the
        proxy's cut; the other tiers are their band ``[low cut, high cut)`` above ``L``.

        Returns
        -------
        low, low_closed, high, high_closed : arrays of shape (n,)
            The tier is ``value > low`` (``value >= low`` where ``low_closed``) and ``value < high``
            (``value <= high`` where ``high_closed``); infinite bounds are open.
        """
        codes = np.asarray(codes)
        n = len(codes)
        cost = self._costs(n, cost_to_serve)
        known = np.isfinite(cost)
        with np.errstate(divide="ignore", invalid="ignore"):
            break_even = cost / self.margin if self.margin > 0 else np.where(cost >= 0, np.inf, -np.inf)
        lead_cut = np.where(known, break_even, self.lead_max_value_without_costs)
        band_low = np.array([self.platinum_min_value, self.gold_min_value, -np.inf, -np.inf])[codes]
        band_high = np.array([np.inf, self.platinum_min_value, self.gold_min_value, np.inf])[codes]
        lead = codes == 3
        above_cut = lead_cut >= band_low
        low = np.where(lead, -np.inf, np.where(above_cut, lead_cut, band_low))
        low_closed = ~lead & ~above_cut
        high = np.where(lead, lead_cut, band_high)
        return low, low_closed, high, lead.copy()

    def _costs(self, n: int, cost_to_serve: np.ndarray | None) -> np.ndarray:
        cost = np.full(n, np.nan) if cost_to_serve is None else np.asarray(cost_to_serve, dtype=np.float64).copy()
        if self.cost_to_serve is not None:
            cost[np.isnan(cost)] = self.cost_to_serve
        return cost

    def to_dict(self) -> dict:
        return {k: (None if v is None else float(v)) for k, v in asdict(self).items()}

    def table(self, predicted_value: np.ndarray, tiers: np.ndarray) -> pd.DataFrame:
        """Customers and value share per tier (the pyramid as a table)."""
        frame = pd.DataFrame({"tier": tiers, "value": predicted_value})
        grouped = frame.groupby("tier", observed=True)["value"]
        table = pd.DataFrame({"customers": grouped.size(), "predicted_value": grouped.sum()}).reindex(TIERS)
        table = table.fillna(0).astype({"customers": "int64"})
        total = table["predicted_value"].sum()
        table["customer_share"] = table["customers"] / max(table["customers"].sum(), 1)
        table["value_share"] = table["predicted_value"] / total if total else 0.0
        table["mean_value"] = table["predicted_value"] / table["customers"].where(table["customers"] > 0)
        table.index.name = "tier"
        return table
