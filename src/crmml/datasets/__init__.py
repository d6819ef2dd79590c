"""Bundled example data: the CDNOW transaction logs.

The CDNOW data set is the purchase history of the cohort of 23,570 customers who first bought at
the online music retailer CDNOW in the first quarter of 1997, followed to the end of June 1998. It
was prepared and published by Peter S. Fader and Bruce G. S. Hardie (used in Fader, Hardie & Lee,
"'Counting Your Customers' the Easy Way: An Alternative to the Pareto/NBD Model", Marketing
Science 24(2), 2005, and distributed from brucehardie.com). The copies bundled here are those
distributed with the ``lifetimes`` Python package (``CDNOW_master.txt`` and ``CDNOW_sample.txt``),
gzip-compressed.
"""

from __future__ import annotations

import gzip
from importlib import resources

import pandas as pd

__all__ = ["load_cdnow_transactions"]

_MASTER_FILE = "CDNOW_master.txt.gz"
_SAMPLE_FILE = "CDNOW_sample.txt.gz"
_MASTER_COLUMNS = ["customer_id", "date", "n_cds", "amount"]
_SAMPLE_COLUMNS = ["master_customer_id", "customer_id", "date", "n_cds", "amount"]
_OUTPUT_COLUMNS = ["customer_id", "timestamp", "amount", "n_cds"]


def load_cdnow_transactions(sample: bool = True) -> pd.DataFrame:
    """Load the CDNOW transaction log of Fader & Hardie (the copy distributed with lifetimes).

    Parameters
    ----------
    sample : bool
        True (default) for the 1/10th sample: 6,919 purchases by 2,357 customers, with the sample's
        own customer ids 1..2357. False for the master file: 69,659 purchases by 23,570 customers,
        with the master customer ids.

    Returns
    -------
    pandas.DataFrame
        One row per purchase, in file order: ``customer_id`` (int64), ``timestamp``
        (datetime64, the purchase day), ``amount`` (float64, dollars) and ``n_cds`` (int64, CDs
        bought).

    Notes
    -----
    Source: the CDNOW data set prepared by Peter S. Fader and Bruce G. S. Hardie
    (brucehardie.com), as distributed with the lifetimes package (Cam Davidson-Pilon), version
    0.11.3.
    """
    file_name, names, header = (
        (_SAMPLE_FILE, _SAMPLE_COLUMNS, None) if sample else (_MASTER_FILE, _MASTER_COLUMNS, 0)
    )
    raw = _read_whitespace_table(file_name, names, header)
    return pd.DataFrame(
        {
            "customer_id": raw["customer_id"].astype("int64"),
            "timestamp": pd.to_datetime(raw["date"].astype(str), format="%Y%m%d"),
            "amount": raw["amount"].astype("float64"),
            "n_cds": raw["n_cds"].astype("int64"),
        },
        columns=_OUTPUT_COLUMNS,
    )


def _read_whitespace_table(file_name: str, names: list[str], header: int | None) -> pd.DataFrame:
    """Read one bundled gzip file of whitespace-separated columns."""
    with resources.files(__name__).joinpath(file_name).open("rb") as compressed:
        with gzip.open(compressed, "rt", newline="") as text:
            return pd.read_csv(text, sep=r"\s+", header=header, names=names)
