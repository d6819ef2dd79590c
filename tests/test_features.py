"""Tests for compute_features.

Oracles: :func:`crmml.data.rfm_summary` (the RFM columns), pandas filtering of the raw CDNOW frame
and hand-worked toy logs (windows, gaps, refunds), the fitted models' own predictions (BTYD
columns), and invariance to every row dated after ``as_of`` (leakage).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crmml.data import read_transactions, rfm_summary
from crmml.data import summary as summary_module
from crmml.data.summary import purchase_occasions
from crmml.datasets import load_cdnow_transactions
from crmml.errors import DataValidationError
from crmml.features import compute_features, feature_columns
from crmml.models import BetaGeo, GammaGamma

AS_OF = pd.Timestamp("1997-09-30")


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return load_cdnow_transactions(sample=True)[["customer_id", "timestamp", "amount"]]


@pytest.fixture(scope="module")
def cdnow_features(cdnow) -> pd.DataFrame:
    return compute_features(cdnow, as_of=AS_OF)


def toy_log(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"]).assign(
        timestamp=lambda f: pd.to_datetime(f["timestamp"], format="mixed")
    )


# --------------------------------------------------------------------------------------------------
# Purchase-history features
# --------------------------------------------------------------------------------------------------


def test_columns_and_types(cdnow_features):
    assert list(cdnow_features.columns) == [*feature_columns(), "no_purchase_history"]
    assert cdnow_features.index.name == "customer_id"
    assert cdnow_features.index.is_monotonic_increasing
    assert (cdnow_features.drop(columns="no_purchase_history").dtypes == np.float64).all()
    assert not cdnow_features["no_purchase_history"].any()


def test_rfm_columns_equal_rfm_summary_in_days(cdnow, cdnow_features):
    """frequency, recency_days, age_days, monetary_value are rfm_summary(freq="D") exactly."""
    summary = rfm_summary(cdnow, as_of=AS_OF, freq="D")
    pd.testing.assert_index_equal(cdnow_features.index, summary.index)
    for feature, column in [
        ("frequency", "frequency"),
        ("recency_days", "recency"),
        ("age_days", "T"),
        ("monetary_value", "monetary_value"),
    ]:
        np.testing.assert_array_equal(cdnow_features[feature].to_numpy(), summary[column].to_numpy())
    np.testing.assert_array_equal(
        cdnow_features["days_since_last_purchase"], summary["T"] - summary["recency"]
    )


def purchase_days_by_hand(cdnow: pd.DataFrame, customer) -> pd.Series:
    """The customer's net spend per purchase day on or before AS_OF (CDNOW has no refunds)."""
    rows = cdnow[(cdnow["customer_id"] == customer) & (cdnow["timestamp"] <= AS_OF)]
    return rows.groupby(rows["timestamp"].dt.normalize())["amount"].sum()


@pytest.mark.parametrize("pick", ["most_recent_90d", "most_days"])
def test_windows_by_hand(cdnow, cdnow_features, pick):
    """Counts and spends of purchase days in (as_of - w, as_of], from pandas filtering of the raw log."""
    if pick == "most_recent_90d":
        customer = cdnow_features["purchases_last_90d"].idxmax()
    else:
        customer = cdnow_features["frequency"].idxmax()
    days = purchase_days_by_hand(cdnow, customer)
    row = cdnow_features.loc[customer]
    assert row["purchases_last_365d"] == len(days) == row["frequency"] + 1
    for w in (30, 90, 180, 365):
        recent = days[days.index > AS_OF - pd.Timedelta(days=w)]
        assert row[f"purchases_last_{w}d"] == len(recent)
        assert row[f"spend_last_{w}d"] == pytest.approx(recent.sum(), abs=1e-9)
    previous = days[(days.index > AS_OF - pd.Timedelta(days=180)) & (days.index <= AS_OF - pd.Timedelta(days=90))]
    assert row["purchases_trend_90d"] == row["purchases_last_90d"] - len(previous)
    assert row["spend_trend_90d"] == pytest.approx(row["spend_last_90d"] - previous.sum(), abs=1e-9)
    assert row["total_spend"] == pytest.approx(days.sum(), abs=1e-9)
    assert row["first_purchase_amount"] == pytest.approx(days.iloc[0], abs=1e-9)
    gaps = np.diff(days.index.to_numpy()).astype("timedelta64[D]").astype(float)
    assert row["gap_max_days"] == gaps.max()
    assert row["gap_std_days"] == pytest.approx(gaps.std(), rel=1e-12)
    assert row["mean_gap_days"] == pytest.approx(gaps.mean(), rel=1e-12)
    assert row["days_since_last_purchase"] == (AS_OF - days.index[-1]).days


def test_gap_statistics_and_refund_policy_worked_by_hand():
    """Customer 1 buys on days 1, 3 and 10 of January (two rows on day 3); a purchase refunded in
    full on day 5 and a refund-only day 12 are not purchase days. Customer 2 buys once."""
    log = toy_log(
        [
            (1, "2020-01-01", 10.0),
            (1, "2020-01-03 09:00", 5.0),
            (1, "2020-01-03 18:00", 7.0),
            (1, "2020-01-05", 20.0),
            (1, "2020-01-05", -20.0),
            (1, "2020-01-10", 4.0),
            (1, "2020-01-12", -3.0),
            (2, "2020-01-20", 8.0),
        ]
    )
    features = compute_features(log, as_of="2020-01-31", windows_days=(7, 30))
    one, two = features.loc[1], features.loc[2]
    assert (one["frequency"], one["recency_days"], one["age_days"]) == (2.0, 9.0, 30.0)
    assert one["days_since_last_purchase"] == 21.0
    assert one["mean_gap_days"] == 4.5  # gaps 2 and 7
    assert one["gap_std_days"] == 2.5
    assert one["gap_max_days"] == 7.0
    assert one["gap_ratio"] == 21.0 / 4.5
    assert one["total_spend"] == 26.0
    assert one["first_purchase_amount"] == 10.0
    assert one["monetary_value"] == 8.0  # (12 + 4) / 2
    assert (one["purchases_last_7d"], one["purchases_last_30d"]) == (0.0, 2.0)  # 30 days: from Jan 2
    assert one["spend_last_30d"] == 16.0
    assert two["frequency"] == 0.0
    for column in ("mean_gap_days", "gap_ratio", "gap_std_days", "gap_max_days"):
        assert np.isnan(two[column])
    assert (two["purchases_last_30d"], two["spend_last_30d"], two["first_purchase_amount"]) == (1.0, 8.0, 8.0)


def test_as_of_day_is_included_and_the_next_day_is_not():
    log = toy_log([(1, "2020-01-01", 1.0), (1, "2020-01-31 23:59", 2.0), (1, "2020-02-01 00:00", 4.0)])
    features = compute_features(log, as_of="2020-01-31", windows_days=(1,))
    assert features.loc[1, "purchases_last_1d"] == 1.0
    assert features.loc[1, "total_spend"] == 3.0
    assert features.loc[1, "days_since_last_purchase"] == 0.0


def test_log_without_amounts_has_nan_spends():
    log = toy_log([(1, "2020-01-01", 1.0), (1, "2020-01-05", 2.0)])
    features = compute_features(log, as_of="2020-01-31", amount_col=None)
    assert features.loc[1, "purchases_last_30d"] == 1.0  # Jan 2 to Jan 31
    assert features.loc[1, "purchases_last_90d"] == 2.0
    assert np.isnan(features.loc[1, "spend_last_30d"])
    assert np.isnan(features.loc[1, "total_spend"])


def test_accepts_a_transactions_object(cdnow, cdnow_features):
    log = read_transactions(cdnow)
    pd.testing.assert_frame_equal(compute_features(log, as_of=AS_OF), cdnow_features)
    with pytest.raises(TypeError, match="read_transactions"):
        compute_features(log, as_of=AS_OF, amount_col=None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"windows_days": (30, 30)},
        {"windows_days": (0,)},
        {"windows_days": (1.5,)},
        {"horizon_days": 0},
        {"time_unit_days": -7},
    ],
)
def test_invalid_arguments_raise(kwargs):
    log = toy_log([(1, "2020-01-01", 1.0)])
    with pytest.raises(ValueError):
        compute_features(log, as_of="2020-01-31", **kwargs)


# --------------------------------------------------------------------------------------------------
# One purchase-occasion rule for the summary and the features
# --------------------------------------------------------------------------------------------------


def refund_edge_cases() -> pd.DataFrame:
    """Customer 1: a purchase (Jan 1), a zero-amount purchase (Jan 2), 0.1 + 0.2 refunded by 0.3
    (Jan 3, exactly zero), a partial refund (Jan 4), a refund-only day (Jan 5), a purchase refunded
    by more than it cost (Jan 6) and a purchase after as_of. Customer 2 only has refunds. Customer 3
    buys at 23:59 on the as-of day."""
    return toy_log(
        [
            (1, "2020-01-01", 10.0),
            (1, "2020-01-02", 0.0),
            (1, "2020-01-03 08:00", 0.1),
            (1, "2020-01-03 09:00", 0.2),
            (1, "2020-01-03 10:00", -0.3),
            (1, "2020-01-04 08:00", 5.0),
            (1, "2020-01-04 09:00", -2.0),
            (1, "2020-01-05", -4.0),
            (1, "2020-01-06 08:00", 1.0),
            (1, "2020-01-06 09:00", -1.5),
            (1, "2020-02-01", 7.0),
            (2, "2020-01-10", -5.0),
            (3, "2020-01-31 23:59", 3.0),
        ]
    )


def occasions_by_customer(log, as_of) -> dict:
    """{customer: [(day, net amount), ...]} from the data layer's purchase_occasions."""
    out = {}
    for batch in purchase_occasions(log, as_of=as_of, freq="D"):
        ids = batch.customer_id.to_pylist()
        days = pd.to_datetime(batch.period, unit="D")
        for code, day, net in zip(batch.customer, days, batch.net_amount):
            out.setdefault(ids[code], []).append((day, net))
    return out


def test_purchase_days_are_the_occasions_the_summary_counts_with_refund_edge_cases():
    log, as_of = refund_edge_cases(), "2020-01-31"
    occasions = occasions_by_customer(log, as_of)
    assert occasions == {
        1: [(pd.Timestamp("2020-01-01"), 10.0), (pd.Timestamp("2020-01-02"), 0.0), (pd.Timestamp("2020-01-04"), 3.0)],
        3: [(pd.Timestamp("2020-01-31"), 3.0)],
    }
    summary = rfm_summary(log, as_of=as_of)
    features = compute_features(log, as_of=as_of, windows_days=(1, 365))
    assert summary.index.tolist() == features.index.tolist() == [1, 3]
    for customer, days in occasions.items():
        row = features.loc[customer]
        assert row["purchases_last_365d"] == len(days) == summary.loc[customer, "frequency"] + 1
        assert row["total_spend"] == sum(net for _, net in days)
        assert row["first_purchase_amount"] == days[0][1]
        assert row["recency_days"] == (days[-1][0] - days[0][0]).days
    assert features.loc[1, "monetary_value"] == 1.5  # (0 + 3) / 2
    assert features.loc[1, "gap_max_days"] == 2.0  # Jan 2 to Jan 4
    assert features.loc[3, "purchases_last_1d"] == 1.0


def test_summary_and_features_share_one_occasion_rule(monkeypatch):
    """Changing the rule where the data layer states it (here: refunds no longer cancel a day)
    changes the summary and the features alike, so no second copy of it exists."""
    log, as_of = refund_edge_cases(), "2020-01-31"

    def any_purchase(periods):
        occasion = periods.in_window()
        if periods.n_refund_rows is not None:
            occasion &= periods.n_rows > periods.n_refund_rows
        return occasion

    monkeypatch.setattr(summary_module._Periods, "is_occasion", any_purchase)
    summary = rfm_summary(log, as_of=as_of)
    features = compute_features(log, as_of=as_of, windows_days=(365,))
    assert summary.loc[1, "frequency"] == 4.0  # Jan 1, 2, 3, 4 and 6
    np.testing.assert_array_equal(features["purchases_last_365d"], summary["frequency"] + 1)
    assert features.loc[1, "gap_max_days"] == 2.0  # Jan 4 to Jan 6


def test_features_do_not_depend_on_batch_size(monkeypatch, cdnow, cdnow_features):
    """Purchase days are reduced batch by batch; customers never straddle batches."""
    monkeypatch.setattr(summary_module, "_BATCH_ROWS", 100)
    pd.testing.assert_frame_equal(compute_features(cdnow, as_of=AS_OF), cdnow_features, check_exact=True)


# --------------------------------------------------------------------------------------------------
# Leakage: nothing after as_of matters
# --------------------------------------------------------------------------------------------------


def test_rows_after_as_of_do_not_change_the_features(cdnow, cdnow_features):
    """Deleting every later row, shuffling, and appending later purchases, refunds and customers."""
    before = cdnow[cdnow["timestamp"] <= AS_OF]
    rng = np.random.default_rng(0)
    ids = rng.choice(cdnow["customer_id"].unique(), size=300)
    appended = pd.DataFrame(
        {
            "customer_id": np.concatenate([ids, [10**6, 10**6 + 1]]),
            "timestamp": AS_OF + pd.to_timedelta(rng.integers(1, 400, size=302), unit="h") + pd.Timedelta(days=1),
            "amount": np.concatenate([rng.normal(20, 30, size=300), [5.0, 6.0]]),
        }
    )
    assert len(before) < len(cdnow)
    variants = {
        "deleted": before,
        "shuffled": cdnow.sample(frac=1.0, random_state=1),
        "appended": pd.concat([cdnow, appended]).sample(frac=1.0, random_state=2),
        "deleted_then_appended": pd.concat([before, appended]),
    }
    for name, frame in variants.items():
        result = compute_features(frame.reset_index(drop=True), as_of=AS_OF)
        pd.testing.assert_frame_equal(result, cdnow_features, obj=name)


def test_rows_after_as_of_do_not_change_model_or_table_features(cdnow, fitted_models):
    transaction_model, spend_model = fitted_models
    table = pd.DataFrame({"customer_id": [1, 2, 99_999], "segment": ["a", "b", "a"]})
    later = toy_log([(1, AS_OF + pd.Timedelta(days=2), 50.0), (99_999, AS_OF + pd.Timedelta(days=3), 9.0)])
    kwargs = {"as_of": AS_OF, "customers": table, "transaction_model": transaction_model, "spend_model": spend_model}
    pd.testing.assert_frame_equal(
        compute_features(pd.concat([cdnow, later], ignore_index=True), **kwargs),
        compute_features(cdnow[cdnow["timestamp"] <= AS_OF], **kwargs),
    )


# --------------------------------------------------------------------------------------------------
# Customer table
# --------------------------------------------------------------------------------------------------


@pytest.fixture()
def small_log() -> pd.DataFrame:
    return toy_log(
        [
            (1, "2020-01-01", 10.0),
            (1, "2020-01-20", 5.0),
            (2, "2020-01-15", 8.0),
            (3, "2020-01-10", 3.0),  # not in the table
            (4, "2020-02-15", 6.0),  # after as_of only
        ]
    )


def test_customer_table_attributes(small_log):
    table = pd.DataFrame(
        {
            "customer_id": [1, 2, 4, 5, 6],
            "signup_date": pd.to_datetime(["2019-12-01", "2020-01-10", "2020-01-25", "2020-01-30", "2020-03-01"]),
            "referred_by": [np.nan, 1, 1, 2, 1],
            "plan": ["basic", "pro", "gold", "basic", "pro"],  # "gold" unseen elsewhere
            "age": [30, 40, 50, 60, 70],
            "vip": [True, False, False, True, False],
            "last_login": pd.to_datetime(["2020-01-01"] * 5),  # a date other than signup: left out
        }
    )
    features = compute_features(small_log, as_of="2020-01-31", customers=table)
    # 6 signed up after as_of: left out and counted; 3 has transactions but no table row.
    assert list(features.index) == [1, 2, 3, 4, 5]
    assert features.attrs["customers_signed_up_after_as_of"] == 1
    assert features["no_purchase_history"].tolist() == [False, False, False, True, True]
    assert features.loc[4, "frequency"] != features.loc[4, "frequency"]  # NaN: its purchase is later
    assert features.loc[4, "purchases_last_30d"] == 0.0 and features.loc[4, "total_spend"] == 0.0
    assert features.loc[1, "frequency"] == 1.0
    assert features["tenure_days"].tolist()[:2] == [61.0, 21.0]
    assert np.isnan(features.loc[3, "tenure_days"])
    assert features["has_referrer"].loc[[1, 2, 4, 5]].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert np.isnan(features.loc[3, "has_referrer"])
    # 1 is named by 2 and 4 (6 signed up after as_of and does not count); 2 by 5.
    assert features["n_referrals"].tolist() == [2.0, 1.0, 0.0, 0.0, 0.0]
    assert isinstance(features["plan"].dtype, pd.CategoricalDtype)
    assert features.loc[4, "plan"] == "gold" and pd.isna(features.loc[3, "plan"])
    assert features["age"].tolist()[:2] == [30, 40] and np.isnan(features.loc[3, "age"])
    assert features["vip"].dtype == np.float64 and features.loc[1, "vip"] == 1.0
    assert "last_login" not in features and features.attrs["dropped_customer_columns"] == ["last_login"]


def test_customer_table_without_signup_counts_every_referral(small_log):
    table = pd.DataFrame({"customer_id": [1, 2, 7], "referred_by": [None, 1, 1]})
    features = compute_features(small_log, as_of="2020-01-31", customers=table)
    assert features.loc[1, "n_referrals"] == 2.0
    assert features.loc[7, "no_purchase_history"]
    assert "tenure_days" not in features


def test_given_referral_counts_score_a_part_of_the_table_like_the_whole(small_log):
    """A table that carries n_referrals (counted over the whole base) gives one customer's row the
    features it has within the whole table."""
    table = pd.DataFrame({"customer_id": [1, 2, 7], "referred_by": [None, 1, 1], "region": ["n", "s", "n"]})
    whole = compute_features(small_log, as_of="2020-01-31", customers=table)
    counted = table.assign(n_referrals=whole["n_referrals"].reindex(table["customer_id"]).to_numpy())
    alone = compute_features(small_log, as_of="2020-01-31", customers=counted[counted["customer_id"] == 1])
    pd.testing.assert_series_equal(alone.loc[1], whole.loc[1], check_names=False)
    assert alone.loc[3, "n_referrals"] == 0.0  # a purchaser without a table row
    with pytest.raises(DataValidationError, match="n_referrals"):
        compute_features(small_log, as_of="2020-01-31", customers=counted.assign(n_referrals=[1, -1, 0]))


def test_new_category_at_scoring_time(small_log):
    """A category unseen when training (or a new customer in it) passes through without error."""
    train = pd.DataFrame({"customer_id": [1, 2], "plan": pd.Categorical(["basic", "pro"])})
    score = pd.DataFrame({"customer_id": [1, 2, 8], "plan": pd.Categorical(["basic", "pro", "enterprise"])})
    trained = compute_features(small_log, as_of="2020-01-31", customers=train)
    scored = compute_features(small_log, as_of="2020-01-31", customers=score)
    assert "enterprise" not in trained["plan"].cat.categories
    assert scored.loc[8, "plan"] == "enterprise" and scored.loc[8, "no_purchase_history"]
    pd.testing.assert_frame_equal(
        trained.loc[[1, 2, 3]].drop(columns="plan"), scored.loc[[1, 2, 3]].drop(columns="plan")
    )


def test_duplicate_customer_ids_raise_naming_them(small_log):
    table = pd.DataFrame({"customer_id": [1, 2, 2, 5, 5, 6]})
    with pytest.raises(DataValidationError, match=r"\[2, 5\]") as caught:
        compute_features(small_log, as_of="2020-01-31", customers=table)
    assert caught.value.rows == [2, 5]


def test_customer_table_without_customer_id_raises(small_log):
    with pytest.raises(DataValidationError, match="customer_id"):
        compute_features(small_log, as_of="2020-01-31", customers=pd.DataFrame({"id": [1]}))


def test_customer_column_named_like_a_feature_raises(small_log):
    table = pd.DataFrame({"customer_id": [1], "frequency": [3.0]})
    with pytest.raises(DataValidationError, match="frequency"):
        compute_features(small_log, as_of="2020-01-31", customers=table)


# --------------------------------------------------------------------------------------------------
# BTYD and spend models
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weekly_summary(cdnow) -> pd.DataFrame:
    return rfm_summary(cdnow, as_of=AS_OF, freq="D", freq_multiplier=7)


@pytest.fixture(scope="module")
def fitted_models(weekly_summary):
    return BetaGeo().fit(weekly_summary), GammaGamma().fit(weekly_summary)


def test_btyd_columns_equal_the_models_own_predictions(cdnow, weekly_summary, fitted_models):
    """Models fitted on the CDNOW summary in weeks; the features use the same summary in days / 7."""
    transaction_model, spend_model = fitted_models
    features = compute_features(
        cdnow, as_of=AS_OF, transaction_model=transaction_model, spend_model=spend_model, horizon_days=91
    )
    horizon = 91 / 7
    expected = {
        "btyd_expected_purchases": transaction_model.expected_purchases(weekly_summary, horizon),
        "btyd_p_alive": transaction_model.probability_alive(weekly_summary),
        "btyd_p_no_purchase": transaction_model.probability_no_purchase(weekly_summary, horizon),
        "expected_spend": spend_model.expected_spend(weekly_summary),
    }
    for column, values in expected.items():
        np.testing.assert_allclose(features[column].to_numpy(), values.to_numpy(), rtol=1e-12, err_msg=column)
    assert features["btyd_p_alive"].between(0, 1).all()


def test_customers_without_history_get_the_btyd_prediction_for_a_new_customer(small_log, fitted_models):
    transaction_model, spend_model = fitted_models
    table = pd.DataFrame({"customer_id": [1, 9]})
    features = compute_features(
        small_log, as_of="2020-01-31", customers=table, transaction_model=transaction_model, spend_model=spend_model
    )
    assert features.loc[1, ["btyd_p_alive", "expected_spend"]].notna().all()
    new = pd.DataFrame({"frequency": [0.0], "recency": [0.0], "T": [0.0], "monetary_value": [0.0]})
    assert features.loc[9, "btyd_p_alive"] == 1.0
    np.testing.assert_allclose(
        features.loc[9, "btyd_expected_purchases"], transaction_model.expected_purchases(new, 90 / 7).iloc[0]
    )
    np.testing.assert_allclose(features.loc[9, "expected_spend"], spend_model.expected_spend(new).iloc[0])
    assert features.loc[9, "no_purchase_history"]
