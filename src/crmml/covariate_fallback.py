"""Customers the covariate transaction model scored at a reference level, as reasons.

A covariate BTYD model (:mod:`crmml.models.covariate_btyd`) reads each customer's attributes. A value
missing, or a category not seen in fitting, is scored at the attribute's reference level (a numeric
attribute at its fitting mean; :meth:`crmml.models.covariates.CovariateDesign.transform`).
:func:`add_covariate_fallbacks` tells those customers so, in their reasons, and adds the unseen
categories to :attr:`crmml.scorer.Scores.unknown_categories`, which the service returns and counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crmml.features import attribute_values, transaction_covariates

__all__ = ["add_covariate_fallbacks"]


def add_covariate_fallbacks(scores, transaction_model, rows) -> None:
    """Add to ``scores`` (:class:`crmml.scorer.Scores` of ``rows``) a reason per attribute that
    ``transaction_model`` scored at its reference level, and the unseen categories; nothing for a
    plain model.

    Parameters
    ----------
    scores : crmml.scorer.Scores
    transaction_model : fitted transaction model
    rows : crmml.customer_rows.CustomerRows
    """
    names = transaction_covariates(transaction_model)
    if not names:
        return
    values = {name: attribute_values(rows, name) for name in names}
    fallback = transaction_model.covariate_fallback(pd.DataFrame(values))
    for attribute in transaction_model.design_.attributes_:
        name = attribute.name
        mask = fallback[name].to_numpy(dtype=bool)
        if not mask.any():
            continue
        given = pd.notna(values[name])
        at = f"the reference level {attribute.reference!r}" if attribute.categorical else \
            f"the training mean {attribute.mean:g}"
        where = f"the purchase and dropout rates of {at}"
        scores.reasons.add_text(mask & ~given, f"{name} missing: scored with {where}")
        unseen = mask & given
        if unseen.any():
            scores.reasons.add(unseen, _unseen_sentences(values[name], name, where))
            known = scores.unknown_categories.get(name)
            scores.unknown_categories[name] = unseen if known is None else known | unseen


def _unseen_sentences(values: np.ndarray, name: str, where: str):
    def render(positions: np.ndarray) -> list[str]:
        return [f"{name} {value!r} not seen in training: scored with {where}" for value in values[positions].tolist()]

    return render
