"""The command line's column options: which column of the transaction log and of the customer table
is what (:class:`crmml.data.transactions.LogColumns`, :class:`crmml.customer_columns.CustomerColumns`).

Each data command takes the log's options; those that read a customer table also take the table's.
A command merges the options given over a base mapping (a config's section, or the model's training
mapping) and prints the result with ``describe()``; :func:`printing_table_warnings` prints what a
command's training said about the customer table's columns.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from crmml.errors import CustomerTableWarning

__all__ = ["add_log_column_arguments", "add_table_column_arguments", "log_column_flags", "log_columns",
           "printing_table_warnings", "table_column_flags", "table_columns"]

#: The customer-table options and the role (a CustomerColumns field) each one maps.
_TABLE_OPTIONS = {"table_customer_col": "customer", "signup_col": "signup_date", "channel_col": "acquisition_channel",
                  "referrer_col": "referred_by", "region_col": "region", "cost_col": "cost_to_serve"}


def add_log_column_arguments(parser: argparse.ArgumentParser, fallback: str | None = None) -> None:
    """The transaction log's column names and time zone (crmml.data.transactions.LogColumns)."""
    before = f"{fallback}, else " if fallback else ""
    group = parser.add_argument_group(
        "transaction log columns", f"which column is what (default: {before}customer_id, timestamp, amount, UTC)")
    group.add_argument("--customer-col", default=None, help="customer id column")
    group.add_argument("--time-col", default=None, help="timestamp column")
    group.add_argument("--amount-col", default=None, help="amount column ('' for a log without amounts)")
    group.add_argument("--order-col", default=None,
                       help="order id column: a refund is netted against its order (default: none)")
    group.add_argument("--timezone", default=None,
                       help="IANA time zone whose calendar defines purchase days and --as-of, e.g. Europe/Berlin "
                            "(default UTC); timestamps with an offset are converted to it")


def add_table_column_arguments(parser: argparse.ArgumentParser, fallback: str | None = None) -> None:
    """The customer table's column names (crmml.customer_columns.CustomerColumns); with --customers."""
    before = f"{fallback}, else " if fallback else ""
    group = parser.add_argument_group(
        "customer table columns", f"which column of --customers is what (default: {before}the names in brackets); "
        "the mapped columns are read under those names")
    group.add_argument("--table-customer-col", default=None, help="customer id column [customer_id]")
    group.add_argument("--signup-col", default=None, help="sign-up date column, becomes tenure_days [signup_date]")
    group.add_argument("--channel-col", default=None, help="acquisition channel column [acquisition_channel]")
    group.add_argument("--referrer-col", default=None,
                       help="referrer's customer id column, becomes has_referrer and n_referrals [referred_by]")
    group.add_argument("--region-col", default=None, help="region column [region]")
    group.add_argument("--cost-col", default=None, help="cost to serve column, used by the tiers [cost_to_serve]")


def log_column_flags(args: argparse.Namespace) -> dict:
    """The log's column options given on the command line (None where not given)."""
    return {"customer": args.customer_col, "time": args.time_col, "amount": args.amount_col,
            "order": args.order_col, "timezone": args.timezone}


def log_columns(args: argparse.Namespace, base=None):
    """The log's columns: ``base`` (a config's or a model's; default the defaults) with the options given."""
    from crmml.data.transactions import LogColumns

    return (base or LogColumns()).merged(log_column_flags(args))


def table_column_flags(args: argparse.Namespace) -> dict:
    """The customer table's column options given (None where not given); ValueError when some are
    given without ``--customers``."""
    flags = {role: getattr(args, option) for option, role in _TABLE_OPTIONS.items()}
    if getattr(args, "customers", None) is None and any(v is not None for v in flags.values()):
        given = [f"--{option.replace('_', '-')}" for option, role in _TABLE_OPTIONS.items() if flags[role] is not None]
        raise ValueError(f"{', '.join(given)} describe the customer table: they need --customers.")
    return flags


def table_columns(args: argparse.Namespace, base=None):
    """The customer table's columns: ``base`` (a config's or a model's; default the canonical names)
    with the options given."""
    from crmml.customer_columns import CustomerColumns

    return (base or CustomerColumns()).merged(table_column_flags(args))


@contextmanager
def printing_table_warnings(command: str) -> Iterator[None]:
    """Print the customer-table warnings raised inside (crmml.errors.CustomerTableWarning) as
    ``crmml <command>: warning: ...`` lines on stderr, once each; other warnings pass on as usual."""
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CustomerTableWarning)
            yield
    finally:
        shown, registry = set(), {}
        for warning in caught:
            if not issubclass(warning.category, CustomerTableWarning):
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno,
                                       registry=registry)
            elif str(warning.message) not in shown:
                shown.add(str(warning.message))
                print(f"crmml {command}: warning: {warning.message}", file=sys.stderr)
