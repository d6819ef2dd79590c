"""Simulator: closed-form BG/NBD and Gamma-Gamma moments, schema invariants, determinism, parquet parts.

The expected numbers come from Fader, Hardie & Lee (2005a), "Counting Your Customers the Easy Way",
Marketing Science 24(2) (eq. 8: P(X(t) = x); eq. 9: E[X(t)]), and Fader, Hardie & Lee (2005b), "RFM and
CLV", JMR 42(4) (Gamma-Gamma mean spend). Each statistical check uses a tolerance of 4 standard errors
of the simulated estimate, so a correct simulator fails it with probability below 1e-4 for a random seed
(the seeds are fixed, so the outcome is deterministic).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats
from scipy.special import betaln, hyp2f1

from crmml.data import DEFAULT_CUSTOMER_SEGMENTS, simulate_customer_base
from crmml.data.simulate import SimulatedLog, SimulationParams, simulate_transactions, write_simulated_parquet

PARAMS = SimulationParams()
START, END = pd.Timestamp("2024-01-01"), pd.Timestamp("2025-12-31")
WINDOW_WEEKS = (END - START) / pd.Timedelta(days=7)
N_LARGE = 200_000


def bgnbd_expected_repeats(t, r, alpha, a, b):
    """E[X(t)], Fader, Hardie & Lee (2005a) eq. 9."""
    return (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, t / (alpha + t)))


def bgnbd_pmf(x, t, r, alpha, a, b):
    """P(X(t) = x), Fader, Hardie & Lee (2005a) eq. 8.

    The Gamma-ratio terms are the NBD pmf with size r and success probability alpha / (alpha + t), so the
    bracket 1 - sum_{j<x} (...) is the NBD survival function at x - 1.
    """
    x = np.asarray(x)
    nbd = stats.nbinom(r, alpha / (alpha + t))
    first = np.exp(betaln(a, b + x) - betaln(a, b)) * nbd.pmf(x)
    second = np.where(x > 0, np.exp(betaln(a + 1, b + x - 1) - betaln(a, b)) * nbd.sf(x - 1), 0.0)
    return first + second


def bgnbd_probability_alive(t, r, alpha, a, b, n_max=20_000):
    """P(still active at t) = sum_n P(N(t) = n) E[(1 - p)^n], since J > n with probability (1 - p)^n.

    N(t) is NBD(r, alpha / (alpha + t)) (Poisson-Gamma mixture, Fader, Hardie & Lee 2005a, section 3) and
    E[(1 - p)^n] = B(a, b + n) / B(a, b) for p ~ Beta(a, b).
    """
    n = np.arange(n_max)
    return float(np.sum(stats.nbinom.pmf(n, r, alpha / (alpha + t)) * np.exp(betaln(a, b + n) - betaln(a, b))))


def repeats_before(log: SimulatedLog, horizon_weeks: float) -> np.ndarray:
    """Per-customer count of repeat purchases strictly within horizon_weeks of the first purchase."""
    tx = log.transactions
    first = log.customers["first_purchase"].to_numpy()[tx["customer_id"].to_numpy()]
    elapsed_weeks = (tx["timestamp"].to_numpy() - first) / np.timedelta64(7, "D")
    is_repeat = np.ones(len(tx), dtype=bool)
    is_repeat[np.searchsorted(tx["customer_id"].to_numpy(), log.customers["customer_id"].to_numpy())] = False
    counted = is_repeat & (elapsed_weeks <= horizon_weeks)
    return np.bincount(tx["customer_id"].to_numpy()[counted], minlength=len(log.customers))


@pytest.fixture(scope="module")
def cohort_log():
    """One cohort: every customer starts at START, so all share the window END - START."""
    return simulate_transactions(N_LARGE, acquisition_end=START, seed=2024)


@pytest.fixture(scope="module")
def default_log():
    return simulate_transactions(N_LARGE, seed=7)


@pytest.fixture(scope="module")
def small_log():
    return simulate_transactions(20_000, seed=3)


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_frames():
    first, second = simulate_transactions(5_000, seed=11), simulate_transactions(5_000, seed=11)
    pd.testing.assert_frame_equal(first.transactions, second.transactions)
    pd.testing.assert_frame_equal(first.customers, second.customers)


def test_different_seed_gives_different_frames():
    first, second = simulate_transactions(5_000, seed=11), simulate_transactions(5_000, seed=12)
    assert not first.customers["lambda_"].equals(second.customers["lambda_"])
    assert not first.transactions["amount"].equals(second.transactions["amount"])


# ---------------------------------------------------------------- latent distributions


def test_mean_purchase_rate_is_r_over_alpha(default_log):
    """lambda ~ Gamma(r, alpha): mean r / alpha, sd sqrt(r) / alpha."""
    rate = default_log.customers["lambda_"].to_numpy()
    se = np.sqrt(PARAMS.r) / PARAMS.alpha / np.sqrt(len(rate))
    assert abs(rate.mean() - PARAMS.r / PARAMS.alpha) < 4 * se


def test_mean_dropout_probability_is_a_over_a_plus_b(default_log):
    """p ~ Beta(a, b): mean a / (a + b), variance ab / ((a + b)^2 (a + b + 1))."""
    a, b = PARAMS.a, PARAMS.b
    dropout = default_log.customers["dropout_p"].to_numpy()
    se = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)) / len(dropout))
    assert abs(dropout.mean() - a / (a + b)) < 4 * se


# ---------------------------------------------------------------- BG/NBD repeat counts (Fader et al. 2005a)


@pytest.mark.parametrize("fraction_of_window", [1.0, 0.5, 0.2])
def test_mean_repeats_match_bgnbd_eq9(cohort_log, fraction_of_window):
    """Mean repeat count to t equals E[X(t)] (eq. 9). Sub-windows check the purchase times, not only counts."""
    t = WINDOW_WEEKS * fraction_of_window
    counts = repeats_before(cohort_log, t)
    expected = bgnbd_expected_repeats(t, PARAMS.r, PARAMS.alpha, PARAMS.a, PARAMS.b)
    se = counts.std(ddof=1) / np.sqrt(len(counts))
    assert abs(counts.mean() - expected) < 4 * se


@pytest.mark.parametrize("fraction_of_window", [1.0, 0.5, 0.2])
def test_share_without_repeats_matches_bgnbd_eq8(cohort_log, fraction_of_window):
    """P(X(t) = 0) = (alpha / (alpha + t))^r (eq. 8 with x = 0)."""
    t = WINDOW_WEEKS * fraction_of_window
    zero_share = np.mean(repeats_before(cohort_log, t) == 0)
    expected = (PARAMS.alpha / (PARAMS.alpha + t)) ** PARAMS.r
    se = np.sqrt(expected * (1 - expected) / len(cohort_log.customers))
    assert abs(zero_share - expected) < 4 * se


@pytest.mark.parametrize("fraction_of_window", [1.0, 0.5])
def test_repeat_count_distribution_matches_bgnbd_eq8(cohort_log, fraction_of_window):
    """Chi-square goodness of fit of X(t) against eq. 8 on the bins 0..7 and 8+."""
    t = WINDOW_WEEKS * fraction_of_window
    counts = repeats_before(cohort_log, t)
    observed = np.bincount(np.minimum(counts, 8), minlength=9)
    probabilities = bgnbd_pmf(np.arange(8), t, PARAMS.r, PARAMS.alpha, PARAMS.a, PARAMS.b)
    expected = len(counts) * np.append(probabilities, 1 - probabilities.sum())
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_n_transactions_is_one_plus_repeats(cohort_log):
    counts = repeats_before(cohort_log, WINDOW_WEEKS)
    np.testing.assert_array_equal(cohort_log.customers["n_transactions"].to_numpy(), counts + 1)


def test_share_alive_at_end_matches_bgnbd(cohort_log):
    """P(alive at t) = sum_n P(N(t) = n) B(a, b + n) / B(a, b)."""
    alive = cohort_log.customers["alive_at_end"].to_numpy()
    expected = bgnbd_probability_alive(WINDOW_WEEKS, PARAMS.r, PARAMS.alpha, PARAMS.a, PARAMS.b)
    se = np.sqrt(expected * (1 - expected) / len(alive))
    assert abs(alive.mean() - expected) < 4 * se


def test_purchase_times_of_active_customers_are_uniform(cohort_log):
    """Customers still active made all N Poisson purchases, which are iid uniform on their window."""
    tx = cohort_log.transactions
    customers = cohort_log.customers
    alive = customers["alive_at_end"].to_numpy()[tx["customer_id"].to_numpy()]
    position = ((tx["timestamp"] - START) / (END - START)).to_numpy()
    repeat_position = position[alive & (position > 0)]
    assert len(repeat_position) > 10_000
    assert stats.kstest(repeat_position, "uniform").pvalue > 1e-3


# ---------------------------------------------------------------- Gamma-Gamma spend (Fader et al. 2005b)


def test_mean_spend_per_customer_matches_gamma_gamma(default_log):
    """E[z_bar] = p * gamma / (q - 1) over the population of customers, whatever their transaction count."""
    mean_spend = default_log.transactions.groupby("customer_id")["amount"].mean().to_numpy()
    expected = PARAMS.p * PARAMS.gamma / (PARAMS.q - 1)
    se = mean_spend.std(ddof=1) / np.sqrt(len(mean_spend))
    assert abs(mean_spend.mean() - expected) < 4 * se


def test_frequent_buyers_mean_spend_tracks_their_own_nu(default_log):
    """Given nu, each amount is Gamma(p, nu), so z_bar * nu / p has mean 1 and variance 1 / (n p)."""
    tx = default_log.transactions
    customers = default_log.customers
    many = customers["n_transactions"].to_numpy() >= 10
    mean_spend = tx.groupby("customer_id")["amount"].mean().to_numpy()[many]
    ratio = mean_spend * customers["nu"].to_numpy()[many] / PARAMS.p
    se = np.sqrt(np.sum(1 / (PARAMS.p * customers["n_transactions"].to_numpy()[many]))) / many.sum()
    assert many.sum() > 1_000
    assert abs(ratio.mean() - 1) < 4 * se
    assert np.all(default_log.transactions["amount"].to_numpy() > 0)


# ---------------------------------------------------------------- schema and invariants


def test_schema_and_dtypes(small_log):
    tx, customers = small_log.transactions, small_log.customers
    assert list(tx.columns) == ["customer_id", "timestamp", "amount"]
    assert tx["customer_id"].dtype == np.int64
    assert tx["timestamp"].dtype in (np.dtype("datetime64[ns]"), np.dtype("datetime64[us]"))
    assert tx["amount"].dtype == np.float64
    assert list(customers.columns) == [
        "customer_id", "first_purchase", "lambda_", "dropout_p", "nu", "n_transactions", "alive_at_end",
        "dropout_time",
    ]
    assert customers["customer_id"].dtype == np.int64
    assert customers["n_transactions"].dtype == np.int64
    assert customers["alive_at_end"].dtype == bool
    assert customers["dropout_time"].dtype == tx["timestamp"].dtype
    np.testing.assert_array_equal(customers["customer_id"].to_numpy(), np.arange(len(customers)))


def test_sorted_by_customer_then_time(small_log):
    tx = small_log.transactions
    assert tx["customer_id"].is_monotonic_increasing
    same_customer = tx["customer_id"].diff().eq(0).to_numpy()
    assert np.all(tx["timestamp"].diff().to_numpy()[same_customer] >= np.timedelta64(0, "s"))


def test_every_customer_has_transactions_counted_in_truth(small_log):
    tx, customers = small_log.transactions, small_log.customers
    sizes = tx.groupby("customer_id").size()
    np.testing.assert_array_equal(sizes.index.to_numpy(), customers["customer_id"].to_numpy())
    np.testing.assert_array_equal(sizes.to_numpy(), customers["n_transactions"].to_numpy())
    assert customers["n_transactions"].min() >= 1


def test_timestamps_within_period_and_first_is_first_purchase(small_log):
    tx, customers = small_log.transactions, small_log.customers
    assert tx["timestamp"].min() >= START and tx["timestamp"].max() <= END
    assert (tx["timestamp"].dt.floor("s") == tx["timestamp"]).all()
    first = tx.groupby("customer_id")["timestamp"].first()
    np.testing.assert_array_equal(first.to_numpy(), customers["first_purchase"].to_numpy())
    acquisition_end = START + (END - START) / 2
    assert customers["first_purchase"].max() <= acquisition_end
    # uniform acquisition over the first half: the median sits near a quarter of the period
    median_position = ((customers["first_purchase"] - START) / (acquisition_end - START)).median()
    assert abs(median_position - 0.5) < 0.02


def test_dropout_time_is_last_purchase_of_inactive_customers(small_log):
    tx, customers = small_log.transactions, small_log.customers
    last = tx.groupby("customer_id")["timestamp"].last().to_numpy()
    alive = customers["alive_at_end"].to_numpy()
    dropout = customers["dropout_time"].to_numpy()
    assert 0 < alive.mean() < 1
    assert np.all(np.isnat(dropout[alive]))
    np.testing.assert_array_equal(dropout[~alive], last[~alive])
    # a customer can only leave after a repeat purchase
    assert customers.loc[~alive, "n_transactions"].min() >= 2


def test_custom_time_unit_and_params_scale_the_rate():
    """Daily units with alpha / 7 describe the same weekly process: the mean count barely moves."""
    weekly = simulate_transactions(N_LARGE // 2, acquisition_end=START, seed=5)
    daily_params = SimulationParams(alpha=PARAMS.alpha * 7)
    daily = simulate_transactions(N_LARGE // 2, params=daily_params, acquisition_end=START, time_unit_days=1, seed=5)
    expected = bgnbd_expected_repeats(WINDOW_WEEKS, PARAMS.r, PARAMS.alpha, PARAMS.a, PARAMS.b)
    for log in (weekly, daily):
        counts = log.customers["n_transactions"].to_numpy() - 1
        assert abs(counts.mean() - expected) < 4 * counts.std(ddof=1) / np.sqrt(len(counts))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_customers": 0}, "n_customers"),
        ({"n_customers": 10, "end": "2023-01-01"}, "'end'"),
        ({"n_customers": 10, "acquisition_end": "2026-06-01"}, "acquisition_end"),
        ({"n_customers": 10, "time_unit_days": 0}, "time_unit_days"),
        ({"n_customers": 10, "start": "2024-01-01 00:00+01:00"}, "timezone"),
    ],
)
def test_invalid_arguments_raise_with_the_argument_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_transactions(**kwargs)


def test_invalid_params_name_the_parameter():
    with pytest.raises(ValueError, match="'alpha' parameter of SimulationParams"):
        SimulationParams(alpha=-1.0)


# ---------------------------------------------------------------- parquet parts


def test_write_simulated_parquet_parts(tmp_path):
    counts = write_simulated_parquet(tmp_path / "log", 2_500, chunk_customers=1_000, seed=9)
    files = sorted((tmp_path / "log").glob("part-*.parquet"))
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    table = pq.read_table(tmp_path / "log")
    frame = table.to_pandas()
    assert counts == {"customers": 2_500, "transactions": len(frame), "files": 3}
    np.testing.assert_array_equal(np.unique(frame["customer_id"]), np.arange(2_500))
    assert frame["customer_id"].dtype == np.int64
    assert frame["amount"].dtype == np.float64
    parts = [pq.read_table(f).to_pandas() for f in files]
    # independent per-chunk seeds: chunk 1 is not chunk 0 shifted by 1000 ids
    assert not np.array_equal(parts[0]["amount"].to_numpy()[:100], parts[1]["amount"].to_numpy()[:100])


def test_write_simulated_parquet_is_deterministic_and_refuses_existing_parts(tmp_path):
    write_simulated_parquet(tmp_path / "a", 1_500, chunk_customers=1_000, seed=4)
    write_simulated_parquet(tmp_path / "b", 1_500, chunk_customers=1_000, seed=4)
    pd.testing.assert_frame_equal(pq.read_table(tmp_path / "a").to_pandas(), pq.read_table(tmp_path / "b").to_pandas())
    with pytest.raises(FileExistsError, match="part-"):
        write_simulated_parquet(tmp_path / "a", 1_500, chunk_customers=1_000, seed=4)


# ---------------------------------------------------------------- customer base with acquisition channels

N_BASE = 20_000


@pytest.fixture(scope="module")
def base_log():
    return simulate_customer_base(N_BASE, seed=21)


def test_customer_base_same_seed_gives_identical_frames():
    first, second = simulate_customer_base(3_000, seed=5), simulate_customer_base(3_000, seed=5)
    pd.testing.assert_frame_equal(first.transactions, second.transactions)
    pd.testing.assert_frame_equal(first.customers, second.customers)
    from_sequence = simulate_customer_base(3_000, seed=np.random.SeedSequence(5))
    pd.testing.assert_frame_equal(first.customers, from_sequence.customers)


def test_customer_base_different_seed_gives_different_frames():
    first, second = simulate_customer_base(3_000, seed=5), simulate_customer_base(3_000, seed=6)
    assert not first.customers["acquisition_channel"].equals(second.customers["acquisition_channel"])
    assert not first.customers["region"].equals(second.customers["region"])
    assert not first.customers["lambda_"].equals(second.customers["lambda_"])
    assert not first.transactions["amount"].equals(second.transactions["amount"])


def test_customer_base_schema_ids_and_order(base_log):
    tx, customers = base_log.transactions, base_log.customers
    assert list(tx.columns) == ["customer_id", "timestamp", "amount"]
    assert tx["customer_id"].dtype == np.int64
    assert list(customers.columns) == [
        "customer_id", "first_purchase", "lambda_", "dropout_p", "nu", "n_transactions", "alive_at_end",
        "dropout_time", "acquisition_channel", "signup_date", "region", "referred_by",
    ]
    assert customers["referred_by"].dtype == pd.Int64Dtype()
    assert pd.api.types.is_string_dtype(customers["acquisition_channel"])
    assert pd.api.types.is_string_dtype(customers["region"])
    np.testing.assert_array_equal(customers["customer_id"].to_numpy(), np.arange(N_BASE))
    # sorted by customer then time, and every customer's rows match the truth table
    assert tx["customer_id"].is_monotonic_increasing
    same_customer = tx["customer_id"].diff().eq(0).to_numpy()
    assert np.all(tx["timestamp"].diff().to_numpy()[same_customer] >= np.timedelta64(0, "s"))
    grouped = tx.groupby("customer_id")
    np.testing.assert_array_equal(grouped.size().to_numpy(), customers["n_transactions"].to_numpy())
    np.testing.assert_array_equal(grouped["timestamp"].first().to_numpy(), customers["first_purchase"].to_numpy())
    last = grouped["timestamp"].last().to_numpy()
    inactive = ~customers["alive_at_end"].to_numpy()
    np.testing.assert_array_equal(customers["dropout_time"].to_numpy()[inactive], last[inactive])
    signup = customers["signup_date"]
    assert pd.api.types.is_datetime64_dtype(signup)
    assert (signup == customers["first_purchase"].dt.normalize()).all()
    assert (signup.dt.floor("D") == signup).all()


def test_customer_base_ids_are_not_grouped_by_channel(base_log):
    """Ids are drawn in channel-assignment order, so the first ids are not all one channel."""
    assert base_log.customers["acquisition_channel"].iloc[:200].nunique() == len(DEFAULT_CUSTOMER_SEGMENTS)


def test_default_segments_shares_sum_to_one_and_dropout_differs():
    shares = [share for share, _ in DEFAULT_CUSTOMER_SEGMENTS.values()]
    assert abs(sum(shares) - 1) < 1e-9
    mean_dropout = {name: p.a / (p.a + p.b) for name, (_, p) in DEFAULT_CUSTOMER_SEGMENTS.items()}
    assert mean_dropout["paid_social"] > 2 * mean_dropout["organic_search"] > 4 * mean_dropout["referral"]


def test_customer_base_channel_shares_are_binomial(base_log):
    counts = base_log.customers["acquisition_channel"].value_counts()
    assert set(counts.index) == set(DEFAULT_CUSTOMER_SEGMENTS)
    for name, (share, _) in DEFAULT_CUSTOMER_SEGMENTS.items():
        se = np.sqrt(share * (1 - share) / N_BASE)
        assert abs(counts[name] / N_BASE - share) < 4 * se, name


def test_customer_base_channels_behave_as_their_params(base_log):
    """Mean dropout_p per channel is a / (a + b) of that channel, and the share alive at the end orders
    the channels like their mean dropout probability (fastest dropout, fewest alive)."""
    customers = base_log.customers
    by_channel = customers.groupby("acquisition_channel")
    for name, (_, params) in DEFAULT_CUSTOMER_SEGMENTS.items():
        dropout = by_channel.get_group(name)["dropout_p"].to_numpy()
        a, b = params.a, params.b
        se = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)) / len(dropout))
        assert abs(dropout.mean() - a / (a + b)) < 4 * se, name
        rate = by_channel.get_group(name)["lambda_"].to_numpy()
        assert abs(rate.mean() - params.r / params.alpha) < 4 * np.sqrt(params.r) / params.alpha / np.sqrt(len(rate))
    by_mean_dropout = sorted(DEFAULT_CUSTOMER_SEGMENTS, key=lambda n: DEFAULT_CUSTOMER_SEGMENTS[n][1].a
                             / (DEFAULT_CUSTOMER_SEGMENTS[n][1].a + DEFAULT_CUSTOMER_SEGMENTS[n][1].b))
    alive = by_channel["alive_at_end"].mean()[by_mean_dropout].to_numpy()
    assert np.all(np.diff(alive) < 0), dict(zip(by_mean_dropout, alive))


def test_custom_segments_follow_params_not_names():
    """Swapping the params between two channels swaps their behaviour."""
    fast, slow = SimulationParams(a=3.0, b=1.0), SimulationParams(a=0.3, b=6.0)
    segments = {"alpha_channel": (0.3, fast), "beta_channel": (0.7, slow)}
    customers = simulate_customer_base(5_000, segments=segments, seed=2).customers
    mean_dropout = customers.groupby("acquisition_channel")["dropout_p"].mean()
    alive = customers.groupby("acquisition_channel")["alive_at_end"].mean()
    assert mean_dropout["alpha_channel"] > 0.6
    assert mean_dropout["beta_channel"] < 0.1
    assert alive["alpha_channel"] < alive["beta_channel"] - 0.1
    share = (customers["acquisition_channel"] == "alpha_channel").mean()
    assert abs(share - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 5_000)


def check_referrers(customers: pd.DataFrame) -> pd.Series:
    referred_by = customers["referred_by"]
    has = referred_by.notna().to_numpy()
    referrer = referred_by[has].to_numpy(dtype=np.int64)
    referred = customers["customer_id"].to_numpy()[has]
    first = customers["first_purchase"].to_numpy()
    assert np.all((referrer >= 0) & (referrer < len(customers)))
    assert np.all(referrer != referred)
    assert np.all(first[referrer] < first[referred])
    return pd.Series(has, index=customers.index)


def test_customer_base_referral_channel_customers_have_earlier_referrers(base_log):
    customers = base_log.customers
    has = check_referrers(customers)
    is_referral = (customers["acquisition_channel"] == "referral").to_numpy()
    assert not has[~is_referral].any()
    # only the very first customer acquired can lack an earlier one
    assert (~has[is_referral]).sum() <= 1
    # referrers are spread over the base, not one customer
    assert customers["referred_by"].nunique() > 0.5 * is_referral.sum()


def test_first_acquired_customer_has_no_referrer():
    """With every customer in the referral channel, all but the earliest-acquired have a referrer."""
    customers = simulate_customer_base(2_000, segments={"referral": (1.0, SimulationParams())}, seed=4).customers
    has = check_referrers(customers)
    first = customers["first_purchase"]
    assert not has[first == first.min()].any()
    assert has[first > first.min()].all()

def test_referral_share_without_referral_channel():
    segments = {"web": (0.5, SimulationParams()), "store": (0.5, SimulationParams(a=2.0, b=2.0))}
    customers = simulate_customer_base(4_000, segments=segments, referral_share=0.3, seed=8).customers
    has = check_referrers(customers)
    assert 1_199 <= has.sum() <= 1_200
    none = simulate_customer_base(500, segments=segments, referral_share=0.0, seed=8).customers
    assert none["referred_by"].isna().all()


def test_customer_base_region_is_noise(base_log):
    """Region is uniform, independent of the channel and of the dropout probability."""
    customers = base_log.customers
    counts = customers["region"].value_counts()
    assert set(counts.index) == {"north", "south", "east", "west"}
    assert stats.chisquare(counts.to_numpy()).pvalue > 1e-3
    table = pd.crosstab(customers["region"], customers["acquisition_channel"]).to_numpy()
    assert stats.chi2_contingency(table).pvalue > 1e-3
    dropout = customers["dropout_p"]
    overall, sd = dropout.mean(), dropout.std(ddof=1)
    for region, group in dropout.groupby(customers["region"]):
        assert abs(group.mean() - overall) < 4 * sd / np.sqrt(len(group)), region


def test_customer_base_custom_regions():
    customers = simulate_customer_base(300, regions=["eu"], seed=1).customers
    assert (customers["region"] == "eu").all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_customers": 0}, "n_customers"),
        ({"segments": {}}, "segments"),
        ({"segments": {"a": (0.5, SimulationParams()), "b": (0.4, SimulationParams())}}, "sum to 1"),
        ({"segments": {"a": (1.5, SimulationParams()), "b": (-0.5, SimulationParams())}}, "positive share"),
        ({"segments": {"a": (1.0, SimulationParams()), "b": (0.0, SimulationParams())}}, "positive share"),
        ({"segments": {"a": (1.0, {"r": 0.2})}}, "SimulationParams"),
        ({"segments": {"a": 1.0}}, "segments"),
        ({"segments": {"": (1.0, SimulationParams())}}, "non-empty string"),
        ({"segments": {3: (1.0, SimulationParams())}}, "non-empty string"),
        ({"referral_share": 1.5}, "referral_share"),
        ({"regions": []}, "regions"),
        ({"regions": "north"}, "regions"),
        ({"regions": ["north", "north"]}, "regions"),
        ({"time_unit_days": 0}, "time_unit_days"),
        ({"end": "2023-01-01"}, "'end'"),
    ],
)
def test_customer_base_invalid_arguments_raise_with_the_argument_name(kwargs, match):
    kwargs = {"n_customers": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        simulate_customer_base(**kwargs)
