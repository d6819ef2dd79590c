"""Numerically stable special-function pieces shared by the BTYD models."""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = [
    "log1mexp",
    "log_sum_exp_pair",
    "one_minus_euler_term_over",
    "one_minus_pfaff_term",
    "softplus_and_expit",
]


def log_sum_exp_pair(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log(exp(first) + exp(second))`` and the softmax weight of ``second``.

    ``second`` may be ``-inf`` (the term is absent); the weight is then 0.
    """
    with np.errstate(invalid="ignore"):
        total = np.logaddexp(first, second)
        weight = np.exp(second - total)
    return total, np.where(np.isfinite(second), weight, 0.0)


def softplus_and_expit(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log(1 + e^d)`` and its derivative ``expit(d) = 1 / (1 + e^-d)``, from one exponential.

    With ``e = exp(-|d|)`` (never overflows): ``softplus = max(d, 0) + log1p(e)`` and
    ``expit = 1/(1+e)`` for ``d >= 0``, ``e/(1+e)`` otherwise. ``d = -inf`` gives ``(0, 0)``.
    About three times faster than ``np.logaddexp`` and ``scipy.special.expit`` called apart.
    """
    e = np.exp(-np.abs(d))
    softplus = np.maximum(d, 0.0) + np.log1p(e)
    inverse = 1.0 / (1.0 + e)
    return softplus, np.where(d >= 0, inverse, e * inverse)


def log1mexp(x: np.ndarray) -> np.ndarray:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate at both ends (Maechler 2012)."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(x > -np.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def one_minus_euler_term_over(a: np.ndarray, eps: np.ndarray, c: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``[1 - (1 - z)**eps * 2F1(a, eps; c; z)] / eps`` for ``0 <= z < 1``, finite for every ``eps``.

    This is the bracket of the BG/NBD and MBG/NBD conditional expectations after Euler's
    transformation ``2F1(A, B; C; z) = (1 - z)**(C - A - B) * 2F1(C - A, C - B; C; z)``
    (Abramowitz & Stegun 15.3.3), which turns the large, frequency-dependent numerator parameters
    ``r + x`` and ``b + x`` into the small constants ``a`` and ``eps`` and leaves the frequency only in
    ``c``. In that form the series converges quickly and never overflows, where the untransformed
    hypergeometric overflows for large frequencies. Division by ``eps`` is done analytically
    (no cancellation as ``eps -> 0``) with the series ``2F1(a, eps; c; z) - 1 = eps * S`` where
    ``S = sum_{n>=1} (a)_n (1 + eps)_{n-1} z**n / ((c)_n n!)``.
    """
    a, eps, c, z = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (a, eps, c, z)))
    log_one_minus_z = np.log1p(-z)
    small = np.abs(eps) < 1e-6
    out = np.empty(a.shape, dtype=float)
    regular = ~small
    if regular.any():
        term = np.exp(eps[regular] * log_one_minus_z[regular]) * special.hyp2f1(
            a[regular], eps[regular], c[regular], z[regular]
        )
        out[regular] = (1.0 - term) / eps[regular]
    if small.any():
        e, zz, lz = eps[small], z[small], log_one_minus_z[small]
        series = _shifted_series(a[small], e, c[small], zz)
        out[small] = -(lz * special.exprel(e * lz) + series * np.exp(e * lz))
    return out


def _shifted_series(a: np.ndarray, eps: np.ndarray, c: np.ndarray, z: np.ndarray, max_terms: int = 100_000) -> np.ndarray:
    """``sum_{n>=1} (a)_n (1 + eps)_{n-1} z**n / ((c)_n n!)``, summed until every row has converged."""
    term = a * z / c
    total = term.copy()
    active = np.ones(total.shape, dtype=bool)
    for n in range(1, max_terms):
        # Ratios first: (a + n) alone can be ~1e12 and a product of two such factors overflows.
        term = np.where(active, term * ((a + n) / (c + n)) * ((eps + n) / (n + 1)) * z, 0.0)
        total += term
        active &= np.abs(term) > 1e-17 * np.abs(total)
        if not active.any():
            break
    return total


def one_minus_pfaff_term(r: np.ndarray, b: np.ndarray, c: np.ndarray, z: np.ndarray, max_terms: int = 50_000) -> np.ndarray:
    """``1 - (1 - z)**r * 2F1(r, b; c; z)`` for ``0 <= z < 1`` and ``r, b, c > 0``, never overflowing.

    With ``c = A + r + eps`` and ``b = c - A`` this equals ``1 - (1 - z)**eps * 2F1(A, eps; c; z)``, the
    term of :func:`one_minus_euler_term_over`, by Pfaff's and Euler's transformations (Abramowitz &
    Stegun 15.3.3-15.3.5). Where ``eps`` is large the Euler form multiplies an underflowing power
    by an overflowing hypergeometric function (BG/NBD with ``a, b ~ 1e6`` gave ``0 * inf``); here the
    series ``sum_n (r)_n (b)_n z**n / ((c)_n n!)`` has positive terms with ratio at most
    ``(r + n) z / (n + 1)``, so it converges without cancellation, and it is summed in scaled form
    (a running power of ``1e250`` factored out), so neither the sum nor the power overflows. The
    ratio tends to ``z``: for ``z`` within ``1e-4`` of 1 the sum is cut at ``max_terms``, which keeps
    the value finite (the tail left out is below ``z**max_terms`` times the last term's size).
    """
    r, b, c, z = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (r, b, c, z)))
    r, b, c, z = (v.ravel() for v in (r, b, c, z))
    term = np.ones(r.shape)
    total = np.ones(r.shape)
    log_scale = np.zeros(r.shape)
    active = np.flatnonzero(z > 0)
    for n in range(max_terms):
        if active.size == 0:
            break
        ratio = ((b[active] + n) / (c[active] + n)) * ((r[active] + n) / (n + 1)) * z[active]
        term[active] *= ratio
        total[active] += term[active]
        big = total[active] > 1e250
        if big.any():
            rows = active[big]
            term[rows] *= 1e-250
            total[rows] *= 1e-250
            log_scale[rows] += 250 * np.log(10.0)
        # Terms decrease once the ratio is below 1; stop when they no longer change the sum.
        active = active[~((ratio < 1) & (term[active] <= 1e-17 * total[active]))]
    log_term = r * np.log1p(-z) + log_scale + np.log(total)
    return -np.expm1(log_term)
