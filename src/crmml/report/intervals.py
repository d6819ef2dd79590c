"""The report's two sections on the per-customer purchase distributions (issue 20, item 4).

- ``interval-calibration``: on the holdout of :mod:`crmml.report.evaluation`, the coverage of each
  customer's purchase intervals (50, 80, 90, 95 %) against the nominal level by calibration-frequency
  group, and the histogram of the randomised PIT (``purchases_pit`` and friends in the holdout's
  scores, :func:`crmml.backtest.holdout_pit_columns`);
- ``purchase-fan``: the known customers' cumulative purchases after the cutoff, actual against the
  model's mean and its 80 % and 95 % normal bands (the tracking curve's band columns,
  :func:`crmml.holdout_intervals.cohort_band`).

Both say why they are empty when there is no holdout, when the transaction model has no purchase
distribution (:func:`crmml.models.purchase_distribution.supported`), or when no customer had
purchases at the cutoff.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crmml.holdout_intervals import LEVELS, frequency_groups, interval_coverage, level_name, pit_bins
from crmml.models.purchase_distribution import supported
from crmml.report.document import ReportFigure, ReportSection, figure_png

__all__ = ["MIN_GROUP", "interval_sections"]

#: Customers a calibration-frequency group needs to be shown (fewer give bins of +/- 5 points noise).
MIN_GROUP = 100
TITLES = {"interval-calibration": "Calibration of the purchase intervals",
          "purchase-fan": "Cohort purchases with the predictive band"}


def interval_sections(context) -> list[ReportSection]:
    """The ``interval-calibration`` and ``purchase-fan`` sections of a report's context
    (:class:`crmml.report.assemble._Context`)."""
    evaluation = context.evaluation
    if evaluation is None:
        return [ReportSection(key, title, unavailable=context.evaluation_unavailable) for key, title in TITLES.items()]
    sections = {key: ReportSection(key, title, source=evaluation.description) for key, title in TITLES.items()}
    reason = _missing_reason(context)
    scores = evaluation.scores
    if "purchases_pit" not in scores or scores["purchases_pit"].isna().all():
        sections["interval-calibration"].unavailable = reason
    else:
        _fill_calibration(sections["interval-calibration"], evaluation)
    curve = evaluation.tracking
    if curve is None:
        sections["purchase-fan"].unavailable = "not available: this holdout has no tracking curve"
    elif "btyd_sd" not in curve:
        sections["purchase-fan"].unavailable = reason
    else:
        _fill_fan(sections["purchase-fan"], evaluation)
    return list(sections.values())


def _missing_reason(context) -> str:
    model = context.scorer.model_.btyd_.transaction_model
    if not supported(model):
        return (f"not available: the transaction model ({type(model).__name__}) has no conditional purchase "
                "distribution (crmml.models.purchase_distribution covers BG/NBD, MBG/NBD and Pareto/NBD)")
    return (f"not available: no customer had purchases before the cutoff "
            f"{context.evaluation.cutoff.date()}, so the holdout holds no one to judge the intervals on")


def _fill_calibration(section: ReportSection, evaluation) -> None:
    from crmml.plots_intervals import plot_interval_calibration

    known = evaluation.scores.dropna(subset=["purchases_pit"])
    frame = pd.DataFrame({"pit": known["purchases_pit"].to_numpy()})
    for level in LEVELS:
        name = level_name(level)
        frame[f"covered_{name}"] = known[f"purchases_covered_{name}"].to_numpy(dtype=bool)
        frame[f"interval_mass_{name}"] = known[f"purchases_interval_mass_{name}"].to_numpy()
    groups = frequency_groups(known["frequency"].to_numpy())
    coverage = interval_coverage(frame, groups, min_group=MIN_GROUP)
    bins = pit_bins(frame["pit"], groups, min_group=MIN_GROUP)
    overall = coverage.loc["all"]
    section.figures.append(ReportFigure("coverage", figure_png(plot_interval_calibration(coverage, frame["pit"])), (
        f"Purchases of the {len(known):,} customers known at {evaluation.cutoff.date()} in the "
        f"{evaluation.value_horizon_days}-day horizon against each one's predictive distribution (the BTYD "
        f"transaction model's, fitted parameters). Left: coverage of the randomised central intervals "
        f"(exactly the nominal level when calibrated) by number of repeat purchases before the cutoff "
        f"(groups of at least {MIN_GROUP}); squares: the integer intervals crmml reports, "
        f"{', '.join(f'{v:.1f}' for v in overall['observed'])} % at "
        f"{', '.join(f'{v:g}' for v in overall['nominal'])} %, crosses: what they would cover if calibrated "
        f"(their own probability; counts are discrete). Right: randomised PIT, uniform when calibrated; "
        f"largest bin error {bins.loc['all', 'pit_max_error']:.1f} points.")))
    section.tables.append(("Coverage (percent) by calibration-frequency group and level: nominal, randomised "
                           "intervals, integer intervals observed and if calibrated", coverage.round(1)))
    section.tables.append(("Randomised PIT: share per tenth (percent; 10 when calibrated) and largest error in "
                           "points", bins.round(1)))


def _fill_fan(section: ReportSection, evaluation) -> None:
    from crmml.plots_intervals import plot_purchase_fan

    curve = evaluation.tracking
    bands = {"95 %": (curve["band_lower_95"], curve["band_upper_95"]),
             "80 %": (curve["band_lower_80"], curve["band_upper_80"])}
    last = curve.iloc[-1]
    z = (last["actual"] - last["btyd_expected"]) / last["btyd_sd"] if last["btyd_sd"] > 0 else np.nan
    section.figures.append(ReportFigure("fan", figure_png(plot_purchase_fan(
        curve["date"], curve["btyd_expected"], curve["actual"], bands)), (
        f"Cumulative purchase days after {evaluation.cutoff.date()} of the customers known then: actual "
        f"{last['actual']:,.0f} against the model's {last['btyd_expected']:,.0f} +/- {last['btyd_sd']:,.0f} "
        f"(one standard deviation; actual {z:+.1f} sd) at day {int(last['day'])}. The band is the normal "
        "approximation of a sum of independent customers' counts, with the mean and variance of their "
        "conditional distributions: sampling noise given the fitted parameters only, so a level error of "
        "the model (a season the calibration never saw) shows as the actual curve leaving the band.")))
    shown = curve.iloc[sorted({*range(3, len(curve), 4), len(curve) - 1})]
    table = shown[["day", "actual", "btyd_expected", "btyd_sd", "band_lower_80", "band_upper_80",
                   "band_lower_95", "band_upper_95"]].set_index("day").round(1)
    section.tables.append(("Cumulative purchases every four weeks: actual, model mean, standard deviation and "
                           "the 80 % and 95 % bands", table))
