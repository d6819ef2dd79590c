"""Issue 17, acceptance 3: on a log where the acquisition channel changes buying and leaving, the
covariate BTYD model beats the plain one out of time, on churn ranking and on value ranking, by more
than twice the paired-bootstrap standard error of the difference (the rule a learner meets to ship)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crmml.data.simulate_covariates import simulate_channel_log
from crmml.data.summary import rfm_summary
from crmml.metrics import churn_metrics, value_metrics
from crmml.models import BetaGeo, BetaGeoCovariates, ParetoNBD, ParetoNBDCovariates
from crmml.selection import paired_bootstrap_ses

HOLDOUT_WEEKS = 26.0


def _calibration_and_holdout(kind: str, n: int, seed: int):
    """Calibration summary (weeks) at week 78 of a 104-week log with channels, and holdout counts."""
    sim = simulate_channel_log(n, model=kind, seed=seed)
    cutoff = pd.Timestamp("2024-01-01") + pd.Timedelta(weeks=104 - HOLDOUT_WEEKS)
    log = sim.transactions
    calibration = rfm_summary(log, as_of=cutoff - pd.Timedelta(days=1), freq="D", freq_multiplier=7)
    channel = sim.customers.set_index("customer_id")["channel"]
    calibration = calibration.assign(channel=channel.reindex(calibration.index).to_numpy())
    holdout = log[log["timestamp"] >= cutoff].groupby("customer_id").size()
    return calibration, holdout.reindex(calibration.index, fill_value=0).to_numpy(dtype=np.float64)


@pytest.mark.parametrize("kind, plain_model, covariate_model",
                         [("pareto_nbd", ParetoNBD, ParetoNBDCovariates), ("bg_nbd", BetaGeo, BetaGeoCovariates)])
def test_the_channel_covariate_model_beats_the_plain_one_out_of_time(kind, plain_model, covariate_model):
    calibration, holdout = _calibration_and_holdout(kind, 20_000, seed=31)
    models = {"plain": plain_model().fit(calibration),
              "covariates": covariate_model(["channel"], ["channel"]).fit(calibration)}
    no_purchase = {name: m.probability_no_purchase(calibration, HOLDOUT_WEEKS).to_numpy() for name, m in models.items()}
    purchases = {name: m.expected_purchases(calibration, HOLDOUT_WEEKS).to_numpy() for name, m in models.items()}
    churned = (holdout == 0).astype(np.float64)
    assert 0.2 < churned.mean() < 0.9  # both classes, so the ranking means something
    auc = {name: churn_metrics(churned, p)["roc_auc"] for name, p in no_purchase.items()}
    gini = {name: value_metrics(holdout, e)["normalized_gini"] for name, e in purchases.items()}
    auc_se = paired_bootstrap_ses(churned, no_purchase, ["plain"], "roc_auc")["plain"]["covariates"]
    gini_se = paired_bootstrap_ses(holdout, purchases, ["plain"], "normalized_gini")["plain"]["covariates"]
    assert auc["covariates"] - auc["plain"] > 2 * auc_se > 0, (auc, auc_se)
    assert gini["covariates"] - gini["plain"] > 2 * gini_se > 0, (gini, gini_se)
    # Same totals to within a few per cent: the gain is in the ranking, not a shifted level.
    totals = {name: e.sum() for name, e in purchases.items()}
    assert totals["covariates"] == pytest.approx(totals["plain"], rel=0.03)
