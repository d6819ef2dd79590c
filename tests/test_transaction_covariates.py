"""Issue 17, item 3: the covariate BTYD model as a candidate transaction model of the scorer.

On simulated logs where the acquisition channel multiplies the purchase rate and the dropout rate
(:func:`crmml.data.simulate_covariates.simulate_channel_log`, known factors), training with
``transaction_covariates=("acquisition_channel",)`` ships the covariate model, by the out-of-time rule
of :mod:`crmml.transaction_choice`, and says why; without channel effects the plain model ships. The
scores of the covariate model are the same from :meth:`Scorer.score`, the batch engine and the
service; a missing or unseen channel is scored at the reference level with a reason.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crmml.customer_model import CustomerModel, ModelConfig
from crmml.data.simulate_covariates import simulate_channel_log
from crmml.errors import DataValidationError
from crmml.features import compute_features, model_columns
from crmml.models import ParetoNBD, ParetoNBDCovariates
from crmml.models.purchase_distribution import purchase_pmf, supported
from crmml.scorer import SCORE_NUMBERS, Scorer, ScorerConfig

AS_OF = pd.Timestamp("2024-01-01") + pd.Timedelta(weeks=104) - pd.Timedelta(days=1)
#: Strong channel effects (share, purchase-rate factor, dropout factor), web the reference: clear on
#: 4,000 customers over one 90-day window.
EFFECTS = {"web": (0.5, 1.0, 1.0), "referral": (0.3, 2.5, 0.3), "paid": (0.2, 0.5, 3.0)}
NO_EFFECTS = {name: (share, 1.0, 1.0) for name, (share, _, _) in EFFECTS.items()}
COVARIATES = ("acquisition_channel",)
FAST = dict(churn_window_days=90, value_horizon_days=180, churn_learners=("logistic",), value_learners=(),
            transaction_covariates=COVARIATES)


def channel_data(channels, seed: int, n: int = 4000):
    """A 104-week log of ``n`` customers acquired over 85 weeks, and their customer table."""
    sim = simulate_channel_log(n, model="pareto_nbd", channels=channels, acquisition=85.0, seed=seed)
    customers = sim.customers[["customer_id", "channel"]].rename(columns={"channel": "acquisition_channel"})
    return sim.transactions, customers


@pytest.fixture(scope="module")
def trained():
    log, customers = channel_data(EFFECTS, seed=1)
    scorer = Scorer(ScorerConfig(model=ModelConfig(**FAST), baseline_models=("pareto_nbd",)))
    return scorer.fit(log, as_of=AS_OF, customers=customers), log, customers


def test_the_covariate_model_ships_on_a_log_with_channel_effects_and_says_why(trained):
    scorer, _, _ = trained
    model = scorer.model_
    assert isinstance(model.btyd_.transaction_model, ParetoNBDCovariates)
    choice = model.transaction_choice_
    assert choice.shipped and choice.cutoff == str((AS_OF - pd.Timedelta(days=90)).date())
    cleared = [m for m in choice.z if choice.difference[m] > 2 * choice.standard_error[m]]
    assert cleared and all(z > -2 for z in choice.z.values())
    record = json.loads(json.dumps(scorer.summary()))["models"]["transaction_model"]
    assert record["covariates"]["shipped"] is True
    assert record["covariates"]["reason"].startswith("covariate model (acquisition_channel) ships")
    assert record["covariates"]["fitted"] == {"names": ["acquisition_channel"], "n_missing": 0}
    assert "purchase:acquisition_channel=referral" in record["params"]
    # The fitted rate ratios point the way the simulation does (referral buys more and leaves less).
    params = model.btyd_.transaction_model.params_
    assert params["purchase:acquisition_channel=referral"] > 0 > params["dropout:acquisition_channel=referral"]


def test_without_channel_effects_the_plain_model_ships():
    log, customers = channel_data(NO_EFFECTS, seed=1)
    model = CustomerModel(ModelConfig(**{**FAST, "churn_learners": ()})).fit(log, as_of=AS_OF, customers=customers)
    choice = model.transaction_choice_
    assert not choice.shipped and choice.reason.startswith("plain model ships")
    assert type(model.btyd_.transaction_model) is ParetoNBD
    assert model.summary()["transaction_model"]["covariates"]["shipped"] is False


def test_the_choice_uses_the_covariate_model_everywhere_the_btyd_columns_come_from(trained):
    scorer, log, customers = trained
    features = compute_features(log, as_of=AS_OF, customers=customers)
    direct = model_columns(features, scorer.model_.btyd_.transaction_model, horizons_days=[90])[90]
    predicted = scorer.model_.predict_features(features)
    np.testing.assert_allclose(predicted["btyd_churn_probability"], direct["btyd_p_no_purchase"], rtol=1e-12)
    # Two customers with the same history and different channels get different predictions.
    plain = model_columns(features, ParetoNBD().fit(features.assign(recency=features["recency_days"] / 7,
                                                                      T=features["age_days"] / 7)),
                          horizons_days=[90])[90]
    assert not np.allclose(direct["btyd_p_no_purchase"], plain["btyd_p_no_purchase"])


def test_an_unknown_or_missing_channel_is_scored_at_the_reference_level_with_a_reason(trained):
    scorer, log, customers = trained
    ids = customers["customer_id"].iloc[:3].tolist()
    rows = log[log["customer_id"].isin(ids)]
    table = customers[customers["customer_id"].isin(ids)].astype({"acquisition_channel": object})
    reference = scorer.model_.btyd_.transaction_model.design_.attributes_[0].reference
    as_web = scorer.score(rows, customers=table.assign(acquisition_channel=reference))
    odd = scorer.score(rows, customers=table.assign(acquisition_channel=["tiktok", None, reference]))
    for name in ("expected_purchases", "p_alive"):  # the BTYD numbers (the churn learner reads the channel too)
        np.testing.assert_allclose(odd[name], as_web[name], rtol=1e-12)
    reasons = odd["reasons"].tolist()
    assert f"acquisition_channel 'tiktok' not seen in training: scored with the purchase and dropout rates of " \
           f"the reference level '{reference}'" in reasons[0]
    assert f"acquisition_channel missing: scored with the purchase and dropout rates of the reference level " \
           f"'{reference}'" in reasons[1]
    assert "acquisition_channel" not in reasons[2]
    # Without the customer table every customer is missing the channel, and told so.
    assert scorer.score(rows)["reasons"].str.contains("acquisition_channel missing").all()


def test_batch_and_service_scores_equal_scorer_score(trained, tmp_path):
    from fastapi.testclient import TestClient

    from crmml.batch import score_in_partitions
    from crmml.jobs import ScorePartition
    from crmml.service import create_app
    from crmml.service.settings import ServiceSettings

    scorer, log, customers = trained
    ids = customers["customer_id"].iloc[:240].tolist()
    rows = log[log["customer_id"].isin(ids) & (log["timestamp"] < AS_OF + pd.Timedelta(days=1))]
    table = customers[customers["customer_id"].isin(ids)].astype({"acquisition_channel": object})
    table.loc[table.index[:2], "acquisition_channel"] = ["tiktok", None]
    expected = scorer.score(rows, customers=table).set_index("customer_id").loc[ids]

    table.to_parquet(tmp_path / "customers.parquet", index=False)
    report = score_in_partitions(rows, as_of=AS_OF, score_partition=ScorePartition(scorer, AS_OF),
                                 output=tmp_path / "scores.parquet", customers=str(tmp_path / "customers.parquet"),
                                 customers_per_partition=80)
    assert report.partitions > 1
    batch = pd.read_parquet(tmp_path / "scores.parquet").set_index("customer_id").loc[ids]

    bundle = scorer.save(tmp_path / "bundle")
    request = [{"customer_id": int(i), "attributes": {"acquisition_channel": channel},
                "transactions": [{"timestamp": t.isoformat(), "amount": float(a)}
                                 for t, a in zip(rows.loc[rows["customer_id"] == i, "timestamp"],
                                                 rows.loc[rows["customer_id"] == i, "amount"], strict=True)]}
               for i, channel in zip(table["customer_id"], table["acquisition_channel"], strict=True)]
    with TestClient(create_app(ServiceSettings(model_uri=str(bundle)))) as client:
        response = client.post("/v1/score", json={"as_of": str(AS_OF.date()), "customers": request})
    assert response.status_code == 200, response.text
    body = response.json()["customers"]
    served = pd.DataFrame(body).set_index("customer_id").loc[ids]
    for name in SCORE_NUMBERS:
        np.testing.assert_allclose(batch[name].to_numpy(float), expected[name].to_numpy(float), rtol=1e-12,
                                   err_msg=name)
        np.testing.assert_allclose(served[name].to_numpy(float), expected[name].to_numpy(float), rtol=1e-12,
                                   err_msg=name)
    assert batch["reasons"].tolist() == expected["reasons"].tolist()
    assert served["reasons"].map("; ".join).tolist() == expected["reasons"].tolist()
    assert body[0]["unknown_categories"] == {"acquisition_channel": "tiktok"}
    assert body[1]["unknown_categories"] == {}  # missing is not unknown; its reason says so


def test_config_validation_names_the_covariate():
    with pytest.raises(ValueError, match="transaction_covariates must be a list"):
        ModelConfig(transaction_covariates="acquisition_channel")
    with pytest.raises(ValueError, match="names a column twice"):
        ModelConfig(transaction_covariates=("acquisition_channel", "acquisition_channel"))
    with pytest.raises(ValueError, match="must name customer-table attributes"):
        ModelConfig(transaction_covariates=("btyd_p_alive",))
    assert ScorerConfig.from_dict({"model": {"transaction_covariates": ["acquisition_channel"]}}).model \
        .transaction_covariates == COVARIATES
    log, customers = channel_data(EFFECTS, seed=2, n=300)
    config = ModelConfig(**{**FAST, "transaction_covariates": ("loyalty_tier",)})
    with pytest.raises(DataValidationError, match="'loyalty_tier'.*attributes found: \\['acquisition_channel'\\]"):
        CustomerModel(config).fit(log, as_of=AS_OF, customers=customers)
    with pytest.raises(DataValidationError, match="no customer table"):
        CustomerModel(config).fit(log, as_of=AS_OF)


def test_purchase_distributions_refuse_the_covariate_model_by_name(trained):
    scorer, _, _ = trained
    model = scorer.model_.btyd_.transaction_model
    assert not supported(model)
    summary = pd.DataFrame({"frequency": [1.0], "recency": [3.0], "T": [10.0], "acquisition_channel": ["web"]})
    with pytest.raises(TypeError, match="ParetoNBDCovariates \\(a covariate model"):
        purchase_pmf(model, summary, 4.0)
