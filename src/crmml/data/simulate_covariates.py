"""Simulated customers whose acquisition channel changes how often they buy and how soon they leave.

The ground truth for the covariate BTYD models (:mod:`crmml.models.pareto_nbd_covariates`,
:mod:`crmml.models.beta_geo_covariates`). Each customer gets a channel; the channel's factors
multiply the mean purchase rate and the dropout rate (Pareto/NBD) or the mean dropout odds
(BG/NBD) exactly as those models' covariates do (Fader & Hardie 2007, "Incorporating Time-Invariant
Covariates into the Pareto/NBD and BG/NBD Models"):

* purchase: ``lambda_i ~ Gamma(r, alpha / f_purchase)`` (shape, rate), so ``E[lambda_i]`` is
  multiplied by ``f_purchase``;
* Pareto/NBD dropout: lifetime ``tau_i ~ Exponential(mu_i)``, ``mu_i ~ Gamma(s, beta / f_dropout)``;
* BG/NBD dropout: after each repeat purchase the customer leaves with probability
  ``p_i ~ Beta(a * f_dropout, b)``, which multiplies the mean odds ``a / b`` by ``f_dropout``
  (``gamma_a = log f_dropout``, ``gamma_b = 0`` in :class:`~crmml.models.BetaGeoCovariates`).

Everything is drawn with whole-array numpy operations from one seeded generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["CDNOW_PARETO", "ChannelLog", "DEFAULT_CHANNELS", "simulate_channel_log"]

#: Pareto/NBD CDNOW estimates (Fader & Hardie 2005 note, weeks): r, alpha, s, beta.
CDNOW_PARETO = {"r": 0.55, "alpha": 10.58, "s": 0.61, "beta": 11.67}
#: BG/NBD CDNOW estimates (Fader, Hardie & Lee 2005, weeks): r, alpha, a, b.
CDNOW_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
#: channel: (share of customers, purchase-rate factor, dropout factor); "web" is the baseline.
DEFAULT_CHANNELS = {"web": (0.5, 1.0, 1.0), "referral": (0.3, 1.4, 0.5), "paid": (0.2, 0.8, 1.5)}
_SPEND = (6.25, 3.74, 15.44)  # Gamma-Gamma CDNOW estimates p, q, gamma (Fader, Hardie & Lee 2005b)


@dataclass(frozen=True)
class ChannelLog:
    """A simulated customer base with channels.

    Attributes
    ----------
    summary : DataFrame
        Index ``customer_id``; ``frequency``, ``recency``, ``T`` (exact, in time units) and ``channel``.
    transactions : DataFrame
        ``customer_id``, ``timestamp`` (to the second), ``amount``; first purchases included.
    customers : DataFrame
        ``customer_id``, ``channel``, ``first_purchase``, ``lambda_`` and ``dropout_`` (the death rate
        ``mu`` or the dropout probability ``p``).
    """

    summary: pd.DataFrame
    transactions: pd.DataFrame
    customers: pd.DataFrame


def simulate_channel_log(n_customers: int, *, model: str = "pareto_nbd", params: Mapping[str, float] | None = None,
                         channels: Mapping[str, tuple[float, float, float]] = DEFAULT_CHANNELS,
                         period: float = 104.0, acquisition: float = 52.0, start="2024-01-01",
                         time_unit_days: float = 7.0, seed: int | None = 0) -> ChannelLog:
    """Draw customers, channels and purchases from a Pareto/NBD or BG/NBD with channel effects.

    Parameters
    ----------
    n_customers : int
    model : {"pareto_nbd", "bg_nbd"}
    params : dict, optional
        Baseline parameters (``r, alpha, s, beta`` or ``r, alpha, a, b``), per time unit; default the
        CDNOW estimates.
    channels : dict
        ``{channel: (share, purchase factor, dropout factor)}``; shares are normalised.
    period : float
        Length of the observation window in time units; first purchases are uniform on
        ``[0, acquisition]`` and every customer is observed until ``period``.
    start : date-like
        Calendar time of 0, for the timestamps.
    time_unit_days : float
        Days per time unit.
    seed : int or None
    """
    if model not in ("pareto_nbd", "bg_nbd"):
        raise ValueError(f"model must be 'pareto_nbd' or 'bg_nbd'; got {model!r}.")
    if not (isinstance(n_customers, (int, np.integer)) and n_customers > 0):
        raise ValueError(f"n_customers must be a positive int; got {n_customers!r}.")
    if not 0 <= acquisition < period:
        raise ValueError(f"acquisition ({acquisition}) must lie in [0, period={period}).")
    params = dict(params or (CDNOW_PARETO if model == "pareto_nbd" else CDNOW_BGNBD))
    names = list(channels)
    table = np.array([channels[c] for c in names], dtype=float)
    if table.ndim != 2 or table.shape[1] != 3 or np.any(table <= 0) or not np.all(np.isfinite(table)):
        raise ValueError("channels must map each name to (share, purchase factor, dropout factor), all positive.")
    rng = np.random.default_rng(seed)
    n = int(n_customers)
    channel = rng.choice(len(names), size=n, p=table[:, 0] / table[:, 0].sum())
    purchase_factor, dropout_factor = table[channel, 1], table[channel, 2]
    first = rng.uniform(0.0, acquisition, n)
    T = period - first
    rate = rng.gamma(params["r"], purchase_factor / params["alpha"])  # Gamma(r, rate alpha / f)
    if model == "pareto_nbd":
        dropout = rng.gamma(params["s"], dropout_factor / params["beta"])
        window = np.minimum(rng.exponential(1.0 / dropout), T)
        counts = rng.poisson(rate * window)
        owner = np.repeat(np.arange(n), counts)
        times = rng.uniform(0.0, 1.0, counts.sum()) * window[owner]
    else:
        dropout = rng.beta(params["a"] * dropout_factor, params["b"])
        counts = rng.poisson(rate * T)
        owner = np.repeat(np.arange(n), counts)
        times = rng.uniform(0.0, 1.0, counts.sum()) * T[owner]
        order = np.lexsort((times, owner))
        owner, times = owner[order], times[order]
        rank = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
        # She leaves right after her J-th repeat purchase, J ~ Geometric(p): keep purchases 1..J.
        keep = rank < rng.geometric(dropout)[owner]
        owner, times = owner[keep], times[keep]
    frequency = np.bincount(owner, minlength=n).astype(float)
    recency = np.zeros(n)
    np.maximum.at(recency, owner, times)
    ids = np.arange(1, n + 1, dtype=np.int64)
    label = np.array(names, dtype=object)[channel]
    summary = pd.DataFrame({"frequency": frequency, "recency": recency, "T": T, "channel": label},
                           index=pd.Index(ids, name="customer_id"))
    origin = pd.Timestamp(start)
    unit = pd.Timedelta(days=time_unit_days)
    all_owner = np.r_[np.arange(n), owner]
    all_times = np.r_[np.zeros(n), times] + first[all_owner]
    order = np.lexsort((all_times, all_owner))
    all_owner, all_times = all_owner[order], all_times[order]
    p, q, gamma = _SPEND
    scale = rng.gamma(q, 1.0 / gamma, n)
    amount = np.round(rng.gamma(p, 1.0 / scale[all_owner]), 2)
    seconds = np.round(all_times * unit.total_seconds()).astype("int64")
    transactions = pd.DataFrame({
        "customer_id": ids[all_owner],
        "timestamp": (origin + pd.to_timedelta(seconds, unit="s")).astype("datetime64[us]"),
        "amount": amount,
    })
    customers = pd.DataFrame({
        "customer_id": ids, "channel": label,
        "first_purchase": (origin + pd.to_timedelta(np.round(first * unit.total_seconds()), unit="s")),
        "lambda_": rate, "dropout_": dropout,
    })
    return ChannelLog(summary, transactions, customers)
