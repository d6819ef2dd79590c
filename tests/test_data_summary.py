"""Tests for rfm_summary and calibration_holdout.

Oracles: the CDNOW summaries printed in the lifetimes package (Fader & Hardie's CDNOW sample,
weeks, observation end 1997-09-30) and lifetimes 0.11.3's own ``summary_data_from_transaction_data``
and ``calibration_and_holdout_data`` run on the same frames.
"""

from __future__ import annotations

import decimal

import duckdb
import numpy as np
import pandas as pd
import pytest
from lifetimes.datasets import load_cdnow_summary, load_cdnow_summary_data_with_monetary_value
from lifetimes.utils import (
    _find_first_transactions,
    calibration_and_holdout_data,
    summary_data_from_transaction_data,
)

from crmml.data import SummaryReport, calibration_holdout, read_transactions, rfm_summary
from crmml.data import summary as summary_module
from crmml.data.summary import OccasionBatch, purchase_occasions
from crmml.datasets import load_cdnow_transactions
from crmml.errors import DataValidationError

SUMMARY_COLUMNS = ["frequency", "recency", "T", "monetary_value"]
PRINTED_HALF_CENT = 0.005 + 1e-9  # values printed with 2 decimals


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return load_cdnow_transactions(sample=True)[["customer_id", "timestamp", "amount"]]


def lifetimes_summary(frame: pd.DataFrame, **kwargs) -> pd.DataFrame:
    return summary_data_from_transaction_data(frame, "customer_id", "timestamp", "amount", **kwargs)


def assert_summary_close(ours: pd.DataFrame, expected: pd.DataFrame, atol: float = 1e-9) -> None:
    assert ours.index.tolist() == sorted(expected.index.tolist())
    expected = expected.loc[ours.index]
    for column in expected.columns:
        np.testing.assert_allclose(ours[column], expected[column], rtol=0, atol=atol, err_msg=column)


# --------------------------------------------------------------------------------------------------
# rfm_summary against lifetimes and the printed CDNOW summary
# --------------------------------------------------------------------------------------------------


def test_cdnow_summary_same_as_printed_in_lifetimes(cdnow):
    """cdnow_customers_summary_with_transactions.csv: weeks (D / 7), as of 1997-09-30."""
    ours = rfm_summary(cdnow, as_of="1997-09-30", freq="D", freq_multiplier=7)
    printed = load_cdnow_summary_data_with_monetary_value()
    assert ours.index.tolist() == printed.index.tolist()
    np.testing.assert_array_equal(ours["frequency"], printed["frequency"])
    for column in ["recency", "T", "monetary_value"]:
        np.testing.assert_allclose(ours[column], printed[column], rtol=0, atol=PRINTED_HALF_CENT, err_msg=column)

    printed_rfm = load_cdnow_summary(index_col="ID")
    np.testing.assert_array_equal(ours["frequency"], printed_rfm["frequency"])
    np.testing.assert_allclose(ours["recency"], printed_rfm["recency"], rtol=0, atol=PRINTED_HALF_CENT)
    np.testing.assert_allclose(ours["T"], printed_rfm["T"], rtol=0, atol=PRINTED_HALF_CENT)


@pytest.mark.parametrize(
    ("freq", "as_of", "multiplier"),
    [("D", "1997-09-30", 7), ("D", "1998-06-30", 1), ("W", "1997-09-28", 1), ("W", "1998-06-28", 2)],
)
def test_cdnow_summary_same_as_lifetimes(cdnow, freq, as_of, multiplier):
    """lifetimes.summary_data_from_transaction_data on the same frame, as_of at a period end."""
    ours = rfm_summary(cdnow, as_of=as_of, freq=freq, freq_multiplier=multiplier)
    expected = lifetimes_summary(cdnow, observation_period_end=as_of, freq=freq, freq_multiplier=multiplier)
    assert_summary_close(ours[SUMMARY_COLUMNS], expected)


def test_cdnow_summary_include_first_transaction_same_as_lifetimes(cdnow):
    ours = rfm_summary(cdnow, as_of="1997-12-31", include_first_transaction=True)
    expected = lifetimes_summary(cdnow, observation_period_end="1997-12-31", include_first_transaction=True)
    assert_summary_close(ours[SUMMARY_COLUMNS], expected)


def test_cdnow_monthly_summary_same_as_lifetimes_month_grouping(cdnow):
    """freq="M": lifetimes 0.11.3 fails under pandas 3 when it divides by np.timedelta64(1, "M"),
    so the oracle is lifetimes' own month grouping (_find_first_transactions), with recency and T
    counted as whole calendar months between pandas Periods."""
    as_of = pd.Timestamp("1997-09-30")
    periods = _find_first_transactions(
        cdnow, "customer_id", "timestamp", "amount",
        observation_period_end=as_of.to_period("M").to_timestamp(), freq="M",
    )
    grouped = periods.groupby("customer_id")
    first, last = grouped["timestamp"].min(), grouped["timestamp"].max()
    expected = pd.DataFrame(
        {
            "frequency": grouped.size() - 1.0,
            "recency": [(b - a).n for a, b in zip(first, last)],
            "T": [(as_of.to_period("M") - a).n for a in first],
            "monetary_value": periods.loc[~periods["first"]].groupby("customer_id")["amount"].mean(),
        }
    ).fillna({"monetary_value": 0.0})
    ours = rfm_summary(cdnow, as_of=as_of, freq="M")
    assert_summary_close(ours[SUMMARY_COLUMNS], expected.astype(float))


def test_random_log_with_times_of_day_same_as_lifetimes():
    """Several purchases per day at random times; lifetimes groups them by day or week too."""
    rng = np.random.default_rng(7)
    n = 20_000
    frame = pd.DataFrame(
        {
            "customer_id": rng.integers(0, 2_000, n),
            "timestamp": pd.Timestamp("2023-01-02") + pd.to_timedelta(rng.integers(0, 200 * 86_400, n), "s"),
            "amount": rng.gamma(2.0, 10.0, n).round(2),
        }
    )
    for freq, as_of in [("D", "2023-06-30"), ("W", "2023-07-16")]:
        ours = rfm_summary(frame, as_of=as_of, freq=freq)
        expected = lifetimes_summary(frame, observation_period_end=as_of, freq=freq)
        assert_summary_close(ours[SUMMARY_COLUMNS], expected)


def test_without_amounts_matches_lifetimes_and_omits_monetary_value(cdnow):
    ours = rfm_summary(cdnow, amount_col=None, as_of="1997-09-30")
    assert list(ours.columns) == ["frequency", "recency", "T", "first_purchase", "last_purchase"]
    expected = summary_data_from_transaction_data(
        cdnow, "customer_id", "timestamp", observation_period_end="1997-09-30"
    )
    assert_summary_close(ours[["frequency", "recency", "T"]], expected)


def test_summary_columns_and_purchase_timestamps(cdnow):
    ours = rfm_summary(cdnow, as_of="1997-09-30")
    assert ours.index.name == "customer_id"
    assert all(ours[c].dtype == np.float64 for c in SUMMARY_COLUMNS)
    customer_1 = ours.loc[1]
    assert customer_1["first_purchase"] == pd.Timestamp("1997-01-01")
    assert customer_1["last_purchase"] == pd.Timestamp("1997-08-02")
    assert customer_1["recency"] == (pd.Timestamp("1997-08-02") - pd.Timestamp("1997-01-01")).days


def test_multiplier_only_rescales(cdnow):
    days = rfm_summary(cdnow, as_of="1997-09-30")
    weeks = rfm_summary(cdnow, as_of="1997-09-30", freq_multiplier=7)
    np.testing.assert_allclose(weeks[["recency", "T"]] * 7, days[["recency", "T"]], rtol=1e-12)
    pd.testing.assert_series_equal(weeks["frequency"], days["frequency"])


# --------------------------------------------------------------------------------------------------
# Sources and id types
# --------------------------------------------------------------------------------------------------


def test_same_summary_from_dataframe_csv_parquet_directory_and_glob(cdnow, tmp_path):
    csv_path = tmp_path / "log.csv"
    cdnow.to_csv(csv_path, index=False)
    parquet_path = tmp_path / "log.parquet"
    cdnow.to_parquet(parquet_path)
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, start in enumerate(range(0, len(cdnow), 1000)):
        cdnow.iloc[start : start + 1000].to_parquet(parts / f"part-{i:02d}.parquet")

    expected = rfm_summary(cdnow, as_of="1997-09-30", freq_multiplier=7)
    for source in [csv_path, parquet_path, parts, str(parts / "*.parquet")]:
        ours = rfm_summary(source, as_of="1997-09-30", freq_multiplier=7)
        pd.testing.assert_frame_equal(ours, expected, check_exact=True)


def test_string_ids_give_the_same_summary_as_integer_ids(cdnow):
    as_text = cdnow.assign(customer_id="C" + cdnow["customer_id"].astype(str).str.zfill(5))
    by_text = rfm_summary(as_text, as_of="1997-09-30")
    by_int = rfm_summary(cdnow, as_of="1997-09-30")
    assert pd.api.types.is_string_dtype(by_text.index)
    assert by_text.index[0] == "C00001"
    np.testing.assert_array_equal(by_text.to_numpy(), by_int.to_numpy())


def test_read_options_are_passed_through(cdnow):
    renamed = cdnow.rename(columns={"timestamp": "date"})
    renamed["date"] = renamed["date"].dt.strftime("%Y%m%d").astype(int)
    ours = rfm_summary(renamed, time_col="date", time_format="%Y%m%d", as_of="1997-09-30")
    pd.testing.assert_frame_equal(ours, rfm_summary(cdnow, as_of="1997-09-30"))


# --------------------------------------------------------------------------------------------------
# Refunds, as-of exclusion and the report
# --------------------------------------------------------------------------------------------------


def refund_log() -> pd.DataFrame:
    rows = [
        ("r", "2024-01-01 10:00", 10.0),  # first occasion
        ("r", "2024-01-03 09:00", 20.0),  # occasion, net 15 after the refund below
        ("r", "2024-01-03 18:00", -5.0),
        ("r", "2024-01-05 09:00", 8.0),  # fully refunded the same day: not an occasion
        ("r", "2024-01-05 12:00", -8.0),
        ("r", "2024-01-07 12:00", -4.0),  # refund alone in its day: unmatched
        ("r", "2024-01-09 12:00", 0.0),  # zero-amount purchase: still an occasion
        ("r", "2024-01-10 12:00", 5.0),  # over-refunded (net -5): not an occasion
        ("r", "2024-01-10 13:00", -10.0),
        ("r", "2024-01-12 08:00", 6.0),  # after as_of
        ("s", "2024-01-02 12:00", -3.0),  # only a refund: customer excluded
        ("t", "2024-01-02 12:00", 5.0),  # only a fully refunded purchase: customer excluded
        ("t", "2024-01-02 13:00", -5.0),
        ("u", "2024-01-11 23:00", 7.0),  # on the as-of day: included
        ("u", "2024-01-12 00:00", 1.0),  # after as_of
        ("v", "2024-01-04 00:00", np.inf),  # rejected
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return frame


def test_refund_policy_and_report():
    summary, report = rfm_summary(
        refund_log(), as_of="2024-01-11", on_invalid="reject", return_report=True
    )
    assert summary.index.tolist() == ["r", "u"]
    r = summary.loc["r"]
    assert (r["frequency"], r["recency"], r["T"], r["monetary_value"]) == (2.0, 8.0, 10.0, 7.5)
    assert r["first_purchase"] == pd.Timestamp("2024-01-01 10:00")
    assert r["last_purchase"] == pd.Timestamp("2024-01-09 12:00")
    u = summary.loc["u"]
    assert (u["frequency"], u["recency"], u["T"], u["monetary_value"]) == (0.0, 0.0, 0.0, 0.0)

    assert report == SummaryReport(
        rows_in=16,
        rows_used=4,
        refund_rows_netted=1,
        rows_in_fully_refunded_periods=6,
        unmatched_refund_rows=2,
        rows_of_holdout_only_customers=0,
        rows_after_as_of=2,
        rows_rejected=1,
        n_customers=2,
        customers_excluded=2,
        as_of=pd.Timestamp("2024-01-11"),
        freq="D",
        freq_multiplier=1.0,
    )
    assert report.reconciles
    assert sum(report.parts.values()) == report.rows_in


def test_include_first_transaction_counts_the_first_occasion():
    summary = rfm_summary(refund_log(), as_of="2024-01-11", on_invalid="reject", include_first_transaction=True)
    assert summary.loc["r", "frequency"] == 3.0
    assert summary.loc["r", "monetary_value"] == pytest.approx((10 + 15 + 0) / 3)


def test_refund_later_in_the_same_week_nets_out_weekly_but_not_daily():
    frame = pd.DataFrame(
        {
            "customer_id": [1, 1, 2],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-07", "2024-01-03"]),  # Mon, Sun
            "amount": [10.0, -10.0, 4.0],
        }
    )
    daily, daily_report = rfm_summary(frame, freq="D", return_report=True)
    assert daily.index.tolist() == [1, 2]
    assert daily_report.unmatched_refund_rows == 1
    weekly, weekly_report = rfm_summary(frame, freq="W", return_report=True)
    assert weekly.index.tolist() == [2]
    assert weekly_report.rows_in_fully_refunded_periods == 2
    assert weekly_report.customers_excluded == 1
    assert daily_report.reconciles and weekly_report.reconciles


def test_rows_after_as_of_are_excluded_unlike_lifetimes_which_keeps_the_as_of_period(cdnow):
    """As of Wednesday 1997-09-24 with weeks: lifetimes keeps Thursday to Sunday of that week."""
    as_of = "1997-09-24"
    ours, report = rfm_summary(cdnow, as_of=as_of, freq="W", return_report=True)
    assert report.rows_after_as_of == int((cdnow["timestamp"] > as_of).sum())
    assert report.reconciles

    rest_of_week = cdnow["timestamp"].between("1997-09-25", "1997-09-28")
    assert rest_of_week.any()
    lifetimes_week = lifetimes_summary(cdnow, observation_period_end=as_of, freq="W")
    cut_at_as_of = lifetimes_summary(cdnow[cdnow["timestamp"] <= as_of], observation_period_end=as_of, freq="W")
    assert not lifetimes_week["frequency"].equals(cut_at_as_of["frequency"])
    assert_summary_close(ours[SUMMARY_COLUMNS], cut_at_as_of)


def test_report_on_cdnow_reconciles(cdnow):
    _, report = rfm_summary(cdnow, as_of="1997-09-30", return_report=True)
    assert report.rows_in == 6919
    assert report.rows_after_as_of == int((cdnow["timestamp"] > "1997-09-30").sum())
    assert report.rows_used == 6919 - report.rows_after_as_of
    assert report.n_customers == 2357 and report.customers_excluded == 0
    assert report.reconciles


def test_reading_a_validated_log_once_and_summarising_twice(cdnow):
    log = read_transactions(cdnow)
    pd.testing.assert_frame_equal(
        rfm_summary(log, as_of="1997-09-30"), rfm_summary(cdnow, as_of="1997-09-30")
    )


# --------------------------------------------------------------------------------------------------
# Exact amounts, row order and batches
# --------------------------------------------------------------------------------------------------


def mixed_amount_log(seed: int = 3, n: int = 4_000) -> pd.DataFrame:
    """Amounts of every kind: cents, full-precision doubles, refunds (some netting a purchase to
    exactly zero), tiny negatives, values on a rounding boundary and, for customers 150 and up,
    amounts above 9.2e8 (beyond int64 ten-billionths) whose totals pass 2**53 ten-billionths."""
    rng = np.random.default_rng(seed)
    customer = rng.integers(0, 300, n)
    day = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 60, n), "D")
    stamp = day + pd.to_timedelta(rng.integers(0, 86_400, n), "s")
    kind = rng.integers(0, 6, n)
    amount = np.select(
        [kind == 0, kind == 1, kind == 2, kind == 3, kind == 4],
        [
            rng.gamma(2.0, 10.0, n).round(2),
            rng.gamma(2.0, 10.0, n),
            -rng.gamma(2.0, 5.0, n).round(2),
            np.where(customer >= 150, rng.uniform(1e9, 1e12, n), rng.gamma(2.0, 10.0, n)),
            (rng.integers(-50, 50, n) + 0.5) / 1e10,
        ],
        default=-1e-12,
    )
    return pd.DataFrame({"customer_id": customer, "timestamp": stamp, "amount": amount})


def exact_sql_summary(frame: pd.DataFrame, as_of: str) -> pd.DataFrame:
    """rfm_summary's daily definitions written directly in DuckDB SQL with DECIMAL(38, 10) sums,
    as crmml computed them before the NumPy reduction: the oracle for exact amounts."""
    con = duckdb.connect()
    con.register("log", frame)
    return con.sql(
        f"""
        WITH periods AS (
            SELECT customer_id, CAST(timestamp AS DATE) - DATE '1970-01-01' AS period,
                count(*) AS n_rows, count(*) FILTER (WHERE amount < 0) AS n_refunds,
                sum(CAST(amount AS DECIMAL(38, 10))) AS net
            FROM log WHERE CAST(timestamp AS DATE) <= DATE '{as_of}' GROUP BY 1, 2
        )
        SELECT customer_id,
            CAST(count(*) - 1 AS DOUBLE) AS frequency,
            CAST(max(period) - min(period) AS DOUBLE) AS recency,
            CASE WHEN count(*) > 1
                THEN CAST(sum(net) - arg_min(net, period) AS DOUBLE) / (count(*) - 1) ELSE 0
            END AS monetary_value
        FROM periods WHERE n_rows > n_refunds AND (net > 0 OR n_refunds = 0)
        GROUP BY customer_id ORDER BY customer_id
        """
    ).df().set_index("customer_id")


def test_amounts_are_rounded_like_duckdbs_decimal_cast():
    """Each amount is rounded to 10 decimal places exactly as DuckDB casts DOUBLE to DECIMAL(38, 10)
    (half away from zero), including values on a rounding boundary and above 9.2e8."""
    rng = np.random.default_rng(0)
    amount = np.concatenate(
        [
            rng.normal(0, 1, 2_000) * 10.0 ** rng.integers(-12, 17, 2_000),
            (np.arange(-200, 200) + 0.5) / 1e10,
            [0.0, -0.0, 1e-10, -1e-10, 5e-11, -5e-11, 0.1, 0.2, 0.3, 9.2e8, -9.3e8, 1e17],
        ]
    )
    whole, frac = summary_module._split_amounts(amount)
    decimals = duckdb.connect().sql(
        "SELECT CAST(a AS DECIMAL(38, 10)) FROM (SELECT unnest($1) AS a)", params=[amount.tolist()]
    )
    expected = [int(d.scaleb(10)) for (d,) in decimals.fetchall()]
    assert [int(w) * 10**10 + int(f) for w, f in zip(whole, frac)] == expected
    assert ((frac >= 0) & (frac < 10**10)).all()


def test_exact_totals_become_doubles_like_duckdbs_decimal_cast():
    """Totals (ten-billionths up to 1e25, either sign) convert to the double DuckDB gives for a
    DECIMAL(38, 10); the two differ from a plain whole + frac / 1e10 about once in 4,000 values."""
    rng = np.random.default_rng(1)
    leading, exponent = rng.integers(-(10**9), 10**9, 20_000), rng.integers(0, 17, 20_000)
    trailing = rng.integers(0, 10**9, 20_000)
    units = [int(a) * 10 ** int(e) + int(b) for a, e, b in zip(leading, exponent, trailing)]
    units += [2**53, 2**53 + 1, -(2**53) - 1, 10**10, -(10**10), 0, 1, -1]
    whole, frac = (np.array(part, dtype=np.int64) for part in zip(*(divmod(u, 10**10) for u in units)))
    text = [str(decimal.Decimal(u).scaleb(-10)) for u in units]
    doubles = duckdb.connect().sql(
        "SELECT CAST(CAST(s AS DECIMAL(38, 10)) AS DOUBLE) FROM unnest($1) AS t(s)", params=[text]
    )
    expected = np.array([value for (value,) in doubles.fetchall()])
    np.testing.assert_array_equal(summary_module._to_double(whole, frac), expected)


def test_monetary_value_is_the_exact_decimal_sum_cast_to_double(monkeypatch):
    """Bit for bit the DuckDB DECIMAL(38, 10) oracle, with tiny batches so that customers span
    several of them."""
    frame = mixed_amount_log()
    expected = exact_sql_summary(frame, as_of="2024-02-15")
    monkeypatch.setattr(summary_module, "_BATCH_ROWS", 64)
    ours = rfm_summary(frame, as_of="2024-02-15")
    assert ours.index.tolist() == expected.index.tolist()
    for column in expected.columns:
        np.testing.assert_array_equal(ours[column], expected[column], err_msg=column)


def test_refund_of_point_one_plus_point_two_by_point_three_nets_to_exactly_zero():
    """In doubles 0.1 + 0.2 - 0.3 is 5.6e-17, which would make the day a purchase occasion."""
    frame = small_frame_with_amounts([10.0, 0.1, 0.2, -0.3, 4.0])
    frame["timestamp"] = pd.to_datetime(["2024-01-01"] + ["2024-01-02"] * 3 + ["2024-01-03"])
    summary, report = rfm_summary(frame, as_of="2024-01-03", return_report=True)
    assert summary.loc[1, "frequency"] == 1.0  # 2024-01-02 is fully refunded
    assert summary.loc[1, "monetary_value"] == 4.0
    assert report.rows_in_fully_refunded_periods == 3


def test_summary_does_not_depend_on_row_order_or_batch_size(monkeypatch):
    frame = mixed_amount_log(seed=5)
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    expected, expected_report = rfm_summary(frame, as_of="2024-02-15", freq="W", return_report=True)
    split = calibration_holdout(frame, calibration_end="2024-01-31", holdout_end="2024-02-25")
    for batch_rows in [64, 1_000, 1 << 20]:
        monkeypatch.setattr(summary_module, "_BATCH_ROWS", batch_rows)
        ours, report = rfm_summary(shuffled, as_of="2024-02-15", freq="W", return_report=True)
        pd.testing.assert_frame_equal(ours, expected, check_exact=True)
        assert report == expected_report and report.reconciles
        pd.testing.assert_frame_equal(
            calibration_holdout(shuffled, calibration_end="2024-01-31", holdout_end="2024-02-25"),
            split,
            check_exact=True,
        )


def test_string_ids_across_batches_give_the_same_summary(monkeypatch, cdnow):
    as_text = cdnow.assign(customer_id="C" + cdnow["customer_id"].astype(str).str.zfill(5))
    expected = rfm_summary(as_text, as_of="1997-09-30")
    monkeypatch.setattr(summary_module, "_BATCH_ROWS", 50)
    pd.testing.assert_frame_equal(rfm_summary(as_text, as_of="1997-09-30"), expected, check_exact=True)


def occasions_frame(batches) -> pd.DataFrame:
    """purchase_occasions' batches as one frame, checking that no customer spans two batches."""
    parts, seen = [], set()
    for batch in batches:
        assert isinstance(batch, OccasionBatch)
        ids = batch.customer_id.to_pylist()
        assert not seen.intersection(ids) and len(set(ids)) == len(ids)
        seen.update(ids)
        parts.append(
            pd.DataFrame(
                {
                    "customer_id": np.asarray(ids, dtype=object)[batch.customer],
                    "period": batch.period,
                    "net": batch.net_amount,
                    "n_rows": batch.n_rows,
                    "n_refund_rows": batch.n_refund_rows,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def exact_sql_occasions(frame: pd.DataFrame, as_of: str) -> pd.DataFrame:
    """Daily purchase occasions written directly in DuckDB SQL with DECIMAL(38, 10) sums, as
    compute_features computed them before it used purchase_occasions: the oracle."""
    con = duckdb.connect()
    con.register("log", frame)
    return con.sql(
        f"""
        SELECT customer_id, period, CAST(net AS DOUBLE) AS net, n_rows - n_refunds AS n_rows,
            n_refunds AS n_refund_rows
        FROM (
            SELECT customer_id, CAST(timestamp AS DATE) - DATE '1970-01-01' AS period,
                count(*) AS n_rows, count(*) FILTER (WHERE amount < 0) AS n_refunds,
                sum(CAST(amount AS DECIMAL(38, 10))) AS net
            FROM log WHERE CAST(timestamp AS DATE) <= DATE '{as_of}' GROUP BY 1, 2
        )
        WHERE n_rows > n_refunds AND (net > 0 OR n_refunds = 0)
        ORDER BY customer_id, period
        """
    ).df()


@pytest.mark.parametrize("batch_rows", [64, 1 << 17])
def test_purchase_occasions_equal_the_decimal_sql_occasions(monkeypatch, batch_rows):
    """Bit for bit the DuckDB DECIMAL(38, 10) oracle, and exactly the occasions rfm_summary counts."""
    frame = mixed_amount_log()
    monkeypatch.setattr(summary_module, "_BATCH_ROWS", batch_rows)
    ours = occasions_frame(purchase_occasions(frame, as_of="2024-02-15"))
    expected = exact_sql_occasions(frame, as_of="2024-02-15")
    assert ours["customer_id"].tolist() == expected["customer_id"].tolist()
    for column in ("period", "net", "n_rows", "n_refund_rows"):
        np.testing.assert_array_equal(ours[column].to_numpy(), expected[column].to_numpy(), err_msg=column)
    summary = rfm_summary(frame, as_of="2024-02-15")
    per_customer = ours.groupby("customer_id")["period"].agg(["size", "min", "max"])
    np.testing.assert_array_equal(per_customer["size"] - 1, summary["frequency"])
    np.testing.assert_array_equal(per_customer["max"] - per_customer["min"], summary["recency"])


def test_purchase_occasions_in_weeks_and_without_amounts():
    frame = mixed_amount_log(seed=4, n=500)
    weekly = occasions_frame(purchase_occasions(frame, as_of="2024-02-15", freq="W"))
    summary = rfm_summary(frame, as_of="2024-02-15", freq="W")
    np.testing.assert_array_equal(weekly.groupby("customer_id").size() - 1, summary["frequency"])
    batches = list(purchase_occasions(frame, as_of="2024-02-15", amount_col=None))
    assert all(batch.net_amount is None for batch in batches)
    assert sum(len(batch) for batch in batches) == frame.assign(day=frame["timestamp"].dt.normalize()).query(
        "day <= '2024-02-15'"
    ).drop_duplicates(["customer_id", "day"]).shape[0]


def test_purchase_occasions_check_arguments_before_reading():
    with pytest.raises(ValueError, match="freq"):
        purchase_occasions(mixed_amount_log(n=10), freq="Q")


@pytest.mark.parametrize(("freq", "pandas_freq"), [("D", "D"), ("W", "W-SUN"), ("M", "M")])
def test_periods_count_like_pandas_periods_before_and_after_1970(freq, pandas_freq):
    days = ["1969-11-30 23:59", "1969-12-28 12:00", "1969-12-29", "1970-01-04 23:00", "1970-01-05", "1970-02-01"]
    stamps = pd.to_datetime(days, format="ISO8601")
    frame = pd.DataFrame({"customer_id": range(len(stamps)), "timestamp": stamps, "amount": 1.0})
    as_of = pd.Timestamp("1970-03-01")
    ours = rfm_summary(frame, as_of=as_of, freq=freq)
    expected = [(as_of.to_period(pandas_freq) - s.to_period(pandas_freq)).n for s in stamps]
    assert ours["T"].tolist() == expected


def test_amounts_too_large_to_sum_exactly_are_an_error():
    with pytest.raises(DataValidationError, match="below 9.2e18") as caught:
        rfm_summary(small_frame_with_amounts([10.0, 2e19]), as_of="2024-01-05")
    assert caught.value.column == "amount"
    # so large that scaling to ten-billionths overflows a double: the same error, no overflow warning
    with pytest.raises(DataValidationError, match="below 9.2e18.*-1.79769e[+]308"):
        rfm_summary(small_frame_with_amounts([10.0, -1.7976931348623155e308]), as_of="2024-01-05")
    with pytest.raises(DataValidationError, match="absolute amounts of customer 1 add up to more than"):
        rfm_summary(small_frame_with_amounts([9e18, -9e18]), as_of="2024-01-05")
    two_customers = small_frame_with_amounts([3e18, 3e18]).assign(customer_id=[1, 2])
    assert rfm_summary(two_customers, as_of="2024-01-05").index.tolist() == [1, 2]


def small_frame_with_amounts(amounts: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [1] * len(amounts),
            "timestamp": pd.date_range("2024-01-01", periods=len(amounts), freq="D"),
            "amount": amounts,
        }
    )


# --------------------------------------------------------------------------------------------------
# calibration_holdout
# --------------------------------------------------------------------------------------------------


def test_cdnow_calibration_holdout_same_as_lifetimes(cdnow):
    """lifetimes.calibration_and_holdout_data, CDNOW sample, 1997-09-30 / 1998-06-30, weeks."""
    ours = calibration_holdout(
        cdnow, calibration_end="1997-09-30", holdout_end="1998-06-30", freq="D", freq_multiplier=7
    )
    expected = calibration_and_holdout_data(
        cdnow, "customer_id", "timestamp",
        calibration_period_end="1997-09-30", observation_period_end="1998-06-30",
        freq="D", freq_multiplier=7, monetary_value_col="amount",
    )
    np.testing.assert_array_equal(ours["frequency_holdout"], expected.loc[ours.index, "frequency_holdout"])
    np.testing.assert_array_equal(ours["duration_holdout"], expected.loc[ours.index, "duration_holdout"])
    assert (ours["duration_holdout"] == 273 / 7).all()
    calibration = ["frequency_cal", "recency_cal", "T_cal", "monetary_value_cal"]
    assert_summary_close(ours[calibration], expected[calibration])


def test_cdnow_holdout_monetary_value_same_as_lifetimes_on_daily_totals(cdnow):
    """lifetimes averages holdout *rows*; on a log with one row per customer-day (summed) that is
    the mean per purchase occasion, which is what crmml reports."""
    daily = cdnow.groupby(["customer_id", "timestamp"], as_index=False)["amount"].sum()
    ours = calibration_holdout(daily, calibration_end="1997-09-30", holdout_end="1998-06-30")
    expected = calibration_and_holdout_data(
        daily, "customer_id", "timestamp",
        calibration_period_end="1997-09-30", observation_period_end="1998-06-30",
        monetary_value_col="amount",
    )
    np.testing.assert_allclose(
        ours["monetary_value_holdout"], expected.loc[ours.index, "monetary_value_holdout"], rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(
        ours["spend_holdout"], ours["frequency_holdout"] * ours["monetary_value_holdout"], rtol=1e-12
    )


def test_calibration_part_equals_rfm_summary_at_calibration_end(cdnow):
    split = calibration_holdout(cdnow, calibration_end="1997-09-30", freq="W")
    summary = rfm_summary(cdnow, as_of="1997-09-30", freq="W")
    for column in SUMMARY_COLUMNS:
        np.testing.assert_array_equal(split[f"{column}_cal"], summary[column])
    assert list(split.columns) == [
        "frequency_cal", "recency_cal", "T_cal", "monetary_value_cal", "first_purchase",
        "last_purchase_cal", "frequency_holdout", "spend_holdout", "monetary_value_holdout",
        "duration_holdout",
    ]


def test_calibration_holdout_report_counts_holdout_only_customers():
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "b", "c"],
            "timestamp": pd.to_datetime(
                ["2024-01-01", "2024-01-20", "2024-01-20", "2024-01-15", "2024-01-15", "2024-02-15"]
            ),
            "amount": [10.0, 4.0, 6.0, 3.0, -1.0, 9.0],
        }
    )
    split, report = calibration_holdout(
        frame, calibration_end="2024-01-10", holdout_end="2024-01-31", return_report=True
    )
    assert split.index.tolist() == ["a"]
    a = split.loc["a"]
    assert (a["frequency_holdout"], a["spend_holdout"], a["monetary_value_holdout"]) == (1.0, 10.0, 10.0)
    assert a["duration_holdout"] == 21.0
    assert report.rows_used == 3
    assert report.rows_of_holdout_only_customers == 2  # b's purchase and its netted refund
    assert report.rows_after_as_of == 1
    assert report.customers_excluded == 2
    assert report.calibration_end == pd.Timestamp("2024-01-10")
    assert report.reconciles


# --------------------------------------------------------------------------------------------------
# Argument errors
# --------------------------------------------------------------------------------------------------


def test_argument_errors(cdnow):
    with pytest.raises(ValueError, match="freq must be one of"):
        rfm_summary(cdnow, freq="Q")
    with pytest.raises(ValueError, match="freq_multiplier"):
        rfm_summary(cdnow, freq_multiplier=0)
    with pytest.raises(ValueError, match="as_of must be a date"):
        rfm_summary(cdnow, as_of="not a date")
    with pytest.raises(TypeError, match="read_transactions"):
        rfm_summary(read_transactions(cdnow), time_col="date")
    with pytest.raises(DataValidationError, match="No customer has a purchase on or before as_of=1996-12-31"):
        rfm_summary(cdnow, as_of="1996-12-31")
    with pytest.raises(ValueError, match="must be before holdout_end"):
        calibration_holdout(cdnow, calibration_end="1998-06-30", holdout_end="1998-01-01")


# --------------------------------------------------------------------------------------------------
# Refunds netted by order id
# --------------------------------------------------------------------------------------------------


def _log_with_late_refunds(seed: int = 3, n_customers: int = 400, as_of: str = "2024-06-30"):
    """A simulated shop log with order ids, and refunds dated 1-10 days after their orders.

    Returns the log (order ids as text; a few refunds name an unknown order), the same log with each
    refund of a known order dated on or before ``as_of`` moved to its order's time (the oracle of
    netting by order), and the numbers of such refunds and of refunds of unknown orders.
    """
    from crmml.data.simulate import simulate_customer_base

    sim = simulate_customer_base(n_customers, start="2023-01-01", end="2024-06-30", acquisition_end="2024-03-31",
                                 seed=seed)
    log = sim.transactions[["customer_id", "timestamp", "amount"]].reset_index(drop=True)
    log["order_id"] = [f"o{i}" for i in range(len(log))]
    rng = np.random.default_rng(seed)
    refunded = log.sample(300, random_state=seed).copy()
    full = rng.random(len(refunded)) < 0.3  # 30 % refunded in full, the rest in part
    refunded["amount"] = -np.where(full, refunded["amount"], (refunded["amount"] * 0.4).round(2))
    moved = refunded.copy()
    refunded["timestamp"] = refunded["timestamp"] + pd.to_timedelta(rng.integers(1, 11, len(refunded)), unit="D")
    unknown = refunded.sample(20, random_state=1).index
    refunded.loc[unknown, "order_id"] = "no-such-order"
    kept = unknown.union(refunded.index[refunded["timestamp"] >= pd.Timestamp(as_of) + pd.Timedelta(days=1)])
    moved.loc[kept, "timestamp"] = refunded.loc[kept, "timestamp"]  # after as_of: not netted
    with_refunds = pd.concat([log, refunded], ignore_index=True)
    oracle = pd.concat([log, moved], ignore_index=True)
    return with_refunds, oracle, len(refunded) - len(kept), len(unknown)


def test_refunds_dated_after_their_order_are_netted_by_order_id():
    log, oracle, n_matched, n_unknown = _log_with_late_refunds()
    as_of = "2024-06-30"
    same_period, plain = rfm_summary(log, as_of=as_of, return_report=True)
    assert plain.unmatched_refund_rows >= n_matched  # before: refunds on other days are not netted
    by_order, report = rfm_summary(log, as_of=as_of, order_col="order_id", return_report=True)
    expected, expected_report = rfm_summary(oracle, as_of=as_of, return_report=True)
    # Netting a refund in its order's period is the same as the refund having happened then ...
    pd.testing.assert_frame_equal(by_order, expected, check_exact=True)
    assert report.refund_rows_netted_by_order == n_matched
    assert report.unmatched_refund_rows == expected_report.unmatched_refund_rows
    assert report.unmatched_refund_rows >= n_unknown - 2  # unknown orders stay unmatched (a few share a day)
    assert report.reconciles
    # ... and it changes the summaries: fully refunded orders are no occasions, partial ones spend less.
    assert by_order["frequency"].sum() < same_period["frequency"].sum()
    assert plain.refund_rows_netted_by_order == 0


def test_refund_by_order_keeps_its_own_side_of_the_cutoff():
    frame = pd.DataFrame({
        "customer_id": [1, 1, 1, 1, 2, 2, 2, 3, 3],
        "timestamp": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-01-08", "2024-03-01", "2024-01-02",
                                     "2024-01-04", "2024-02-01", "2024-01-01", "2024-01-03"]),
        "amount": [10.0, 20.0, -5.0, 30.0, 10.0, -10.0, 5.0, 10.0, -3.0],
        "order": ["a", "b", "a", "c", "x", "x", "y", "p", "unknown"],
    })
    summary, report = rfm_summary(frame, as_of="2024-03-31", order_col="order", return_report=True)
    assert summary["frequency"].tolist() == [2.0, 0.0, 0.0]  # order x refunded in full: no occasion
    assert summary.loc[1, "monetary_value"] == 25.0  # repeat orders b and c; a nets to 5
    assert summary.loc[2, "first_purchase"] == pd.Timestamp("2024-02-01")
    assert (report.refund_rows_netted, report.rows_in_fully_refunded_periods, report.unmatched_refund_rows,
            report.refund_rows_netted_by_order) == (1, 2, 1, 2)
    # The refund of order a (8 January) is after a 6 January cutoff: not netted into the calibration.
    split, report = calibration_holdout(frame, calibration_end="2024-01-06", holdout_end="2024-03-31",
                                        order_col="order", return_report=True)
    assert split.loc[1, "monetary_value_cal"] == 20.0
    assert report.refund_rows_netted_by_order == 1 and report.unmatched_refund_rows == 2 and report.reconciles
    # A refund after as_of is a row after as_of, whatever its order.
    _, report = rfm_summary(frame, as_of="2024-01-06", order_col="order", return_report=True)
    assert report.rows_after_as_of == 3 and report.refund_rows_netted_by_order == 1 and report.reconciles


def test_order_netting_does_not_depend_on_row_order_or_batch_size(monkeypatch):
    log, _, _, _ = _log_with_late_refunds(seed=4, n_customers=200)
    expected = rfm_summary(log, as_of="2024-06-30", freq="W", order_col="order_id")
    shuffled = log.sample(frac=1.0, random_state=2).reset_index(drop=True)
    monkeypatch.setattr(summary_module, "_BATCH_ROWS", 64)
    pd.testing.assert_frame_equal(rfm_summary(shuffled, as_of="2024-06-30", freq="W", order_col="order_id"),
                                  expected, check_exact=True)


def test_order_col_needs_amounts_and_must_exist():
    frame = pd.DataFrame({"customer_id": [1], "timestamp": ["2024-01-01"], "amount": [1.0]})
    with pytest.raises(DataValidationError, match="'order_id' \\(order id\\) is missing"):
        rfm_summary(frame, order_col="order_id")
    with pytest.raises(ValueError, match="order_col needs amount_col"):
        rfm_summary(frame.assign(order_id="a"), order_col="order_id", amount_col=None)
