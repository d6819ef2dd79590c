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
