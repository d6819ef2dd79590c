"""One set of customer-table rules, run against every engine that scores with a table.

:mod:`crmml.customer_table` is the spec. The engines: the in-memory scorer (:meth:`Scorer.score`),
the DuckDB batch engine (:func:`crmml.batch.score_in_partitions`, small partitions) and the
service's scoring function (:func:`crmml.service.scoring.score_requests`). Each scores the same log
and table with the release-0.1.0 bundle (trained with channel, region, sign-up date, referrer and
cost to serve) and must give the in-memory scorer's numbers, tiers, flags and reasons. The table
exercises every rule: customers who have not bought, a sign-up date unknown (kept, tenure unknown,
not counted as a referral), referrals (counted over the table), costs to serve known and unknown,
a channel and a region the learners never saw, and a purchaser without a table row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmml.errors import DataValidationError
from crmml.scorer import SCORE_NUMBERS, Scorer

FIXTURE = Path(__file__).parent / "fixtures" / "bundle_0_1_0"
AS_OF = "2025-06-30"


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer.load(FIXTURE)


@pytest.fixture(scope="module")
def data():
    log = pd.read_csv(FIXTURE / "transactions.csv", parse_dates=["timestamp"])
    log = log[log["timestamp"] < "2025-07-01"]
    ids = log["customer_id"].drop_duplicates().to_numpy()[:60]
    log = log[log["customer_id"].isin(ids)].reset_index(drop=True)
    table = pd.read_csv(FIXTURE / "customers.csv")
    table = table[table["customer_id"].isin(ids[:-3])].reset_index(drop=True)  # 3 purchasers without a row
    table.loc[0, "signup_date"] = np.nan  # unknown: kept, and its referrals do not count
    table.loc[1, "acquisition_channel"] = "carrier_pigeon"  # never seen by the learners
    table.loc[2, "region"] = "atlantis"
    table.loc[3:10, "referred_by"] = table.loc[12, "customer_id"]  # 8 referrals of one customer
    table.loc[4, "referred_by"] = table.loc[0, "customer_id"]
    table.loc[5:9, "cost_to_serve"] = np.nan
    new = pd.DataFrame({"customer_id": [9001, 9002], "acquisition_channel": ["email", "referral"],
                        "region": ["north", "south"], "signup_date": ["2025-06-01", "2025-06-29"],
                        "referred_by": [table.loc[12, "customer_id"], np.nan], "cost_to_serve": [2.0, np.nan]})
    return log, pd.concat([table, new], ignore_index=True)


def in_memory(scorer, log, table, tmp_path):
    return scorer.score(log, as_of=AS_OF, customers=table)


def duckdb_batch(scorer, log, table, tmp_path):
    from crmml.batch import score_in_partitions

    log.to_csv(tmp_path / "log.csv", index=False)
    table.to_csv(tmp_path / "customers.csv", index=False)
    score_in_partitions(tmp_path / "log.csv", as_of=AS_OF, output=tmp_path / "scores.parquet",
                        customers=tmp_path / "customers.csv", customers_per_partition=15,
                        score_partition=lambda part, rows: scorer.score(part, as_of=AS_OF, customers=rows))
    return pd.read_parquet(tmp_path / "scores.parquet")


def service(scorer, log, table, tmp_path):
    from crmml.service.schemas import ScoreRequest
    from crmml.service.scoring import score_requests
    from crmml.service.settings import ServiceSettings

    ids = sorted(set(log["customer_id"]) | set(table["customer_id"]))
    rows = table.set_index("customer_id")
    customers = []
    for customer in ids:
        mine = log[log["customer_id"] == customer]
        attributes = {}
        if customer in rows.index:
            attributes = {k: (None if pd.isna(v) else (int(v) if k == "referred_by" else v))
                          for k, v in rows.loc[customer].items()}
        customers.append({"customer_id": int(customer), "attributes": attributes, "transactions": [
            {"timestamp": t.isoformat(), "amount": a} for t, a in zip(mine["timestamp"], mine["amount"], strict=True)]})
    request = ScoreRequest.model_validate({"as_of": AS_OF, "customers": customers})
    settings = ServiceSettings(model_uri=str(FIXTURE), max_customers_per_request=1000)
    (result,) = score_requests(scorer, [request], settings)
    if isinstance(result, Exception):
        raise result
    frame = pd.DataFrame(result["customers"])
    frame["flags"] = frame["flags"].map(";".join)
    frame["reasons"] = frame["reasons"].map("; ".join)
    return frame


ENGINES = {"in_memory": in_memory, "duckdb_batch": duckdb_batch, "service": service}


@pytest.mark.parametrize("engine", list(ENGINES))
def test_every_engine_applies_the_same_table_rules(engine, scorer, data, tmp_path):
    log, table = data
    expected = in_memory(scorer, log, table, tmp_path).sort_values("customer_id").reset_index(drop=True)
    actual = ENGINES[engine](scorer, log, table, tmp_path).sort_values("customer_id").reset_index(drop=True)
    assert actual["customer_id"].astype(np.int64).tolist() == expected["customer_id"].tolist()
    for name in SCORE_NUMBERS:
        np.testing.assert_allclose(actual[name].to_numpy(dtype=float), expected[name].to_numpy(dtype=float),
                                   rtol=1e-9, atol=1e-12, err_msg=f"{engine}: {name}")
    for name in ("tier", "at_risk", "high_value_at_risk", "lapsed", "new", "flags", "reasons"):
        assert actual[name].tolist() == expected[name].tolist(), f"{engine}: {name}"
    assert expected["new"].sum() >= 2 and (expected["predicted_profit"].isna().sum() > 0)


@pytest.mark.parametrize("engine", ["in_memory", "duckdb_batch"])
def test_customers_who_signed_up_after_as_of_are_left_out(engine, scorer, data, tmp_path):
    log, table = data
    late = table.assign(signup_date=np.where(table.index < 5, "2025-08-01", table["signup_date"]))
    scores = ENGINES[engine](scorer, log, late, tmp_path)
    assert not set(late["customer_id"].iloc[:5]) & set(scores["customer_id"].astype(np.int64))
    assert len(scores) == len(set(log["customer_id"]) | set(table["customer_id"])) - 5


def test_the_service_rejects_a_sign_up_after_as_of_naming_the_field(scorer, data, tmp_path):
    from crmml.service.scoring import InputError

    log, table = data
    late = table.assign(signup_date=np.where(table.index == 2, "2025-08-01", table["signup_date"]))
    with pytest.raises(InputError, match="signup_date") as caught:
        service(scorer, log, late, tmp_path)
    assert caught.value.loc[-1] == "signup_date"


@pytest.mark.parametrize("engine", ["in_memory", "duckdb_batch"])
def test_repeated_ids_and_negative_costs_are_errors_naming_the_column(engine, scorer, data, tmp_path):
    log, table = data
    repeated = pd.concat([table, table.iloc[[3]]], ignore_index=True)
    with pytest.raises(DataValidationError, match="one row per customer") as caught:
        ENGINES[engine](scorer, log, repeated, tmp_path)
    assert caught.value.column == "customer_id"
    with pytest.raises(DataValidationError, match="cost_to_serve") as caught:
        ENGINES[engine](scorer, log, table.assign(cost_to_serve=-1.0), tmp_path)
    assert caught.value.column == "cost_to_serve"
