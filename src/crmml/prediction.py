"""A fitted :class:`~crmml.customer_model.CustomerModel`'s predictions from :class:`~crmml.customer_rows.CustomerRows`.

:func:`predict_rows` is :meth:`CustomerModel.predict_features <crmml.customer_model.CustomerModel.predict_features>`
on columns: the BTYD quantities at every horizon the model needs come from one pass of the
transaction model (:func:`crmml.features.model_predictions`), the learners read one preallocated
matrix each (:mod:`crmml.learner_matrix`), and nothing is framed.
"""

from __future__ import annotations

import numpy as np

from crmml.validation import rescaled_amount, rescaled_churn
from crmml.customer_rows import CustomerRows
from crmml.features import model_predictions
from crmml.learner_matrix import LearnerRows, predict_learners_on_rows

__all__ = ["PREDICTION_COLUMNS", "predict_rows"]

#: The columns of :func:`predict_rows` (and of ``CustomerModel.predict_features``), in order.
PREDICTION_COLUMNS = ("churn_probability", "btyd_churn_probability", "p_alive", "predicted_purchases",
                      "btyd_expected_purchases", "predicted_spend", "btyd_predicted_spend")


def predict_rows(model, rows: CustomerRows, *, horizons_days=(), sums: dict | None = None) -> tuple[dict, dict]:
    """The model's predictions for the rows.

    Parameters
    ----------
    model : CustomerModel
        Fitted.
    rows : CustomerRows
    horizons_days : sequence of float
        More horizons at which the BTYD columns are wanted (in the second result).
    sums : dict, optional
        Weighted sums of expected purchases, ``{name: (horizons in time units, coefficients)}``,
        from the same pass (in the second result, under ``("sum", name)``).

    Returns
    -------
    predicted : dict of str to numpy.ndarray
        :data:`PREDICTION_COLUMNS`.
    extra : dict
        The BTYD columns by horizon of ``horizons_days`` and the sums by ``("sum", name)``.
    """
    model._check_fitted()
    cfg = model.config
    learners = {}  # horizon of each learner's rows
    if model.churn_learner_ is not None:
        learners["churn"] = model.churn_choice_.plan.longest_days
    if model.value_learner_ is not None:
        learners["value"] = model.value_choice_.plan.longest_days
    horizons = [cfg.churn_window_days, cfg.value_horizon_days, *learners.values(), *horizons_days]
    btyd = model.btyd_
    columns, summed = model_predictions(rows, btyd.transaction_model, btyd.spend_model, horizons_days=horizons,
                                        time_unit_days=cfg.time_unit_days, sums=sums)
    churn_columns, value_columns = columns[cfg.churn_window_days], columns[cfg.value_horizon_days]
    btyd_churn = churn_columns["btyd_p_no_purchase"]
    churn = btyd_churn
    if "churn" in learners:
        horizon = learners["churn"]
        (probability,) = predict_learners_on_rows([model.churn_learner_], _learner_rows(rows, columns[horizon], horizon),
                                                  "predict_proba")
        learned = rescaled_churn(probability[:, 1], columns[horizon], churn_columns)
        churn = 0.5 * (learned + btyd_churn) if model.churn_choice_.shipped.startswith("blend:") else learned
    btyd_purchases = value_columns["btyd_expected_purchases"]
    btyd_spend = (btyd_purchases * value_columns["expected_spend"] if "expected_spend" in value_columns
                  else np.full(len(rows), np.nan))
    purchases, spend = btyd_purchases, btyd_spend
    if "value" in learners:
        horizon = learners["value"]
        learner_columns = columns[horizon]
        spend, purchases = predict_learners_on_rows([model.value_learner_, model.purchases_learner_],
                                                    _learner_rows(rows, learner_columns, horizon))
        spend = rescaled_amount(spend, learner_columns, value_columns) * model.value_level_["spend_scale"]
        purchases = rescaled_amount(purchases, learner_columns, value_columns) * model.value_level_["purchases_scale"]
    predicted = {
        "churn_probability": churn,
        "btyd_churn_probability": btyd_churn,
        "p_alive": churn_columns["btyd_p_alive"],
        "predicted_purchases": purchases,
        "btyd_expected_purchases": btyd_purchases,
        "predicted_spend": spend,
        "btyd_predicted_spend": btyd_spend,
    }
    extra = {h: columns[h] for h in horizons_days}
    extra.update({("sum", name): values for name, values in summed.items()})
    return predicted, extra


def _learner_rows(rows: CustomerRows, model_columns: dict, horizon: float) -> LearnerRows:
    """The rows a learner reads at its horizon: the features, the BTYD columns over the horizon
    (replacing any the features carry), ``horizon_days``, ``btyd_value`` and the attributes."""
    numbers = dict(rows.numbers)
    numbers.update(model_columns)
    numbers["horizon_days"] = np.full(len(rows), float(horizon))
    numbers["no_purchase_history"] = rows.no_history.astype(np.float64)
    if "btyd_expected_purchases" in numbers and "expected_spend" in numbers:
        numbers["btyd_value"] = numbers["btyd_expected_purchases"] * numbers["expected_spend"]
    return LearnerRows(len(rows), numbers, rows.categories)
