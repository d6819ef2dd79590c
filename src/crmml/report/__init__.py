"""The model report: one self-contained HTML model card per fitted scorer (``crmml report``).

- :func:`build_report` assembles it (:mod:`crmml.report.assemble`): data summary, fitted parameters
  with standard errors, holdout tracking and the cohort's predictive band, calibration by frequency,
  coverage of the purchase intervals and the randomised PIT, churn ROC and calibration, gains,
  the tier pyramid, value by acquisition channel, referral value, the top of the win-back list;
- :mod:`crmml.report.evaluation` finds the holdout the evaluation charts are drawn on;
- :class:`ModelReport` (:mod:`crmml.report.document`) writes the HTML (inline CSS and base64 PNGs,
  no external URL) and the figures as PNG files (what training logs to MLflow).

Importing the package imports neither matplotlib nor MLflow.
"""

from crmml.report.assemble import SECTION_KEYS, build_report
from crmml.report.document import ModelReport, ReportFigure, ReportSection
from crmml.report.evaluation import EvaluationUnavailable, HoldoutEvaluation

__all__ = [
    "SECTION_KEYS",
    "EvaluationUnavailable",
    "HoldoutEvaluation",
    "ModelReport",
    "ReportFigure",
    "ReportSection",
    "build_report",
]
