"""The array-native scoring core against the pre-issue-16 core (tests/legacy_scoring.py, the oracle).

Scores must equal the old core's to 1e-9 relative, with identical text (tier, flags, reasons) and
flags, on CDNOW, on a simulated base with a customer table (channel, region, sign-up date,
referrer, cost to serve), with RFM summaries, table customers who have not bought yet and refunds,
and through the pickled scorer of release 0.1.0. The one intended difference (issue 21: ``at_risk``
is not set for lapsed customers) is applied to the oracle too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from legacy_scoring import legacy_score, legacy_score_features

from crmml.customer_model import ModelConfig
from crmml.data.simulate import simulate_customer_base
from crmml.datasets import load_cdnow_transactions
from crmml.errors import DataValidationError
from crmml.features import compute_features
from crmml.flags import FLAGS
from crmml.scorer import SCORE_COLUMNS, SCORE_NUMBERS, Scorer, ScorerConfig
from crmml.uncertainty import UNCERTAINTY_NUMBERS

FIXTURE = Path(__file__).parent / "fixtures" / "bundle_0_1_0"
FAST = ScorerConfig(
    model=ModelConfig(churn_window_days=90, value_horizon_days=180, churn_learners=("logistic",),
                      value_learners=("poisson_glm",), transaction_model="bg_nbd"),
    baseline_models=("bg_nbd",),
)
AS_OF = pd.Timestamp("2025-06-30")


#: What the old core did not have (issue 20; tests/test_uncertainty.py checks them).
NEW = (*UNCERTAINTY_NUMBERS, "tier_uncertain")


def _without_uncertainty(actual: pd.DataFrame) -> pd.DataFrame:
    """The scores as the old core would give them: no uncertainty columns, no tier_uncertain flag or reason."""
    out = actual.drop(columns=list(NEW))
    out["flags"] = [";".join(f for f in text.split(";") if f != "tier_uncertain") for text in out["flags"]]
    out["reasons"] = ["; ".join(r for r in text.split("; ") if " tier uncertain: " not in r) if text else text
                      for text in out["reasons"]]
    return out


def assert_same_scores(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(actual.columns) == SCORE_COLUMNS
    actual = _without_uncertainty(actual)
    assert list(actual.columns) == list(expected.columns)
    assert actual["customer_id"].tolist() == expected["customer_id"].tolist()
    for name in SCORE_NUMBERS:
        if name in NEW:
            continue
        np.testing.assert_allclose(actual[name].to_numpy(dtype=float), expected[name].to_numpy(dtype=float),
                                   rtol=1e-9, atol=0, err_msg=name)
    for name in (*FLAGS, "tier", "flags", "reasons", "model_version"):
        if name in NEW:
            continue
        assert actual[name].tolist() == expected[name].tolist(), name


@pytest.fixture(scope="module")
def base():
    sim = simulate_customer_base(1500, start="2023-01-01", end="2025-09-30", acquisition_end="2025-06-15", seed=5)
    log = sim.transactions.copy()
    rng = np.random.default_rng(1)
    refunds = log.sample(200, random_state=2).assign(amount=lambda f: -f["amount"] * rng.uniform(0.2, 1.2, len(f)))
    log = pd.concat([log, refunds], ignore_index=True)
    customers = sim.customers[["customer_id", "acquisition_channel", "region", "signup_date", "referred_by"]].copy()
    customers["cost_to_serve"] = np.where(rng.random(len(customers)) < 0.5, 5.0, np.nan)
    new = pd.DataFrame({"customer_id": [10**6, 10**6 + 1, 10**6 + 2],
                        "acquisition_channel": ["email", "never_seen", None], "region": ["north", None, "east"],
                        "signup_date": ["2025-06-01", "2025-06-20", "2025-07-10"],  # the last after as_of
                        "referred_by": [customers["customer_id"].iloc[0], np.nan, np.nan],
                        "cost_to_serve": [1.0, np.nan, 2.0]})
    customers = pd.concat([customers, new], ignore_index=True)
    return log, customers


@pytest.fixture(scope="module")
def scorer(base):
    log, customers = base
    return Scorer(FAST).fit(log, as_of=AS_OF, customers=customers)


def test_the_release_0_1_0_bundle_scores_as_the_old_core():
    scorer = Scorer.load(FIXTURE)
    log = pd.read_csv(FIXTURE / "transactions.csv")
    customers = pd.read_csv(FIXTURE / "customers.csv")
    for as_of in ("2025-06-30", "2025-03-31"):
        assert_same_scores(scorer.score(log, as_of=as_of, customers=customers),
                           legacy_score(scorer, log, as_of=as_of, customers=customers))
    assert_same_scores(scorer.score(log, as_of="2025-06-30"), legacy_score(scorer, log, as_of="2025-06-30"))


def test_simulated_base_with_table_refunds_and_new_customers(scorer, base):
    log, customers = base
    for as_of in (AS_OF, AS_OF + pd.Timedelta(days=45)):
        actual = scorer.score(log, as_of=as_of, customers=customers)
        assert_same_scores(actual, legacy_score(scorer, log, as_of=as_of, customers=customers))
    assert actual["new"].sum() > 0 and actual["lapsed"].sum() > 0 and actual["at_risk"].sum() > 0
    assert (actual["tier"] == "lead").sum() > 0 and actual["reasons"].str.contains("predicted profit").any()
    assert not (actual["at_risk"] & actual["lapsed"]).any()  # issue 21


def test_rfm_summaries_and_the_table_together(scorer, base):
    log, customers = base
    moved = customers["customer_id"].iloc[:40].to_numpy()
    summary_frame = compute_features(log[log["customer_id"].isin(moved)], as_of=AS_OF).reset_index()
    summaries = summary_frame[["customer_id", "frequency", "recency_days", "age_days", "monetary_value"]]
    rest = log[~log["customer_id"].isin(moved)]
    actual = scorer.score(rest, as_of=AS_OF, customers=customers, summaries=summaries)
    assert_same_scores(actual, legacy_score(scorer, rest, as_of=AS_OF, customers=customers, summaries=summaries))
    assert actual["reasons"].str.startswith("scored from an RFM summary").sum() == len(summaries)
    no_table = scorer.score(rest, as_of=AS_OF, summaries=summaries)
    assert_same_scores(no_table, legacy_score(scorer, rest, as_of=AS_OF, summaries=summaries))


def test_a_sub_second_recency_in_a_summary_scores_finite(scorer, base):
    """A fuzzed request (CI, 2026-12-04): recency 2.2e-308 days made the gap ratio overflow. The ratio
    is capped and every score stays finite."""
    summaries = pd.DataFrame({"customer_id": [10**9, 10**9 + 1], "frequency": [1, 3],
                              "recency_days": [2.2250738585072014e-308, 5e-324], "age_days": [4.0, 4.0],
                              "monetary_value": [0.0, 12.5]})
    log = base[0]
    scored = scorer.score(log[log["customer_id"] == log["customer_id"].iloc[0]], as_of=AS_OF, summaries=summaries)
    scored = scored[scored["customer_id"].isin(summaries["customer_id"])]
    numbers = scored[[c for c in SCORE_NUMBERS if c in scored]].to_numpy(dtype=float)
    assert len(scored) == 2 and np.isfinite(numbers[:, ~np.isnan(numbers).all(axis=0)]).all()


def test_score_features_and_missing_attributes(scorer, base):
    log, customers = base
    features = compute_features(log, as_of=AS_OF, customers=customers.drop(columns=["region", "cost_to_serve"]))
    actual = scorer.score_features(features)
    assert actual.attrs["missing_attributes"] == ["region"]
    assert_same_scores(actual, legacy_score_features(scorer, features))


def test_one_customer_alone_is_scored_as_in_the_whole_base(scorer, base):
    log, customers = base
    whole = scorer.score(log, as_of=AS_OF, customers=customers).set_index("customer_id")
    for customer in customers["customer_id"].iloc[[3, 700]]:
        alone = scorer.score(log[log["customer_id"] == customer], as_of=AS_OF,
                             customers=customers[customers["customer_id"] == customer])
        row = whole.loc[customer]
        for name in SCORE_NUMBERS:
            assert alone[name].iloc[0] == pytest.approx(row[name], rel=1e-12, nan_ok=True)
        assert _without_uncertainty(alone)["reasons"].iloc[0] == legacy_score(
            scorer, log[log["customer_id"] == customer], as_of=AS_OF,
            customers=customers[customers["customer_id"] == customer])["reasons"].iloc[0]


def test_cdnow_without_a_table():
    log = load_cdnow_transactions(sample=True)[["customer_id", "timestamp", "amount"]]
    scorer = Scorer(FAST).fit(log, as_of="1997-12-31")
    for as_of in ("1997-12-31", "1998-03-31"):
        assert_same_scores(scorer.score(log, as_of=as_of), legacy_score(scorer, log, as_of=as_of))


def test_every_customer_signed_up_after_as_of_is_named(scorer, base):
    """Issue 21, F5: the error names signup_date and the count, not an empty model summary."""
    log, customers = base
    late = customers.iloc[:3].assign(signup_date="2030-01-01")
    with pytest.raises(DataValidationError, match=r"3 customer\(s\).*'signup_date'") as caught:
        scorer.score(log[log["customer_id"].isin(late["customer_id"])], as_of=AS_OF, customers=late)
    assert caught.value.column == "signup_date"
