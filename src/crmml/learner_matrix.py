"""The learners' input as one preallocated float matrix, from columns (no frames).

:func:`design_matrix` writes the columns :meth:`crmml.learners.DesignMatrix.transform` would, in
its order, from the transformer's fitted state (``numeric_columns_``, ``missing_columns_``,
``categories_``) and :class:`LearnerRows` (float columns and categorical codes):

- numeric columns scaled by name (:func:`crmml.learners._scaled`), missing values as 0;
- a missing-value indicator per column that had missing values in training;
- one-hot indicators of the training categories (a category never seen, or unknown, is all zeros).

:func:`unseen_categories` says which rows were given a category the learners never saw in training
(read from the one-hot block itself: a value given whose indicators are all zero).

:func:`predict_learners_on_rows` runs fitted learner pipelines on those rows: the ``btyd_value``
step is a column of :class:`LearnerRows`, the design step is :func:`design_matrix`, the remaining
steps (a StandardScaler, the estimator) run on the matrix as the pipeline would run them. Learners
whose design and scaling steps are fitted alike share one matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from sklearn import config_context
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from crmml.learners import DesignMatrix, _BTYDValue, _Columns, _same_fitted, _scaled

__all__ = ["LearnerRows", "design_matrix", "predict_learners_on_rows", "unseen_categories"]


@dataclass
class LearnerRows:
    """The columns a learner reads: ``numbers`` (float arrays) and ``categories`` (codes, categories)."""

    n: int
    numbers: Mapping[str, np.ndarray]
    categories: Mapping[str, tuple] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.numbers or name in self.categories


def design_matrix(design: DesignMatrix, rows: LearnerRows) -> np.ndarray:
    """:meth:`DesignMatrix.transform` of the rows, column for column (see the module docstring)."""
    check_is_fitted(design, "feature_names_out_")
    numeric, missing_columns = design.numeric_columns_, design.missing_columns_
    absent = [c for c in [*numeric, *design.categories_] if c not in rows]
    if absent:
        raise ValueError(f"The features lack the column(s) {absent} the model was trained with.")
    out = np.empty((rows.n, len(design.feature_names_out_)))
    scaled = {}
    for j, column in enumerate(numeric):
        values = _scaled(column, _numbers(rows, column))
        scaled[column] = values
        out[:, j] = values
    n_numeric = len(numeric)
    np.nan_to_num(out[:, :n_numeric], copy=False, nan=0.0)
    for j, column in enumerate(missing_columns, start=n_numeric):
        out[:, j] = np.isnan(scaled[column])
    j = n_numeric + len(missing_columns)
    for column, values in design.categories_.items():
        if values:
            out[:, j:j + len(values)] = _one_hot(rows, column, values)
            j += len(values)
    return out


def _numbers(rows: LearnerRows, column: str) -> np.ndarray:
    if column in rows.numbers:
        return np.asarray(rows.numbers[column], dtype=np.float64)
    codes, categories = rows.categories[column]  # categories of numbers read as numbers
    try:
        values = np.r_[np.asarray(categories, dtype=np.float64), np.nan]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The feature {column!r} holds text, but the model was trained on numbers.") from exc
    return values[codes]  # code -1 (unknown) takes the NaN


def _one_hot(rows: LearnerRows, column: str, values: list) -> np.ndarray:
    """0/1 indicators of ``column == value`` for each of ``values`` (unknown values match none)."""
    if column in rows.categories:
        codes, categories = rows.categories[column]
        hits = np.array([[category == v for v in values] for category in list(categories)] + [[False] * len(values)],
                        dtype=bool).reshape(len(categories) + 1, len(values))
        return hits[codes].astype(np.float64)  # code -1 (missing) takes the last row
    numbers = np.asarray(rows.numbers[column], dtype=np.float64)
    text = np.where(np.isnan(numbers), None, numbers.astype(object))
    return np.column_stack([(text == v).astype(np.float64) for v in values])


def unseen_categories(learners, rows: LearnerRows) -> dict[str, np.ndarray]:
    """The rows given a category that a learner never saw in training, per categorical column.

    Parameters
    ----------
    learners : iterable of fitted pipelines (None entries are skipped)
    rows : LearnerRows

    Returns
    -------
    dict of str to numpy.ndarray
        For each categorical column some learner one-hot encodes and the rows have, a bool per row:
        True where a value is given (not missing) but its indicators are all zero, so that the
        learners scored it as they score an unknown value. Columns without such a row are left out.
    """
    out: dict[str, np.ndarray] = {}
    for learner in learners:
        if learner is None:
            continue
        for design in (step for _, step in learner.steps if isinstance(step, DesignMatrix)):
            for column, values in design.categories_.items():
                if column not in rows:
                    continue
                if column in rows.categories:
                    given = np.asarray(rows.categories[column][0]) >= 0
                else:
                    given = ~np.isnan(np.asarray(rows.numbers[column], dtype=np.float64))
                unseen = given & ~_one_hot(rows, column, values).any(axis=1) if values else given
                if unseen.any():
                    out[column] = out[column] | unseen if column in out else unseen
    return out


def predict_learners_on_rows(learners, rows: LearnerRows, method: str = "predict") -> list[np.ndarray]:
    """``getattr(learner, method)`` of fitted learner pipelines on the rows (see the module docstring)."""
    out, shared = [], []  # shared: (transform steps, their output)
    with config_context(skip_parameter_validation=True):
        for learner in learners:
            if not isinstance(learner, Pipeline):
                raise TypeError(f"A crmml learner is a scikit-learn Pipeline; got {type(learner).__name__}.")
            check_is_fitted(learner)
            steps = [step for _, step in learner.steps[:-1] if step is not None and step != "passthrough"]
            for done, matrix in shared:
                if len(done) == len(steps) and all(_same_fitted(a, b) for a, b in zip(done, steps, strict=True)):
                    break
            else:
                matrix = _transform(steps, rows)
                shared.append((steps, matrix))
            out.append(getattr(learner.steps[-1][1], method)(matrix))
    return out


def _transform(steps, rows: LearnerRows) -> np.ndarray:
    matrix = None
    for step in steps:
        if isinstance(step, (_BTYDValue, _Columns)):  # btyd_value is a column of the rows; the design
            continue  # matrix reads its own columns by name
        if isinstance(step, DesignMatrix):
            matrix = design_matrix(step, rows)
        elif matrix is None:
            raise TypeError(f"Unexpected learner step {type(step).__name__} before the design matrix.")
        else:
            matrix = step.transform(matrix)
    if matrix is None:
        raise TypeError("The learner pipeline has no DesignMatrix step.")
    return matrix
