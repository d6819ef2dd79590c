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


class CustomerTableWarning(UserWarning):
    """A customer-table column that is not used as it might be meant: text with too many distinct
    values for a category, or dates that are not mapped as the sign-up date (see
    :func:`crmml.customer_table.training_table`). The column is left out of the features."""


class ConvergenceError(CrmmlError, RuntimeError):
    """The maximum-likelihood optimiser found no point where the likelihood is finite.

    Raised only for inputs no parameters can describe (the log-likelihood is not finite anywhere the
    optimiser went, e.g. times in an absurd unit). A flat or boundary optimum, or one the optimiser
    stopped short of, is not an error: the fit keeps its best parameters and warns
    (:class:`crmml.models.base.FitWarning`, recorded in the model's ``fit_warning_``).
    """


def first_line(error: BaseException) -> str:
    """An exception's first line of text (its type's name when it has none): one line for the CLI,
    an API error or a log."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
