"""Customer attributes as covariates of the BTYD models: the design matrix and the effects table.

The covariate models (:mod:`crmml.models.pareto_nbd_covariates`,
:mod:`crmml.models.beta_geo_covariates`) let static customer attributes ``z`` scale the gamma
(and beta) mixing distributions, following Fader, P. S. & Hardie, B. G. S. (2007), "Incorporating
Time-Invariant Covariates into the Pareto/NBD and BG/NBD Models"
(http://www.brucehardie.com/notes/019/). This module turns a frame of attributes into the matrix
``z`` those models read:

* a categorical attribute (strings, categories, booleans) becomes one 0/1 column per level except
  its reference level, which is the level given in ``reference_levels`` or, by default, the most
  frequent one in the fitting data (weighted by ``sample_weight``; ties go to the smallest level as
  text). Levels are compared as text, so ``1`` and ``"1"`` are the same level. A column of a numeric
  dtype is numeric: give integer codes (region 1, 2, 3) as strings or a ``category`` column.
* a numeric attribute is centred and scaled by its (weighted) mean and standard deviation for
  fitting, so every coefficient starts on the same footing; coefficients are reported per unit of
  the attribute as given (see :meth:`CovariateDesign.to_original_units`), and the baseline
  parameters of the models then describe a customer at the mean.

When scoring, a category not seen in fitting, or a missing value, falls back to the reference level
(a missing numeric value to the mean), and :meth:`CovariateDesign.transform` says which customers
that happened to, per attribute, so a scorer can tell them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crmml.errors import DataValidationError
from crmml.models.base import rows_error

__all__ = ["CovariateDesign", "effects_table"]

_Z95 = 1.959963984540054


@dataclass(frozen=True)
class _Attribute:
    """How one attribute is coded: its encoded columns' levels, or its mean and scale."""

    name: str
    categorical: bool
    reference: str | None = None
    levels: tuple[str, ...] = ()  # non-reference levels, one column each
    mean: float = 0.0
    scale: float = 1.0

    @property
    def columns(self) -> list[str]:
        return [f"{self.name}={level}" for level in self.levels] if self.categorical else [self.name]


def _is_categorical(column: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def _as_text(column: pd.Series) -> pd.Series:
    """Levels as text (missing stays missing), so fitting and scoring compare the same way."""
    values = column.astype(object)
    missing = column.isna().to_numpy()
    return pd.Series(np.where(missing, None, values.astype(str)), index=column.index, dtype=object)


class CovariateDesign:
    """Dummy coding and standardisation of customer attributes for the two processes of a BTYD model.

    Parameters
    ----------
    purchase : sequence of str
        Attributes that scale the purchase process.
    dropout : sequence of str
        Attributes that scale the dropout process (may overlap ``purchase``).
    reference_levels : dict, optional
        ``{attribute: level}`` for categorical attributes; default the most frequent level.

    Attributes
    ----------
    attributes_ : list of _Attribute
        The coding of each attribute (in the order purchase, then dropout-only).
    columns_ : list of str
        Names of the encoded columns, e.g. ``"channel=referral"`` or ``"age"``.
    purchase_index_, dropout_index_ : ndarray of int
        Positions in ``columns_`` of each process's columns.
    """

    def __init__(self, purchase: Sequence[str] = (), dropout: Sequence[str] = (),
                 reference_levels: Mapping[str, object] | None = None):
        for name, value in (("purchase", purchase), ("dropout", dropout)):
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} covariates must be a list of column names; got {value!r}.")
            if len(set(value)) != len(value):
                raise ValueError(f"{name} covariates name a column twice: {list(value)}.")
        self.purchase = list(purchase)
        self.dropout = list(dropout)
        self.reference_levels = dict(reference_levels or {})
        unknown = set(self.reference_levels) - set(self.purchase) - set(self.dropout)
        if unknown:
            raise ValueError(f"reference_levels names attributes that are not covariates: {sorted(unknown)}.")

    @property
    def names(self) -> list[str]:
        """Every attribute, purchase ones first."""
        return list(dict.fromkeys(self.purchase + self.dropout))

    def fit(self, frame: pd.DataFrame, sample_weight: np.ndarray | None = None) -> CovariateDesign:
        """Learn levels, reference levels, means and scales; missing values are an error here."""
        weights = np.ones(len(frame)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        attributes = []
        for name in self.names:
            column = _column(frame, name)
            if column.isna().any():
                raise rows_error(frame.index, column.isna().to_numpy(), column.to_numpy(), name,
                                 "must not be missing in the data a covariate model is fitted on")
            if _is_categorical(column):
                attributes.append(self._fit_categorical(name, _as_text(column), weights))
            else:
                attributes.append(self._fit_numeric(name, frame, column.to_numpy(dtype=float), weights))
        self.attributes_ = attributes
        self.columns_ = [c for a in attributes for c in a.columns]
        owner = [a.name for a in attributes for _ in a.columns]
        self.purchase_index_ = np.array([i for i, a in enumerate(owner) if a in self.purchase], dtype=np.int64)
        self.dropout_index_ = np.array([i for i, a in enumerate(owner) if a in self.dropout], dtype=np.int64)
        self.scales_ = np.array([a.scale for a in attributes for _ in a.columns])
        self.means_ = np.array([a.mean for a in attributes for _ in a.columns])
        return self

    def _fit_categorical(self, name: str, column: pd.Series, weights: np.ndarray) -> _Attribute:
        totals = pd.Series(weights, index=column.index).groupby(column.to_numpy()).sum()
        totals = totals[totals > 0]
        if name in self.reference_levels:
            reference = str(self.reference_levels[name])
            if reference not in totals.index:
                raise DataValidationError(
                    f"Reference level {reference!r} of {name!r} does not occur in the data "
                    f"(levels: {sorted(totals.index)[:20]}).", column=name)
        else:  # most frequent, ties to the smallest as text
            largest = totals.max()
            reference = min(level for level, total in totals.items() if total == largest)
        levels = tuple(sorted(level for level in totals.index if level != reference))
        return _Attribute(name, True, reference=reference, levels=levels)

    @staticmethod
    def _fit_numeric(name: str, frame: pd.DataFrame, values: np.ndarray, weights: np.ndarray) -> _Attribute:
        if not np.all(np.isfinite(values)):
            raise rows_error(frame.index, ~np.isfinite(values), values, name, "must be a finite number")
        total = weights.sum()
        mean = float(weights @ values / total)
        scale = float(np.sqrt(weights @ (values - mean) ** 2 / total))
        if not scale > 0:
            raise DataValidationError(
                f"Covariate {name!r} takes one value only ({mean:g}); its effect cannot be estimated.", column=name)
        return _Attribute(name, False, mean=mean, scale=scale)

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
        """The standardised design matrix and, per attribute, where the value fell back.

        Returns
        -------
        z : ndarray of shape (n, len(columns_))
            Dummies (0/1) and standardised numeric columns.
        fallback : DataFrame of bool
            One column per attribute: True where the value was missing or a category unseen in
            fitting, so the customer was scored at the reference level (numeric: at the mean).
        """
        z = np.zeros((len(frame), len(self.columns_)))
        fallback = {}
        position = 0
        for attribute in self.attributes_:
            column = _column(frame, attribute.name)
            if attribute.categorical:
                text = _as_text(column)
                codes = pd.Index(attribute.levels, dtype=object).get_indexer(text.to_numpy())
                known = text.isin([attribute.reference, *attribute.levels]).to_numpy()
                hit = np.flatnonzero(codes >= 0)
                z[hit, position + codes[hit]] = 1.0
                fallback[attribute.name] = ~known
            else:
                values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                finite = np.isfinite(values)
                z[:, position] = np.where(finite, (values - attribute.mean) / attribute.scale, 0.0)
                fallback[attribute.name] = ~finite
            position += len(attribute.columns)
        return z, pd.DataFrame(fallback, index=frame.index, columns=[a.name for a in self.attributes_])

    def to_original_units(self, coefficients: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Coefficients of standardised ``columns`` (indices into ``columns_``) per original unit."""
        return np.asarray(coefficients, dtype=float) / self.scales_[columns]

    def describe(self, column: int) -> dict:
        """Attribute, level and reference level of an encoded column (level/reference None if numeric)."""
        position = 0
        for attribute in self.attributes_:
            if column < position + len(attribute.columns):
                if attribute.categorical:
                    return {"covariate": attribute.name, "level": attribute.levels[column - position],
                            "reference": attribute.reference}
                return {"covariate": attribute.name, "level": None, "reference": None}
            position += len(attribute.columns)
        raise IndexError(column)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if not isinstance(frame, pd.DataFrame):
        raise DataValidationError(f"Covariates are read from a DataFrame; got {type(frame).__name__}.")
    if name not in frame.columns:
        raise DataValidationError(
            f"Covariate column {name!r} missing from the summary (columns found: {list(frame.columns)}).", column=name)
    return frame[name]


def effects_table(design: CovariateDesign, effects: Sequence[tuple[str, str, int, np.ndarray]],
                  coefficients: np.ndarray, covariance: np.ndarray) -> pd.DataFrame:
    """Rate ratios with 95 % Wald intervals for linear combinations of the coefficients.

    Parameters
    ----------
    design : CovariateDesign
        The fitted design (names the columns).
    effects : sequence of (process, effect, column, combination)
        ``process`` ("purchase", "dropout", ...), what the ratio multiplies (e.g. "purchase rate"),
        the encoded column it is about and the combination ``c`` of the coefficient vector whose
        exponential is the ratio.
    coefficients, covariance : ndarray
        Coefficients per original unit and their covariance (NaN where unknown).

    Returns
    -------
    DataFrame
        One row per effect, indexed ``"{process}:{column}"``: ``process``, ``effect``, ``covariate``,
        ``level``, ``reference``, the coefficient as ``estimate`` with ``standard_error`` and its 95 %
        interval ``lower_95``, ``upper_95``, and ``ratio = exp(estimate)`` with its interval
        ``ratio_lower_95``, ``ratio_upper_95`` (``exp(estimate -+ 1.96 standard_error)``).
    """
    rows, index = [], []
    for process, effect, column, combination in effects:
        estimate = float(combination @ coefficients)
        variance = float(combination @ covariance @ combination)
        error = np.sqrt(variance) if variance >= 0 else np.nan
        described = design.describe(column)
        label = design.columns_[column]
        index.append(f"{process}:{label}")
        rows.append({
            "process": process, "effect": effect, **described, "estimate": estimate, "standard_error": error,
            "lower_95": estimate - _Z95 * error, "upper_95": estimate + _Z95 * error, "ratio": np.exp(estimate), "ratio_lower_95": np.exp(estimate - _Z95 * error),
            "ratio_upper_95": np.exp(estimate + _Z95 * error),
        })
    return pd.DataFrame(rows, index=pd.Index(index, name="term"))
