"""The in-memory log (the service's input) gives the numbers of the DuckDB path, and RFM summaries as input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crmml.data import rfm_summary
from crmml.data.in_memory import InMemoryTransactions
from crmml.errors import DataValidationError
from crmml.features import compute_features


def _log(seed: int = 3, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "customer_id": rng.integers(0, 60, n),
        "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 500 * 24, n), unit="h"),
        "amount": np.round(rng.gamma(2, 20, n), 2),
    })
    refunds = rng.random(n) < 0.1  # refunds, some netting a whole day
    frame.loc[refunds, "amount"] *= -1
    return frame.sample(frac=1, random_state=1)  # order must not matter


@pytest.mark.parametrize("text_ids", [False, True])
def test_summary_and_features_equal_the_duckdb_path(text_ids):
    frame = _log()
    if text_ids:
        frame["customer_id"] = "c" + frame["customer_id"].astype(str)
    memory = InMemoryTransactions.from_arrays(frame["customer_id"].to_numpy(), frame["timestamp"].to_numpy(),
                                              frame["amount"].to_numpy())
    assert len(memory) == len(frame) and memory.report.rows_rejected == 0
    for as_of in ("2024-09-30", "2025-06-01"):
        expected = rfm_summary(frame, as_of=as_of, freq="D", freq_multiplier=7)
        pd.testing.assert_frame_equal(rfm_summary(memory, as_of=as_of, freq="D", freq_multiplier=7), expected)
        pd.testing.assert_frame_equal(compute_features(memory, as_of=as_of), compute_features(frame, as_of=as_of))


def test_iso_text_and_zoned_timestamps_are_utc():
    memory = InMemoryTransactions.from_arrays([1, 1], ["2025-01-01T23:30:00-02:00", "2025-01-01"], [5.0, 6.0])
    assert memory.first_timestamp == pd.Timestamp("2025-01-01")
    assert memory.last_timestamp == pd.Timestamp("2025-01-02 01:30")


@pytest.mark.parametrize(("ids", "stamps", "amounts", "column", "rows"), [
    ([1, None, 3], ["2025-01-01"] * 3, [1.0, 2.0, 3.0], "customer_id", [1]),
    ([1, 2, 3], ["2025-01-01", None, "2025-01-02"], [1.0, 2.0, 3.0], "timestamp", [1]),
    ([1, 2, 3], ["2025-01-01"] * 3, [1.0, np.inf, np.nan], "amount", [1, 2]),
    ([1.5, 2.5], ["2025-01-01"] * 2, [1.0, 2.0], "customer_id", []),
])
def test_bad_rows_raise_naming_column_and_rows(ids, stamps, amounts, column, rows):
    with pytest.raises(DataValidationError) as caught:
        InMemoryTransactions.from_arrays(ids, stamps, amounts)
    assert caught.value.column == column and caught.value.rows == rows


def test_summaries_become_feature_rows_with_unknown_purchase_days():
    frame = _log()
    summaries = pd.DataFrame({"customer_id": [1000, 1001], "frequency": [3, 0], "recency_days": [90.0, 0.0],
                              "age_days": [200.0, 15.0], "monetary_value": [12.0, 0.0]})
    features = compute_features(frame, as_of="2025-06-01", summaries=summaries)
    rows = features.loc[[1000, 1001]]
    assert rows["frequency"].tolist() == [3.0, 0.0]
    assert rows["days_since_last_purchase"].tolist() == [110.0, 15.0]
    assert rows["mean_gap_days"].iloc[0] == 30.0 and np.isnan(rows["mean_gap_days"].iloc[1])
    assert rows["purchases_last_30d"].isna().all() and rows["total_spend"].isna().all()
    assert not rows["no_purchase_history"].any()
    assert features.index.is_monotonic_increasing
    # Only summaries and new customers: no purchase needed.
    empty = InMemoryTransactions.from_arrays([], [], [])
    alone = compute_features(empty, as_of="2025-06-01", summaries=summaries)
    assert alone.index.tolist() == [1000, 1001]


@pytest.mark.parametrize(("change", "column"), [
    ({"frequency": [-1]}, "frequency"),
    ({"frequency": [1.5]}, "frequency"),
    ({"recency_days": [0.0]}, "recency_days"),  # repeat purchases need a later day
    ({"age_days": [10.0]}, "age_days"),  # younger than the recency
    ({"monetary_value": [np.nan]}, "monetary_value"),
    ({"customer_id": [5]}, "customer_id"),  # also in the log
])
def test_invalid_summaries_are_named(change, column):
    frame = _log()
    summary = {"customer_id": [1000], "frequency": [2], "recency_days": [30.0], "age_days": [40.0],
               "monetary_value": [10.0], **change}
    with pytest.raises(DataValidationError) as caught:
        compute_features(frame, as_of="2025-06-01", summaries=pd.DataFrame(summary))
    assert caught.value.column == column
