"""The supervised learners on top of the features: a churn classifier and value regressors.

Every learner is a scikit-learn pipeline whose first step, :class:`DesignMatrix`, turns a frame of
:func:`crmml.features.compute_features` rows (plus the ``horizon_days`` of their label window) into
numbers:

- counts, days and spends are heavy-tailed, so they enter as ``log1p`` (trends as signed ``log1p``);
- BTYD outputs enter on their natural scale for a linear model: ``log`` expected purchases, ``log``
  expected spend, ``log`` of their product (the BTYD value), ``logit`` P(alive) and P(no purchase);
- ``log(horizon_days)`` lets one model serve several label windows (time travel, rescaled);
- missing values (customers without purchases, one-time buyers' gaps) become 0 plus a missing-value
  indicator per column that had any in training;
- categorical attributes are one-hot encoded; a category unseen in training encodes as all zeros, so
  scoring never fails on a new channel or region.

Learners by name:

``btyd_expected``
    the BTYD model's expected purchases over the window (and the window length) as the only inputs
    of a logistic regression: the ``-E[X]`` ranking of the BTYD model as a calibrated churn probability.
``logistic``
    standardised :class:`~sklearn.linear_model.LogisticRegression`: probabilities calibrated by its
    log-loss fit, and a log-window coefficient that extrapolates smoothly to longer windows.
``gradient_boosting``
    :class:`~sklearn.ensemble.HistGradientBoostingClassifier` wrapped in
    :class:`~sklearn.calibration.CalibratedClassifierCV` (isotonic, 3 folds).
``poisson_glm`` / ``poisson_gbm``
    Poisson regression (log link) of a non-negative outcome (spend or purchases in the window),
    linear or gradient-boosted. The Poisson deviance keeps the totals: in training the predictions
    sum to the observed total.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
from sklearn.linear_model import LogisticRegression, PoissonRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["CHURN_LEARNERS", "DesignMatrix", "VALUE_LEARNERS", "make_churn_learner", "make_value_learner"]

CHURN_LEARNERS = ("btyd_expected", "logistic", "gradient_boosting")
VALUE_LEARNERS = ("poisson_glm", "poisson_gbm")

_PROBABILITY_CLIP = 1e-6
_LOG_FLOOR = 1e-9


class DesignMatrix(TransformerMixin, BaseEstimator):
    """Numbers for the learners from a features frame (see the module docstring).

    Attributes
    ----------
    numeric_columns_ : list of str
        The numeric input columns, in order.
    categories_ : dict of str to list
        The categories seen in training, per categorical column.
    missing_columns_ : list of str
        Numeric columns that had missing values in training (one indicator each).
    feature_names_out_ : list of str
    """

    def fit(self, X: pd.DataFrame, y=None):
        frame = _as_frame(X)
        self.numeric_columns_ = [
            c for c in frame.columns
            if (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
            and not isinstance(frame[c].dtype, pd.CategoricalDtype)
        ]
        self.categories_ = {
            c: _categories(frame[c]) for c in frame.columns if c not in self.numeric_columns_
        }
        numbers = self._numbers(frame)
        self.missing_columns_ = [c for c in self.numeric_columns_ if np.isnan(numbers[c]).any()]
        self.feature_names_out_ = (
            list(self.numeric_columns_)
            + [f"{c}_missing" for c in self.missing_columns_]
            + [f"{c}={v}" for c, values in self.categories_.items() for v in values]
        )
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        frame = _as_frame(X)
        present = set(frame.columns)
        missing = [c for c in [*self.numeric_columns_, *self.categories_] if c not in present]
        if missing:
            raise ValueError(f"The features lack the column(s) {missing} the model was trained with.")
        numbers = self._numbers(frame)
        n_numeric, n_missing = len(self.numeric_columns_), len(self.missing_columns_)
        out = np.empty((len(frame), len(self.feature_names_out_)))
        for j, column in enumerate(self.numeric_columns_):
            out[:, j] = numbers[column]
        np.nan_to_num(out[:, :n_numeric], copy=False, nan=0.0)  # in place, on the numeric block
        for j, column in enumerate(self.missing_columns_, start=n_numeric):
            out[:, j] = np.isnan(numbers[column])
        j = n_numeric + n_missing
        for column, values in self.categories_.items():
            if values:
                out[:, j:j + len(values)] = _one_hot(frame[column], values)
                j += len(values)
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.asarray(self.feature_names_out_, dtype=object)

    def _numbers(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The transformed numeric columns (read from the frame in one block)."""
        if not self.numeric_columns_:
            return {}
        block = frame[self.numeric_columns_].to_numpy(dtype=np.float64, na_value=np.nan)
        return {column: _scaled(column, np.ascontiguousarray(block[:, j]))
                for j, column in enumerate(self.numeric_columns_)}


def _one_hot(column: pd.Series, values: list) -> np.ndarray:
    """0/1 indicators of ``column == value`` for each of ``values`` (missing values match none)."""
    if isinstance(column.dtype, pd.CategoricalDtype):  # compare the categories, then look the codes up
        codes = column.cat.codes.to_numpy()
        categories = list(column.cat.categories)
        hits = np.array([[category == v for v in values] for category in categories] + [[False] * len(values)],
                        dtype=bool)
        return hits[codes].astype(np.float64)  # code -1 (missing) takes the last row
    text = column.astype(object).where(column.notna(), None).to_numpy()
    return np.column_stack([(text == v).astype(np.float64) for v in values])


def _same_fitted(a, b) -> bool:
    """(Used by :func:`crmml.learner_matrix.predict_learners_on_rows` to share one matrix.) Whether two fitted transformers are of one class with equal state (conservative: state of
    types not compared here counts as different unless it is the same object)."""
    return a is b or (type(a) is type(b) and _same_state(vars(a), vars(b)))


def _same_state(a, b) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(v, b[k]) for k, v in a.items())
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return (a.dtype == b.dtype and a.shape == b.shape and a.dtype != object
                and a.tobytes() == b.tobytes())
    if isinstance(a, (str, bytes, bool, int, float, np.generic)) or a is None:
        return bool(a == b)
    return False


def _as_frame(X) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise TypeError("The learners take a pandas DataFrame of features.")
    return X


def _categories(series: pd.Series) -> list:
    if isinstance(series.dtype, pd.CategoricalDtype):
        return list(series.cat.categories)
    return sorted({v for v in series.dropna().astype(str)})


def _scaled(column: str, values: np.ndarray) -> np.ndarray:
    """The transform of one numeric column (see the module docstring)."""
    kind = _scale_kind(column)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "logit":
            p = np.clip(values, _PROBABILITY_CLIP, 1 - _PROBABILITY_CLIP)
            return np.log(p / (1 - p))
        if kind == "log":
            return np.log(np.maximum(values, _LOG_FLOOR))
        if kind == "signed_log1p":
            return np.sign(values) * np.log1p(np.abs(values))
        if kind == "log1p":
            return np.log1p(np.maximum(values, 0.0))
        return values


@functools.lru_cache(maxsize=1024)
def _scale_kind(column: str) -> str:
    """Which transform of :func:`_scaled` a column takes, by name."""
    if column in ("btyd_p_alive", "btyd_p_no_purchase"):
        return "logit"
    if column in ("btyd_expected_purchases", "expected_spend", "horizon_days"):
        return "log"
    if "trend" in column:
        return "signed_log1p"
    if column.startswith(("frequency", "recency", "age", "monetary", "days_since", "mean_gap", "gap_",
                          "purchases_last", "spend_last", "total_spend", "first_purchase", "tenure",
                          "n_referrals")):
        return "log1p"
    return "identity"


def _with_btyd_value(frame: pd.DataFrame) -> pd.DataFrame:
    if "btyd_expected_purchases" in frame and "expected_spend" in frame:
        frame = frame.assign(btyd_value=frame["btyd_expected_purchases"] * frame["expected_spend"])
    return frame


class _BTYDValue(TransformerMixin, BaseEstimator):
    """Adds ``btyd_value`` = expected purchases x expected spend (then logged by DesignMatrix)."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return _with_btyd_value(_as_frame(X))


class _Columns(TransformerMixin, BaseEstimator):
    """Keeps the named columns of a features frame."""

    def __init__(self, columns=()):
        self.columns = columns

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return _as_frame(X)[list(self.columns)]


def make_churn_learner(name: str, *, seed: int = 0):
    """A fresh, unfitted churn classifier pipeline; ``predict_proba(X)[:, 1]`` is P(churn)."""
    if name == "btyd_expected":
        return Pipeline([("columns", _Columns(("btyd_expected_purchases", "horizon_days"))),
                         ("design", DesignMatrix()), ("scale", StandardScaler()),
                         ("model", LogisticRegression(C=1.0, solver="newton-cholesky", max_iter=100))])
    if name == "logistic":
        # Newton steps on the (rows x ~100) design: the same convex optimum as L-BFGS in a few passes
        model = LogisticRegression(C=1.0, solver="newton-cholesky", max_iter=100)
        return Pipeline([("btyd_value", _BTYDValue()), ("design", DesignMatrix()), ("scale", StandardScaler()),
                         ("model", model)])
    if name == "gradient_boosting":
        boosted = HistGradientBoostingClassifier(  # 150 steps of 0.1: the reach of 300 of 0.05 at half the cost
            max_iter=150, learning_rate=0.1, max_depth=4, min_samples_leaf=100, l2_regularization=1.0,
            early_stopping=False, random_state=seed,
        )
        model = CalibratedClassifierCV(boosted, method="isotonic", cv=3)
        return Pipeline([("btyd_value", _BTYDValue()), ("design", DesignMatrix()), ("model", model)])
    raise ValueError(f"Unknown churn learner {name!r}; choose from {CHURN_LEARNERS}.")


def make_value_learner(name: str, *, seed: int = 0):
    """A fresh, unfitted Poisson regressor pipeline for a non-negative outcome over the row's window."""
    if name == "poisson_glm":
        # Newton steps: the same convex optimum as L-BFGS, which took ~700 passes over the rows (11 s
        # per fit on 50,000 customers x 4 windows)
        model = PoissonRegressor(alpha=1e-3, solver="newton-cholesky", max_iter=100)
        return Pipeline([("btyd_value", _BTYDValue()), ("design", DesignMatrix()), ("scale", StandardScaler()),
                         ("model", model)])
    if name == "poisson_gbm":
        model = HistGradientBoostingRegressor(
            loss="poisson", max_iter=150, learning_rate=0.1, max_depth=4, min_samples_leaf=100,
            l2_regularization=1.0, early_stopping=False, random_state=seed,
        )
        return Pipeline([("btyd_value", _BTYDValue()), ("design", DesignMatrix()), ("model", model)])
    raise ValueError(f"Unknown value learner {name!r}; choose from {VALUE_LEARNERS}.")
