"""Tests for read_transactions: sources, canonical types, and every validation error."""

from __future__ import annotations

import re

import duckdb
import numpy as np
import pandas as pd
import pytest

from crmml.data import TransactionReport, Transactions, read_transactions
from crmml.data.transactions import duckdb_session
from crmml.datasets import load_cdnow_transactions
from crmml.errors import DataValidationError


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return load_cdnow_transactions(sample=True)


def small_log(**overrides) -> pd.DataFrame:
    """Five valid transactions; ``overrides`` replace whole columns."""
    columns = {
        "customer_id": ["a", "a", "b", "c", "c"],
        "timestamp": pd.to_datetime(
            ["2024-01-01 09:30", "2024-01-05", "2024-01-02 23:59:59", "2024-01-03", "2024-02-01"],
            format="ISO8601",
        ),
        "amount": [10.0, 5.5, 3.0, 0.0, 7.25],
    }
    columns.update(overrides)
    return pd.DataFrame(columns, index=[10, 11, 12, 13, 14])


# --------------------------------------------------------------------------------------------------
# Canonical log
# --------------------------------------------------------------------------------------------------


def test_dataframe_becomes_canonical_log(cdnow):
    log = read_transactions(cdnow)
    assert isinstance(log, Transactions)
    assert log.report == TransactionReport(rows_in=6919, rows_valid=6919, rows_rejected=0)
    assert log.has_amount
    frame = log.to_pandas()
    assert list(frame.columns) == ["customer_id", "timestamp", "amount"]
    assert frame["customer_id"].dtype == np.int64
    assert pd.api.types.is_datetime64_dtype(frame["timestamp"])
    assert frame["amount"].dtype == np.float64
    assert frame["amount"].sum() == pytest.approx(cdnow["amount"].sum())
    assert log.first_timestamp == pd.Timestamp("1997-01-01")
    assert log.last_timestamp == pd.Timestamp("1998-06-30")


def test_relation_is_a_lazy_duckdb_relation(cdnow):
    log = read_transactions(cdnow)
    relation = log.relation
    assert isinstance(relation, duckdb.DuckDBPyRelation)
    assert relation.columns == ["customer_id", "timestamp", "amount"]
    assert [str(t) for t in relation.types] == ["BIGINT", "TIMESTAMP", "DOUBLE"]
    assert relation.aggregate("count(*)").fetchall() == [(6919,)]
    log.close()


def test_string_ids_stay_strings_and_times_of_day_are_kept():
    frame = read_transactions(small_log()).to_pandas().sort_values("timestamp")
    assert pd.api.types.is_string_dtype(frame["customer_id"])
    assert frame["customer_id"].tolist() == ["a", "b", "c", "a", "c"]
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2024-01-01 09:30")
    assert frame["timestamp"].iloc[1] == pd.Timestamp("2024-01-02 23:59:59")


def test_iso_text_timestamps_are_parsed_and_offsets_go_to_utc():
    text = ["2024-01-01", "2024-01-01T10:00:00", "2024-01-01 10:00:00+02:00", " 2024-01-02 ", "2024-01-03"]
    frame = read_transactions(small_log(timestamp=text)).to_pandas()
    assert sorted(frame["timestamp"]) == [
        pd.Timestamp("2024-01-01"),
        pd.Timestamp("2024-01-01 08:00"),
        pd.Timestamp("2024-01-01 10:00"),
        pd.Timestamp("2024-01-02"),
        pd.Timestamp("2024-01-03"),
    ]


def test_time_zone_aware_column_is_converted_to_utc():
    stamps = pd.to_datetime(["2024-01-01 01:00"] * 5).tz_localize("Europe/Paris")
    frame = read_transactions(small_log(timestamp=stamps)).to_pandas()
    assert (frame["timestamp"] == pd.Timestamp("2024-01-01 00:00")).all()


def test_integer_dates_need_time_format(cdnow):
    ints = cdnow.assign(timestamp=cdnow["timestamp"].dt.strftime("%Y%m%d").astype(int))
    with pytest.raises(DataValidationError, match="time_format") as caught:
        read_transactions(ints)
    assert caught.value.column == "timestamp"
    parsed = read_transactions(ints, time_format="%Y%m%d").to_pandas()
    assert sorted(parsed["timestamp"]) == sorted(cdnow["timestamp"])


def test_custom_column_names_and_no_amount(cdnow):
    renamed = cdnow.rename(columns={"customer_id": "cust", "timestamp": "when"})
    log = read_transactions(renamed, customer_col="cust", time_col="when", amount_col=None)
    assert not log.has_amount
    assert list(log.to_pandas().columns) == ["customer_id", "timestamp"]


def test_csv_integer_ids_become_integers_and_padded_ids_stay_text(tmp_path):
    ints = tmp_path / "ints.csv"
    small_log(customer_id=[1, 1, 2, 30, 30]).to_csv(ints, index=False)
    assert read_transactions(ints).to_pandas()["customer_id"].dtype == np.int64

    padded = tmp_path / "padded.csv"
    small_log(customer_id=["001", "001", "2", "30", "30"]).to_csv(padded, index=False)
    ids = read_transactions(padded).to_pandas()["customer_id"]
    assert pd.api.types.is_string_dtype(ids)
    assert set(ids) == {"001", "2", "30"}


def test_parquet_keeps_column_types(tmp_path):
    path = tmp_path / "log.parquet"
    small_log(customer_id=[1, 1, 2, 3, 3]).to_parquet(path)
    frame = read_transactions(path).to_pandas()
    assert frame["customer_id"].dtype == np.int64
    assert frame["amount"].sum() == pytest.approx(25.75)


def test_float_ids_with_whole_values_become_integers():
    log = read_transactions(small_log(customer_id=[1.0, 1.0, 2.0, 3.0, 3.0]))
    assert log.to_pandas()["customer_id"].dtype == np.int64


def test_files_in_a_directory_and_a_glob(tmp_path, cdnow):
    parts = tmp_path / "parts" / "nested"
    parts.mkdir(parents=True)
    for i, start in enumerate(range(0, len(cdnow), 2500)):
        cdnow.iloc[start : start + 2500].to_parquet(parts / f"part-{i}.parquet")
    (tmp_path / "parts" / "_SUCCESS").write_text("")
    assert read_transactions(tmp_path / "parts").report.rows_in == 6919
    assert read_transactions(str(parts / "part-*.parquet")).report.rows_in == 6919


# --------------------------------------------------------------------------------------------------
# Errors about the source as a whole
# --------------------------------------------------------------------------------------------------


def test_missing_column_lists_the_columns_found(tmp_path):
    with pytest.raises(DataValidationError) as caught:
        read_transactions(small_log(), amount_col="revenue")
    message = str(caught.value)
    assert "'revenue'" in message and "Columns found" in message
    assert "'customer_id'" in message and "'amount'" in message
    assert caught.value.column == "revenue"

    path = tmp_path / "log.csv"
    small_log().to_csv(path, index=False)
    with pytest.raises(DataValidationError, match=r"'date'.*missing.*log\.csv.*Columns found"):
        read_transactions(path, time_col="date")


def test_empty_inputs_are_errors(tmp_path):
    with pytest.raises(DataValidationError, match="DataFrame has no rows"):
        read_transactions(small_log().iloc[:0])
    header_only = tmp_path / "empty.csv"
    header_only.write_text("customer_id,timestamp,amount\n")
    with pytest.raises(DataValidationError, match=re.escape(f"{header_only} has no rows")):
        read_transactions(header_only)


def test_missing_path_glob_and_directory_are_named(tmp_path):
    missing = tmp_path / "nowhere.parquet"
    with pytest.raises(DataValidationError, match=re.escape(str(missing))):
        read_transactions(missing)
    pattern = str(tmp_path / "*.parquet")
    with pytest.raises(DataValidationError, match=re.escape(pattern)):
        read_transactions(pattern)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(DataValidationError, match=re.escape(str(empty_dir))):
        read_transactions(empty_dir)


def test_mixed_formats_are_an_error(tmp_path):
    small_log().to_csv(tmp_path / "a.csv", index=False)
    small_log().to_parquet(tmp_path / "b.parquet")
    with pytest.raises(DataValidationError, match="mixes CSV and Parquet"):
        read_transactions(tmp_path)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="on_invalid"):
        read_transactions(small_log(), on_invalid="drop")
    with pytest.raises(TypeError, match="DataFrame or a path"):
        read_transactions([1, 2, 3])
    with pytest.raises(ValueError, match="time_format '%Q' is not a valid strptime format"):
        read_transactions(small_log(), time_format="%Q")


# --------------------------------------------------------------------------------------------------
# DuckDB resources
# --------------------------------------------------------------------------------------------------


def duckdb_settings() -> tuple[str, int]:
    with duckdb_session() as con:
        return con.sql("SELECT current_setting('memory_limit'), current_setting('threads')").fetchall()[0]


def test_duckdb_memory_limit_defaults_to_a_quarter_of_memory_and_threads_to_duckdbs(monkeypatch):
    monkeypatch.delenv("CRMML_DUCKDB_MEMORY_LIMIT", raising=False)
    monkeypatch.delenv("CRMML_DUCKDB_THREADS", raising=False)
    plain = duckdb.connect()
    default_threads = plain.sql("SELECT current_setting('threads')").fetchall()[0][0]
    plain.execute("SET memory_limit = '25%'")
    quarter = plain.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert duckdb_settings() == (quarter, default_threads)


def test_duckdb_resources_can_be_set_in_the_environment(monkeypatch, cdnow):
    monkeypatch.setenv("CRMML_DUCKDB_MEMORY_LIMIT", "200MB")
    monkeypatch.setenv("CRMML_DUCKDB_THREADS", "1")
    assert duckdb_settings() == ("190.7 MiB", 1)
    assert read_transactions(cdnow).report.rows_valid == 6919


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CRMML_DUCKDB_MEMORY_LIMIT", "lots"), ("CRMML_DUCKDB_THREADS", "0"), ("CRMML_DUCKDB_THREADS", "two")],
)
def test_invalid_duckdb_resources_name_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable} must be .* Got '{value}' instead"):
        read_transactions(small_log())


# --------------------------------------------------------------------------------------------------
# Errors about rows: the message names the column, the rows and their raw values
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "values", "reason_text", "bad_labels", "raw_shown"),
    [
        ("customer_id", ["a", None, "b", "  ", "c"], "missing (null or blank) customer id", [11, 13], ["None", "'  '"]),
        ("timestamp", ["2024-01-01", "2024-13-45", "2024-01-02", "yesterday", "2024-01-03"],
         "cannot be parsed", [11, 13], ["'2024-13-45'", "'yesterday'"]),
        ("timestamp", ["2024-01-01", "", "2024-01-02", None, "2024-01-03"],
         "missing (null or empty) timestamp", [11, 13], ["''", "None"]),
        ("amount", ["1.5", "2", "abc", "3", "1,5"], "not a number", [12, 14], ["'abc'", "'1,5'"]),
        ("amount", [1.5, np.nan, 2.0, None, 3.0], "missing (null or blank) amount", [11, 13], ["None"]),
        ("amount", [1.5, np.inf, 2.0, -np.inf, 3.0], "not finite", [11, 13], ["'inf'", "'-inf'"]),
    ],
)
def test_invalid_rows_in_a_dataframe_are_reported(column, values, reason_text, bad_labels, raw_shown):
    with pytest.raises(DataValidationError) as caught:
        read_transactions(small_log(**{column: values}))
    error = caught.value
    message = str(error)
    assert error.column == column
    assert error.rows == bad_labels
    assert f"Column '{column}'" in message and reason_text in message
    for label in bad_labels:
        assert f"{label}:" in message
    for raw in raw_shown:
        assert raw in message


def test_invalid_rows_in_a_csv_name_the_file_and_data_row(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(
        "customer_id,timestamp,amount\n"
        "1,2024-01-01,10\n"
        "2,2024-01-02,ten\n"
        "3,2024-01-03,3\n"
        "4,2024-01-04,-\n"
    )
    with pytest.raises(DataValidationError) as caught:
        read_transactions(path)
    error = caught.value
    assert error.column == "amount"
    assert error.rows == [(str(path), 2), (str(path), 4)]
    assert f"{path} row 2: 'ten'" in str(error)
    assert f"{path} row 4: '-'" in str(error)


def test_unparseable_timestamp_with_a_format_names_the_format(tmp_path):
    path = tmp_path / "cdnow.csv"
    path.write_text("customer_id,timestamp,amount\n1,19970101,10\n1,1997-01-02,5\n")
    with pytest.raises(DataValidationError, match=r"row 2: '1997-01-02'.*%Y%m%d") as caught:
        read_transactions(path, time_format="%Y%m%d")
    assert caught.value.column == "timestamp"


def test_invalid_rows_across_parquet_parts_name_each_file(tmp_path):
    small_log().to_parquet(tmp_path / "part-0.parquet")
    small_log(customer_id=["x", "x", None, "y", "y"]).to_parquet(tmp_path / "part-1.parquet")
    with pytest.raises(DataValidationError) as caught:
        read_transactions(tmp_path)
    assert caught.value.rows == [(str(tmp_path / "part-1.parquet"), 3)]
    assert "part-1.parquet row 3: None" in str(caught.value)


def test_invalid_rows_across_csv_parts_name_each_file(tmp_path):
    for i in range(3):
        (tmp_path / f"part-{i}.csv").write_text(
            "customer_id,timestamp,amount\n" + "".join(f"{i},2024-01-0{d},1\n" for d in range(1, 6))
        )
    (tmp_path / "part-1.csv").write_text(
        "customer_id,timestamp,amount\n1,2024-01-01,1\n1,2024-01-02,1\n1,2024-01-0x,1\n"
    )
    with pytest.raises(DataValidationError) as caught:
        read_transactions(tmp_path)
    assert caught.value.rows == [(str(tmp_path / "part-1.csv"), 3)]
    assert "part-1.csv row 3: '2024-01-0x'" in str(caught.value)


# --------------------------------------------------------------------------------------------------
# on_invalid="reject"
# --------------------------------------------------------------------------------------------------


def test_reject_counts_rows_by_reason_and_returns_them():
    frame = small_log(
        customer_id=["a", None, "b", "c", "c"],
        amount=["1", "2", "x", "inf", "4"],
    )
    log = read_transactions(frame, on_invalid="reject")
    assert log.report == TransactionReport(
        rows_in=5,
        rows_valid=2,
        rows_rejected=3,
        rejected_by_reason={"missing_customer_id": 1, "non_numeric_amount": 1, "non_finite_amount": 1},
    )
    assert len(log) == 2
    assert log.to_pandas()["amount"].sum() == 5.0

    rejected = log.rejected_rows()
    assert rejected.index.tolist() == [11, 12, 13]
    assert rejected["reason"].tolist() == ["missing_customer_id", "non_numeric_amount", "non_finite_amount"]
    assert rejected["amount"].tolist() == ["2", "x", "inf"]
    assert rejected["customer_id"].tolist()[1:] == ["b", "c"]


def test_reject_from_csv_gives_file_and_row(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("customer_id,timestamp,amount\n1,2024-01-01,10\n,2024-01-02,5\n3,soon,3\n")
    log = read_transactions(path, on_invalid="reject")
    assert log.report.rejected_by_reason == {"missing_customer_id": 1, "unparseable_timestamp": 1}
    rejected = log.rejected_rows()
    assert list(rejected.columns) == ["file", "row", "customer_id", "timestamp", "amount", "reason"]
    assert rejected["row"].tolist() == [2, 3]
    assert rejected["timestamp"].tolist() == ["2024-01-02", "soon"]
    assert (rejected["file"] == str(path)).all()


def test_reject_with_nothing_rejected_returns_an_empty_frame():
    log = read_transactions(small_log(), on_invalid="reject")
    assert log.report.rows_rejected == 0
    assert log.rejected_rows().empty


def test_reject_still_raises_when_every_row_is_invalid():
    with pytest.raises(DataValidationError, match="Every row is invalid") as caught:
        read_transactions(small_log(amount=["x"] * 5), on_invalid="reject")
    assert caught.value.column == "amount"


def test_a_log_kept_in_memory_is_read_once_and_gives_the_same_numbers(monkeypatch, cdnow):
    import pickle

    from crmml.data import rfm_summary
    from crmml.data import summary as summary_module
    from crmml.features import compute_features

    streamed = read_transactions(cdnow)
    kept = streamed.kept_in_memory()
    assert kept is not streamed and kept.kept_in_memory() is kept and kept.keeps_rows_in_memory
    assert kept.kept_sorted_batches() is None  # nothing read yet
    first = rfm_summary(kept, as_of="1997-09-30")
    assert sum(batch.num_rows for batch in kept.kept_sorted_batches()) == len(streamed)

    def no_duckdb(*args, **kwargs):
        raise AssertionError("a kept log was read from its source again")

    monkeypatch.setattr(summary_module, "duckdb_session", no_duckdb)
    pd.testing.assert_frame_equal(rfm_summary(kept, as_of="1997-09-30"), first)
    pd.testing.assert_frame_equal(compute_features(kept, as_of="1997-06-30"),
                                  compute_features(kept.partition(0, 1), as_of="1997-06-30"))
    monkeypatch.undo()
    pd.testing.assert_frame_equal(first, rfm_summary(streamed, as_of="1997-09-30"))
    pd.testing.assert_frame_equal(compute_features(kept, as_of="1997-06-30"),
                                  compute_features(streamed, as_of="1997-06-30"))
    part = kept.partition(1, 3)  # a hash partition keeps its own rows once read
    assert part.keeps_rows_in_memory and part.kept_sorted_batches() is None
    pd.testing.assert_frame_equal(rfm_summary(part, as_of="1997-09-30"),
                                  rfm_summary(streamed.partition(1, 3), as_of="1997-09-30"))
    assert part.kept_sorted_batches() is not None
    copy = pickle.loads(pickle.dumps(kept))  # a worker's copy reads its own rows
    assert copy.keeps_rows_in_memory and copy.kept_sorted_batches() is None
    small = streamed.kept_in_memory(max_rows=len(streamed) - 1)  # over the limit: streamed every time
    rfm_summary(small, as_of="1997-09-30")
    assert small.kept_sorted_batches() is None
    with pytest.raises(ValueError, match="max_rows"):
        streamed.kept_in_memory(max_rows=0)
