"""crmml on Spark equals crmml on DuckDB: summaries, features, fits and scores, on a local[2] session.

The oracle is the local engine itself (``crmml.data.rfm_summary``, ``crmml.features.compute_features``,
``Scorer.score``) on the same rows. Summaries and features must be equal bit for bit (the Spark
engine sums amounts exactly and adds doubles in the local engine's order); scores to 1e-9; fits up to
the summation order of the likelihood.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from spark_support import (
    AS_OF,
    SCORER_CONFIG,
    TEST_CONF,
    TRAIN_AS_OF,
    assert_frames_equal_exactly,
    assert_scores_close,
    simulated_log,
)

from crmml.cli import main
from crmml.data import rfm_summary
from crmml.errors import DataValidationError
from crmml.features import compute_features
from crmml.models import BetaGeo, GammaGamma
from crmml.scorer import Scorer, ScorerConfig

# PySpark 4 and pandas 3: notices about PySpark's own use of pandas, nothing crmml can act on.
pytestmark = [
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
    pytest.mark.filterwarnings("ignore:Series.values returning an ndarray"),
]

spark_api = pytest.importorskip("crmml.spark", reason="CI installs crmml[spark]; locally: pip install -e '.[spark]'")


@pytest.fixture(scope="session")
def spark():
    """One local[2] session for every Spark test (loopback only, no UI), stopped at the end."""
    session = spark_api.spark_session("local[2]", conf=TEST_CONF)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def data():
    log, customers = simulated_log()
    return log, customers


@pytest.fixture(scope="module")
def spark_log(spark, data):
    """The log as a Spark DataFrame in 3 random partitions: most customers' rows are split."""
    return spark.createDataFrame(data[0]).repartition(3)


@pytest.fixture(scope="module")
def scorer(data):
    """A scorer trained on a third of the customers (kept small: the fit, not Spark, costs the time)."""
    log, customers = data
    few = customers[customers["customer_id"] < 300]
    return Scorer(ScorerConfig.from_dict(SCORER_CONFIG)).fit(log[log["customer_id"] < 300], as_of=TRAIN_AS_OF,
                                                             customers=few)


def _sorted(frame) -> pd.DataFrame:
    return frame.toPandas().set_index("customer_id").sort_index()


# --------------------------------------------------------------------------------------------------
# Summaries and features
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("freq", "multiplier", "include_first"),
                         [("D", 7, False), ("W", 1, False), ("M", 1, True)])
def test_spark_summary_equals_duckdb_summary_exactly(data, spark_log, freq, multiplier, include_first):
    """Every column bit for bit, and the same SummaryReport (rows in = used + netted + ... + rejected)."""
    local, local_report = rfm_summary(data[0], as_of=AS_OF, freq=freq, freq_multiplier=multiplier,
                                      include_first_transaction=include_first, return_report=True)
    remote, report = spark_api.rfm_summary(spark_log, as_of=AS_OF, freq=freq, freq_multiplier=multiplier,
                                           include_first_transaction=include_first, return_report=True)
    assert_frames_equal_exactly(local, _sorted(remote))
    assert report == local_report and report.reconciles
    assert report.refund_rows_netted > 0 and report.rows_in_fully_refunded_periods > 0
    assert report.rows_after_as_of > 0 and (report.unmatched_refund_rows > 0 or freq != "D")


@pytest.fixture(scope="module")
def ordered_log(data):
    """The log with order ids: refunds 1-10 days after their order name it (they net into its day)."""
    log = data[0][["customer_id", "timestamp", "amount"]].copy()
    log["order_id"] = [f"o{i}" for i in range(len(log))]
    rng = np.random.default_rng(3)
    bought = log[log["amount"] > 0].sample(300, random_state=4)
    refunds = bought.assign(timestamp=bought["timestamp"] + pd.to_timedelta(rng.integers(1, 11, len(bought)), "D"),
                            amount=-(bought["amount"] * rng.choice([0.5, 1.0], len(bought))).round(2))
    return pd.concat([log, refunds], ignore_index=True).sample(frac=1, random_state=5).reset_index(drop=True)


def test_refunds_by_order_net_on_spark_as_locally(spark, ordered_log):
    """A refund a few days after its order nets into the order's day on Spark too (issue 18)."""
    remote_log = spark.createDataFrame(ordered_log).repartition(3)
    local, local_report = rfm_summary(ordered_log, as_of=AS_OF, freq="D", order_col="order_id", return_report=True)
    remote = spark_api.rfm_summary(remote_log, as_of=AS_OF, freq="D", order_col="order_id")
    assert_frames_equal_exactly(local, _sorted(remote))
    assert local_report.refund_rows_netted_by_order > 200
    unnetted = rfm_summary(ordered_log, as_of=AS_OF, freq="D")
    assert not unnetted["frequency"].equals(local["frequency"])  # (netting changes the summary here)
    local_features = compute_features(ordered_log, as_of=AS_OF, windows_days=(7, 30, 365), order_col="order_id")
    remote_features = _sorted(spark_api.compute_features(remote_log, as_of=AS_OF, windows_days=(7, 30, 365),
                                                         order_col="order_id"))
    assert_frames_equal_exactly(local_features, remote_features)


def test_spark_features_equal_local_features_exactly(data, spark_log):
    """The purchase-history features (windows, gaps, trends, spends) bit for bit: no tolerance."""
    local = compute_features(data[0], as_of=AS_OF, windows_days=(7, 30, 365))
    remote = _sorted(spark_api.compute_features(spark_log, as_of=AS_OF, windows_days=(7, 30, 365)))
    assert_frames_equal_exactly(local, remote)


def test_customer_rows_split_across_partitions_give_one_correct_row(spark, data):
    """Each customer's rows dealt round-robin over 4 partitions still summarise to one row per customer."""
    log = data[0].sort_values(["customer_id", "timestamp"]).reset_index(drop=True)
    dealt = spark.createDataFrame(log.assign(part=np.arange(len(log)) % 4)).repartition(4, "part").drop("part")
    assert dealt.rdd.getNumPartitions() == 4
    remote = _sorted(spark_api.compute_features(dealt, as_of=AS_OF))
    assert remote.index.is_unique
    assert_frames_equal_exactly(compute_features(log, as_of=AS_OF), remote)


def test_spark_summary_without_amounts(spark, data):
    log = data[0][data[0]["amount"] >= 0][["customer_id", "timestamp"]]
    local = rfm_summary(log, as_of=AS_OF, amount_col=None)
    remote = spark_api.rfm_summary(spark.createDataFrame(log), as_of=AS_OF, amount_col=None)
    assert_frames_equal_exactly(local, _sorted(remote))


def test_large_amounts_sum_exactly_as_local(spark):
    """Amounts beyond 2**63 ten-billionths (>= 9.2e8) take the local engine's wide path too."""
    log = pd.DataFrame({"customer_id": [1, 1, 1, 2, 2], "amount": [3.3e9, 0.1, 1.5e12, 0.2, 1e-11],
                        "timestamp": pd.to_datetime(["2025-01-01", "2025-01-01", "2025-01-05", "2025-01-02",
                                                     "2025-01-09"])})
    local = rfm_summary(log, as_of="2025-02-01", include_first_transaction=True)
    assert_frames_equal_exactly(local, _sorted(spark_api.rfm_summary(spark.createDataFrame(log),
                                                                     as_of="2025-02-01",
                                                                     include_first_transaction=True)))
    too_large = log.assign(amount=[1.0, 2e19, 1.0, -1.7976931348623157e308, 1.0])
    with pytest.raises(DataValidationError, match="below 9.2e18") as local_error:
        rfm_summary(too_large, as_of="2025-02-01")
    with pytest.raises(DataValidationError, match="below 9.2e18.*1.79769e[+]308") as spark_error:
        spark_api.rfm_summary(spark.createDataFrame(too_large), as_of="2025-02-01")
    assert local_error.value.column == spark_error.value.column == "amount"


def test_naive_timestamps_are_utc_whatever_the_session_time_zone(spark, data):
    """Parquet's naive timestamps arrive as timestamp_ntz: read as UTC, as the local engine reads them."""
    from pyspark.sql import functions as F

    log = data[0]
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/Los_Angeles")
    try:
        frame = spark.createDataFrame(log.assign(timestamp=log["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")))
        naive = frame.withColumn("timestamp", F.to_timestamp_ntz("timestamp"))
        remote = _sorted(spark_api.rfm_summary(naive, as_of=AS_OF).drop("first_purchase", "last_purchase"))
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)
    local = rfm_summary(log, as_of=AS_OF).drop(columns=["first_purchase", "last_purchase"])
    assert_frames_equal_exactly(local, remote)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_missing_column_and_bad_types_name_the_column(spark):
    frame = spark.createDataFrame(pd.DataFrame({"customer_id": [1], "when": ["2025-01-01"], "amount": [1.0]}))
    with pytest.raises(DataValidationError, match="'timestamp' is missing") as missing:
        spark_api.validate_transactions(frame)
    assert missing.value.column == "timestamp"
    flags = spark.createDataFrame(pd.DataFrame({"customer_id": [True], "timestamp": ["2025-01-01"], "amount": [1.0]}))
    with pytest.raises(DataValidationError, match="customer_id") as typed:
        spark_api.validate_transactions(flags)
    assert typed.value.column == "customer_id"


def test_null_ids_raise_or_are_rejected_and_rows_reconcile(spark):
    rows = pd.DataFrame({"customer_id": [1.0, None, 2.0, 2.5, 3.0],
                         "timestamp": ["2025-01-01", "2025-01-02", "nonsense", "2025-01-03", "2025-01-04"],
                         "amount": ["10", "5", "7", "1", "x"]})
    frame = spark.createDataFrame(rows)
    with pytest.raises(DataValidationError, match="missing .*customer id in column 'customer_id'") as raised:
        spark_api.validate_transactions(frame)
    assert raised.value.column == "customer_id"
    log = spark_api.validate_transactions(frame, on_invalid="reject")
    assert log.report.rejected_by_reason == {"missing_customer_id": 1, "invalid_customer_id": 1,
                                             "unparseable_timestamp": 1, "non_numeric_amount": 1}
    assert log.report.rows_in == log.report.rows_valid + log.report.rows_rejected == 5
    assert log.rejected.count() == 4
    summary, report = spark_api.rfm_summary(log, as_of="2025-01-31", return_report=True)
    assert report.reconciles and report.rows_rejected == 4 and summary.count() == 1


# --------------------------------------------------------------------------------------------------
# Fits and scores
# --------------------------------------------------------------------------------------------------


def test_fits_from_the_compressed_spark_summary_equal_local_fits(data, spark_log):
    """BG/NBD and Gamma-Gamma on the driver from distinct rows + counts = the local fit (summation order only)."""
    summary = rfm_summary(data[0], as_of=AS_OF, freq_multiplier=7)
    remote_summary = spark_api.rfm_summary(spark_log, as_of=AS_OF, freq_multiplier=7)
    compressed = spark_api.compressed_summary(remote_summary)
    assert compressed["count"].sum() == len(summary) and len(compressed) < len(summary)
    local = BetaGeo().fit(summary)
    remote = spark_api.fit_transaction_model(BetaGeo(), summary=remote_summary)
    np.testing.assert_allclose(remote.params_, local.params_, rtol=1e-9)
    assert remote.log_likelihood_ == pytest.approx(local.log_likelihood_, rel=1e-12)
    spend = spark_api.fit_spend_model(GammaGamma(), spark_log, as_of=AS_OF)
    np.testing.assert_allclose(spend.params_, GammaGamma().fit(summary).params_, rtol=1e-9)


def test_spark_scores_equal_local_scores(data, spark_log, scorer):
    """Every customer, every column: numbers to 1e-9, tiers, flags and reasons identical."""
    local = scorer.score(data[0], as_of=AS_OF).set_index("customer_id").sort_index()
    remote = _sorted(spark_api.score(spark_log, scorer, as_of=AS_OF))
    assert_scores_close(local, remote)


def test_spark_scores_with_customer_table_equal_local_scores(data, spark_log, scorer):
    """Attributes, referral counts over the whole table and table customers without purchases."""
    log, customers = data
    late = pd.DataFrame({"customer_id": [10_001, 10_002], "acquisition_channel": ["email", "referral"],
                         "region": ["north", "east"], "signup_date": pd.to_datetime(["2025-02-01", "2025-05-01"]),
                         "referred_by": [None, 3.0]})
    table = pd.concat([customers, late], ignore_index=True)
    local = scorer.score(log, as_of=AS_OF, customers=table).set_index("customer_id").sort_index()
    remote = _sorted(spark_api.score(spark_log, scorer, as_of=AS_OF, customers=table))
    assert 10_001 in remote.index and 10_002 not in remote.index  # signed up after as_of
    assert_scores_close(local, remote)


def test_crmml_score_engine_spark_writes_what_the_local_engine_writes(tmp_path, data, spark, scorer, capsys):
    log, _ = data
    source = tmp_path / "log"
    source.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(log)), 3)):
        log.iloc[rows].to_parquet(source / f"part-{i}.parquet")
    bundle = scorer.save(tmp_path / "bundle")
    common = ["score", "--model", str(bundle), "--transactions", str(source), "--as-of", AS_OF]
    assert main([*common, "--output", str(tmp_path / "local.parquet")]) == 0
    local_out = capsys.readouterr().out
    assert main([*common, "--output", str(tmp_path / "spark.parquet"), "--engine", "spark"]) == 0
    spark_out = capsys.readouterr().out
    local = pd.read_parquet(tmp_path / "local.parquet").set_index("customer_id").sort_index()
    remote = pd.read_parquet(tmp_path / "spark.parquet").set_index("customer_id").sort_index()
    assert_scores_close(local, remote)
    for line in ("rows:", "customers:"):  # the same reconciled counts
        assert [x for x in local_out.splitlines() if x.startswith(line)] == \
            [x for x in spark_out.splitlines() if x.startswith(line)]
    rejected = pd.read_csv(tmp_path / "spark.rejected.csv")
    assert list(rejected.columns) == list(pd.read_csv(tmp_path / "local.rejected.csv").columns)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("spark", ".spark"))) == \
        ["spark.parquet", "spark.rejected.csv"]


def test_crmml_score_engine_spark_bad_input_exits_2_with_one_line(tmp_path, data, spark, scorer, capsys):
    bad = tmp_path / "bad.parquet"
    data[0].rename(columns={"amount": "value"}).to_parquet(bad)
    code = main(["score", "--engine", "spark", "--model", str(scorer.save(tmp_path / "bundle")),
                 "--transactions", str(bad), "--as-of", AS_OF, "--output", str(tmp_path / "out.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'amount'" in err
    assert not (tmp_path / "out.parquet").exists()


def test_import_crmml_works_without_pyspark():
    """``import crmml`` and the CLI never import PySpark; ``crmml.spark`` says how to install it."""
    code = ("import sys; sys.modules['pyspark'] = None\n"
            "import crmml, crmml.cli\n"
            "try:\n    import crmml.spark\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'crmml[spark]'" in out
