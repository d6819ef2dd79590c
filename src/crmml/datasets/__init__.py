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

import numpy as np
import pandas as pd

__all__ = ["load_cdnow_transactions", "simulated_cdnow_customers"]

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


#: Acquisition channels of the simulated CDNOW customer table and their shares.
SIMULATED_CHANNELS = {"organic_search": 0.40, "email": 0.25, "paid_social": 0.20, "referral": 0.15}
SIMULATED_REGIONS = ("north", "south", "east", "west")


def simulated_cdnow_customers(transactions: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """A **simulated** customer table for CDNOW, which has none: for the demo's channel and referral views.

    CDNOW records who bought what and when, not where customers came from. This table invents that,
    using only what was known when each customer was acquired, so it leaks nothing from later
    purchases into a model's features:

    - ``signup_date``: the customer's first purchase day (CDNOW's cohort was acquired by buying);
    - ``acquisition_channel``: drawn with :data:`SIMULATED_CHANNELS` shares, tilted so that customers
      whose first order was larger than the median came more often by referral and email;
    - ``referred_by``: for ``referral`` customers, a customer who had bought on or before their
      sign-up day, chosen with weight proportional to that customer's first-order amount;
    - ``region``: uniform over :data:`SIMULATED_REGIONS`, no signal.

    Parameters
    ----------
    transactions : pandas.DataFrame
        ``customer_id``, ``timestamp``, ``amount`` (from :func:`load_cdnow_transactions`).
    seed : int
        The same seed gives the same table.

    Returns
    -------
    pandas.DataFrame
        One row per customer: ``customer_id``, ``signup_date``, ``acquisition_channel``,
        ``referred_by`` (nullable Int64), ``region``.
    """
    rng = np.random.default_rng(seed)
    first = transactions.sort_values(["timestamp", "customer_id"]).groupby("customer_id", sort=True).first()
    n = len(first)
    large_first_order = (first["amount"] > first["amount"].median()).to_numpy()
    names = list(SIMULATED_CHANNELS)
    base = np.array([SIMULATED_CHANNELS[c] for c in names])
    tilt = np.array([0.8, 1.2, 0.8, 1.4])  # organic, email, paid social, referral for large first orders
    weights = np.where(large_first_order[:, None], base * tilt, base * (2 - tilt))
    weights /= weights.sum(axis=1, keepdims=True)
    channel = np.array([rng.choice(len(names), p=w) for w in weights])
    signup = first["timestamp"].dt.normalize().to_numpy()
    order = np.argsort(signup, kind="stable")
    ids = first.index.to_numpy()
    referred_by = pd.array([pd.NA] * n, dtype="Int64")
    amounts = first["amount"].to_numpy(dtype=float)
    is_referral = channel == names.index("referral")
    signup_sorted = signup[order]
    cumulative = np.cumsum(np.clip(amounts[order], 0.01, None))
    for i in np.flatnonzero(is_referral):
        eligible = int(np.searchsorted(signup_sorted, signup[i], side="right"))  # bought on or before
        if eligible <= 1:
            continue
        pick = int(np.searchsorted(cumulative[:eligible], rng.uniform(0, cumulative[eligible - 1])))
        referrer = ids[order[min(pick, eligible - 1)]]
        if referrer != ids[i]:
            referred_by[i] = referrer
    return pd.DataFrame({
        "customer_id": ids,
        "signup_date": signup,
        "acquisition_channel": np.array(names, dtype=object)[channel],
        "referred_by": referred_by,
        "region": rng.choice(np.array(SIMULATED_REGIONS, dtype=object), size=n),
    })
