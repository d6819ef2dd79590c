"""Churn and value labels after an as-of date, on the CDNOW sample."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crmml.datasets import load_cdnow_transactions
from crmml.errors import DataValidationError
from crmml.labels import outcome_labels


@pytest.fixture(scope="module")
def log():
    return load_cdnow_transactions(sample=True)[["customer_id", "timestamp", "amount"]]


def test_labels_match_a_direct_count_of_the_raw_log(log):
    """The CDNOW protocol: as of 1997-09-30, a 39-week (273-day) window, as in Fader, Hardie & Lee."""
    labels = outcome_labels(log, as_of="1997-09-30", churn_window_days=273, value_horizon_days=273)
    known = log[log["timestamp"] <= "1997-09-30"]["customer_id"].unique()
    assert sorted(labels.index) == sorted(known)
    after = log[(log["timestamp"] > "1997-09-30") & (log["timestamp"] <= "1998-06-30")]
    days = after.groupby("customer_id")["timestamp"].apply(lambda t: t.dt.normalize().nunique())
    spend = after.groupby("customer_id")["amount"].sum()
    expected_days = days.reindex(labels.index).fillna(0)
    np.testing.assert_array_equal(labels["purchases_in_window"], expected_days)
    np.testing.assert_array_equal(labels["churned"], (expected_days == 0).astype(int))
    np.testing.assert_allclose(labels["spend_in_horizon"], spend.reindex(labels.index).fillna(0), atol=1e-9)
    assert labels["purchases_in_window"].sum() == 1882  # weeks 40-78, Fader, Hardie & Lee (2005)
    assert 0.5 < labels["churned"].mean() < 0.8


def test_churn_window_and_value_horizon_are_separate(log):
    labels = outcome_labels(log, as_of="1997-06-30", churn_window_days=30, value_horizon_days=365)
    assert (labels["purchases_in_horizon"] >= labels["purchases_in_window"]).all()
    assert (labels["churned"] == (labels["purchases_in_window"] == 0)).all()


def test_rows_after_the_windows_change_nothing(log):
    base = outcome_labels(log, as_of="1997-06-30", churn_window_days=90, value_horizon_days=180)
    later = log[log["timestamp"] > pd.Timestamp("1997-06-30") + pd.Timedelta(days=180)]
    shifted = later.assign(amount=later["amount"] * 10)
    changed = pd.concat([log[log["timestamp"] <= pd.Timestamp("1997-06-30") + pd.Timedelta(days=180)], shifted])
    pd.testing.assert_frame_equal(
        outcome_labels(changed, as_of="1997-06-30", churn_window_days=90, value_horizon_days=180), base
    )


def test_windows_past_the_end_of_the_log_are_refused(log):
    with pytest.raises(DataValidationError, match="end on 1998-06-30, before the end of the label windows"):
        outcome_labels(log, as_of="1998-05-01", churn_window_days=90)
    partial = outcome_labels(log, as_of="1998-05-01", churn_window_days=90, value_horizon_days=30, allow_incomplete=True)
    assert len(partial) > 0
    with pytest.raises(ValueError, match="churn_window_days must be a positive whole number"):
        outcome_labels(log, as_of="1997-06-30", churn_window_days=0)


def test_customers_without_history_are_labelled_by_their_first_purchases(log):
    as_of = pd.Timestamp("1997-02-15")
    known = log[log["timestamp"] <= as_of]["customer_id"].unique()
    later = log[log["timestamp"] > as_of]["customer_id"].unique()
    newcomers = np.setdiff1d(later, known)[:50]
    never = np.array([10**9, 10**9 + 1])
    labels = outcome_labels(
        log, as_of=as_of, churn_window_days=30, value_horizon_days=120,
        customer_ids=np.concatenate([newcomers, never]),
    )
    assert len(labels) == len(known) + len(newcomers) + len(never)
    window = log[(log["timestamp"] > as_of) & (log["timestamp"] <= as_of + pd.Timedelta(days=30))]
    horizon = log[(log["timestamp"] > as_of) & (log["timestamp"] <= as_of + pd.Timedelta(days=120))]
    days = window.groupby("customer_id")["timestamp"].apply(lambda t: t.dt.normalize().nunique())
    spend = horizon.groupby("customer_id")["amount"].sum()
    np.testing.assert_array_equal(labels.loc[newcomers, "purchases_in_window"], days.reindex(newcomers).fillna(0))
    np.testing.assert_allclose(labels.loc[newcomers, "spend_in_horizon"], spend.reindex(newcomers).fillna(0))
    assert labels.loc[newcomers, "purchases_in_horizon"].min() >= 1
    assert (labels.loc[never, "churned"] == 1).all() and (labels.loc[never, "spend_in_horizon"] == 0).all()
    # the customers known at as_of keep exactly the labels they have without customer_ids
    plain = outcome_labels(log, as_of=as_of, churn_window_days=30, value_horizon_days=120)
    pd.testing.assert_frame_equal(labels.loc[plain.index], plain)
