"""Where they came from, measured: the acquisition channel's effect on buying and leaving, with intervals.

:func:`fit_channel_effects` fits the scorer's transaction model with the acquisition channel as a
static covariate of both processes (:mod:`crmml.models.covariate_btyd`; Fader & Hardie 2007,
"Incorporating Time-Invariant Covariates into the Pareto/NBD and BG/NBD Models") on the training
population's RFM summary, and keeps its effect rows: per channel against the reference channel (the
most frequent), the factor by which the channel multiplies the mean purchase rate and the dropout
rate (Pareto/NBD) or the mean dropout odds (BG/NBD, MBG/NBD), each with its 95 % Wald interval.
Customers without a channel count as the level ``unknown``. The scorer's own predictions do not
use this model: it is a measurement for the report, the MLflow run and ``GET /v1/model``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from crmml.data.summary import rfm_summary
from crmml.errors import ConvergenceError, DataValidationError
from crmml.timetravel import COVARIATE_MODELS

__all__ = ["CHANNEL_COLUMN", "COVARIATE_MODELS", "EFFECT_COLUMNS", "describe_effects", "effect_records",
           "fit_channel_effects"]

CHANNEL_COLUMN = "acquisition_channel"
#: Columns of the effects table (one row per process and non-reference channel).
EFFECT_COLUMNS = ["process", "effect", "level", "reference", "customers", "ratio", "ratio_lower_95",
                  "ratio_upper_95", "estimate", "standard_error"]
_UNKNOWN = "unknown"


def fit_channel_effects(log, as_of, customers: pd.DataFrame | None, *, kind: str, time_unit_days: float,
                        column: str = CHANNEL_COLUMN) -> pd.DataFrame | None:
    """The channel effects of the transaction model ``kind`` at ``as_of`` (see the module docstring).

    Returns
    -------
    pandas.DataFrame or None
        :data:`EFFECT_COLUMNS`, indexed by ``"{process}:{level}"``. None without a customer table with
        ``column``, with fewer than two channels among the customers, or when the fit fails (a
        :class:`UserWarning` says why: the measurement is optional, training goes on).
    """
    if customers is None or column not in customers.columns or "customer_id" not in customers.columns:
        return None
    summary = rfm_summary(log, as_of=as_of, freq="D", freq_multiplier=time_unit_days)
    channel = customers.drop_duplicates("customer_id").set_index("customer_id")[column]
    levels = channel.reindex(summary.index).astype(object).where(lambda s: s.notna(), _UNKNOWN).astype(str)
    if levels.nunique() < 2:
        return None
    summary = summary.assign(**{column: levels.to_numpy()})
    model = COVARIATE_MODELS[kind](purchase_covariates=[column], dropout_covariates=[column])
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(summary)
    except (ConvergenceError, DataValidationError, ValueError) as exc:
        warnings.warn(f"Channel effects not measured: the {kind} fit with {column!r} failed ({exc}).",
                      UserWarning, stacklevel=2)
        return None
    for warning in caught:  # (a flat direction: its effects carry NaN errors, said once here)
        warnings.warn(f"Channel effects: {warning.message}", UserWarning, stacklevel=2)
    table = model.param_table()
    effects = table[table["process"].isin(["purchase", "dropout"])].copy()  # (BG/NBD's a, b rows: in "dropout")
    counts = levels.value_counts()
    effects["customers"] = effects["level"].map(counts).fillna(0).astype(int).to_numpy()
    effects.index = [f"{process}:{level}" for process, level in zip(effects["process"], effects["level"], strict=True)]
    effects.index.name = "term"
    return effects[EFFECT_COLUMNS]


def effect_records(effects: pd.DataFrame | None) -> list[dict]:
    """The effects table as JSON-ready records (NaN as None; empty without a measurement), for
    ``scorer.json`` and ``GET /v1/model``."""
    if effects is None:
        return []
    records = []
    for row in effects.to_dict(orient="records"):
        records.append({k: (None if isinstance(v, float) and not np.isfinite(v) else
                            int(v) if isinstance(v, np.integer) else float(v) if isinstance(v, np.floating) else v)
                        for k, v in row.items()})
    return records


def describe_effects(effects: pd.DataFrame) -> list[str]:
    """One sentence per effect: ``"referral against web (1,204 customers): mean purchase rate x1.40
    (95 % CI 1.21-1.62)"``; an interval that excludes 1 is marked as such."""
    sentences = []
    for row in effects.itertuples(index=False):
        interval = (f"95 % CI {row.ratio_lower_95:.2f}-{row.ratio_upper_95:.2f}"
                    if np.isfinite(row.ratio_lower_95) and np.isfinite(row.ratio_upper_95) else "interval unknown")
        clear = np.isfinite(row.ratio_lower_95) and (row.ratio_lower_95 > 1 or row.ratio_upper_95 < 1)
        sentences.append(f"{row.level} against {row.reference} ({row.customers:,} customers): {row.effect} "
                         f"x{row.ratio:.2f} ({interval}{'' if clear else ', includes 1'})")
    return sentences
