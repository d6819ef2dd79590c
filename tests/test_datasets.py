"""Tests for the bundled CDNOW loaders, checked against the copies distributed with lifetimes."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest

from crmml.datasets import load_cdnow_transactions


def _lifetimes_copy(name: str) -> str:
    return str(resources.files("lifetimes").joinpath("datasets", name))


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return load_cdnow_transactions(sample=True)


@pytest.fixture(scope="module")
def master() -> pd.DataFrame:
    return load_cdnow_transactions(sample=False)


def test_sample_has_the_published_size_and_schema(sample):
    assert list(sample.columns) == ["customer_id", "timestamp", "amount", "n_cds"]
    assert len(sample) == 6919
    assert sample["customer_id"].nunique() == 2357
    assert sample["customer_id"].min() == 1 and sample["customer_id"].max() == 2357
    assert sample["customer_id"].dtype == np.int64
    assert sample["n_cds"].dtype == np.int64
    assert sample["amount"].dtype == np.float64
    assert pd.api.types.is_datetime64_dtype(sample["timestamp"])


def test_master_has_the_published_size_and_period(master):
    """Fader & Hardie's CDNOW cohort: 23,570 customers, 69,659 purchases, Jan 1997 to Jun 1998."""
    assert len(master) == 69659
    assert master["customer_id"].nunique() == 23570
    assert master["timestamp"].min() == pd.Timestamp("1997-01-01")
    assert master["timestamp"].max() == pd.Timestamp("1998-06-30")


def test_sample_first_rows_match_the_raw_file(sample):
    """The first lines of CDNOW_sample.txt: sample id 1 bought on 1997-01-01 and 1997-01-18."""
    first = sample.iloc[:2]
    assert first["customer_id"].tolist() == [1, 1]
    assert first["timestamp"].tolist() == [pd.Timestamp("1997-01-01"), pd.Timestamp("1997-01-18")]
    assert first["amount"].tolist() == [29.33, 29.73]
    assert first["n_cds"].tolist() == [2, 2]


def test_sample_equals_the_lifetimes_copy(sample):
    """Same rows as lifetimes' CDNOW_sample.txt (sample id, date, CDs, dollars)."""
    expected = pd.read_csv(
        _lifetimes_copy("CDNOW_sample.txt"),
        sep=r"\s+",
        header=None,
        names=["master_id", "customer_id", "date", "n_cds", "amount"],
    )
    assert sample["customer_id"].tolist() == expected["customer_id"].tolist()
    assert sample["timestamp"].dt.strftime("%Y%m%d").astype(int).tolist() == expected["date"].tolist()
    np.testing.assert_array_equal(sample["amount"], expected["amount"])
    np.testing.assert_array_equal(sample["n_cds"], expected["n_cds"])


def test_master_equals_the_lifetimes_copy(master):
    """Same rows as lifetimes' CDNOW_master.txt (header line, master ids)."""
    expected = pd.read_csv(_lifetimes_copy("CDNOW_master.txt"), sep=r"\s+")
    assert master["customer_id"].tolist() == expected["customer_id"].tolist()
    assert master["timestamp"].dt.strftime("%Y%m%d").astype(int).tolist() == expected["date"].tolist()
    np.testing.assert_array_equal(master["amount"], expected["dollar_value"])
    np.testing.assert_array_equal(master["n_cds"], expected["number_of_cds"])


def test_simulated_cdnow_customer_table_uses_only_what_was_known_at_acquisition():
    from crmml.datasets import SIMULATED_CHANNELS, simulated_cdnow_customers

    log = load_cdnow_transactions(sample=True)
    table = simulated_cdnow_customers(log, seed=1)
    assert len(table) == 2357 and table["customer_id"].is_unique
    pd.testing.assert_frame_equal(table, simulated_cdnow_customers(log, seed=1))
    first = log.groupby("customer_id")["timestamp"].min()
    assert (table.set_index("customer_id")["signup_date"] == first).all()
    assert set(table["acquisition_channel"]) == set(SIMULATED_CHANNELS)
    referred = table.dropna(subset=["referred_by"])
    assert (table.loc[table["referred_by"].notna(), "acquisition_channel"] == "referral").all()
    signup = table.set_index("customer_id")["signup_date"]
    referrer_signup = signup.reindex(referred["referred_by"].astype("int64")).to_numpy()
    assert (referrer_signup <= referred["signup_date"].to_numpy()).all()
    assert (referred["referred_by"] != referred["customer_id"]).all()
