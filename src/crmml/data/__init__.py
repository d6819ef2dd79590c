"""Read, validate and summarise transaction logs.

:func:`read_transactions` turns a DataFrame or CSV/Parquet files into a validated
:class:`Transactions`; :func:`rfm_summary` and :func:`calibration_holdout` turn a log into one row
per customer.
"""

from crmml.data.simulate import DEFAULT_CUSTOMER_SEGMENTS, simulate_customer_base
from crmml.data.summary import OccasionBatch, SummaryReport, calibration_holdout, purchase_occasions, rfm_summary
from crmml.data.transactions import TransactionReport, Transactions, as_transactions, read_transactions

__all__ = [
    "DEFAULT_CUSTOMER_SEGMENTS",
    "OccasionBatch",
    "SummaryReport",
    "TransactionReport",
    "Transactions",
    "as_transactions",
    "calibration_holdout",
    "purchase_occasions",
    "read_transactions",
    "rfm_summary",
    "simulate_customer_base",
]
