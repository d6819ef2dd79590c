"""The README's quick-start runs as written (on the CDNOW sample written as Parquet parts)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from crmml.datasets import load_cdnow_transactions

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    log = load_cdnow_transactions(sample=True)[["customer_id", "timestamp", "amount"]]
    parts = tmp_path / "transactions"
    parts.mkdir()
    for i, chunk in enumerate(np.array_split(np.arange(len(log)), 3)):
        log.iloc[chunk].to_parquet(parts / f"part-{i}.parquet")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block.replace('"2025-12-31"', '"1998-06-30"'), "README.md", "exec"), namespace)
    assert len(namespace["summary"]) == 2357
    assert namespace["value"].notna().all() and (namespace["value"] >= 0).all()
    assert namespace["churn"].between(0, 1).all()
