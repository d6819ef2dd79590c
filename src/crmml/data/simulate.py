"""Simulated transaction logs from the BG/NBD purchase model and the Gamma-Gamma spend model.

The purchase process is the BG/NBD of Fader, Hardie & Lee (2005a), "Counting Your Customers the Easy
Way: An Alternative to the Pareto/NBD Model", *Marketing Science* 24(2), 275-284:

* while alive, a customer buys according to a Poisson process with rate ``lambda ~ Gamma(r, alpha)``
  (shape ``r``, rate ``alpha``), assumption (ii)-(iii) of the paper;
* after every repeat purchase the customer drops out with probability ``p ~ Beta(a, b)``, assumption
  (iv)-(v), so the number of repeat purchases up to and including the one after which they leave is
  ``J ~ Geometric(p)`` on ``{1, 2, ...}``.

Spend follows the Gamma-Gamma model of Fader, Hardie & Lee (2005b), "RFM and CLV: Using Iso-Value
Curves for Customer Base Analysis", *Journal of Marketing Research* 42(4), 415-430: each customer has
``nu ~ Gamma(q, gamma)`` (shape ``q``, rate ``gamma``) and every transaction's amount is
``Gamma(p_spend, nu)`` (shape ``p_spend``, rate ``nu``), so ``E[amount] = p_spend * gamma / (q - 1)``.

Everything is drawn with whole-array numpy operations: there is no Python loop over customers or
transactions, so a million customers take a few seconds. :func:`write_simulated_parquet` writes logs
larger than memory as a directory of parquet parts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_CUSTOMER_SEGMENTS",
    "SimulatedLog",
    "SimulationParams",
    "simulate_customer_base",
    "simulate_transactions",
    "write_simulated_parquet",
]

_SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class SimulationParams:
    """Population parameters of the simulated customer base, per time unit.

    The defaults are the published CDNOW estimates, with the week as time unit.

    Parameters
    ----------
    r, alpha : float
        Shape and rate of the Gamma distribution of the purchase rate ``lambda`` (per time unit).
        BG/NBD CDNOW estimates, Fader, Hardie & Lee (2005a), section 4: r = 0.243, alpha = 4.414.
    a, b : float
        Parameters of the Beta distribution of the dropout probability. CDNOW estimates, same source:
        a = 0.793, b = 2.426.
    p, q, gamma : float
        Gamma-Gamma spend model, Fader, Hardie & Lee (2005b), CDNOW estimates: ``p`` is the shape of each
        transaction's amount (not the dropout probability), ``q`` and ``gamma`` the shape and rate of the
        customer's scale ``nu``. p = 6.25, q = 3.74, gamma = 15.44.
    """

    r: float = 0.243
    alpha: float = 4.414
    a: float = 0.793
    b: float = 2.426
    p: float = 6.25
    q: float = 3.74
    gamma: float = 15.44

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise ValueError(
                    f"The '{field.name}' parameter of SimulationParams must be a positive finite float. "
                    f"Got {value!r} instead."
                )


@dataclass(frozen=True)
class SimulatedLog:
    """A simulated transaction log together with the true per-customer latent values.

    Attributes
    ----------
    transactions : pandas.DataFrame
        Columns ``customer_id`` (int64), ``timestamp`` (datetime64[us], whole seconds) and ``amount``
        (float64), sorted by customer then time. Each customer's first row is their first purchase.
    customers : pandas.DataFrame
        One row per customer, sorted by ``customer_id``: ``first_purchase``, ``lambda_`` (purchase rate per
        time unit), ``dropout_p`` (dropout probability after each repeat purchase), ``nu`` (Gamma-Gamma
        scale), ``n_transactions`` (rows in ``transactions``, first purchase included), ``alive_at_end``
        (had not dropped out by ``end``) and ``dropout_time`` (time of the repeat purchase after which
        the customer left; NaT if alive).
    """

    transactions: pd.DataFrame
    customers: pd.DataFrame


def simulate_transactions(
    n_customers: int,
    *,
    params: SimulationParams = SimulationParams(),
    start="2024-01-01",
    end="2025-12-31",
    acquisition_end=None,
    time_unit_days: float = 7.0,
    seasonality: float = 0.0,
    peak_day_of_year: float = 350.0,
    seed: int | np.random.SeedSequence | None = 0,
) -> SimulatedLog:
    """Draw a transaction log from the BG/NBD and Gamma-Gamma models.

    Parameters
    ----------
    n_customers : int
        Number of customers; every one makes at least their first purchase.
    params : SimulationParams
        Population parameters, per ``time_unit_days`` days.
    start, end : str or datetime-like
        Observation period (timezone-naive). Every timestamp lies in ``[start, end]``; a bare date means
        midnight at the start of that day.
    acquisition_end : str or datetime-like, optional
        First purchases are uniform on ``[start, acquisition_end]``, to the second. Defaults to the middle
        of the observation period. ``acquisition_end == start`` gives every customer the same window.
    time_unit_days : float
        Length of the time unit of ``params`` in days (7 for the published weekly CDNOW estimates).
    seasonality : float in [0, 1)
        Amplitude ``A`` of a yearly season: an active customer buys at rate
        ``lambda * (1 + A cos(2 pi (d - peak_day_of_year) / 365.25))`` on day of year ``d`` (0 gives
        the stationary BG/NBD; 0.8 makes the peak week 9x as busy as the quietest).
    peak_day_of_year : float
        Day of the year (1 = 1 January) on which the season peaks (default 350: mid-December).
    seed : int, numpy.random.SeedSequence or None
        Seed of ``numpy.random.default_rng``; the same seed gives identical frames.

    Returns
    -------
    SimulatedLog
        The transactions and the true per-customer values.

    Notes
    -----
    Customer ``i`` is observed for ``T_i = end - first_purchase_i`` time units. Their repeat purchases
    before ``end`` are the first ``k_i = min(J_i, N_i)`` points of a Poisson process on the window, with
    ``N_i ~ Poisson(lambda_i T_i)`` and ``J_i ~ Geometric(p_i)``: the process is cut at the ``J_i``-th
    repeat purchase, after which the customer is inactive (Fader, Hardie & Lee 2005a, section 3). Given
    ``N_i``, Poisson points are ``N_i`` iid uniforms on the window, so the ``k_i`` observed purchases are the
    ``k_i`` smallest of ``N_i`` uniform order statistics.

    These are drawn without drawing all ``N_i`` uniforms (``N_i`` is huge for the rare fast, long-lived
    buyer). With ``E_1, ..., E_{N+1}`` iid Exp(1) and ``S_j = E_1 + ... + E_j``, the vector
    ``(S_1, ..., S_N) / S_{N+1}`` is distributed as the order statistics of ``N`` uniforms (Devroye 1986,
    *Non-Uniform Random Variate Generation*, ch. V, thm 2.2). Only ``S_1..S_k`` are needed, and the
    remaining sum ``S_{N+1} - S_k = E_{k+1} + ... + E_{N+1}`` is a single ``Gamma(N + 1 - k, 1)`` draw
    ``G``, independent of ``S_1..S_k``. So the ``j``-th purchase is at ``S_j / (S_k + G)`` of the window.
    Total work is proportional to the number of transactions kept.

    With ``seasonality`` the process is a Poisson process in the *seasonal clock*
    ``W(t) = int_start^t (1 + A cos(...)) du`` (closed form), so the same construction runs on ``W`` and
    each purchase time is mapped back through ``W^-1`` (interpolated on an hourly grid): a
    time-changed Poisson process with the seasonal intensity.
    """
    n_customers = _check_positive_int(n_customers, "n_customers")
    if isinstance(seasonality, bool) or not isinstance(seasonality, (int, float)) or not 0 <= seasonality < 1:
        raise ValueError(f"The 'seasonality' parameter must be a float in [0, 1). Got {seasonality!r} instead.")
    if not isinstance(params, SimulationParams):
        raise ValueError(
            f"The 'params' parameter of simulate_transactions must be a SimulationParams. Got {params!r} instead."
        )
    if isinstance(time_unit_days, bool) or not isinstance(time_unit_days, (int, float)) or not (
        0 < time_unit_days < math.inf
    ):
        raise ValueError(
            "The 'time_unit_days' parameter of simulate_transactions must be a positive finite float. "
            f"Got {time_unit_days!r} instead."
        )
    start_ts = _naive_timestamp(start, "start")
    end_ts = _naive_timestamp(end, "end")
    if end_ts <= start_ts:
        raise ValueError(f"'end' ({end_ts}) must be after 'start' ({start_ts}).")
    if acquisition_end is None:
        acquisition_end_ts = start_ts + (end_ts - start_ts) / 2
    else:
        acquisition_end_ts = _naive_timestamp(acquisition_end, "acquisition_end")
    if not (start_ts <= acquisition_end_ts <= end_ts):
        raise ValueError(
            f"'acquisition_end' ({acquisition_end_ts}) must lie between 'start' ({start_ts}) and 'end' ({end_ts})."
        )

    rng = np.random.default_rng(seed)
    one_second = pd.Timedelta(seconds=1)
    span_seconds = (end_ts - start_ts) // one_second
    acquisition_seconds = (acquisition_end_ts - start_ts) // one_second
    seconds_per_unit = time_unit_days * _SECONDS_PER_DAY

    # Per-customer latent values and acquisition time (offsets in whole seconds from start).
    first_offset = rng.integers(0, acquisition_seconds, size=n_customers, endpoint=True)
    purchase_rate = rng.gamma(params.r, 1.0 / params.alpha, size=n_customers)
    dropout_p = rng.beta(params.a, params.b, size=n_customers)
    spend_scale = rng.gamma(params.q, 1.0 / params.gamma, size=n_customers)

    window_seconds = span_seconds - first_offset
    clock = _SeasonalClock(start_ts, span_seconds, float(seasonality), float(peak_day_of_year))
    window_units = (clock.seasonal(span_seconds) - clock.seasonal(first_offset)) / seconds_per_unit
    n_poisson = rng.poisson(purchase_rate * window_units)
    # Beta draws can underflow to 0 for tiny a; numpy's geometric then refuses, a floor of the smallest
    # normal double makes J astronomically large instead (the customer never leaves), which is the limit.
    repeats_before_dropout = rng.geometric(np.maximum(dropout_p, np.finfo(np.float64).tiny))
    n_repeat = np.minimum(repeats_before_dropout, n_poisson)
    alive_at_end = repeats_before_dropout > n_poisson

    # The k smallest of N uniform order statistics, as S_j / (S_k + G) (see Notes). One cumulative sum over
    # all customers, minus the running total at each customer's start, gives every S_j at once; the
    # absolute rounding error (~1e-16 x the total count) is negligible against spacings of order 1.
    total_repeat = int(n_repeat.sum())
    repeat_owner = np.repeat(np.arange(n_customers), n_repeat)
    spacing_sums = np.cumsum(rng.standard_exponential(total_repeat))
    spacing_sums_padded = np.concatenate(([0.0], spacing_sums))
    repeat_end = np.cumsum(n_repeat)
    sum_before_customer = spacing_sums_padded[repeat_end - n_repeat]
    spacing_sums -= sum_before_customer[repeat_owner]
    kept_sum = spacing_sums_padded[repeat_end] - sum_before_customer
    remaining_sum = rng.gamma((n_poisson - n_repeat + 1).astype(np.float64))
    fraction_of_window = spacing_sums / (kept_sum + remaining_sum)[repeat_owner]
    del spacing_sums_padded, sum_before_customer, kept_sum, remaining_sum
    if clock.amplitude:
        start_clock = clock.seasonal(first_offset)[repeat_owner]
        end_clock = clock.seasonal(span_seconds)
        repeat_offset = np.floor(clock.calendar(start_clock + fraction_of_window * (end_clock - start_clock)))
        repeat_offset = np.clip(repeat_offset.astype(np.int64), first_offset[repeat_owner], span_seconds)
    else:
        repeat_offset = first_offset[repeat_owner] + np.floor(
            fraction_of_window * window_seconds[repeat_owner]
        ).astype(np.int64)
    del fraction_of_window, repeat_owner

    # Interleave: each customer's first purchase, then their repeat purchases in time order.
    n_transactions = n_repeat + 1
    total_transactions = int(n_transactions.sum())
    first_row = np.cumsum(n_transactions) - n_transactions
    is_first_row = np.zeros(total_transactions, dtype=bool)
    is_first_row[first_row] = True
    offset_seconds = np.empty(total_transactions, dtype=np.int64)
    offset_seconds[first_row] = first_offset
    offset_seconds[~is_first_row] = repeat_offset
    del repeat_offset, is_first_row

    customer_index = np.repeat(np.arange(n_customers), n_transactions)
    amount = rng.gamma(params.p, 1.0, size=total_transactions)
    amount /= spend_scale[customer_index]  # Gamma(p, rate nu) = Gamma(p, 1) / nu

    start_us = np.datetime64(start_ts.to_datetime64(), "us")
    timestamp = start_us + (offset_seconds * 1_000_000).astype("timedelta64[us]")
    del offset_seconds

    transactions = pd.DataFrame(
        {"customer_id": customer_index.astype(np.int64), "timestamp": timestamp, "amount": amount}
    )
    last_row = first_row + n_repeat
    dropout_time = timestamp[last_row]
    dropout_time[alive_at_end] = np.datetime64("NaT")
    customers = pd.DataFrame(
        {
            "customer_id": np.arange(n_customers, dtype=np.int64),
            "first_purchase": timestamp[first_row],
            "lambda_": purchase_rate,
            "dropout_p": dropout_p,
            "nu": spend_scale,
            "n_transactions": n_transactions.astype(np.int64),
            "alive_at_end": alive_at_end,
            "dropout_time": dropout_time,
        }
    )
    return SimulatedLog(transactions=transactions, customers=customers)


DEFAULT_CUSTOMER_SEGMENTS: Mapping[str, tuple[float, SimulationParams]] = MappingProxyType(
    {
        "referral": (0.15, SimulationParams(alpha=3.5, a=0.5, b=4.5)),
        "organic_search": (0.40, SimulationParams()),
        "email": (0.20, SimulationParams(alpha=4.0, a=0.7, b=3.5)),
        "paid_social": (0.25, SimulationParams(alpha=5.0, a=1.5, b=1.5)),
    }
)
"""Acquisition channel -> (share of customers, :class:`SimulationParams`) used by :func:`simulate_customer_base`.

The channels differ mainly in the dropout Beta(a, b), with mean ``a / (a + b)``, and mildly in the purchase
rate, with mean ``r / alpha`` per time unit (``r = 0.243`` everywhere); spend is the CDNOW Gamma-Gamma
everywhere. The parameters are per week, the default ``time_unit_days``.

==============  =====  =====  =====  =====  ==============  ==============
channel         share  alpha  a      b      mean dropout_p  mean rate/unit
==============  =====  =====  =====  =====  ==============  ==============
referral        0.15   3.5    0.5    4.5    0.100           0.069
organic_search  0.40   4.414  0.793  2.426  0.246           0.055
email           0.20   4.0    0.7    3.5    0.167           0.061
paid_social     0.25   5.0    1.5    1.5    0.500           0.049
==============  =====  =====  =====  =====  ==============  ==============

``organic_search`` is the published CDNOW fit (:class:`SimulationParams` defaults).
"""


def simulate_customer_base(
    n_customers: int,
    *,
    segments: Mapping[str, tuple[float, SimulationParams]] | None = None,
    start="2024-01-01",
    end="2025-12-31",
    acquisition_end=None,
    time_unit_days: float = 7.0,
    referral_share: float = 0.2,
    regions: Sequence[str] = ("north", "south", "east", "west"),
    seed: int | np.random.SeedSequence | None = 0,
) -> SimulatedLog:
    """Draw a transaction log with a customer table whose attributes change behaviour.

    Each customer is acquired through one channel, and each channel has its own BG/NBD and Gamma-Gamma
    population parameters, so the channel in the customer table predicts dropout beyond what the
    transactions show. ``region`` is pure noise, independent of behaviour.

    Parameters
    ----------
    n_customers : int
        Number of customers; every one makes at least their first purchase.
    segments : mapping of str to (float, SimulationParams), optional
        Acquisition channel name -> (share of customers, population parameters). Shares must be positive
        and sum to 1 (within 1e-9). Defaults to :data:`DEFAULT_CUSTOMER_SEGMENTS`: ``referral``,
        ``organic_search``, ``email`` and ``paid_social``, whose dropout rates differ most.
    start, end, acquisition_end, time_unit_days
        As in :func:`simulate_transactions`, shared by every channel.
    referral_share : float
        In ``[0, 1]``. Used only when no channel is named ``"referral"``: then this fraction of all customers
        (rounded to a whole number, chosen at random) has a referrer. With a ``"referral"`` channel, exactly
        the customers of that channel have one.
    regions : sequence of str
        Distinct non-empty region names; each customer's region is uniform over them.
    seed : int, numpy.random.SeedSequence or None
        Root seed; the same seed gives identical frames. Child ``k + 1`` of
        ``numpy.random.SeedSequence(seed).spawn`` draws channel ``k``'s customers with
        :func:`simulate_transactions`, child 0 the channels, regions and referrers.

    Returns
    -------
    SimulatedLog
        ``transactions`` has the columns of :func:`simulate_transactions`, sorted by customer then time.
        ``customers`` has its columns plus ``acquisition_channel`` (str), ``signup_date`` (day of the first
        purchase at midnight), ``region`` (str) and ``referred_by`` (nullable Int64: the id of the
        referrer, ``<NA>`` if none).

    Notes
    -----
    Customer ids are ``0 .. n_customers - 1`` in the order channels are drawn, so ids carry no information
    about the channel. A referrer is uniform over the customers whose first purchase is strictly earlier
    than the referred customer's, so nobody refers themselves; a customer with no earlier customer (the
    first one acquired) gets ``<NA>`` even when eligible.
    """
    n_customers = _check_positive_int(n_customers, "n_customers")
    names, shares, segment_params = _check_segments(DEFAULT_CUSTOMER_SEGMENTS if segments is None else segments)
    if isinstance(time_unit_days, bool) or not isinstance(time_unit_days, (int, float)) or not (
        0 < time_unit_days < math.inf
    ):
        raise ValueError(
            "The 'time_unit_days' parameter of simulate_customer_base must be a positive finite float. "
            f"Got {time_unit_days!r} instead."
        )
    if isinstance(referral_share, bool) or not isinstance(referral_share, (int, float)) or not (
        0 <= referral_share <= 1
    ):
        raise ValueError(
            f"The 'referral_share' parameter must be a float in [0, 1]. Got {referral_share!r} instead."
        )
    if (
        isinstance(regions, str)
        or not isinstance(regions, Sequence)
        or len(regions) == 0
        or not all(isinstance(region, str) and region for region in regions)
        or len(set(regions)) != len(regions)
    ):
        raise ValueError(
            f"The 'regions' parameter must be a non-empty sequence of distinct non-empty strings. "
            f"Got {regions!r} instead."
        )

    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    child_seeds = root.spawn(len(names) + 1)
    rng = np.random.default_rng(child_seeds[0])
    channel = rng.choice(len(names), size=n_customers, p=shares / shares.sum())

    transaction_parts, customer_parts = [], []
    for k, (params, segment_seed) in enumerate(zip(segment_params, child_seeds[1:])):
        global_id = np.flatnonzero(channel == k)
        if len(global_id) == 0:
            continue
        log = simulate_transactions(
            len(global_id),
            params=params,
            start=start,
            end=end,
            acquisition_end=acquisition_end,
            time_unit_days=time_unit_days,
            seed=segment_seed,
        )
        log.transactions["customer_id"] = global_id[log.transactions["customer_id"].to_numpy()]
        log.customers["customer_id"] = global_id
        transaction_parts.append(log.transactions)
        customer_parts.append(log.customers)

    # Each part is sorted by its own ids then time and the id map is increasing, so a stable sort on the
    # global id keeps every customer's purchases in time order.
    transactions = pd.concat(transaction_parts, ignore_index=True)
    order = np.argsort(transactions["customer_id"].to_numpy(), kind="stable")
    transactions = transactions.take(order).reset_index(drop=True)
    customers = pd.concat(customer_parts, ignore_index=True)
    customers = customers.take(np.argsort(customers["customer_id"].to_numpy())).reset_index(drop=True)

    customers["acquisition_channel"] = np.asarray(names, dtype=object)[channel]
    customers["signup_date"] = customers["first_purchase"].dt.normalize()
    customers["region"] = np.asarray(regions, dtype=object)[rng.integers(0, len(regions), size=n_customers)]

    if "referral" in names:
        referred = channel == names.index("referral")
    else:
        referred = np.zeros(n_customers, dtype=bool)
        referred[rng.choice(n_customers, size=round(referral_share * n_customers), replace=False)] = True
    # Customers with a strictly earlier first purchase are a prefix of the acquisition order.
    first_purchase = customers["first_purchase"].to_numpy()
    acquisition_order = np.argsort(first_purchase, kind="stable")
    n_earlier = np.searchsorted(first_purchase[acquisition_order], first_purchase, side="left")
    referred &= n_earlier > 0
    pick = np.floor(rng.random(n_customers) * n_earlier).astype(np.int64)
    referrer = acquisition_order[np.minimum(pick, np.maximum(n_earlier - 1, 0))]
    customers["referred_by"] = pd.arrays.IntegerArray(np.where(referred, referrer, 0).astype(np.int64), ~referred)
    return SimulatedLog(transactions=transactions, customers=customers)


def write_simulated_parquet(
    directory,
    n_customers: int,
    *,
    chunk_customers: int = 1_000_000,
    seed: int = 0,
    **kwargs,
) -> dict:
    """Simulate a transaction log chunk by chunk into ``directory/part-00000.parquet``, ...

    Only one chunk is in memory at a time, so the log can be larger than memory.

    Parameters
    ----------
    directory : str or path-like
        Created if missing; must not already hold ``part-*.parquet`` files.
    n_customers : int
        Total number of customers.
    chunk_customers : int
        Customers per part file.
    seed : int
        Root seed. Chunk ``c`` uses the ``c``-th child of ``numpy.random.SeedSequence(seed).spawn``, so
        chunks are statistically independent and the output depends only on ``seed`` and
        ``chunk_customers``.
    **kwargs
        Passed to :func:`simulate_transactions` (``params``, ``start``, ``end``, ``acquisition_end``,
        ``time_unit_days``).

    Returns
    -------
    dict
        ``{"customers": int, "transactions": int, "files": int}``.

    Notes
    -----
    Customer ids are ``0 .. n_customers - 1``: chunk ``c`` holds ids from ``c * chunk_customers``. Each file
    has the columns of :attr:`SimulatedLog.transactions`; the per-customer truth is not written.
    """
    n_customers = _check_positive_int(n_customers, "n_customers")
    chunk_customers = _check_positive_int(chunk_customers, "chunk_customers")
    if "seed" in kwargs or "n_customers" in kwargs:
        raise ValueError("Pass 'seed' and 'n_customers' to write_simulated_parquet directly, not through kwargs.")
    out_dir = Path(directory)
    if out_dir.exists() and any(out_dir.glob("part-*.parquet")):
        raise FileExistsError(f"{out_dir} already holds part-*.parquet files; choose an empty directory.")
    out_dir.mkdir(parents=True, exist_ok=True)

    n_chunks = -(-n_customers // chunk_customers)
    chunk_seeds = np.random.SeedSequence(seed).spawn(n_chunks)
    total_transactions = 0
    for chunk, chunk_seed in enumerate(chunk_seeds):
        first_id = chunk * chunk_customers
        size = min(chunk_customers, n_customers - first_id)
        transactions = simulate_transactions(size, seed=chunk_seed, **kwargs).transactions
        transactions["customer_id"] += first_id
        transactions.to_parquet(out_dir / f"part-{chunk:05d}.parquet", engine="pyarrow", index=False)
        total_transactions += len(transactions)
        del transactions
    return {"customers": n_customers, "transactions": total_transactions, "files": n_chunks}


class _SeasonalClock:
    """The seasonal clock ``W`` of :func:`simulate_transactions`, in seconds from ``start``, and its inverse.

    ``W(t) = t + A P / (2 pi) [sin(2 pi (t - t_peak) / P) - sin(-2 pi t_peak / P)]`` with ``P`` a year in
    seconds and ``t_peak`` the first peak's offset: the integral of ``1 + A cos(2 pi (t - t_peak) / P)``.
    With ``A = 0`` both maps are the identity.
    """

    def __init__(self, start: pd.Timestamp, span_seconds: int, amplitude: float, peak_day_of_year: float):
        self.amplitude = amplitude
        self.period = 365.25 * _SECONDS_PER_DAY
        start_day_of_year = start.day_of_year + (start - start.normalize()) / pd.Timedelta(days=1)
        self.peak = (peak_day_of_year - start_day_of_year) * _SECONDS_PER_DAY
        if amplitude:
            self._grid = np.arange(0, span_seconds + 3600, 3600, dtype=np.float64)
            self._seasonal_grid = self.seasonal(self._grid)

    def seasonal(self, seconds) -> np.ndarray:
        t = np.asarray(seconds, dtype=np.float64)
        if not self.amplitude:
            return t
        phase = 2 * np.pi / self.period
        return t + self.amplitude / phase * (np.sin(phase * (t - self.peak)) - np.sin(-phase * self.peak))

    def calendar(self, clock) -> np.ndarray:
        """``W^-1``: seconds from ``start`` at which the seasonal clock reads ``clock`` (W is increasing)."""
        return np.interp(clock, self._seasonal_grid, self._grid)


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"The '{name}' parameter must be a positive int. Got {value!r} instead.")
    return int(value)


def _check_segments(segments) -> tuple[list[str], np.ndarray, list[SimulationParams]]:
    if not isinstance(segments, Mapping) or len(segments) == 0:
        raise ValueError(
            "The 'segments' parameter must be a non-empty mapping of channel name to (share, SimulationParams). "
            f"Got {segments!r} instead."
        )
    names, shares, params = [], [], []
    for name, value in segments.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"The 'segments' parameter must have non-empty string names. Got {name!r} instead.")
        if not isinstance(value, tuple) or len(value) != 2:
            raise ValueError(
                f"The 'segments' parameter must map {name!r} to a (share, SimulationParams) tuple. "
                f"Got {value!r} instead."
            )
        share, segment_params = value
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not (0 < share < math.inf):
            raise ValueError(
                f"The 'segments' parameter must give {name!r} a positive share. Got {share!r} instead."
            )
        if not isinstance(segment_params, SimulationParams):
            raise ValueError(
                f"The 'segments' parameter must give {name!r} a SimulationParams. Got {segment_params!r} instead."
            )
        names.append(name)
        shares.append(float(share))
        params.append(segment_params)
    total = math.fsum(shares)
    if abs(total - 1) > 1e-9:
        raise ValueError(f"The shares in the 'segments' parameter must sum to 1. Got {total!r} instead.")
    return names, np.asarray(shares), params


def _naive_timestamp(value, name: str) -> pd.Timestamp:
    try:
        timestamp = pd.Timestamp(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"The '{name}' parameter must be a date or datetime. Got {value!r} instead.") from error
    if timestamp is pd.NaT:
        raise ValueError(f"The '{name}' parameter must be a date or datetime. Got {value!r} instead.")
    if timestamp.tzinfo is not None:
        raise ValueError(f"The '{name}' parameter must be timezone-naive. Got {timestamp} instead.")
    return timestamp
