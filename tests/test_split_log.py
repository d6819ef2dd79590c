"""A log split once by customer partition (crmml.data.split_log) reads as the log it came from."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest

from crmml.data import read_transactions
from crmml.data.simulate import simulate_customer_base
from crmml.data.split_log import split_by_customer
from crmml.data.transactions import duckdb_session

COUNT = 3


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same rows, with invalid ones, as a DataFrame, a CSV file and (valid rows, zoned times) Parquet."""
    sim = simulate_customer_base(150, start="2024-01-01", end="2025-06-30", seed=11)
    text = sim.transactions.astype({"customer_id": "string", "timestamp": "string", "amount": "string"})
    invalid = pd.DataFrame(
        [("5", "not a date", "10"), ("", "2025-01-01", "10"), ("7", "2025-01-01", "ten"), ("900", "", "3")],
        columns=["customer_id", "timestamp", "amount"],
    )
    text = pd.concat([text.iloc[:50], invalid, text.iloc[50:]], ignore_index=True)
    text.index = text.index + 1000  # labels a rejected DataFrame row is named by
    root = tmp_path_factory.mktemp("split")
    text.to_csv(root / "log.csv", index=False)
    zoned = sim.transactions.assign(timestamp=lambda f: f["timestamp"].dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin"))
    zoned.to_parquet(root / "log.parquet", index=False)
    return {"frame": text, "csv": root / "log.csv", "parquet": root / "log.parquet"}


def _rows(log) -> pd.DataFrame:
    return log.to_pandas().sort_values(["customer_id", "timestamp", "amount"], ignore_index=True)


@pytest.mark.parametrize("kind", ["frame", "csv", "parquet"])
def test_each_partition_of_a_split_log_is_the_partition_of_the_log(sources, tmp_path, kind):
    log = read_transactions(sources[kind], on_invalid="reject")
    with duckdb_session() as con:
        split = split_by_customer(con, log, tmp_path / "log", COUNT)
    assert split.report == log.report and split.first_timestamp == log.first_timestamp
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == [f"crmml_part={i}" for i in range(COUNT)]
    for index in range(COUNT):
        own, filtered = split.partition(index, COUNT), log.partition(index, COUNT)
        assert own._partitions == () and own._source.part == index  # reads its folder, no hash filter
        pd.testing.assert_frame_equal(_rows(own), _rows(filtered))
        rejected = filtered.rejected_rows()  # (an empty one's row numbers are int32 from a CSV: no rows to number)
        pd.testing.assert_frame_equal(own.rejected_rows(), rejected, check_dtype=len(rejected) > 0)  # file and row
        assert own.report == filtered.report and own.last_timestamp == filtered.last_timestamp
        pd.testing.assert_frame_equal(_rows(pickle.loads(pickle.dumps(own))), _rows(filtered))  # a worker's copy
    if kind != "parquet":
        assert len(split.rejected_rows()) == 4
    # another partitioning of the split log filters by hash, as the log's does
    pd.testing.assert_frame_equal(_rows(split.partition(1, 2)), _rows(log.partition(1, 2)))


def test_a_partition_of_a_log_splits_as_the_rows_it_holds(sources, tmp_path):
    part = read_transactions(sources["csv"], on_invalid="reject").partition(1, 2)
    with duckdb_session() as con:
        split = split_by_customer(con, part, tmp_path / "log", COUNT)
    pd.testing.assert_frame_equal(_rows(split), _rows(part))
    pd.testing.assert_frame_equal(split.rejected_rows(), part.rejected_rows())
