"""Buy-till-you-die and spend models, one file each, sharing :class:`~crmml.models.base.BaseModel`."""

from crmml.models.beta_geo import BetaGeo
from crmml.models._optimum import FitWarning
from crmml.models.beta_geo_beta_binom import BetaGeoBetaBinom
from crmml.models.beta_geo_covariates import BetaGeoCovariates, ModifiedBetaGeoCovariates
from crmml.models.gamma_gamma import GammaGamma
from crmml.models.modified_beta_geo import ModifiedBetaGeo
from crmml.models.pareto_nbd import ParetoNBD
from crmml.models.pareto_nbd_covariates import ParetoNBDCovariates

__all__ = ["BetaGeo", "BetaGeoBetaBinom", "BetaGeoCovariates", "FitWarning", "GammaGamma", "ModifiedBetaGeo",
           "ModifiedBetaGeoCovariates", "ParetoNBD", "ParetoNBDCovariates"]
