"""Pareto/NBD with static covariates in the purchase and the dropout process.

Fader, P. S. & Hardie, B. G. S. (2007), "Incorporating Time-Invariant Covariates into the Pareto/NBD
and BG/NBD Models" (http://www.brucehardie.com/notes/019/): customer ``i`` with attributes
``z_i`` has purchase rate ``lambda_i ~ Gamma(r, alpha_i)`` and death rate ``mu_i ~ Gamma(s, beta_i)``
with::

    alpha_i = alpha * exp(-gamma_purchase' z_i),    beta_i = beta * exp(-gamma_dropout' z_i),

so ``E[lambda_i] = (r / alpha) exp(gamma_purchase' z_i)``: ``exp(gamma)`` is the factor by which an
attribute multiplies the mean purchase rate (and, for ``gamma_dropout``, the mean death rate), the
rate ratio of :meth:`~crmml.models.covariate_btyd.CovariateTransactionModel.param_table`. Given
``z_i`` the likelihood (and every prediction) is the Pareto/NBD's at ``(r, alpha_i, s, beta_i)``:
:func:`crmml.models.pareto_nbd.pareto_nbd_log_likelihood` with its quadrature of the integral,
once per distinct ``z``.
"""

from __future__ import annotations

from crmml.models.covariate_btyd import CovariateTransactionModel
from crmml.models.pareto_nbd import ParetoNBD

__all__ = ["ParetoNBDCovariates"]


class ParetoNBDCovariates(CovariateTransactionModel):
    """Pareto/NBD with time-invariant covariates (Fader & Hardie 2007).

    Parameters and attributes: see :class:`~crmml.models.covariate_btyd.CovariateTransactionModel`.
    ``params_`` holds ``r, alpha, s, beta`` (at the reference levels and numeric means), then
    ``purchase:{column}`` and ``dropout:{column}`` coefficients.

    Examples
    --------
    >>> model = ParetoNBDCovariates(["channel"], ["channel"]).fit(summary)   # doctest: +SKIP
    >>> model.param_table()                                                    # doctest: +SKIP
    """

    plain_model = ParetoNBD
    param_names = ParetoNBD.param_names
    data_columns = ParetoNBD.data_columns
    scaled_columns = ParetoNBD.scaled_columns
    scaled_params = ParetoNBD.scaled_params
    blocks = (("purchase", "alpha", -1.0, "purchase"), ("dropout", "beta", -1.0, "dropout"))
    _effect_names = {"purchase": "purchase rate", "dropout": "dropout rate"}
