"""Exceptions raised by crmml.

Every error a user can cause is a subclass of :class:`CrmmlError`, so the CLI and the API can turn it
into one clear line (exit code 2, HTTP 4xx) instead of a stack trace.
"""

from __future__ import annotations

from collections.abc import Sequence


class CrmmlError(Exception):
    """Base class of every error crmml raises on purpose."""


class DataValidationError(CrmmlError, ValueError):
    """Input data that cannot be used as it is.

    Parameters
    ----------
    message : str
        The whole explanation, naming the column and the offending rows.
    column : str, optional
        The column at fault, when there is one.
    rows : sequence, optional
        Labels (frame index labels, or 1-based data row numbers in a file) of the first offending rows.
    """

    def __init__(self, message: str, *, column: str | None = None, rows: Sequence | None = None):
        super().__init__(message)
        self.column = column
        self.rows = list(rows) if rows is not None else []


class InvalidTimezoneError(CrmmlError, ValueError):
    """A time zone setting that is not an IANA time zone name."""


class ConvergenceError(CrmmlError, RuntimeError):
    """The maximum-likelihood optimiser did not reach a finite optimum."""


def first_line(error: BaseException) -> str:
    """An exception's first line of text (its type's name when it has none): one line for the CLI,
    an API error or a log."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
