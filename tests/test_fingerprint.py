"""The data fingerprint: the same rows give the same hash whatever their order or format."""

from __future__ import annotations

import pandas as pd

from crmml.data import read_transactions
from crmml.data.fingerprint import data_fingerprint
from crmml.datasets import load_cdnow_transactions


def test_fingerprint_depends_on_the_rows_not_their_order_or_format(tmp_path):
    log = load_cdnow_transactions()[["customer_id", "timestamp", "amount"]]
    base = data_fingerprint(read_transactions(log))
    assert base["rows_valid"] == 6919 and base["customers"] == 2357
    assert base["first_timestamp"].startswith("1997-01-01") and base["last_timestamp"].startswith("1998-06-30")
    shuffled = log.sample(frac=1, random_state=3)
    shuffled.to_parquet(tmp_path / "log.parquet")
    shuffled.to_csv(tmp_path / "log.csv", index=False)
    for source in (shuffled, str(tmp_path / "log.parquet"), str(tmp_path / "log.csv")):
        assert data_fingerprint(read_transactions(source))["content_hash"] == base["content_hash"]
    changed = log.copy()
    changed.loc[10, "amount"] += 0.01
    assert data_fingerprint(read_transactions(changed))["content_hash"] != base["content_hash"]
    assert data_fingerprint(read_transactions(log.iloc[1:]))["content_hash"] != base["content_hash"]
    table = pd.DataFrame({"customer_id": [1, 2], "region": ["n", "s"]})
    with_table = data_fingerprint(read_transactions(log), table)
    assert with_table["customer_table_rows"] == 2
    assert with_table["customer_table_hash"] == data_fingerprint(read_transactions(log), table.iloc[::-1])[
        "customer_table_hash"]
