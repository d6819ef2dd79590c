"""Maximum likelihood and predictions shared by the BTYD models with static covariates.

A covariate model is a plain BTYD model (:class:`~crmml.models.ParetoNBD`, :class:`~crmml.models.BetaGeo`,
:class:`~crmml.models.ModifiedBetaGeo`) whose mixing-distribution parameters differ by customer:
one or more of them is multiplied by ``exp(sign * gamma' z)`` for the customer's attributes ``z``
(Fader & Hardie 2007, "Incorporating Time-Invariant Covariates into the Pareto/NBD and BG/NBD
Models"). Given ``z``, a customer's likelihood and predictions are the plain model's at those
parameters, so everything here reuses the plain model's pure functions:

* rows are compressed on ``(frequency, recency, T, z)`` and grouped by distinct ``z`` (customer
  attributes such as the acquisition channel take few values); each group's likelihood is the plain
  model's at the group's parameters, with the plain model's per-level structures, and the gradient
  follows by the chain rule, ``dL/dtheta = dL/dparams_g . dparams_g/dtheta``;
* predictions evaluate the plain model once per group.

The optimiser works on ``(log r, log alpha, ..., gamma)``: the positive baseline parameters on the log
scale as in :class:`~crmml.models.base.BaseModel`, the coefficients as they are; the L2 penalty
``coefficient_penalizer * sum(gamma**2)`` applies to the coefficients of the standardised design
only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy import optimize
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from crmml.errors import ConvergenceError, DataValidationError
from crmml.models.base import BaseModel, _ChunkedLikelihood, check_btyd_summary, unique_rows
from crmml.models.btyd import TransactionModel
from crmml.models.covariates import CovariateDesign, effects_table

__all__ = ["CovariateTransactionModel"]

#: Above this many distinct covariate vectors the grouped likelihood gets slow: warn.
_MANY_GROUPS = 2_000


class CovariateTransactionModel(TransactionModel):
    """A BTYD model whose parameters depend on static customer attributes (see the module docstring).

    Subclasses set :attr:`plain_model` and :attr:`blocks`.

    Parameters
    ----------
    purchase_covariates, dropout_covariates : sequence of str
        Summary columns (customer attributes) that enter the purchase and the dropout process.
    reference_levels : dict, optional
        Reference level per categorical attribute (default: its most frequent level).
    penalizer : float, default 0.0
        L2 penalty on the baseline parameters, as in the plain model.
    coefficient_penalizer : float, default 0.0
        L2 penalty on the coefficients (standardised design).
    initial_params, max_iter, n_jobs
        As in :class:`~crmml.models.base.BaseModel`; ``initial_params`` gives the baseline
        parameters (coefficients start at 0).

    Attributes
    ----------
    params_ : Series
        Baseline parameters (a customer at every reference level and at the mean of every numeric
        attribute), then the coefficients, named ``"{block}:{column}"`` and per unit of the attribute.
    standard_errors_, covariance_ : Series, DataFrame
        From the observed information at the optimum (NaN, with a warning, where it is singular).
    design_ : CovariateDesign
        The coding of the attributes.
    log_likelihood_ : float
        Total log-likelihood in the data's own time units.
    n_groups_ : int
        Distinct covariate vectors in the fitting data.
    """

    #: The model without covariates whose pure functions give each group's likelihood and predictions.
    plain_model: ClassVar[type[BaseModel]]
    #: ``(block, parameter, sign, process)``: coefficients ``block`` on the columns of ``process``
    #: ("purchase" or "dropout") multiply ``parameter`` by ``exp(sign * gamma' z)``.
    blocks: ClassVar[tuple[tuple[str, str, float, str], ...]]

    def __init__(self, purchase_covariates: Sequence[str] = (), dropout_covariates: Sequence[str] = (), *,
                 reference_levels: dict | None = None, penalizer: float = 0.0, coefficient_penalizer: float = 0.0,
                 initial_params: dict | None = None, max_iter: int = 2000, n_jobs: int | None = None):
        super().__init__(penalizer, initial_params=initial_params, max_iter=max_iter, n_jobs=n_jobs)
        self.purchase_covariates = purchase_covariates
        self.dropout_covariates = dropout_covariates
        self.reference_levels = reference_levels
        self.coefficient_penalizer = coefficient_penalizer

    # ----------------------------------------------------------------------------------------------
    # Parameters per group
    def _check_data(self, data, index):
        check_btyd_summary(data, index)

    def _coefficient_columns(self) -> list[np.ndarray]:
        """Per block, the indices of its design columns."""
        design = self.design_
        return [design.purchase_index_ if process == "purchase" else design.dropout_index_
                for _, _, _, process in self.blocks]

    def _coefficient_names(self) -> list[str]:
        return [f"{block}:{self.design_.columns_[c]}"
                for (block, *_), columns in zip(self.blocks, self._coefficient_columns(), strict=True) for c in columns]

    def _group_params(self, theta: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The plain model's parameters for covariates ``z`` and their Jacobian in ``theta``.

        ``theta`` is the baseline parameters followed by the coefficients of each block (on the
        standardised design). Returns ``params`` of shape ``(k,)`` and ``d params / d theta`` of shape
        ``(k, len(theta))``.
        """
        k = len(self.param_names)
        params = np.array(theta[:k], dtype=float)
        jacobian = np.zeros((k, len(theta)))
        jacobian[np.arange(k), np.arange(k)] = 1.0
        position = k
        for (_, name, sign, _), columns in zip(self.blocks, self._coefficient_columns(), strict=True):
            j = self.param_names.index(name)
            size = len(columns)
            factor = np.exp(sign * (theta[position : position + size] @ z[columns]))
            params[j] *= factor
            jacobian[j, j] = factor
            jacobian[j, position : position + size] = sign * params[j] * z[columns]
            position += size
        return params, jacobian

    def _plain_at(self, params: np.ndarray) -> BaseModel:
        """The plain model, 'fitted' at ``params`` (a group's parameters)."""
        plain = self.plain_model()
        plain.params_ = pd.Series(params, index=list(self.param_names), name="estimate")
        return plain

    # ----------------------------------------------------------------------------------------------
    # Likelihood, as BaseModel's hooks see it: the data are (x, t_x, T, group) sorted by group.
    def _prepare_data(self, data, weights):
        x, t_x, T, group = data
        plain = self.plain_model()
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        ends = np.r_[starts[1:], len(group)]
        return [(int(group[s]), plain._prepare_data((x[s:e], t_x[s:e], T[s:e]), weights[s:e]), weights[s:e])
                for s, e in zip(starts, ends, strict=True)]

    def _weighted_log_likelihood(self, params, data, weights):
        plain = self.plain_model()
        total, gradient = 0.0, np.zeros(len(params))
        for group, prepared, group_weights in data:
            group_params, jacobian = self._group_params(params, self._group_z[group])
            value, group_gradient = plain._weighted_log_likelihood(group_params, prepared, group_weights)
            total += value
            gradient += group_gradient @ jacobian
        return total, gradient

    def log_likelihood_and_gradient(self, theta: np.ndarray, summary: pd.DataFrame, sample_weight=None):
        """Total log-likelihood and gradient at ``theta`` (baseline, then coefficients per original
        unit) on ``summary``, in its own units: for checking gradients and comparisons."""
        check_is_fitted(self, "design_")
        data = self._extract(summary)
        weights = self._check_weights(sample_weight, len(summary))
        z, _ = self.design_.transform(summary)
        group_z, group = _groups(z)
        order = np.argsort(group, kind="stable")
        columns = tuple(data[c][order] for c in self.data_columns) + (group[order].astype(float),)
        scale = self._standardised_scale()
        fitted_groups = getattr(self, "_group_z", None)
        self._group_z = group_z  # what _weighted_log_likelihood reads; the fitted one is put back below
        try:
            value, gradient = self._weighted_log_likelihood(np.asarray(theta, dtype=float) * scale,
                                                            self._prepare_data(columns, weights[order]), weights[order])
        finally:
            self._group_z = fitted_groups
        return value, gradient * scale

    def _standardised_scale(self) -> np.ndarray:
        """Per entry of ``theta``: 1 for the baseline, the attribute's scale for a coefficient."""
        scales = [self.design_.scales_[columns] for columns in self._coefficient_columns()]
        return np.concatenate([np.ones(len(self.param_names)), *scales])

    # ----------------------------------------------------------------------------------------------
    # Fitting
    def fit(self, summary: pd.DataFrame, y=None, *, sample_weight=None):
        """Fit by maximum likelihood on customers with their attributes.

        Parameters
        ----------
        summary : DataFrame
            ``frequency``, ``recency``, ``T`` and the covariate columns, one row per customer (or per
            group of identical customers, with ``sample_weight``).
        y : ignored
        sample_weight : array-like, optional
            Customers per row; weights are equivalent to duplicated rows.

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        if not (isinstance(self.coefficient_penalizer, (int, float)) and self.coefficient_penalizer >= 0):
            raise ValueError(f"coefficient_penalizer must be a float in [0, inf); got {self.coefficient_penalizer!r}.")
        data = self._extract(summary)
        weights = self._check_weights(sample_weight, len(summary))
        self.design_ = CovariateDesign(self.purchase_covariates, self.dropout_covariates,
                                       self.reference_levels).fit(summary, weights)
        z, _ = self.design_.transform(summary)
        columns = [data[c] for c in self.data_columns]
        first, inverse = unique_rows([*columns, *z.T])
        row_weights = np.bincount(inverse, weights=weights, minlength=len(first))
        keep = row_weights > 0
        if not keep.any():
            raise DataValidationError(f"{type(self).__name__}: no rows with positive weight to fit on.")
        rows, row_weights = first[keep], row_weights[keep]
        self._group_z, group = _groups(z[rows])
        if len(self._group_z) > _MANY_GROUPS:
            warnings.warn(f"{len(self._group_z):,} distinct covariate vectors: the likelihood is evaluated per "
                          "vector, so fitting is slow; bin numeric attributes with many values.", stacklevel=2)
        order = np.argsort(group, kind="stable")
        rows, row_weights, group = rows[order], row_weights[order], group[order]
        x, t_x, T = (column[rows] for column in columns)
        scale = self._scale_factor((x, t_x, T))
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=self._threads()) as executor:
            likelihood = _ChunkedLikelihood(self, (x, t_x * scale, T * scale, group.astype(float)), row_weights, executor)
            theta, hessian, n_iter = self._optimise(likelihood, scale)
            scaled_log_likelihood, _ = likelihood(theta)
        theta = self._rescale_params(theta, 1.0 / scale)
        to_original = 1.0 / self._standardised_scale()
        names = list(self.param_names) + self._coefficient_names()
        self.params_ = pd.Series(theta * to_original, index=names, name="estimate")
        self.log_likelihood_ = float(scaled_log_likelihood + np.log(scale) * (row_weights @ x))
        self.n_customers_ = float(row_weights.sum())
        self.n_unique_rows_ = int(len(row_weights))
        self.n_groups_ = int(len(self._group_z))
        self.n_iter_ = int(n_iter)
        k = len(self.param_names)
        derivative = np.concatenate([theta[:k], to_original[k:]])  # d natural / d optimiser variable
        with np.errstate(invalid="ignore"):
            covariance = np.linalg.inv(hessian * row_weights.sum()) * np.outer(derivative, derivative)
        self.covariance_ = pd.DataFrame(covariance, index=names, columns=names)
        self.standard_errors_ = pd.Series(np.sqrt(np.diag(covariance)), index=names, name="standard_error")
        return self

    def _objective(self, point: np.ndarray, likelihood) -> tuple[float, np.ndarray]:
        """Weighted mean negative log-likelihood plus penalties in ``(log baseline, coefficients)``."""
        k = len(self.param_names)
        baseline = np.exp(point[:k])
        coefficients = point[k:]
        log_likelihood, gradient = likelihood(np.concatenate([baseline, coefficients]))
        total_weight = likelihood.total_weight
        value = (-log_likelihood / total_weight + self.penalizer * np.sum(baseline**2)
                 + self.coefficient_penalizer * np.sum(coefficients**2))
        gradient = np.concatenate([
            (-gradient[:k] / total_weight + 2.0 * self.penalizer * baseline) * baseline,
            -gradient[k:] / total_weight + 2.0 * self.coefficient_penalizer * coefficients,
        ])
        if not (np.isfinite(value) and np.all(np.isfinite(gradient))):
            return np.inf, np.zeros_like(point)
        return float(value), gradient

    def _optimise(self, likelihood, scale: float) -> tuple[np.ndarray, np.ndarray, int]:
        """:meth:`BaseModel._optimise` with unconstrained coefficients: L-BFGS-B from the baseline
        start and zero coefficients, a finite-difference Hessian, Newton polish. A singular Hessian
        (an effect not identified, e.g. a level with no repeat buyers) is a warning and NaN errors."""
        k = len(self.param_names)
        if self.initial_params is not None:
            start = self._rescale_params(np.array([self.initial_params[p] for p in self.param_names], dtype=float), scale)
        else:
            start = np.ones(k)
        n_coefficients = sum(len(c) for c in self._coefficient_columns())
        result = optimize.minimize(
            self._objective, np.r_[np.log(start), np.zeros(n_coefficients)], args=(likelihood,), jac=True,
            method="L-BFGS-B", options={"maxiter": self.max_iter, "ftol": 1e-12, "gtol": 1e-6, "maxcor": 20},
        )
        point = result.x
        value, gradient = self._objective(point, likelihood)
        if not np.isfinite(value):
            raise ConvergenceError(f"{type(self).__name__}: the log-likelihood is not finite at the optimiser's "
                                   f"end point after {result.nit} iterations ({result.message}); check the time unit.")
        hessian = self._hessian(point, likelihood)
        eigenvalues = np.linalg.eigvalsh(hessian) if np.all(np.isfinite(hessian)) else np.array([np.nan])
        if not np.min(eigenvalues) > 1e-8:
            warnings.warn(f"{type(self).__name__}: the likelihood is flat at the optimum (an effect is not "
                          "identified); standard errors are NaN.", stacklevel=3)
            return self._natural(point), np.full_like(hessian, np.nan), result.nit
        point, gradient = self._newton_polish(point, np.linalg.inv(hessian), value, gradient, likelihood, np.inf)
        if not np.all(np.abs(gradient) < 1e-5):
            warnings.warn(f"{type(self).__name__}: stopped with gradient {np.max(np.abs(gradient)):.3g} after "
                          f"{result.nit} iterations; the best parameters found are kept.", stacklevel=3)
        return self._natural(point), hessian, result.nit

    def _hessian(self, point: np.ndarray, likelihood) -> np.ndarray:
        """Hessian of :meth:`_objective` at ``point`` from each group's Hessian in its own parameters.

        ``L(theta) = sum_g l_g(p_g(theta))``, so ``d2L = sum_g [J_g' H_g J_g + sum_j G_gj d2p_gj]``
        with ``G_g``, ``H_g`` the gradient and Hessian of ``l_g`` in the group's ``k`` plain
        parameters and ``p_gj = theta_j exp(sign gamma' z_g)`` (second derivatives in closed form).
        ``H_g`` is a forward difference of the analytic ``G_g`` (relative step 1e-6, as
        :meth:`BaseModel._numeric_hessian`), for every group at once: ``k + 1`` passes over the data
        whatever the number of coefficients, where differencing the total gradient takes
        ``len(theta) + 1``. The result is mapped to the optimiser's variables (log baseline).
        """
        k = len(self.param_names)
        theta = self._natural(point)
        size = len(theta)
        n_groups = len(self._group_z)
        params, jacobians = zip(*(self._group_params(theta, z) for z in self._group_z), strict=True)
        params, jacobians = np.array(params), np.array(jacobians)

        def group_gradients(at: np.ndarray) -> np.ndarray:
            parts = likelihood._map(lambda i: self._group_gradients(at, likelihood.chunks[i], likelihood.weights[i]),
                                    list(range(len(likelihood.chunks))))
            return np.sum(parts, axis=0)

        gradients = group_gradients(params)
        group_hessians = np.empty((n_groups, k, k))
        for j in range(k):
            step = 1e-6 * params[:, j]
            moved = params.copy()
            moved[:, j] += step
            group_hessians[:, :, j] = (group_gradients(moved) - gradients) / step[:, None]
        group_hessians = 0.5 * (group_hessians + group_hessians.transpose(0, 2, 1))
        hessian = np.einsum("gia,gij,gjb->ab", jacobians, group_hessians, jacobians)
        position = k
        for (_, name, sign, _), columns in zip(self.blocks, self._coefficient_columns(), strict=True):
            j = self.param_names.index(name)
            block = slice(position, position + len(columns))
            z = self._group_z[:, columns]
            weighted = gradients[:, j] * params[:, j]  # G_gj p_gj
            cross = sign * (weighted / theta[j]) @ z  # d2p / dtheta_j dgamma = sign (p / theta_j) z
            hessian[j, block] += cross
            hessian[block, j] += cross
            hessian[block, block] += sign**2 * np.einsum("g,ga,gb->ab", weighted, z, z)
            position += len(columns)
        gradient = np.einsum("gia,gi->a", jacobians, gradients)
        total_weight = likelihood.total_weight
        penalty = np.r_[np.full(k, self.penalizer), np.full(size - k, self.coefficient_penalizer)]
        objective_hessian = -hessian / total_weight + np.diag(2.0 * penalty)
        objective_gradient = -gradient / total_weight + 2.0 * penalty * theta
        derivative = np.r_[theta[:k], np.ones(size - k)]  # d theta / d point
        out = objective_hessian * np.outer(derivative, derivative)
        out[np.arange(k), np.arange(k)] += objective_gradient[:k] * theta[:k]
        return 0.5 * (out + out.T)

    def _group_gradients(self, params: np.ndarray, chunk, weights) -> np.ndarray:
        """Per group, the gradient of its weighted log-likelihood in its plain parameters ``params[g]``."""
        plain = self.plain_model()
        out = np.zeros(params.shape)
        for group, prepared, group_weights in chunk:
            out[group] += plain._weighted_log_likelihood(params[group], prepared, group_weights)[1]
        return out

    def _natural(self, point: np.ndarray) -> np.ndarray:
        k = len(self.param_names)
        return np.concatenate([np.exp(point[:k]), point[k:]])

    # ----------------------------------------------------------------------------------------------
    # Results
    def _standardised_theta(self) -> np.ndarray:
        check_is_fitted(self, "params_")
        return self.params_.to_numpy(dtype=float) * self._standardised_scale()

    def _effects(self) -> list[tuple[str, str, int, np.ndarray]]:
        """``(process, effect, column, combination)`` rows of :meth:`param_table` (see
        :func:`~crmml.models.covariates.effects_table`); by default one per coefficient."""
        out, position = [], len(self.param_names)
        size = len(self.params_)
        for (block, name, sign, _), columns in zip(self.blocks, self._coefficient_columns(), strict=True):
            for column in columns:
                combination = np.zeros(size)
                combination[position] = 1.0
                out.append((block, self._effect_names[block], int(column), combination))
                position += 1
        return out

    def param_table(self) -> pd.DataFrame:
        """Baseline parameters, then the covariate effects with rate ratios and 95 % intervals.

        The baseline rows are those of the plain model's table (``estimate``, ``standard_error``,
        ``lower_95``, ``upper_95``, intervals on the log scale), ``process`` "baseline". Each effect
        row gives its coefficient per unit of the attribute (a level against the reference level)
        with a Wald interval, and ``ratio = exp(coefficient)`` with ``ratio_lower_95`` and
        ``ratio_upper_95``: the factor by which it multiplies the quantity named in ``effect``.
        """
        check_is_fitted(self, "params_")
        k = len(self.param_names)
        estimate = self.params_.iloc[:k]
        errors = self.standard_errors_.iloc[:k]
        log_error = errors / estimate
        baseline = pd.DataFrame({
            "process": "baseline", "effect": "parameter", "estimate": estimate, "standard_error": errors,
            "lower_95": estimate * np.exp(-1.959963984540054 * log_error),
            "upper_95": estimate * np.exp(1.959963984540054 * log_error),
        })
        effects = effects_table(self.design_, self._effects(), self.params_.to_numpy(dtype=float),
                                self.covariance_.to_numpy(dtype=float))
        return pd.concat([baseline, effects]) if len(effects) else baseline

    # ----------------------------------------------------------------------------------------------
    # Predictions: the plain model's, once per distinct covariate vector
    def covariate_fallback(self, summary: pd.DataFrame) -> pd.DataFrame:
        """Per customer and attribute, True where a missing value or a category unseen in fitting
        was scored at the reference level (a numeric attribute: at the fitting mean)."""
        check_is_fitted(self, "design_")
        return self.design_.transform(summary)[1]

    def _per_group(self, summary: pd.DataFrame, compute) -> dict:
        """``compute(plain_model, rows)`` per distinct covariate vector, scattered back to the rows."""
        theta = self._standardised_theta()
        if isinstance(summary, pd.DataFrame) and len(summary) == 0:
            raise DataValidationError(f"{type(self).__name__}: the summary frame has no rows.")
        z, _ = self.design_.transform(summary)
        group_z, group = _groups(z)
        frame = summary[list(self.data_columns)] if set(self.data_columns) <= set(summary.columns) else summary
        order = np.argsort(group, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(group, minlength=len(group_z)))]
        out: dict = {}
        for g in range(len(group_z)):
            rows = order[bounds[g] : bounds[g + 1]]
            values = compute(self._plain_at(self._group_params(theta, group_z[g])[0]), frame.iloc[rows])
            for key, part in values.items():
                if key not in out:
                    out[key] = np.empty(len(summary))
                out[key][rows] = np.asarray(part, dtype=float)
        return out

    def _series(self, summary, name, compute) -> pd.Series:
        values = self._per_group(summary, lambda plain, rows: {name: compute(plain, rows).to_numpy(dtype=float)})
        return pd.Series(values[name], index=summary.index, name=name)

    def probability_alive(self, summary: pd.DataFrame) -> pd.Series:
        """P(alive at T) per customer, at her attributes' parameters."""
        return self._series(summary, "p_alive", lambda plain, rows: plain.probability_alive(rows))

    def expected_purchases(self, summary: pd.DataFrame, horizon: float) -> pd.Series:
        """Expected purchases in the next ``horizon`` time units, at each customer's parameters."""
        return self._series(summary, "expected_purchases", lambda plain, rows: plain.expected_purchases(rows, horizon))

    def probability_no_purchase(self, summary: pd.DataFrame, horizon: float) -> pd.Series:
        """P(no purchase in the next ``horizon`` time units), at each customer's parameters."""
        return self._series(summary, "p_no_purchase",
                            lambda plain, rows: plain.probability_no_purchase(rows, horizon))

    def expected_purchases_sum(self, summary: pd.DataFrame, horizons, coefficients) -> pd.Series:
        """``sum_k coefficients[k] * E[X(horizons[k]) | history]`` per customer."""
        return self._series(summary, "expected_purchases_sum",
                            lambda plain, rows: plain.expected_purchases_sum(rows, horizons, coefficients))

    def predict_horizons(self, summary: pd.DataFrame, horizons=(), *, no_purchase: bool = True,
                         sums: dict | None = None) -> dict:
        """The plain model's :meth:`~crmml.models.btyd.AliveMixtureModel.predict_horizons` at each
        customer's parameters, plus ``"covariate_fallback"``: 1.0 where some attribute was scored at
        its reference level (see :meth:`covariate_fallback`), else 0.0."""
        out = self._per_group(summary, lambda plain, rows: plain.predict_horizons(
            rows, horizons, no_purchase=no_purchase, sums=sums))
        out["covariate_fallback"] = self.covariate_fallback(summary).any(axis=1).to_numpy(dtype=float)
        return out

    def unconditional_expected_purchases(self, t) -> np.ndarray:
        """E[X(t)] for a new customer at the baseline (reference levels, numeric means)."""
        k = len(self.param_names)
        return self._plain_at(self._standardised_theta()[:k]).unconditional_expected_purchases(t)


def _groups(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``z`` and each row's group number (one group when there are no columns)."""
    if z.shape[1] == 0:
        return np.zeros((1, 0)), np.zeros(len(z), dtype=np.int64)
    first, inverse = unique_rows(list(z.T))
    return z[first], inverse
