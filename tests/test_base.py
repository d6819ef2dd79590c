"""Shared machinery of crmml.models.base: distinct rows and prediction broadcasting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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


def test_log_likelihood_is_in_the_data_units_for_every_model():
    """log_likelihood_ comes from the rescaled fit plus the change of variables; it must equal a
    direct evaluation of the likelihood at params_ on the original data."""
    from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value, load_donations

    from crmml.models import BetaGeo, BetaGeoBetaBinom, GammaGamma, ModifiedBetaGeo, ParetoNBD

    cdnow = load_cdnow_summary_data_with_monetary_value().astype(float)
    donations = load_donations().rename(columns={"periods": "n_periods"})
    cases = [(BetaGeo(), cdnow, None), (ModifiedBetaGeo(), cdnow, None), (ParetoNBD(), cdnow, None),
             (GammaGamma(), cdnow[cdnow["frequency"] > 0], None),
             (BetaGeoBetaBinom(), donations, donations["weights"].to_numpy(dtype=float))]
    for model, data, weights in cases:
        model.fit(data, sample_weight=weights)
        columns = tuple(data[c].to_numpy(dtype=float) for c in model.data_columns)
        w = np.ones(len(data)) if weights is None else weights
        direct, _ = model._weighted_log_likelihood(model.params_.to_numpy(), model._prepare_data(columns, w), w)
        assert model.log_likelihood_ == pytest.approx(direct, rel=1e-11), type(model).__name__
