"""The log's time zone defines purchase days and as_of, the same way on every engine.

A Berlin shop (``timezone="Europe/Berlin"``): an order at 00:30 local on 1 July (22:30 UTC on 30 June)
belongs to 1 July, so it is after ``as_of=2024-06-30``; naive timestamps are local already. The expected
summaries are worked out by hand from the local calendar days (and, for UTC, from the UTC days).
"""

from __future__ import annotations

import pandas as pd
import pytest

from crmml.data import read_transactions, rfm_summary
from crmml.data.in_memory import InMemoryTransactions
from crmml.errors import InvalidTimezoneError

AS_OF = "2024-06-30"
# (customer, timestamp as the shop's export writes it, amount)
ROWS = [
    (1, "2024-06-10T09:00:00+02:00", 10.0),
    (1, "2024-06-30T23:30:00+02:00", 20.0),  # local 30 June
    (1, "2024-07-01T00:30:00+02:00", 40.0),  # local 1 July = 22:30 UTC on 30 June
    (2, "2024-06-15 10:00:00", 5.0),  # naive: local already
    (2, "2024-06-30T22:30:00Z", 7.0),  # local 00:30 on 1 July
    (3, "2024-06-01T12:00:00+02:00", 3.0),
    (3, "2024-06-20T01:00:00+02:00", 4.0),  # 23:00 UTC on 19 June
]
COLUMNS = ["frequency", "recency", "T", "monetary_value"]
BERLIN = pd.DataFrame({"frequency": [1.0, 0.0, 1.0], "recency": [20.0, 0.0, 19.0], "T": [20.0, 15.0, 29.0],
                       "monetary_value": [20.0, 0.0, 4.0]}, index=pd.Index([1, 2, 3], name="customer_id"))
UTC = pd.DataFrame({"frequency": [1.0, 1.0, 1.0], "recency": [20.0, 15.0, 18.0], "T": [20.0, 15.0, 29.0],
                    "monetary_value": [60.0, 7.0, 4.0]}, index=pd.Index([1, 2, 3], name="customer_id"))


def _text_log() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=["customer_id", "timestamp", "amount"])


def _aware_log() -> pd.DataFrame:
    """The same instants in a time-zone-aware column (the naive row given its Berlin offset)."""
    log = _text_log()
    log.loc[log["customer_id"] == 2, "timestamp"] = ["2024-06-15T10:00:00+02:00", "2024-06-30T22:30:00Z"]
    return log.assign(timestamp=pd.to_datetime(log["timestamp"], utc=True, format="ISO8601"))


def _source(engine: str, folder):
    if engine == "frame_text":
        return _text_log()
    if engine == "frame_aware":
        return _aware_log()
    if engine == "csv":
        path = folder / "log.csv"
        _text_log().to_csv(path, index=False)
        return path
    if engine == "parquet_aware":  # TIMESTAMP WITH TIME ZONE in DuckDB
        path = folder / "log.parquet"
        _aware_log().to_parquet(path)
        return path
    raise AssertionError(engine)


ENGINES = ["frame_text", "frame_aware", "csv", "parquet_aware", "in_memory"]


def _summary(engine: str, folder, timezone: str | None) -> tuple[pd.DataFrame, object]:
    zone = {} if timezone is None else {"timezone": timezone}
    if engine == "in_memory":
        log = _text_log()
        source = InMemoryTransactions.from_arrays(log["customer_id"].to_numpy(), log["timestamp"].tolist(),
                                                  log["amount"].to_numpy(), **zone)
        summary, report = rfm_summary(source, as_of=AS_OF, return_report=True)
    else:
        summary, report = rfm_summary(_source(engine, folder), as_of=AS_OF, return_report=True, **zone)
    return summary[COLUMNS], report


@pytest.mark.parametrize("engine", ENGINES)
def test_berlin_days_define_purchases_and_as_of(engine, tmp_path):
    summary, report = _summary(engine, tmp_path, "Europe/Berlin")
    pd.testing.assert_frame_equal(summary, BERLIN, check_index_type=False)
    assert report.rows_after_as_of == 2  # the two orders of 1 July, local time
    assert report.reconciles


@pytest.mark.parametrize("engine", ENGINES)
def test_default_is_utc(engine, tmp_path):
    summary, report = _summary(engine, tmp_path, None)
    pd.testing.assert_frame_equal(summary, UTC, check_index_type=False)
    assert report.rows_after_as_of == 0


def test_timestamps_and_default_as_of_are_local():
    log = read_transactions(_text_log(), timezone="Europe/Berlin")
    assert log.timezone == "Europe/Berlin"
    assert log.last_timestamp == pd.Timestamp("2024-07-01 00:30")  # so as_of defaults to 1 July
    rows = log.to_pandas().sort_values("timestamp")
    assert rows["timestamp"].iloc[0] == pd.Timestamp("2024-06-01 12:00")


def test_a_zone_with_a_format_and_percent_z():
    log = pd.DataFrame({"customer_id": [1, 1], "timestamp": ["20240701 003000 +0200", "20240630 120000 +0000"],
                        "amount": [1.0, 2.0]})
    rows = read_transactions(log, time_format="%Y%m%d %H%M%S %z", timezone="America/New_York").to_pandas()
    assert sorted(rows["timestamp"]) == [pd.Timestamp("2024-06-30 08:00"), pd.Timestamp("2024-06-30 18:30")]


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "+02:00", None])
def test_an_unknown_zone_is_a_clear_error(zone):
    with pytest.raises(InvalidTimezoneError, match="time zone"):
        read_transactions(_text_log(), timezone=zone)
    with pytest.raises(InvalidTimezoneError, match="time zone"):
        InMemoryTransactions.from_arrays([1], ["2024-01-01"], timezone=zone)


@pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")
@pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")
def test_spark_uses_the_same_days():
    """Text with offsets, naive text and an instant column, on a local[1] session (stopped at the end)."""
    spark_api = pytest.importorskip("crmml.spark")
    from spark_support import TEST_CONF

    spark = spark_api.spark_session("local[1]", conf=TEST_CONF)
    try:
        for log in (_text_log(), _aware_log()):
            summary = spark_api.rfm_summary(spark.createDataFrame(log), as_of=AS_OF, timezone="Europe/Berlin")
            summary = summary.toPandas().set_index("customer_id").sort_index()[COLUMNS]
            pd.testing.assert_frame_equal(summary, BERLIN, check_index_type=False)
    finally:
        spark.stop()
