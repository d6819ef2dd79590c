"""A fingerprint of the data a model was trained on: counts, date range and a content hash.

The content hash is the sum, modulo 2**64, of DuckDB's hash of every valid canonical row
(``customer_id``, ``timestamp``, ``amount``): it does not depend on row order, file layout or
format (the same rows as CSV or Parquet, in one file or many, give the same hash), and any changed,
added or removed row changes it. The customer table's hash is the same construction over its rows.
"""

from __future__ import annotations

import pandas as pd

from crmml.data.transactions import Transactions, duckdb_session

__all__ = ["data_fingerprint"]

_MASK = (1 << 64) - 1


def data_fingerprint(log: Transactions, customers: pd.DataFrame | None = None) -> dict:
    """Counts, date range and content hashes of a validated log (and a customer table).

    Returns
    -------
    dict
        ``rows_in``, ``rows_valid``, ``rows_rejected``, ``customers``, ``first_timestamp``,
        ``last_timestamp``, ``content_hash`` (16 hex digits), ``source``; with a table,
        ``customer_table_rows`` and ``customer_table_hash``. JSON-ready.
    """
    columns = "customer_id, timestamp, amount" if log.has_amount else "customer_id, timestamp"
    with duckdb_session() as con:
        log.create_views(con)
        [(n_customers, total)] = con.sql(
            f"SELECT count(DISTINCT customer_id), sum(hash({columns})::HUGEINT) FROM crmml_transactions"
        ).fetchall()
    record = {
        "source": log.source_description,
        "rows_in": log.report.rows_in,
        "rows_valid": log.report.rows_valid,
        "rows_rejected": log.report.rows_rejected,
        "customers": int(n_customers),
        "first_timestamp": str(log.first_timestamp),
        "last_timestamp": str(log.last_timestamp),
        "content_hash": f"{int(total or 0) & _MASK:016x}",
    }
    if customers is not None:
        hashes = pd.util.hash_pandas_object(customers.reset_index(drop=True), index=False)
        record["customer_table_rows"] = len(customers)
        record["customer_table_hash"] = f"{int(hashes.astype('uint64').sum()) & _MASK:016x}"
    return record
