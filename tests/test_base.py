"""Shared machinery of crmml.models.base: distinct rows and prediction broadcasting."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crmml.models.base import unique_rows


def test_unique_rows_agrees_with_numpy_unique():
    rng = np.random.default_rng(0)
    columns = [rng.integers(0, 5, 50_000).astype(float), rng.integers(0, 40, 50_000) / 7.0, rng.integers(0, 3, 50_000) * 1.5]
    first, inverse = unique_rows(columns)
    stacked = np.column_stack(columns)
    distinct, index = np.unique(stacked, axis=0, return_index=True)
    assert len(first) == len(distinct)
    np.testing.assert_array_equal(np.sort(first), np.sort(index))  # first occurrences
    np.testing.assert_array_equal(stacked[first][inverse], stacked)  # broadcasting back restores every row
    assert np.all(np.diff(first) > 0)  # in order of first appearance


def test_unique_rows_handles_string_and_single_columns():
    first, inverse = unique_rows([pd.Series(["b", "a", "b", "c", "a"]).to_numpy()])
    np.testing.assert_array_equal(first, [0, 1, 3])
    np.testing.assert_array_equal(inverse, [0, 1, 0, 2, 1])
