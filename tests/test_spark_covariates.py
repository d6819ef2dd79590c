"""Covariate BTYD fits on Spark: distinct (frequency, recency, T, attributes) rows with counts, fitted on
the driver, equal the local fit on the summary joined with the customer table."""

from __future__ import annotations

import numpy as np
import pytest
from spark_support import AS_OF, TEST_CONF, assert_scores_close, simulated_log

from crmml.data import rfm_summary
from crmml.errors import DataValidationError
from crmml.models.pareto_nbd_covariates import ParetoNBDCovariates

pytestmark = [
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
    pytest.mark.filterwarnings("ignore:Series.values returning an ndarray"),
]

spark_api = pytest.importorskip("crmml.spark", reason="CI installs crmml[spark]; locally: pip install -e '.[spark]'")


@pytest.fixture(scope="module")
def spark():
    session = spark_api.spark_session("local[2]", conf=TEST_CONF)
    yield session
    session.stop()


def test_covariate_fit_from_spark_equals_the_local_fit(spark):
    log, customers = simulated_log()
    attributes = customers[["customer_id", "acquisition_channel", "region"]]
    summary = rfm_summary(log, as_of=AS_OF, freq_multiplier=7)
    local_frame = summary.join(attributes.set_index("customer_id"), how="left")
    local = ParetoNBDCovariates(["acquisition_channel", "region"], ["acquisition_channel"]).fit(local_frame)

    remote_log = spark.createDataFrame(log).repartition(3)
    remote_customers = spark.createDataFrame(attributes)
    remote = spark_api.fit_transaction_model(
        ParetoNBDCovariates(["acquisition_channel", "region"], ["acquisition_channel"]), remote_log, as_of=AS_OF,
        customers=remote_customers)
    assert list(remote.params_.index) == list(local.params_.index)
    np.testing.assert_allclose(remote.params_, local.params_, rtol=1e-8, atol=1e-10)
    assert remote.log_likelihood_ == pytest.approx(local.log_likelihood_, rel=1e-12)
    assert remote.n_customers_ == len(summary) and remote.n_unique_rows_ == local.n_unique_rows_

    with pytest.raises(DataValidationError, match="'region'"):
        spark_api.fit_transaction_model(ParetoNBDCovariates(["region"]), remote_log, as_of=AS_OF,
                                        customers=remote_customers.drop("region"))


@pytest.mark.slow
def test_a_scorer_that_ships_the_covariate_model_scores_on_spark_as_locally(spark):
    """Issue 17, item 3 on the fourth engine: every column of a scorer whose transaction model is the
    covariate one (its customers' channels from the table; an unseen and a missing channel at the
    reference level with a reason) equals the local scores."""
    from test_transaction_covariates import AS_OF as COVARIATE_AS_OF
    from test_transaction_covariates import EFFECTS, FAST, channel_data

    from crmml.customer_model import ModelConfig
    from crmml.scorer import Scorer, ScorerConfig

    log, customers = channel_data(EFFECTS, seed=1)
    scorer = Scorer(ScorerConfig(model=ModelConfig(**FAST), baseline_models=("pareto_nbd",)))
    scorer.fit(log, as_of=COVARIATE_AS_OF, customers=customers)
    assert isinstance(scorer.model_.btyd_.transaction_model, ParetoNBDCovariates)
    ids = customers["customer_id"].iloc[:400]
    rows = log[log["customer_id"].isin(ids)]
    table = customers[customers["customer_id"].isin(ids)].astype({"acquisition_channel": object})
    table.loc[table.index[:2], "acquisition_channel"] = ["tiktok", None]
    local = scorer.score(rows, as_of=COVARIATE_AS_OF, customers=table).set_index("customer_id").sort_index()
    remote = spark_api.score(spark.createDataFrame(rows).repartition(3), scorer, as_of=COVARIATE_AS_OF,
                             customers=table).toPandas().set_index("customer_id").sort_index()
    assert local["reasons"].str.contains("reference level").sum() >= 2
    assert_scores_close(local, remote)
