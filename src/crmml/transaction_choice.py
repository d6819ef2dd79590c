"""Whether the transaction model takes the customers' attributes: the covariate BTYD model, chosen out of time.

The covariate BTYD model (Fader & Hardie 2007, "Incorporating Time-Invariant Covariates into the
Pareto/NBD and BG/NBD Models"; :mod:`crmml.models.covariate_btyd`) is a candidate transaction model
beside the plain one. :func:`choose_transaction_covariates` judges it by the rule every learner meets
(:mod:`crmml.selection`): both models are fitted on the data up to one out-of-time cutoff,
``end - window_days``, and the customers known there (a purchase on or before it) are ranked by each:

* churn: ROC AUC of P(no purchase in the window) against "no purchase in the window";
* value: normalized Gini of E[X(window)] against the purchases in the window.

The noise of each difference (covariate minus plain) is its paired Poisson-bootstrap standard error
(:func:`crmml.selection.paired_bootstrap_ses`). The covariate model ships only when it beats the plain
one on some metric by more than ``max(2 SE, floor)`` (the floors of :data:`crmml.selection.MIN_MARGIN`)
and is worse on none by more than 2 SE; otherwise, or when its fit fails or warns (an effect not
identified), the plain model ships. :class:`TransactionChoice` records the numbers and the reason.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from crmml.errors import ConvergenceError, DataValidationError
from crmml.features import model_columns
from crmml.labels import outcome_labels
from crmml.metrics import churn_metrics, value_metrics
from crmml.selection import MIN_MARGIN, Z_MARGIN, paired_bootstrap_ses
from crmml.timetravel import Snapshots

__all__ = ["TransactionChoice", "choose_transaction_covariates"]

#: The metrics judged, with their task (for the margin floor).
_METRICS = {"churn_roc_auc": "churn", "purchases_normalized_gini": "value"}


@dataclass(frozen=True)
class TransactionChoice:
    """Whether the covariate transaction model ships, and why.

    Attributes
    ----------
    covariates : tuple of str
        The attributes the candidate reads.
    shipped : bool
        True: the transaction model is the covariate model.
    reason : str
        One sentence for the record.
    cutoff : str or None
        The out-of-time cutoff (both models fitted on data up to it); None when none fits.
    window_days : int
        The judged window after the cutoff.
    n_customers : int
        Customers judged (known at the cutoff).
    metrics : dict
        ``{"plain": {...}, "covariates": {...}}``: ``churn_roc_auc`` and ``purchases_normalized_gini``.
    difference, standard_error, z : dict
        Per metric: covariate minus plain, its paired-bootstrap standard error, their ratio.
    fit_warning : str or None
        What the covariate fit at the cutoff warned.
    """

    covariates: tuple[str, ...]
    shipped: bool
    reason: str
    cutoff: str | None = None
    window_days: int = 0
    n_customers: int = 0
    metrics: dict = field(default_factory=dict)
    difference: dict = field(default_factory=dict)
    standard_error: dict = field(default_factory=dict)
    z: dict = field(default_factory=dict)
    fit_warning: str | None = None

    def to_dict(self) -> dict:
        record = asdict(self)
        record["covariates"] = list(self.covariates)
        return record


def choose_transaction_covariates(plain: Snapshots, with_covariates: Snapshots, end: pd.Timestamp, *,
                                  window_days: int, min_customers: int = 200, seed: int = 0) -> TransactionChoice:
    """Judge the covariate transaction model against the plain one on one out-of-time window.

    Parameters
    ----------
    plain, with_covariates : Snapshots
        The same data, the transaction model fitted without and with the covariates
        (:meth:`crmml.timetravel.Snapshots.with_covariates`); the fits at the cutoff are cached there
        for the learners' validation to reuse.
    end : pandas.Timestamp
        The last day with labels (the training as-of date, or the log's last day before it).
    window_days : int
        The judged window (the churn window): the cutoff is ``end - window_days``.
    min_customers : int
        Fewer customers known at the cutoff: no judgement, the plain model ships.
    seed : int
        Seed of the bootstrap.
    """
    covariates = tuple(with_covariates.covariates)
    cutoff = end - pd.Timedelta(days=window_days)
    log = plain.log
    if cutoff < log.first_timestamp.normalize():
        return TransactionChoice(covariates, False, f"plain model ships: the out-of-time cutoff {cutoff.date()} "
                                 f"({window_days} days before {end.date()}) is before the first transaction",
                                 window_days=window_days)
    features = plain.base_features(cutoff)
    known = features[~features["no_purchase_history"].to_numpy(dtype=bool)]
    if len(known) < min_customers:
        return TransactionChoice(covariates, False, f"plain model ships: only {len(known)} customers known at the "
                                 f"out-of-time cutoff {cutoff.date()} (at least {min_customers} needed)",
                                 str(cutoff.date()), window_days, len(known))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            candidate = with_covariates.models(cutoff)
    except (ConvergenceError, DataValidationError, ValueError, np.linalg.LinAlgError) as exc:
        return TransactionChoice(covariates, False, f"plain model ships: the covariate fit at {cutoff.date()} "
                                 f"failed ({exc})", str(cutoff.date()), window_days, len(known))
    fit_warning = candidate.fit_warning or ("; ".join(str(w.message) for w in caught) or None)
    if fit_warning is not None:
        return TransactionChoice(covariates, False, f"plain model ships: the covariate fit at {cutoff.date()} "
                                 f"is not fully identified ({fit_warning})", str(cutoff.date()), window_days,
                                 len(known), fit_warning=fit_warning)
    labels = outcome_labels(log, as_of=cutoff, churn_window_days=window_days, value_horizon_days=window_days,
                            allow_incomplete=True).reindex(known.index)
    churned = labels["churned"].to_numpy(dtype=np.float64)
    purchases = labels["purchases_in_window"].to_numpy(dtype=np.float64)
    scores = {}
    for name, models in (("plain", plain.models(cutoff)), ("covariates", candidate)):
        columns = model_columns(known, models.transaction_model, horizons_days=[window_days],
                                time_unit_days=plain.time_unit_days)[window_days]
        scores[name] = (columns["btyd_p_no_purchase"], columns["btyd_expected_purchases"])
    metrics = {name: {"churn_roc_auc": churn_metrics(churned, churn)["roc_auc"],
                      "purchases_normalized_gini": value_metrics(purchases, expected)["normalized_gini"]}
               for name, (churn, expected) in scores.items()}
    errors = {
        "churn_roc_auc": paired_bootstrap_ses(churned, {n: s[0] for n, s in scores.items()}, ["plain"], "roc_auc",
                                              seed=seed)["plain"]["covariates"],
        "purchases_normalized_gini": paired_bootstrap_ses(purchases, {n: s[1] for n, s in scores.items()},
                                                          ["plain"], "normalized_gini", seed=seed)["plain"]["covariates"],
    }
    difference = {m: float(metrics["covariates"][m] - metrics["plain"][m]) for m in _METRICS}
    z = {m: float(difference[m] / errors[m]) if errors[m] > 0 else float("nan") for m in _METRICS}
    shipped, reason = _decide(covariates, difference, errors, cutoff, window_days, len(known))
    return TransactionChoice(covariates, shipped, reason, str(cutoff.date()), window_days, len(known),
                             metrics, difference, {m: float(e) for m, e in errors.items()}, z)


def _decide(covariates, difference: dict, errors: dict, cutoff, window_days: int, n: int) -> tuple[bool, str]:
    """The rule of the module docstring, and its sentence."""
    where = f"{window_days} days after {cutoff.date()}, {n:,} customers"
    numbers = ", ".join(f"{m} {difference[m]:+.4f} (SE {errors[m]:.4f})" for m in _METRICS)
    if not all(np.isfinite(difference[m]) and np.isfinite(errors[m]) for m in _METRICS):
        return False, f"plain model ships: a metric is undefined on the out-of-time window ({where}: {numbers})"
    worse = [m for m in _METRICS if difference[m] < -Z_MARGIN * errors[m]]
    if worse:
        return False, (f"plain model ships: the covariate model ({', '.join(covariates)}) is worse on {worse} by more "
                       f"than {Z_MARGIN:g} SE out of time ({where}: {numbers})")
    margin = {m: max(Z_MARGIN * errors[m], MIN_MARGIN[task]) for m, task in _METRICS.items()}
    better = [m for m in _METRICS if difference[m] > margin[m]]
    if not better:
        return False, (f"plain model ships: the covariate model ({', '.join(covariates)}) does not beat it by more "
                       f"than the noise ({Z_MARGIN:g} SE, floors {MIN_MARGIN['churn']} AUC / {MIN_MARGIN['value']} "
                       f"Gini) out of time ({where}: {numbers})")
    return True, (f"covariate model ({', '.join(covariates)}) ships: it beats the plain model on {better} by more "
                  f"than {Z_MARGIN:g} paired-bootstrap SE and is worse on none out of time ({where}: {numbers})")
