"""Level structure of compressed frequency/recency/T data, shared by the BTYD likelihoods.

After compression, a million customers become a few hundred thousand distinct ``(x, t_x, T)`` rows,
but each column on its own takes only a few hundred or thousand distinct values (whole days or
weeks). Terms of a likelihood that depend on one column only are evaluated once per level, and
their weighted sums are dot products with the per-level total weights, so only the terms that mix
the columns are computed row by row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Levels", "RFMLevels", "levels_of"]


@dataclass(frozen=True)
class Levels:
    """Distinct values of one column, each row's position among them, and per-level weights."""

    values: np.ndarray
    index: np.ndarray
    weight: np.ndarray

    def total(self, per_row: np.ndarray) -> np.ndarray:
        """Per-level sums of a per-row quantity (e.g. weight times frequency)."""
        return np.bincount(self.index, weights=per_row, minlength=len(self.values))


def levels_of(column: np.ndarray, weights: np.ndarray) -> Levels:
    values, index = np.unique(column, return_inverse=True)
    index = index.ravel()
    return Levels(values, index, np.bincount(index, weights=weights, minlength=len(values)))


@dataclass(frozen=True)
class RFMLevels:
    """Compressed ``(frequency, recency, T)`` rows with their weights and per-column levels."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    weights: np.ndarray
    x_levels: Levels
    t_x_levels: Levels
    T_levels: Levels

    @classmethod
    def from_arrays(cls, x, t_x, T, weights=None) -> RFMLevels:
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        weights = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=float)
        return cls(x, t_x, T, weights, levels_of(x, weights), levels_of(t_x, weights), levels_of(T, weights))

    @property
    def total_weight(self) -> float:
        return float(self.weights.sum())
