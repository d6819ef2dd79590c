"""A model bundle saved by crmml 0.1.0 (commit 0cd36e8) keeps loading and scoring the same.

The fixture in ``tests/fixtures/bundle_0_1_0`` was written by that release: a BG/NBD scorer with a
logistic churn and a Poisson GLM value learner, trained on a simulated base of 600 customers with a
customer table (channel, region, sign-up date, referrer, cost to serve) as of 2025-03-31, and the
scores that release gave at 2025-06-30. Registered models are pickles of :class:`crmml.scorer.Scorer`,
so a refactor that moves or renames a pickled class must keep this test green.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from crmml.registry import load_scorer
from crmml.scorer import SCORE_NUMBERS, Scorer
from crmml.uncertainty import UNCERTAINTY_NUMBERS

FIXTURE = Path(__file__).parent / "fixtures" / "bundle_0_1_0"


def _score(scorer: Scorer) -> pd.DataFrame:
    return scorer.score(pd.read_csv(FIXTURE / "transactions.csv"), as_of="2025-06-30",
                        customers=pd.read_csv(FIXTURE / "customers.csv"))


def test_bundle_of_release_0_1_0_loads_and_scores_as_it_did():
    expected = pd.read_csv(FIXTURE / "expected_scores.csv", keep_default_na=False)
    for scorer in (Scorer.load(FIXTURE), load_scorer(str(FIXTURE))):
        scores = _score(scorer)
        assert scores["customer_id"].tolist() == expected["customer_id"].tolist()
        for name in SCORE_NUMBERS:
            if name in UNCERTAINTY_NUMBERS:  # new since (issue 20): made from the same pickled models
                assert scores[name].notna().all(), name
                continue
            actual = scores[name].to_numpy(dtype=float)
            wanted = pd.to_numeric(expected[name], errors="coerce").to_numpy(dtype=float)
            np.testing.assert_allclose(actual, wanted, rtol=1e-9, atol=1e-12, err_msg=name)
        assert scores["tier"].tolist() == expected["tier"].tolist()
        assert scores["model_version"].unique().tolist() == expected["model_version"].unique().tolist()
