"""What an optimum in log-parameters is: interior and identified, at a limit of the model, or flat.

:class:`~crmml.models.base.BaseModel` fits in the box ``|log theta| <= LOG_PARAM_BOUND`` of the rescaled
parameters and diagnoses the optimum from the Hessian of the mean negative log-likelihood
(:func:`diagnose_optimum`). A fit at a limit or along a flat direction is a result, not an error: it
keeps its best parameters, warns with :class:`FitWarning` and has NaN standard errors for the
parameters the data do not identify.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["LOG_PARAM_BOUND", "FitWarning", "OptimumDiagnosis", "diagnose_optimum"]

#: Box on every log-parameter of the rescaled fit: ``1e-8 <= theta <= 1e8`` on data whose largest time
#: (or money) value is 10. A parameter that ends on it is at a limit of the model (e.g. BG/NBD's
#: ``a, b -> inf``: every customer has the same dropout probability); the predictions there are
#: finite and equal to the limit's to within the box's distance from it.
LOG_PARAM_BOUND = float(np.log(1e8))
#: An eigenvalue of the mean negative log-likelihood's Hessian (log-parameters) at most this times
#: ``max(1, largest eigenvalue)`` marks a flat direction (below the finite-difference Hessian's noise).
_FLAT_EIGENVALUE = 1e-8
#: So does a direction whose standard error on the log scale would exceed this: a 95 % interval
#: wider than a factor ``exp(2 * 1.96 * 10) ~ 1e17`` is no estimate (eigenvalue times the total
#: weight below ``1 / 10**2``).
_FLAT_LOG_STANDARD_ERROR = 10.0
#: A parameter whose component along a flat direction exceeds this is not identified.
_FLAT_LOADING = 1e-3
#: Largest gradient component (mean negative log-likelihood, log-parameters) of a converged fit.
_GRADIENT_TOLERANCE = 1e-5


class FitWarning(UserWarning):
    """A maximum-likelihood fit that ended at a boundary or flat optimum, or before full convergence.

    The fit still returns the best parameters found (predictions are finite there) and records the
    same sentence in the model's ``fit_warning_``; the unidentified parameters, listed in
    ``unidentified_params_``, have NaN standard errors. A ``UserWarning``, so it never becomes an
    error under the ``error::RuntimeWarning`` filter the tests use.
    """


@dataclass(frozen=True)
class OptimumDiagnosis:
    """What the Hessian says about an optimum in (box-constrained) log-parameters.

    Attributes
    ----------
    at_lower, at_upper : ndarray of bool
        Parameters on the lower / upper side of the box ``|log theta| <= bound``.
    flat : ndarray of bool
        Free parameters with a component above ``_FLAT_LOADING`` along a flat direction.
    newton_inverse : ndarray
        Inverse of the Hessian on the identified directions of the free parameters (zero on the
        others): the step ``-newton_inverse @ gradient`` moves the identified directions only.
    log_covariance : ndarray
        ``newton_inverse`` with NaN in the rows and columns of unidentified parameters: the
        covariance of the log-parameters, to be divided by the total weight.
    largest_gradient : float
        Largest gradient component in the identified directions (NaN until known).
    n_iter : int
        Optimiser iterations.
    """

    at_lower: np.ndarray
    at_upper: np.ndarray
    flat: np.ndarray
    newton_inverse: np.ndarray
    log_covariance: np.ndarray
    largest_gradient: float = np.nan
    n_iter: int = 0

    @property
    def unidentified(self) -> np.ndarray:
        """Parameters on the box or along a flat direction: their standard errors are NaN."""
        return self.at_lower | self.at_upper | self.flat

    def with_gradient(self, gradient: np.ndarray, n_iter: int) -> OptimumDiagnosis:
        """The diagnosis with the final gradient's largest identified component and the iterations."""
        identified = self.newton_inverse @ np.linalg.pinv(self.newton_inverse) if self.newton_inverse.any() else None
        projected = np.zeros_like(gradient) if identified is None else identified @ gradient
        return replace(self, largest_gradient=float(np.max(np.abs(projected))), n_iter=int(n_iter))

    def message(self, model: str, names: Sequence[str]) -> str | None:
        """One sentence for ``fit_warning_``: ``None`` for an interior, identified, converged optimum."""
        parts = []
        lower = [n for n, b in zip(names, self.at_lower) if b]
        upper = [n for n, b in zip(names, self.at_upper) if b]
        flat = [n for n, b in zip(names, self.flat) if b]
        if lower or upper:
            ends = [f"{n} -> 0" for n in lower] + [f"{n} -> infinity" for n in upper]
            parts.append(f"the optimum is at a limit of the model ({', '.join(ends)}; fitted on the box "
                         f"1e-8..1e8 of the rescaled parameters)")
        if flat:
            parts.append(f"the likelihood is flat in {', '.join(flat)} (not identified by the data)")
        if self.largest_gradient > _GRADIENT_TOLERANCE:
            parts.append(f"the optimiser stopped after {self.n_iter} iterations with a gradient component of "
                         f"{self.largest_gradient:.3g}")
        if not parts:
            return None
        unidentified = [n for n, b in zip(names, self.unidentified) if b]
        tail = f"; {', '.join(unidentified)} have NaN standard errors" if unidentified else ""
        return f"{model}: {'; '.join(parts)}{tail}. The best parameters found are kept and predict finite values."


def diagnose_optimum(log_params: np.ndarray, hessian: np.ndarray, bound: float, total_weight: float) -> OptimumDiagnosis:
    """Classify the parameters at a box-constrained optimum in log-parameters.

    ``hessian`` is that of the mean negative log-likelihood over ``total_weight`` customers.
    Parameters on the box (``|log theta| = bound``) are limits, not estimates. On the others, the
    eigenvectors of the Hessian with eigenvalues at most ``_FLAT_EIGENVALUE * max(1, largest)``, or
    with a log-scale standard error above ``_FLAT_LOG_STANDARD_ERROR`` (or negative) are flat directions; a parameter with a component above
    ``_FLAT_LOADING`` along one is not identified. The inverse on the remaining eigen-directions
    (a pseudo-inverse) is the covariance of the identified combinations, holding the limits fixed.
    """
    k = len(log_params)
    tolerance = bound * (1 - 1e-9)
    at_lower = log_params <= -tolerance
    at_upper = log_params >= tolerance
    free = np.flatnonzero(~(at_lower | at_upper))
    flat = np.zeros(k, dtype=bool)
    inverse = np.zeros((k, k))
    if free.size:
        block = hessian[np.ix_(free, free)]
        if np.all(np.isfinite(block)):
            eigenvalues, vectors = np.linalg.eigh(block)
            threshold = max(_FLAT_EIGENVALUE * max(1.0, float(np.max(eigenvalues))),
                            1.0 / (total_weight * _FLAT_LOG_STANDARD_ERROR**2))
            steep = eigenvalues > threshold
            flat[free] = np.any(np.abs(vectors[:, ~steep]) > _FLAT_LOADING, axis=1)
            inverse[np.ix_(free, free)] = (vectors[:, steep] / eigenvalues[steep]) @ vectors[:, steep].T
        else:
            flat[free] = True
    unidentified = at_lower | at_upper | flat
    covariance = inverse.copy()
    covariance[unidentified, :] = np.nan
    covariance[:, unidentified] = np.nan
    return OptimumDiagnosis(at_lower, at_upper, flat, inverse, covariance)
