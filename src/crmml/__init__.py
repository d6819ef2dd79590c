"""crmml: predicted customer value, pyramid tier and at-risk flags from a transaction log.

The public API, layer by layer (imports point downward only):

- :mod:`crmml.data`: read and validate transaction logs, RFM summaries, calibration/holdout splits,
  the log simulator;
- :mod:`crmml.models`: BG/NBD, MBG/NBD, Pareto/NBD, BG/BB and Gamma-Gamma;
- :mod:`crmml.clv`: discounted customer lifetime value;
- :mod:`crmml.features`, :mod:`crmml.labels`, :mod:`crmml.timetravel`, :mod:`crmml.learners`: the
  supervised layer's inputs; :mod:`crmml.customer_model`: churn and value models and their choice;
  :mod:`crmml.backtest`: backtests against the classic baselines, and the CDNOW protocol.
"""

from crmml.backtest import backtest, cdnow_backtest
from crmml.clv import customer_lifetime_value
from crmml.customer_model import CustomerModel, ModelConfig
from crmml.data import calibration_holdout, read_transactions, rfm_summary
from crmml.errors import ConvergenceError, CrmmlError, CustomerTableWarning, DataValidationError
from crmml.features import compute_features
from crmml.models import BetaGeo, BetaGeoBetaBinom, GammaGamma, ModifiedBetaGeo, ParetoNBD

__version__ = "0.1.0"

__all__ = [
    "BetaGeo",
    "BetaGeoBetaBinom",
    "ConvergenceError",
    "CrmmlError",
    "CustomerModel",
    "CustomerTableWarning",
    "DataValidationError",
    "GammaGamma",
    "ModelConfig",
    "ModifiedBetaGeo",
    "ParetoNBD",
    "backtest",
    "calibration_holdout",
    "cdnow_backtest",
    "compute_features",
    "customer_lifetime_value",
    "read_transactions",
    "rfm_summary",
]
