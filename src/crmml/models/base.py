"""Shared maximum-likelihood machinery for the BTYD and spend models.

A model in :mod:`crmml.models` declares its parameter names, the summary columns it reads, which of
those columns carry its scale (time, or money) and one pure function returning the per-row
log-likelihood and its gradient. :class:`BaseModel` does the rest: input validation, compression of
identical rows into weights, rescaling, optimisation in log-parameter space, standard errors from the
Hessian, and evaluation of predictions once per unique row.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy import optimize
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from crmml.errors import ConvergenceError, DataValidationError
from crmml.models._optimum import LOG_PARAM_BOUND, FitWarning, OptimumDiagnosis, diagnose_optimum

__all__ = [
    "LOG_PARAM_BOUND",
    "BaseModel",
    "FitWarning",
    "OptimumDiagnosis",
    "SummaryColumns",
    "check_btyd_summary",
    "check_horizon",
    "diagnose_optimum",
    "rows_error",
    "unique_rows",
]

# Typing aliases: the data a likelihood sees is a tuple of equally long float arrays.
Data = tuple[np.ndarray, ...]
LikelihoodFunction = Callable[[np.ndarray, Data], tuple[np.ndarray, np.ndarray]]

_MAX_SHOWN_ROWS = 5

class SummaryColumns:
    """A model's summary as named float columns, without a DataFrame: what the scoring core hands the
    models (building and reading a frame costs more than the maths for the one customer of a
    request). It has the little of a frame the models read: ``len``, ``[name]``, ``columns`` and a
    positional ``index`` (for error messages). The models' public methods still take and return
    frames; their results on these columns are indexed ``0 .. n - 1``.
    """

    def __init__(self, columns: dict[str, np.ndarray]):
        self._columns = {name: np.asarray(values) for name, values in columns.items()}
        lengths = {len(values) for values in self._columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"SummaryColumns needs columns of one length; got lengths {sorted(lengths)}.")
        self._n = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, name: str) -> np.ndarray:
        return self._columns[name]

    def __setitem__(self, name: str, values) -> None:
        values = np.asarray(values)
        if len(values) != self._n:
            raise ValueError(f"Column {name!r} has {len(values)} values for {self._n} rows.")
        self._columns[name] = values

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    @property
    def index(self) -> pd.RangeIndex:
        return pd.RangeIndex(self._n)


def unique_rows(columns: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Find the distinct rows of a set of equally long columns.

    Hash-based (``pandas.factorize`` per column, then on a mixed-radix key), so it is linear in the
    number of rows rather than a lexicographic sort.

    Parameters
    ----------
    columns : sequence of 1-d arrays
        The columns; row ``i`` is ``tuple(c[i] for c in columns)``.

    Returns
    -------
    first : ndarray of int
        Position of one representative of each distinct row, in order of first appearance.
    inverse : ndarray of int
        For every row, the index of its distinct row in ``first``.
    """
    n = len(columns[0])
    if n <= 1:  # (one customer of a request: nothing to find)
        return np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    key = np.zeros(n, dtype=np.int64)
    radix = 1
    for column in columns:
        codes, uniques = pd.factorize(column)
        if radix * max(len(uniques), 1) >= 2**62:
            # The mixed-radix key would overflow: re-factorise the partial key first.
            key, partial = pd.factorize(key)
            radix = max(len(partial), 1)
        key = key * max(len(uniques), 1) + codes
        radix *= max(len(uniques), 1)
    inverse, _ = pd.factorize(key)
    # factorize numbers the distinct rows in order of first appearance, so a row is the first of
    # its kind exactly where its code exceeds every code before it.
    running_max = np.maximum.accumulate(inverse)
    is_first = np.empty(n, dtype=bool)
    is_first[0] = True
    is_first[1:] = running_max[1:] > running_max[:-1]
    return np.flatnonzero(is_first), inverse.astype(np.int64)


class BaseModel(BaseEstimator):
    """Maximum-likelihood estimation shared by every crmml model.

    Subclasses set the class variables below and implement :meth:`_log_likelihood`. The optimiser
    minimises the weighted mean negative log-likelihood (so its tolerance means the same at any data
    size) plus ``penalizer * sum(params**2)`` over the log-parameters with L-BFGS-B and analytic
    gradients, then polishes the optimum with Newton steps on a finite-difference Hessian of the
    analytic gradient.

    Parameters
    ----------
    penalizer : float, default 0.0
        L2 penalty on the (rescaled) natural parameters, as in lifetimes. Helps when the data hold
        few repeat customers and the optimum drifts to a boundary.
    initial_params : dict, optional
        Starting values of the natural parameters (default: all ones on the rescaled data).
    max_iter : int, default 2000
        Maximum number of L-BFGS-B iterations.
    n_jobs : int, optional
        Threads that evaluate the likelihood on large data (``None`` or ``-1``: every available
        core; ``1``: none). The rows are cut into chunks of fixed size whatever the thread count,
        so the estimates do not depend on it.

    Attributes
    ----------
    fit_warning_ : str or None
        ``None`` for an interior, identified, converged optimum; otherwise one sentence saying which
        parameters went to a limit of the model (the box ``1e-8..1e8`` of the rescaled parameters),
        which the likelihood is flat in, or that the optimiser stopped short. The same sentence is
        issued as a :class:`~crmml.models._optimum.FitWarning` (a ``UserWarning``).
    unidentified_params_ : tuple of str
        The parameters at a limit or along a flat direction; their standard errors, covariances and
        interval bounds are NaN. The others' standard errors hold the limits fixed.
    """

    param_names: ClassVar[tuple[str, ...]] = ()
    #: Summary columns the likelihood reads, in the order :meth:`_log_likelihood` receives them.
    data_columns: ClassVar[tuple[str, ...]] = ()
    #: Columns measured in the data's scale unit (time or money); rescaled before fitting.
    scaled_columns: ClassVar[tuple[str, ...]] = ()
    #: Parameters that carry the scale unit: multiplied by the scale factor on rescaled data.
    scaled_params: ClassVar[tuple[str, ...]] = ()
    #: Merge identical rows into weights before fitting. Worth it where rows repeat (whole days or
    #: weeks); not where a column is continuous (mean spend), as finding duplicates costs more.
    compress_rows: ClassVar[bool] = True

    def __init__(
        self,
        penalizer: float = 0.0,
        *,
        initial_params: dict | None = None,
        max_iter: int = 2000,
        n_jobs: int | None = None,
    ):
        self.penalizer = penalizer
        self.initial_params = initial_params
        self.max_iter = max_iter
        self.n_jobs = n_jobs

    # ----------------------------------------------------------------------------------------------
    # To be provided by each model: either the weighted totals (fast path) or per-row values.
    def _weighted_log_likelihood(self, params: np.ndarray, data, weights: np.ndarray) -> tuple[float, np.ndarray]:
        """Weighted total log-likelihood and its gradient with respect to the natural parameters.

        ``data`` is what :meth:`_prepare_data` returned. The default sums the per-row values of
        :meth:`_log_likelihood`; models override it to aggregate terms by level.
        """
        log_likelihood_rows, gradient_rows = self._log_likelihood(params, data)
        return float(weights @ log_likelihood_rows), weights @ gradient_rows

    @staticmethod
    def _log_likelihood(params: np.ndarray, data: Data) -> tuple[np.ndarray, np.ndarray]:
        """Per-row log-likelihood ``(n,)`` and its gradient ``(n, len(param_names))``."""
        raise TypeError("a model must implement _log_likelihood or _weighted_log_likelihood")

    def _density_dimensions(self, data: Data) -> np.ndarray:
        """Per row, how many dimensions of its likelihood are densities in the scaled unit.

        Rescaling those columns by ``c`` divides each such density by ``c``; this is what maps the
        log-likelihood on rescaled data back to the data's own units.
        """
        if self.scaled_columns:
            raise TypeError(f"{type(self).__name__} rescales {self.scaled_columns} but does not define _density_dimensions")
        return np.zeros(len(data[0]))

    def _prepare_data(self, data: Data, weights: np.ndarray):
        """Structure the likelihood reuses across optimiser iterations (default: the columns)."""
        return data

    def _check_data(self, data: dict[str, np.ndarray], index: pd.Index) -> None:
        """Model-specific checks of the summary values; raise :class:`DataValidationError`."""

    def _rows_used_in_fit(self, data: dict[str, np.ndarray]) -> np.ndarray | None:
        """Boolean mask of the rows the likelihood is defined for (``None``: all rows)."""
        return None

    # ----------------------------------------------------------------------------------------------
    # Input handling
    def _extract(self, summary: pd.DataFrame | SummaryColumns,
                 columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Validate the summary (a frame, or :class:`SummaryColumns`) and return its model columns as
        float arrays."""
        columns = tuple(columns or self.data_columns)
        if not isinstance(summary, (pd.DataFrame, SummaryColumns)):
            raise DataValidationError(
                f"{type(self).__name__} expects a summary DataFrame with columns {list(columns)}; "
                f"got {type(summary).__name__}."
            )
        if len(summary) == 0:
            raise DataValidationError(f"{type(self).__name__}: the summary frame has no rows.")
        data: dict[str, np.ndarray] = {}
        for name in columns:
            if name not in summary.columns:
                raise DataValidationError(
                    f"Required column {name!r} missing from the summary (columns found: {list(summary.columns)}).",
                    column=name,
                )
            column = summary[name]
            if column.dtype == np.float64:  # already numbers (the usual case): skip the conversion
                values = np.asarray(column)
            elif isinstance(column, np.ndarray):
                values = column.astype(np.float64)
            else:
                values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            bad = ~np.isfinite(values)
            if bad.any():
                raise rows_error(summary.index, bad, np.asarray(summary[name]), name, "must be a finite number")
            data[name] = values
        self._check_data(data, summary.index)
        return data

    @staticmethod
    def _check_weights(sample_weight, n_rows: int) -> np.ndarray:
        if sample_weight is None:
            return np.ones(n_rows)
        weights = np.asarray(sample_weight, dtype=float)
        if weights.shape != (n_rows,):
            raise DataValidationError(
                f"sample_weight must have one value per summary row ({n_rows}); got shape {weights.shape}.",
                column="sample_weight",
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))[:_MAX_SHOWN_ROWS]
            raise DataValidationError(
                f"sample_weight must be finite and non-negative; rows {bad.tolist()} are not.",
                column="sample_weight",
                rows=bad.tolist(),
            )
        return weights

    def _check_hyperparameters(self) -> None:
        name = type(self).__name__
        if not (isinstance(self.penalizer, (int, float)) and np.isfinite(self.penalizer) and self.penalizer >= 0):
            raise ValueError(
                f"The 'penalizer' parameter of {name} must be a float in [0, inf). Got {self.penalizer!r} instead."
            )
        if not (self.n_jobs is None or self.n_jobs == -1 or (isinstance(self.n_jobs, (int, np.integer)) and self.n_jobs > 0)):
            raise ValueError(f"The 'n_jobs' parameter of {name} must be None, -1 or a positive int. Got {self.n_jobs!r}.")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter > 0):
            raise ValueError(f"The 'max_iter' parameter of {name} must be a positive int. Got {self.max_iter!r}.")
        if self.initial_params is not None:
            unknown = set(self.initial_params) - set(self.param_names)
            missing = set(self.param_names) - set(self.initial_params)
            if unknown or missing:
                raise ValueError(
                    f"The 'initial_params' of {name} must give exactly {list(self.param_names)}; "
                    f"unknown {sorted(unknown)}, missing {sorted(missing)}."
                )
            values = np.array([self.initial_params[p] for p in self.param_names], dtype=float)
            if not np.all(np.isfinite(values) & (values > 0)):
                raise ValueError(f"The 'initial_params' of {name} must all be positive finite numbers.")

    # ----------------------------------------------------------------------------------------------
    # Fitting
    def fit(self, summary: pd.DataFrame, y=None, *, sample_weight=None):
        """Fit the model by maximum likelihood.

        Parameters
        ----------
        summary : DataFrame
            One row per customer (or per group of identical customers, with ``sample_weight``)
            holding the columns listed in ``data_columns``.
        y : ignored
            Present for scikit-learn compatibility.
        sample_weight : array-like, optional
            Number of customers each row stands for. Weights are equivalent to duplicated rows.

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        data = self._extract(summary)
        weights = self._check_weights(sample_weight, len(summary))
        used = self._rows_used_in_fit(data)
        if used is not None:
            weights = np.where(used, weights, 0.0)
        columns = [data[name] for name in self.data_columns]
        if self.compress_rows:
            first, inverse = unique_rows(columns)
            row_weights = np.bincount(inverse, weights=weights, minlength=len(first))
            columns = [column[first] for column in columns]
        else:
            row_weights = weights
        keep = row_weights > 0
        if not keep.any():
            raise DataValidationError(f"{type(self).__name__}: no rows with positive weight to fit on.")
        compressed = tuple(column[keep] for column in columns)
        row_weights = row_weights[keep]

        scale = self._scale_factor(compressed)
        # Our threads split the rows; BLAS's own threads would only contend with them (a 1-d dot
        # product of 100k values takes ~10 ms instead of ~0.1 ms on a busy machine).
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=self._threads()) as executor:
            scaled = _ChunkedLikelihood(self, self._rescale_data(compressed, scale), row_weights, executor)
            scaled_params, _, n_iter = self._optimise(scaled, scale)
            scaled_log_likelihood, _ = scaled(scaled_params)
        params = self._rescale_params(scaled_params, 1.0 / scale)
        # Rescaling is a change of variables: each rescaled density dimension of a row adds log(scale).
        log_likelihood = scaled_log_likelihood + np.log(scale) * (row_weights @ self._density_dimensions(compressed))
        self.params_ = pd.Series(params, index=list(self.param_names), name="estimate")
        self.log_likelihood_ = float(log_likelihood)
        self.n_customers_ = float(row_weights.sum())
        self.n_unique_rows_ = int(len(row_weights))
        self.n_iter_ = int(n_iter)
        diagnosis = self._optimum_diagnosis
        self.covariance_, self.standard_errors_ = self._standard_errors(
            params, diagnosis.log_covariance / row_weights.sum()
        )
        self.unidentified_params_ = tuple(n for n, bad in zip(self.param_names, diagnosis.unidentified) if bad)
        self.fit_warning_ = diagnosis.message(type(self).__name__, self.param_names)
        if self.fit_warning_ is not None:
            warnings.warn(self.fit_warning_, FitWarning, stacklevel=2)
        return self

    def _threads(self) -> int:
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return available if self.n_jobs in (None, -1) else int(self.n_jobs)

    def _scale_factor(self, data: Data) -> float:
        """Factor that brings the scaled columns to a maximum of 10 (1 if nothing is scaled)."""
        if not self.scaled_columns:
            return 1.0
        largest = max(np.max(data[self.data_columns.index(c)]) for c in self.scaled_columns)
        return 10.0 / largest if largest > 0 else 1.0

    def _rescale_data(self, data: Data, scale: float) -> Data:
        return tuple(
            column * scale if name in self.scaled_columns else column
            for name, column in zip(self.data_columns, data, strict=True)
        )

    def _rescale_params(self, params: np.ndarray, scale: float) -> np.ndarray:
        out = params.copy()
        for name in self.scaled_params:
            out[self.param_names.index(name)] *= scale
        return out

    def _objective(self, log_params: np.ndarray, likelihood: _ChunkedLikelihood) -> tuple[float, np.ndarray]:
        """Weighted mean negative log-likelihood plus penalty, and its gradient in log-parameters."""
        params = np.exp(log_params)
        log_likelihood, gradient = likelihood(params)
        total_weight = likelihood.total_weight
        value = -log_likelihood / total_weight + self.penalizer * np.sum(params**2)
        gradient = (-gradient / total_weight + 2.0 * self.penalizer * params) * params
        if not (np.isfinite(value) and np.all(np.isfinite(gradient))):
            return np.inf, np.zeros_like(log_params)
        return float(value), gradient

    def _optimise(self, likelihood: _ChunkedLikelihood, scale: float) -> tuple[np.ndarray, np.ndarray, int]:
        """Minimise the objective; return the natural parameters, the log-space Hessian, iterations.

        L-BFGS-B finds the optimum inside the box ``|log theta| <= LOG_PARAM_BOUND`` on the rescaled
        data, so an optimum at infinity (a limit of the model, e.g. no dropout) ends as a clean point
        on the box. One finite-difference Hessian of the analytic gradient then diagnoses the optimum
        (:func:`diagnose_optimum`: parameters on the box, directions in which the likelihood is flat)
        and drives a few Newton (chord) steps in the identified directions that polish it to machine
        precision; scaled by the total weight it gives the standard errors. In log-parameters it is
        the same on rescaled and original data, because rescaling only shifts the scale parameters'
        logarithms. The diagnosis is kept for :meth:`fit` (see :attr:`fit_warning_`).

        Raises
        ------
        ConvergenceError
            Only when the objective is not finite at the best point found, i.e. the likelihood of
            the data cannot be evaluated anywhere the optimiser went (validated data do not do this).
        """
        bound = LOG_PARAM_BOUND
        if self.initial_params is not None:
            start = np.array([self.initial_params[p] for p in self.param_names], dtype=float)
            start = self._rescale_params(start, scale)
        else:
            start = np.ones(len(self.param_names))
        result = optimize.minimize(
            self._objective,
            np.clip(np.log(start), -bound, bound),
            args=(likelihood,),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-bound, bound)] * len(start),
            options={"maxiter": self.max_iter, "ftol": 1e-12, "gtol": 1e-6, "maxcor": 20},
        )
        log_params = result.x
        value, gradient = self._objective(log_params, likelihood)
        if not np.isfinite(value):
            raise ConvergenceError(
                f"{type(self).__name__}: the log-likelihood is not finite at any parameters the optimiser "
                f"tried ({result.message}). Check that the time columns are in a sensible unit (values of "
                "order 1-100, e.g. weeks rather than seconds)."
            )

        def gradient_at(point):
            return self._objective(point, likelihood)[1]

        hessian = self._numeric_hessian(gradient_at, log_params, bound)
        diagnosis = diagnose_optimum(log_params, hessian, bound, likelihood.total_weight)
        log_params, gradient = self._newton_polish(
            log_params, diagnosis.newton_inverse, value, gradient, likelihood, bound
        )
        if not diagnosis.unidentified.any() and not np.all(np.abs(gradient) < 1e-5):
            # A full-rank optimum whose gradient will not vanish: polish once more from a new Hessian.
            hessian = self._numeric_hessian(gradient_at, log_params, bound)
            diagnosis = diagnose_optimum(log_params, hessian, bound, likelihood.total_weight)
            log_params, gradient = self._newton_polish(
                log_params, diagnosis.newton_inverse, self._objective(log_params, likelihood)[0], gradient,
                likelihood, bound,
            )
        self._optimum_diagnosis = diagnosis.with_gradient(gradient, result.nit)
        return np.exp(log_params), hessian, result.nit

    def _newton_polish(self, log_params, inverse_hessian, value, gradient, likelihood, bound: float, steps: int = 10):
        """Safeguarded Newton steps with a fixed inverse Hessian, from the quasi-Newton optimum.

        ``inverse_hessian`` is zero on the parameters at the box and on flat directions (see
        :func:`diagnose_optimum`), so only the identified directions move; steps stay in the box.
        """
        for _ in range(steps):
            if np.max(np.abs(inverse_hessian @ gradient), initial=0.0) == 0.0 or np.max(np.abs(gradient)) < 1e-13:
                break
            candidate = np.clip(log_params - inverse_hessian @ gradient, -bound, bound)
            new_value, new_gradient = self._objective(candidate, likelihood)
            # Near the optimum the objective changes by rounding noise only: accept a step that
            # stays within a few ulps of the value and shrinks the gradient.
            noise = 64 * np.finfo(float).eps * max(1.0, abs(value))
            shrinks = np.max(np.abs(new_gradient)) < np.max(np.abs(gradient))
            if not (new_value < value or (new_value <= value + noise and shrinks)):
                break
            log_params, value, gradient = candidate, new_value, new_gradient
        return log_params, gradient

    @staticmethod
    def _numeric_hessian(
        gradient_function: Callable[[np.ndarray], np.ndarray], point: np.ndarray, bound: float = np.inf
    ) -> np.ndarray:
        """Differences of an analytic gradient (one gradient per parameter), symmetrised.

        Forward differences, backward for a parameter on the upper side of the box. Relative accuracy
        about 1e-6: ample for standard errors and for the fixed-Hessian Newton polish, whose
        convergence rate it sets.
        """
        k = len(point)
        hessian = np.empty((k, k))
        at_point = gradient_function(point)
        for j in range(k):
            step = 1e-6 * max(1.0, abs(point[j]))
            if point[j] + step > bound:
                step = -step
            moved = point.copy()
            moved[j] += step
            hessian[:, j] = (gradient_function(moved) - at_point) / step
        return 0.5 * (hessian + hessian.T)

    def _standard_errors(self, params: np.ndarray, log_covariance: np.ndarray):
        """Covariance and standard errors of the natural parameters from the observed information.

        ``log_covariance`` is that of the log-parameters (the inverse of the total penalised
        negative log-likelihood's Hessian on the identified directions, NaN for the unidentified
        parameters, see :func:`diagnose_optimum`); the delta method maps it to natural parameters:
        ``cov(theta) = D cov(log theta) D``, ``D = diag(theta)``.
        """
        names = list(self.param_names)
        covariance = log_covariance * np.outer(params, params)
        standard_errors = np.sqrt(np.diag(covariance))
        return (
            pd.DataFrame(covariance, index=names, columns=names),
            pd.Series(standard_errors, index=names, name="standard_error"),
        )

    # ----------------------------------------------------------------------------------------------
    # Results
    def param_table(self) -> pd.DataFrame:
        """Estimates with standard errors and 95 % Wald intervals (computed on the log scale)."""
        check_is_fitted(self, "params_")
        estimate = self.params_
        log_se = self.standard_errors_ / estimate
        return pd.DataFrame(
            {
                "estimate": estimate,
                "standard_error": self.standard_errors_,
                "lower_95": estimate * np.exp(-1.959963984540054 * log_se),
                "upper_95": estimate * np.exp(1.959963984540054 * log_se),
            }
        )

    def _params(self) -> np.ndarray:
        check_is_fitted(self, "params_")
        return self.params_.to_numpy(dtype=float)

    def _predict_unique(
        self,
        summary: pd.DataFrame,
        function: Callable[..., np.ndarray],
        columns: Sequence[str] | None = None,
        name: str | None = None,
        deduplicate: bool = True,
    ) -> pd.Series:
        """Evaluate ``function(*columns)`` once per distinct row and broadcast it back.

        ``deduplicate=False`` evaluates row by row, for functions cheaper than finding the distinct
        rows (or for columns that are almost always distinct, such as mean spend).
        """
        values = self._evaluate_unique(summary, lambda *data: {name: function(*data)}, columns, deduplicate)
        return pd.Series(values[name], index=summary.index, name=name)

    def _evaluate_unique(
        self,
        summary: pd.DataFrame,
        function: Callable[..., dict],
        columns: Sequence[str] | None = None,
        deduplicate: bool = True,
    ) -> dict:
        """:meth:`_predict_unique` for a ``function`` that returns several arrays (a dict of them):
        the distinct rows are found once for all. Returns the dict of float arrays, one value per row."""
        check_is_fitted(self, "params_")
        columns = tuple(columns or self.data_columns)
        data = self._extract(summary, columns)
        if not deduplicate:
            return {key: np.asarray(values, dtype=float) for key, values in function(*(data[c] for c in columns)).items()}
        first, inverse = unique_rows([data[c] for c in columns])
        values = function(*(data[c][first] for c in columns))
        return {key: np.asarray(part, dtype=float)[inverse] for key, part in values.items()}


class _ChunkedLikelihood:
    """Compressed rows cut into fixed-size chunks, prepared once, evaluated on threads and summed.

    NumPy and SciPy ufuncs release the GIL, so threads use every core. Chunk boundaries depend on
    the number of rows only, so the summation order, and the estimates, do not depend on the
    number of threads.
    """

    chunk_rows = 1 << 17

    def __init__(self, model: BaseModel, data: Data, weights: np.ndarray, executor: ThreadPoolExecutor):
        self.model = model
        self.executor = executor
        self.total_weight = float(weights.sum())
        slices = [slice(start, start + self.chunk_rows) for start in range(0, len(weights), self.chunk_rows)]
        self.weights = [weights[part] for part in slices]
        self.chunks = self._map(
            lambda part: model._prepare_data(tuple(column[part] for column in data), weights[part]), slices
        )

    def _map(self, function, items):
        def quietly(item):
            with np.errstate(all="ignore"):
                return function(item)

        return [quietly(items[0])] if len(items) == 1 else list(self.executor.map(quietly, items))

    def __call__(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        results = self._map(
            lambda i: self.model._weighted_log_likelihood(params, self.chunks[i], self.weights[i]),
            list(range(len(self.chunks))),
        )
        return float(sum(value for value, _ in results)), np.sum([gradient for _, gradient in results], axis=0)


def rows_error(index: pd.Index, bad: np.ndarray, raw: np.ndarray, column: str, requirement: str) -> DataValidationError:
    positions = np.flatnonzero(bad)
    shown = positions[:_MAX_SHOWN_ROWS]
    examples = ", ".join(f"row {index[i]!r} ({raw[i]!r})" for i in shown)
    more = f" and {len(positions) - len(shown)} more" if len(positions) > len(shown) else ""
    return DataValidationError(
        f"Column {column!r} {requirement}: {len(positions)} row(s) are not, e.g. {examples}{more}.",
        column=column,
        rows=[index[i] for i in shown],
    )


def check_horizon(horizon) -> float:
    """A prediction horizon as a float: finite and non-negative, in the model's time units."""
    value = float(horizon)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"horizon must be a finite non-negative number of time units; got {horizon!r}.")
    return value


def check_btyd_summary(data: dict[str, np.ndarray], index: pd.Index) -> None:
    """Checks shared by the frequency/recency/T models: whole frequencies and 0 <= recency <= T."""
    frequency, recency, T = data["frequency"], data["recency"], data["T"]
    if np.any(bad := (frequency < 0) | (frequency != np.round(frequency))):
        raise rows_error(index, bad, frequency, "frequency", "must be a non-negative whole number")
    if np.any(bad := recency < 0):
        raise rows_error(index, bad, recency, "recency", "must be >= 0")
    if np.any(bad := recency > T * (1 + 1e-12)):
        raise rows_error(index, bad, recency, "recency", "must not exceed T")
    if np.any(bad := (frequency == 0) & (recency != 0)):
        raise rows_error(index, bad, recency, "recency", "must be 0 where frequency is 0")
