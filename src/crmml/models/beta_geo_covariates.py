"""BG/NBD and MBG/NBD with static covariates in the purchase and the dropout process.

The purchase process follows Fader, P. S. & Hardie, B. G. S. (2007), "Incorporating Time-Invariant
Covariates into the Pareto/NBD and BG/NBD Models" (http://www.brucehardie.com/notes/019/):
``lambda_i ~ Gamma(r, alpha_i)`` with ``alpha_i = alpha * exp(-gamma_purchase' z_i)``. The dropout
probability ``p_i ~ Beta(a_i, b_i)`` has::

    a_i = a * exp(gamma_a' z_i),    b_i = b * exp(gamma_b' z_i),

the form of CLVTools' ``bgnbd_staticcov_a_i`` / ``bgnbd_staticcov_b_i`` (CLVTools, Bachmann, Meierer
& Naef: ``a_i = a0 exp(gamma_life' z)``, ``b_i = b0 exp(gamma_life' z)``) with separate
coefficients for ``a`` and ``b``; CLVTools' model is the special case ``gamma_a = gamma_b``, which
leaves the mean dropout probability unchanged. The mean odds of dropping out after a purchase,
``E[p] / (1 - E[p]) = a_i / b_i``, are multiplied by ``exp(gamma_a - gamma_b)``: the "dropout odds"
ratio of :meth:`~crmml.models.covariate_btyd.CovariateTransactionModel.param_table`, with the
separate multipliers of ``a`` and ``b`` listed too.

Given ``z_i`` the likelihood and every prediction are the BG/NBD's (MBG/NBD's, with the dropout shift
of :mod:`crmml.models.modified_beta_geo`) at ``(r, alpha_i, a_i, b_i)``, evaluated with
:func:`crmml.models.beta_geo.beta_geometric_log_likelihood` and its per-level aggregation once per
distinct ``z``.
"""

from __future__ import annotations

import numpy as np

from crmml.models.beta_geo import BetaGeo
from crmml.models.covariate_btyd import CovariateTransactionModel
from crmml.models.modified_beta_geo import ModifiedBetaGeo

__all__ = ["BetaGeoCovariates", "ModifiedBetaGeoCovariates"]


class BetaGeoCovariates(CovariateTransactionModel):
    """BG/NBD with time-invariant covariates (see the module docstring).

    Parameters and attributes: see :class:`~crmml.models.covariate_btyd.CovariateTransactionModel`.
    ``params_`` holds ``r, alpha, a, b`` (at the reference levels and numeric means), then the
    ``purchase:{column}``, ``dropout_a:{column}`` and ``dropout_b:{column}`` coefficients.
    """

    plain_model = BetaGeo
    param_names = BetaGeo.param_names
    data_columns = BetaGeo.data_columns
    scaled_columns = BetaGeo.scaled_columns
    scaled_params = BetaGeo.scaled_params
    blocks = (("purchase", "alpha", -1.0, "purchase"), ("dropout_a", "a", 1.0, "dropout"),
              ("dropout_b", "b", 1.0, "dropout"))
    _effect_names = {"purchase": "purchase rate", "dropout_a": "a (dropout beta)", "dropout_b": "b (dropout beta)"}

    def _effects(self):
        """Per coefficient, then per dropout column the odds ratio ``exp(gamma_a - gamma_b)``."""
        out = super()._effects()
        columns = self.design_.dropout_index_
        start_a = len(self.param_names) + len(self.design_.purchase_index_)
        for position, column in enumerate(columns):
            combination = np.zeros(len(self.params_))
            combination[start_a + position] = 1.0
            combination[start_a + len(columns) + position] = -1.0
            out.append(("dropout", "dropout odds", int(column), combination))
        return out


class ModifiedBetaGeoCovariates(BetaGeoCovariates):
    """MBG/NBD (Batislam, Denizel & Filiztekin 2007) with the covariates of :class:`BetaGeoCovariates`."""

    plain_model = ModifiedBetaGeo
