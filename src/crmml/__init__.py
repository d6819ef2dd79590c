"""crmml: predicted customer value, pyramid tier and at-risk flags from a transaction log.

The public API, layer by layer (imports point downward only):

- :mod:`crmml.data`: read and validate transaction logs, RFM summaries, calibration/holdout splits,
  the log simulator;
- :mod:`crmml.models`: BG/NBD, MBG/NBD, Pareto/NBD, BG/BB and Gamma-Gamma;
- :mod:`crmml.clv`: discounted customer lifetime value.
"""

from crmml.clv import customer_lifetime_value
from crmml.data import calibration_holdout, read_transactions, rfm_summary
from crmml.errors import ConvergenceError, CrmmlError, DataValidationError
from crmml.models import BetaGeo, BetaGeoBetaBinom, GammaGamma, ModifiedBetaGeo, ParetoNBD

__version__ = "0.1.0"

__all__ = [
    "BetaGeo",
    "BetaGeoBetaBinom",
    "ConvergenceError",
    "CrmmlError",
    "DataValidationError",
    "GammaGamma",
    "ModifiedBetaGeo",
    "ParetoNBD",
    "calibration_holdout",
    "customer_lifetime_value",
    "read_transactions",
    "rfm_summary",
]
