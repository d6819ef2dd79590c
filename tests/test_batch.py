"""Tests for Transactions.partition and the out-of-core batch scoring engine (crmml.batch).

Oracle: the single-pass :func:`crmml.features.compute_features` over the whole log and the whole
customer table. The data are a simulated customer base written to CSV and Parquet, with invalid
rows, rows after as_of, refund-only and future-only customers, table customers without purchases
and table customers who signed up after as_of.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from crmml.batch import MAX_PARTITIONS, MIN_CUSTOMERS_PER_PARTITION, BatchReport, score_in_partitions
from crmml.batch_pool import OWNER_FILE, partition_count
from crmml.data import read_transactions, simulate_customer_base
from crmml.data.transactions import duckdb_session
from crmml.errors import DataValidationError
from crmml.features import compute_features

AS_OF = pd.Timestamp("2025-03-31")
N_SIMULATED = 400


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A log (DataFrame, CSV, Parquet) and a customer table (DataFrame, CSV, Parquet)."""
    sim = simulate_customer_base(N_SIMULATED, start="2024-01-01", end="2025-06-30", seed=7)
    log = sim.transactions.assign(customer_id=lambda f: f["customer_id"].astype("int64"))
    extra = pd.DataFrame(
        [
            (1000, "2025-05-02 10:00", 20.0),  # first purchase after as_of, not in the table
            (1000, "2025-06-01 10:00", 5.0),
            (1001, "2025-02-01 09:00", -15.0),  # refunds only
            (1002, "2025-01-10 12:00", 30.0),  # bought, not in the table
            (1003, "2025-01-11 12:00", 12.0),  # in the table, signed up after as_of
        ],
        columns=["customer_id", "timestamp", "amount"],
    ).assign(timestamp=lambda f: pd.to_datetime(f["timestamp"]))
    log = pd.concat([log, extra], ignore_index=True)
    text = log.astype({"customer_id": "string", "timestamp": "string", "amount": "string"})
    invalid = pd.DataFrame(
        [
            ("5", "not a date", "10"),  # customer 5 keeps its valid rows
            ("", "2025-01-01", "10"),  # no customer id
            ("7", "2025-01-01", "ten"),
            ("1004", "", "3"),  # every row of customer 1004 is invalid
            ("1004", "2025-01-01", "inf"),
        ],
        columns=["customer_id", "timestamp", "amount"],
    )
    text = pd.concat([text.iloc[:200], invalid, text.iloc[200:]], ignore_index=True)

    table = sim.customers[["customer_id", "acquisition_channel", "signup_date", "region", "referred_by"]]
    table = table.assign(customer_id=lambda f: f["customer_id"].astype("int64"))
    table_extra = pd.DataFrame({
        "customer_id": [2000, 2001, 2002, 1003],  # no purchases (2000-2001), signed up after as_of
        "acquisition_channel": ["email", "referral", "email", "email"],
        "signup_date": pd.to_datetime(["2024-05-01", "2025-01-01", "2025-05-01", "2025-04-15"]),
        "region": ["north", "south", "east", "west"],
        "referred_by": pd.array([pd.NA, 3, 3, 2000], dtype="Int64"),  # 2002's referral does not count
    })
    table = pd.concat([table, table_extra], ignore_index=True)

    root = tmp_path_factory.mktemp("batch_data")
    paths = {"csv": root / "log.csv", "parquet": root / "log.parquet", "table_csv": root / "customers.csv",
             "table_parquet": root / "customers.parquet"}
    text.to_csv(paths["csv"], index=False)
    parquet_log = read_transactions(paths["csv"], on_invalid="reject").to_pandas()
    parquet_log.to_parquet(paths["parquet"], index=False)
    table.to_csv(paths["table_csv"], index=False)
    table.to_parquet(paths["table_parquet"], index=False)
    return {"frame": text, "table": table, **paths}


@pytest.fixture(scope="module")
def expected(data) -> pd.DataFrame:
    """The single-pass features: the whole log and the whole table."""
    return compute_features(data["csv"], as_of=AS_OF, customers=data["table"], on_invalid="reject").reset_index()


def features_callback(log, table):
    return compute_features(log, as_of=AS_OF, customers=table).reset_index()


def read_output(path, **csv_options) -> pd.DataFrame:
    frame = pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path, **csv_options)
    return frame.sort_values("customer_id", ignore_index=True)


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Categories and text as object columns of str, so files and frames compare."""
    out = frame.copy()
    for name in ("acquisition_channel", "region"):
        out[name] = out[name].astype(object).where(out[name].notna(), None)
    return out.sort_values("customer_id", ignore_index=True)


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------------------------------
# Transactions.partition
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["csv", "frame"])
def test_partitions_add_up_to_the_whole_log(data, source):
    log = read_transactions(data[source], on_invalid="reject")
    whole = compute_features(log, as_of=AS_OF)
    parts = [log.partition(index, 4) for index in range(4)]
    rows = [part.to_pandas() for part in parts]
    owners = [set(r["customer_id"]) for r in rows]
    assert all(not (owners[i] & owners[j]) for i in range(4) for j in range(i + 1, 4))  # no customer splits
    assert sum(len(r) for r in rows) == log.report.rows_valid
    assert sum(part.report.rows_in for part in parts) == log.report.rows_in
    assert sum(part.report.rows_rejected for part in parts) == log.report.rows_rejected
    assert sum(len(part.rejected_rows()) for part in parts) == log.report.rows_rejected
    assert min(part.first_timestamp for part in parts) == log.first_timestamp
    union = pd.concat([compute_features(part, as_of=AS_OF) for part in parts]).sort_index()
    pd.testing.assert_frame_equal(union, whole, check_like=False)


def test_partition_of_one_is_the_whole_log_and_arguments_are_checked(data):
    log = read_transactions(data["parquet"])
    whole = log.partition(0, 1)
    assert whole.report == log.report and len(whole.to_pandas()) == len(log.to_pandas())
    assert "partition=2/3" in repr(log.partition(2, 3))
    for index, count in [(0, 0), (3, 3), (-1, 2)]:
        with pytest.raises(ValueError, match="index"):
            log.partition(index, count)
    for index, count in [(0.5, 2), (True, 2), (0, "2")]:
        with pytest.raises(TypeError, match="must be an int"):
            log.partition(index, count)


def test_int_and_text_ids_share_a_partition():
    ints = read_transactions(pd.DataFrame({"customer_id": [42, 7], "timestamp": ["2024-01-01"] * 2, "amount": 1.0}))
    texts = read_transactions(pd.DataFrame({"customer_id": ["42", "7"], "timestamp": ["2024-01-01"] * 2,
                                            "amount": 1.0}))
    for index in range(3):
        a = ints.partition(index, 3).to_pandas()["customer_id"].astype(str).tolist()
        b = texts.partition(index, 3).to_pandas()["customer_id"].tolist()
        assert sorted(a) == sorted(b)


# --------------------------------------------------------------------------------------------------
# score_in_partitions
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("log_key", "table_key", "suffix"), [("csv", "table_csv", ".parquet"),
                                                              ("parquet", "table_parquet", ".csv")])
def test_partitioned_scores_equal_single_pass_features(data, expected, tmp_path, log_key, table_key, suffix):
    output = tmp_path / f"scores{suffix}"
    calls = []
    report = score_in_partitions(
        data[log_key], as_of=AS_OF, score_partition=features_callback, output=output,
        customers=data[table_key], customers_per_partition=60, progress=lambda *a: calls.append(a),
    )
    assert report.partitions == 7 and calls == [(i, 7) for i in range(1, 8)]
    got = read_output(output)
    want = comparable(expected)
    if suffix == ".csv":
        want["no_purchase_history"] = want["no_purchase_history"].astype(bool)
    pd.testing.assert_frame_equal(comparable(got), want, check_dtype=suffix == ".parquet", rtol=1e-12)
    assert report.customers_scored == len(expected)
    assert set(leftovers(tmp_path)) == {output.name, "scores.rejected.csv"}


def test_report_reconciles_and_lists_every_rejection(data, expected, tmp_path):
    output = tmp_path / "scores.parquet"
    report = score_in_partitions(data["csv"], as_of=AS_OF, score_partition=features_callback, output=output,
                                 customers=data["table_csv"], customers_per_partition=100)
    assert isinstance(report, BatchReport) and report.reconciles
    log = read_transactions(data["csv"], on_invalid="reject").to_pandas()
    assert report.rows_in == len(data["frame"]) and report.rows_rejected == 5
    assert report.rows_used == (log["timestamp"] < AS_OF + pd.Timedelta(days=1)).sum()
    assert report.rows_after_as_of == (log["timestamp"] >= AS_OF + pd.Timedelta(days=1)).sum()
    # customers: the simulated ones, 1000-1004 from the log, 2000-2002 from the table
    assert report.customers_in == N_SIMULATED + 5 + 3
    assert report.customers_rejected_by_reason == {
        "signed up after as_of": 2, "every row invalid": 1, "first purchase after as_of": 1,
        "no purchase on or before as_of (refunds only)": 1,
    }
    rejected = pd.read_csv(report.rejected_path, dtype=str, keep_default_na=False)
    assert list(rejected.columns) == ["kind", "reason", "customer_id", "timestamp", "amount", "file", "row"]
    rows = rejected[rejected["kind"] == "row"].sort_values("row", key=lambda r: r.astype(int))
    assert rows["reason"].tolist() == ["unparseable_timestamp", "missing_customer_id", "non_numeric_amount",
                                       "missing_timestamp", "non_finite_amount"]
    assert rows["row"].tolist() == ["201", "202", "203", "204", "205"] and set(rows["file"]) == {str(data["csv"])}
    assert rows["amount"].tolist() == ["10", "10", "ten", "3", "inf"]
    customers = rejected[rejected["kind"] == "customer"].set_index("customer_id")["reason"].to_dict()
    assert customers == {"1003": "signed up after as_of", "2002": "signed up after as_of",
                         "1004": "every row invalid", "1000": "first purchase after as_of",
                         "1001": "no purchase on or before as_of (refunds only)"}
    text = str(report)
    assert f"{report.rows_in:,} in" in text and "5 rejected" in text and "scores.parquet" in text


def test_a_transactions_object_and_no_table(data, tmp_path):
    log = read_transactions(data["frame"], on_invalid="reject")
    output = tmp_path / "out.csv"
    report = score_in_partitions(log, as_of=AS_OF, output=output, customers_per_partition=150,
                                 score_partition=lambda part, table: compute_features(part, as_of=AS_OF))
    assert report.reconciles and report.customers_in == N_SIMULATED + 5 and report.partitions == 3
    want = compute_features(log, as_of=AS_OF).reset_index()  # text ids: the frame's column is text
    got = read_output(output, dtype={"customer_id": str})
    pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-12)
    rejected = pd.read_csv(report.rejected_path, dtype=str, keep_default_na=False)
    assert sorted(rejected.loc[rejected["kind"] == "row", "row"].astype(int)) == [200, 201, 202, 203, 204]


def test_header_only_rejections_file_when_nothing_is_rejected(tmp_path):
    log = simulate_customer_base(30, start="2024-01-01", end="2024-12-31", seed=1).transactions
    output = tmp_path / "s.parquet"
    report = score_in_partitions(log, as_of="2024-12-31", output=output, score_partition=lambda p, t: (
        compute_features(p, as_of="2024-12-31")[["frequency"]].reset_index()))
    assert report.customers_rejected == 0 and report.rows_rejected == 0 and report.partitions == 1
    assert (tmp_path / "s.rejected.csv").read_text().strip() == "kind,reason,customer_id,timestamp,amount,file,row"
    assert len(pd.read_parquet(output)) == 30


# --------------------------------------------------------------------------------------------------
# Errors leave nothing behind
# --------------------------------------------------------------------------------------------------


def run(data, output, **overrides):
    transactions = overrides.pop("transactions", data["csv"])
    arguments = {"as_of": AS_OF, "score_partition": features_callback, "output": output,
                 "customers": data["table_csv"], "customers_per_partition": 100}
    arguments.update(overrides)
    return score_in_partitions(transactions, **arguments)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"transactions": "missing.csv"}, DataValidationError, "No such file"),
        ({"customers": "missing.csv"}, DataValidationError, "No customer table"),
        ({"as_of": "2023-12-31"}, DataValidationError, "before the first valid transaction"),
        ({"output": "scores.json"}, ValueError, "must be a .parquet or .csv file"),
        ({"customers_per_partition": 0}, ValueError, "customers_per_partition"),
    ],
)
def test_argument_errors(data, tmp_path, overrides, error, message):
    output = tmp_path / overrides.pop("output", "scores.parquet")
    with pytest.raises(error, match=message):
        run(data, output, **overrides)
    assert leftovers(tmp_path) == []


def test_missing_output_directory(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(data, tmp_path / "nowhere" / "scores.parquet")


def test_bad_customer_tables(data, tmp_path):
    table = data["table"]
    cases = {
        "no_id.csv": (table.drop(columns="customer_id"), "customer_id"),
        "repeated.csv": (pd.concat([table, table.iloc[[3, 5]]]), r"2 customer id\(s\) repeat: \['3', '5'\]"),
    }
    for name, (frame, message) in cases.items():
        frame.to_csv(tmp_path / name, index=False)
        with pytest.raises(DataValidationError, match=message):
            run(data, tmp_path / "scores.parquet", customers=tmp_path / name)
    assert leftovers(tmp_path) == sorted(cases)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_callback_failing_midway_leaves_nothing(data, tmp_path, suffix):
    calls = []

    def failing(log, table):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return features_callback(log, table)

    (tmp_path / f"scores{suffix}").write_text("previous run")
    with pytest.raises(RuntimeError, match="boom"):
        run(data, tmp_path / f"scores{suffix}", score_partition=failing, customers_per_partition=60)
    assert len(calls) == 3
    assert leftovers(tmp_path) == [f"scores{suffix}"]  # the previous output, untouched
    assert (tmp_path / f"scores{suffix}").read_text() == "previous run"


def test_callback_results_are_checked(data, tmp_path):
    def foreign(log, table):
        return pd.DataFrame({"customer_id": [123456789], "score": [1.0]})

    def repeated(log, table):
        frame = features_callback(log, table)
        return pd.concat([frame, frame.iloc[:1]])

    for callback, message in [(foreign, "not in partition"), (repeated, "repeated customer ids"),
                              (lambda log, table: None, "DataFrame")]:
        with pytest.raises((ValueError, TypeError), match=message):
            run(data, tmp_path / "scores.parquet", score_partition=callback)
    assert leftovers(tmp_path) == []


def test_duckdb_view_of_partition_holds_only_its_customers(data):
    log = read_transactions(data["parquet"])
    part = log.partition(1, 5)
    with duckdb_session() as con:
        part.create_views(con)
        wrong = con.sql("SELECT count(*) FROM crmml_checked "
                        "WHERE hash(CAST(customer_id AS VARCHAR)) % 5 <> 1").fetchall()[0][0]
    assert wrong == 0
    assert np.isin(part.to_pandas()["customer_id"].unique(), log.partition(2, 5).to_pandas()["customer_id"]).sum() == 0


# --------------------------------------------------------------------------------------------------
# Parallel partitions (jobs > 1)
# --------------------------------------------------------------------------------------------------


class FailOnCustomer:
    """A picklable callback that fails on the partition holding one customer."""

    def __init__(self, customer_id):
        self.customer_id = customer_id

    def __call__(self, log, table):
        if self.customer_id in set(log.to_pandas()["customer_id"]):
            raise RuntimeError(f"boom on {self.customer_id}")
        return features_callback(log, table)


class ExtraColumnOnCustomer(FailOnCustomer):
    """A picklable callback whose columns change on the partition holding one customer."""

    def __call__(self, log, table):
        scores = features_callback(log, table)
        return scores.assign(extra=1.0) if self.customer_id in set(scores["customer_id"]) else scores


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_jobs_write_byte_identical_scores_and_rejections(data, tmp_path, suffix):
    written = {}
    for jobs in (1, 3):
        output = tmp_path / f"jobs{jobs}" / f"scores{suffix}"
        output.parent.mkdir()
        calls = []
        report = score_in_partitions(
            data["csv"], as_of=AS_OF, score_partition=features_callback, output=output, customers=data["table_csv"],
            customers_per_partition=60, progress=lambda *a: calls.append(a), jobs=jobs,
        )
        assert report.partitions == 7 and calls == [(i, 7) for i in range(1, 8)]
        assert report.reconciles and report.rows_rejected == 5
        assert leftovers(output.parent) == sorted([output.name, "scores.rejected.csv"])
        counts = {k: v for k, v in vars(report).items() if k not in ("output_path", "rejected_path")}
        written[jobs] = (output.read_bytes(), report.rejected_path.read_bytes(), counts)
    assert written[1] == written[3]


class ReportingProcess:
    """A picklable callback that says which process scored its partition (through ``attrs``)."""

    def __call__(self, log, table):
        scores = features_callback(log, table)
        scores.attrs["pid"] = os.getpid()
        return scores


def test_jobs_score_in_this_process_too(data, tmp_path):
    """With jobs=2 this process and one worker score: the workers from the first partition on, this
    process from the last on, and the file is the one jobs=1 writes."""
    reports = {jobs: run(data, tmp_path / f"scores{jobs}.parquet", score_partition=ReportingProcess(),
                         customers_per_partition=60, jobs=jobs) for jobs in (1, 2)}
    pids = [attrs["pid"] for attrs in reports[2].partition_attrs]
    assert len(pids) == 7 and pids[-1] == os.getpid() and pids[0] != os.getpid()
    assert set(pids) == {os.getpid(), pids[0]}  # one worker beside this process
    assert {attrs["pid"] for attrs in reports[1].partition_attrs} == {os.getpid()}
    assert (tmp_path / "scores1.parquet").read_bytes() == (tmp_path / "scores2.parquet").read_bytes()


def test_jobs_need_a_picklable_callback(data, tmp_path):
    with pytest.raises(TypeError, match="picklable"):
        run(data, tmp_path / "scores.parquet", jobs=2, score_partition=lambda log, table: features_callback(log, table))
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="jobs must be a positive int"):
        run(data, tmp_path / "scores.parquet", jobs=0)


def test_a_worker_failing_leaves_the_previous_output(data, tmp_path):
    output = tmp_path / "scores.parquet"
    output.write_text("previous run")
    with pytest.raises(RuntimeError, match="boom on 5"):
        run(data, output, score_partition=FailOnCustomer(5), customers_per_partition=60, jobs=2)
    assert leftovers(tmp_path) == ["scores.parquet"] and output.read_text() == "previous run"
    with pytest.raises(ValueError, match="returned columns"):  # found by the parent, workers still running
        run(data, output, score_partition=ExtraColumnOnCustomer(5), customers_per_partition=60, jobs=2)
    assert leftovers(tmp_path) == ["scores.parquet"] and output.read_text() == "previous run"


# --------------------------------------------------------------------------------------------------
# Issue 21: stale work folders, tiny partitions, amounts too large to sum
# --------------------------------------------------------------------------------------------------


def _work_folder(directory, name, owner=None, age_s=60.0):
    folder = directory / name
    folder.mkdir()
    (folder / "scores.parquet").write_bytes(b"partial")
    if owner is not None:
        (folder / OWNER_FILE).write_text(f"{owner}\n")
        past = time.time() - age_s
        os.utime(folder / OWNER_FILE, (past, past))
    return folder


def test_work_folders_of_killed_runs_are_removed_by_the_next_run(data, tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid names a process that is gone, like a killed run's
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        _work_folder(tmp_path, ".scores.parquet.killed01", owner=f"{finished.pid} 1")
        _work_folder(tmp_path, ".scores.parquet.running1", owner=running.pid)  # a concurrent run
        _work_folder(tmp_path, ".scores.parquet.notours1")  # no owner file: not made by crmml
        _work_folder(tmp_path, ".other.parquet.killed02", owner=finished.pid)  # another output's
        report = run(data, tmp_path / "scores.parquet")
    finally:
        running.kill()
        running.wait()
    assert report.reconciles
    assert leftovers(tmp_path) == [".other.parquet.killed02", ".scores.parquet.notours1", ".scores.parquet.running1",
                                   "scores.parquet", "scores.rejected.csv"]


def test_partition_count_is_bounded():
    assert partition_count(1_000_000, 250_000, most=MAX_PARTITIONS, fewest_customers=MIN_CUSTOMERS_PER_PARTITION) == 4
    assert partition_count(2_000, 1, most=MAX_PARTITIONS, fewest_customers=MIN_CUSTOMERS_PER_PARTITION) == 40
    assert partition_count(10**9, 1, most=MAX_PARTITIONS, fewest_customers=MIN_CUSTOMERS_PER_PARTITION) == 256
    assert partition_count(3, 1, most=MAX_PARTITIONS, fewest_customers=MIN_CUSTOMERS_PER_PARTITION) == 1


def test_one_customer_per_partition_is_bounded_and_scores_the_same(data, expected, tmp_path):
    report = run(data, tmp_path / "scores.parquet", customers_per_partition=1)
    assert report.partitions == -(-report.customers_in // MIN_CUSTOMERS_PER_PARTITION) == 9
    pd.testing.assert_frame_equal(comparable(read_output(tmp_path / "scores.parquet")), comparable(expected),
                                  rtol=1e-12)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_amount_too_large_to_sum_is_a_validation_error_naming_amount_and_row(tmp_path, suffix):
    log = pd.DataFrame({"customer_id": [1, 1, 2, 3], "amount": [5.0, 2.5, 1e28, -3e30],  # 3e30: after as_of
                        "timestamp": ["2025-01-02", "2025-02-02", "2025-03-01", "2025-05-01"]})
    path = tmp_path / f"log{suffix}"
    log.to_csv(path, index=False) if suffix == ".csv" else log.to_parquet(path, index=False)
    with pytest.raises(DataValidationError, match=r"Got 1e\+28 in column 'amount', row 3 of .*log") as caught:
        score_in_partitions(path, as_of=AS_OF, score_partition=features_callback, output=tmp_path / "s.parquet")
    assert caught.value.column == "amount" and caught.value.rows == [3]
    assert leftovers(tmp_path) == [path.name]
