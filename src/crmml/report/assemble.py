"""Build the model report from a fitted scorer and, optionally, transactions to judge it on.

What each section shows and from which data:

========================  ===============================================  ==============================
section                   with transactions (``--transactions``)           model bundle only
========================  ===============================================  ==============================
overview                  the model, its training data, the report data,   the model and its training
                          the training backtest's metrics                  data, backtest metrics
parameters                BTYD and Gamma-Gamma estimates with standard     same (fitted at training)
                          errors; churn and value candidates
tracking, purchase-fan,   the holdout of :mod:`crmml.report.evaluation`    not available (the bundle does
calibration-by-           (out-of-time test or backtest); the two          not keep per-customer backtest
frequency, interval-      purchase-distribution sections                   scores)
calibration, churn,       (:mod:`crmml.report.intervals`) also need a
gains                     BG/NBD, MBG/NBD or Pareto/NBD transaction model
tiers                     the scored population at ``as_of``               the training population
channels, referrals       the scored population (with ``customers``)       the training population
win-back                  the top of the scored win-back list              not available
========================  ===============================================  ==============================

A scorer fresh from :meth:`~crmml.scorer.Scorer.fit` still carries its training backtest, which
then fills the evaluation sections without transactions (that is what training logs to MLflow).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crmml.backtest import MODEL_SCORER
from crmml.data.summary import as_day
from crmml.data.transactions import as_transactions
from crmml.errors import DataValidationError
from crmml.report.document import ModelReport, ReportFigure, ReportSection, figure_png
from crmml.report.intervals import interval_sections
from crmml.report.evaluation import (
    EvaluationUnavailable,
    HoldoutEvaluation,
    evaluate_on_transactions,
    from_backtest_result,
)

__all__ = ["SECTION_KEYS", "build_report"]

#: The report's sections, in order (their HTML ids).
SECTION_KEYS = ("overview", "parameters", "tracking", "purchase-fan", "calibration-by-frequency",
                "interval-calibration", "churn", "gains", "tiers", "channels", "referrals", "win-back")
NEEDS_TRANSACTIONS = ("not available: needs --transactions (the model bundle does not keep per-customer "
                      "backtest scores; the training run's MLflow artifacts hold these charts under report/)")
WIN_BACK_COLUMNS = ["customer_id", "tier", "predicted_value", "churn_probability", "p_alive", "reasons"]


def build_report(scorer, *, transactions=None, as_of=None, customers: pd.DataFrame | None = None,
                 top: int = 20, **read_kwargs) -> ModelReport:
    """The model report of a fitted :class:`~crmml.scorer.Scorer` (see the module docstring).

    Parameters
    ----------
    scorer : Scorer
        Fitted (fresh from ``fit`` or loaded from a bundle or the registry).
    transactions : Transactions, DataFrame or path, optional
        Data to score and judge the model on; no row after ``as_of`` is used.
    as_of : date-like, optional
        The report's date (default: the model's as-of date). Needs ``transactions``.
    customers : pandas.DataFrame, optional
        The customer table, for the channel and referral sections. Needs ``transactions``.
    top : int, default 20
        Rows of the win-back list shown.
    **read_kwargs
        Passed to :func:`crmml.data.read_transactions` with a path.

    Returns
    -------
    ModelReport
    """
    summary = scorer.summary()  # checks that the scorer is fitted
    if transactions is None and (as_of is not None or customers is not None):
        raise ValueError("as_of and customers describe the report's data: they need transactions.")
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be an integer >= 1; got {top!r}.")
    context = _Context(scorer, summary)
    if transactions is not None:
        context.load(as_transactions(transactions, **read_kwargs), as_of, customers)
    else:
        context.from_bundle()
    sections = [
        _overview(context),
        _parameters(scorer),
        *_evaluation_sections(context),
        *interval_sections(context),
        _tiers(context),
        _channels(context),
        _referrals(context),
        _win_back(context, top),
    ]
    sections.sort(key=lambda section: SECTION_KEYS.index(section.key))
    title = f"crmml model report: {scorer.model_version}"
    subtitle = (f"trained as of {summary['as_of']} on {summary['n_customers']:,} customers; "
                f"{context.data_description}")
    return ModelReport(title, subtitle, sections)


class _Context:
    """What the sections read: the scorer, the report's data, its scores and its holdout."""

    def __init__(self, scorer, summary: dict):
        self.scorer, self.summary = scorer, summary
        self.log = self.scores = self.customers = self.evaluation = None
        self.as_of: pd.Timestamp = scorer.as_of_
        self.evaluation_unavailable: str | None = None
        self.data_description = "report from the model bundle alone"

    def load(self, log, as_of, customers) -> None:
        self.log, self.customers = log, customers
        self.as_of = self.scorer.as_of_ if as_of is None else as_day(as_of, "as_of")
        if self.as_of < log.first_timestamp.normalize():
            raise DataValidationError(f"as_of {self.as_of.date()} is before the first transaction "
                                      f"({log.first_timestamp.date()}).")
        self.scores = self.scorer.score(log, as_of=self.as_of, customers=customers)
        self.data_description = (f"report data scored as of {self.as_of.date()}: {len(self.scores):,} customers "
                                 f"from {log.source_description}")
        try:
            self.evaluation = evaluate_on_transactions(self.scorer, log, as_of=self.as_of, customers=customers)
        except EvaluationUnavailable as exc:
            self.evaluation_unavailable = f"not available: {exc}"

    def from_bundle(self) -> None:
        backtest = self.scorer.backtest_
        cfg = self.scorer.config.model
        if backtest is not None and backtest.get("result") is not None:
            self.evaluation = from_backtest_result(
                backtest["result"], kind="training backtest", churn_window_days=cfg.churn_window_days,
                value_horizon_days=cfg.value_horizon_days,
                description=(f"The training backtest: this model's config fitted on the rows up to "
                             f"{backtest['cutoff']} and judged on the next {cfg.churn_window_days} days (churn) "
                             f"and {cfg.value_horizon_days} days (value)."))
            self.data_description = "report from the training data"
        elif backtest is None:
            self.evaluation_unavailable = (f"not available: the training backtest was skipped "
                                           f"({self.scorer.backtest_skipped_}); pass --transactions")
        else:
            self.evaluation_unavailable = NEEDS_TRANSACTIONS


def _figure(name: str, fig, caption: str) -> ReportFigure:
    return ReportFigure(name, figure_png(fig), caption)


def _key_values(rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))
    frame.attrs["key_value"] = True
    return frame


# --------------------------------------------------------------------------------------------------
def _overview(context: _Context) -> ReportSection:
    scorer, summary = context.scorer, context.summary
    cfg, fp = scorer.config, scorer.fingerprint_
    model = _key_values({
        "model version": scorer.model_version,
        "model id": summary["model_id"][:16],
        "trained as of": summary["as_of"],
        "training log (rows after the as-of date unused)": f"{fp['rows_valid']:,} valid rows ({fp['rows_rejected']:,} "
                                                           f"rejected), {fp['customers']:,} customers",
        "training log dates": f"{fp['first_timestamp'][:10]} to {fp['last_timestamp'][:10]}",
        "training log hash": fp["content_hash"],
        "customer attributes": ", ".join(scorer.attribute_columns_) or "none",
        "transaction model": cfg.model.transaction_model,
        "churn window / value horizon": f"{cfg.model.churn_window_days} / {cfg.model.value_horizon_days} days",
        "annual discount rate": f"{cfg.annual_discount_rate:g}",
        "shipped churn model": scorer.model_.churn_choice_.shipped,
        "shipped value model": scorer.model_.value_choice_.shipped,
        "at-risk flag": scorer.flag_rule_.describe(),
        "platinum / gold cut points": f"{scorer.tier_rule_.platinum_min_value:,.2f} / "
                                      f"{scorer.tier_rule_.gold_min_value:,.2f}",
    })
    section = ReportSection("overview", "Model and data", source=context.data_description.capitalize() + ".")
    section.tables.append(("The model", model))
    if context.log is not None:
        log = context.log
        section.tables.append(("The report's data", _key_values({
            "source": log.source_description,
            "rows": f"{log.report.rows_valid:,} valid, {log.report.rows_rejected:,} rejected",
            "dates": f"{log.first_timestamp.date()} to {log.last_timestamp.date()}",
            "scored as of": context.as_of.date(),
            "customers scored": f"{len(context.scores):,}",
            "customer table": "given" if context.customers is not None else "none",
        })))
    if scorer.backtest_ is not None:
        rows = {MODEL_SCORER: scorer.backtest_["metrics"], **scorer.backtest_["baselines"]}
        table = pd.DataFrame.from_dict(rows, orient="index")
        columns = ["churn_roc_auc", "churn_brier", "value_normalized_gini", "value_top20_capture",
                   "value_total_error_pct", "transactions_total_error_pct"]
        table = table[[c for c in columns if c in table]].dropna(how="all")
        table.index.name = "scorer"
        section.tables.append((f"Training backtest at {scorer.backtest_['cutoff']}: the model against the "
                               "baselines", table))
    else:
        section.tables.append((f"Training backtest skipped: {scorer.backtest_skipped_}", _key_values({})))
    return section


def _parameters(scorer) -> ReportSection:
    btyd = scorer.model_.btyd_
    section = ReportSection(
        "parameters", "Fitted parameters",
        source=(f"Maximum-likelihood estimates at {btyd.as_of.date()} on {btyd.n_customers:,} customers (time unit "
                f"{scorer.config.model.time_unit_days:g} days); standard errors from the Hessian, 95 % Wald "
                "intervals on the log scale."))
    models = {f"Transaction model ({scorer.config.model.transaction_model})": btyd.transaction_model,
              "Spend model (Gamma-Gamma, repeat buyers)": btyd.spend_model}
    for caption, model in models.items():
        if model is None:
            continue
        table = model.param_table()
        table.index.name = "parameter"
        penalty = f", L2 penalizer {btyd.penalizer:g}" if btyd.penalizer and "Transaction" in caption else ""
        section.tables.append((f"{caption}: log-likelihood {model.log_likelihood_:,.2f}{penalty}", table))
    for choice in (scorer.model_.churn_choice_, scorer.model_.value_choice_):
        if choice.validation_metrics:
            table = pd.DataFrame.from_dict(choice.validation_metrics, orient="index")
            table.index.name = "candidate"
            section.tables.append((f"{choice.task.capitalize()} candidates on the validation window (shipped: "
                                   f"{choice.shipped}; {choice.rule})", table))
    return section


def _evaluation_sections(context: _Context) -> list[ReportSection]:
    from crmml.metrics import churn_metrics, decile_table
    from crmml.plots import (
        plot_calibration_by_frequency,
        plot_calibration_curve,
        plot_cumulative_tracking,
        plot_gains,
        plot_roc_pr,
    )

    titles = {"tracking": "Holdout tracking", "calibration-by-frequency": "Calibration by frequency",
              "churn": "Churn: ROC, precision-recall and calibration", "gains": "Value: gains chart"}
    evaluation: HoldoutEvaluation | None = context.evaluation
    if evaluation is None:
        return [ReportSection(key, title, unavailable=context.evaluation_unavailable) for key, title in titles.items()]
    frame = evaluation.scores
    sections = {key: ReportSection(key, title, source=evaluation.description) for key, title in titles.items()}

    if evaluation.tracking is not None:
        curve = evaluation.tracking
        sections["tracking"].figures.append(_figure("tracking", plot_cumulative_tracking(
            curve["date"], curve["btyd_expected"], curve["actual"]),
            f"Cumulative purchase days after {evaluation.cutoff.date()} of the customers known then: actual "
            "against the BTYD model's expectation."))
    else:
        sections["tracking"].unavailable = "not available: this holdout has no tracking curve"
    known = frame.dropna(subset=["frequency"])
    sections["calibration-by-frequency"].figures.append(_figure("by_frequency", plot_calibration_by_frequency(
        known, f"purchases:{MODEL_SCORER}", "purchases_in_horizon", "frequency"),
        f"Mean predicted and actual purchase days in the {evaluation.value_horizon_days}-day horizon, by the "
        "number of repeat purchases before the cutoff."))

    churned, churn = evaluation.churned(), evaluation.churn_scores()
    sections["churn"].figures.append(_figure("roc_pr", plot_roc_pr(churned, churn),
                                             f"No purchase in the {evaluation.churn_window_days}-day window: "
                                             f"{churned.mean():.1%} of {len(churned):,} customers."))
    sections["churn"].figures.append(_figure("calibration", plot_calibration_curve(churned, churn),
                                             "Observed churn rate against the mean predicted probability, "
                                             "ten equal-count bins."))
    metrics = pd.DataFrame({name: churn_metrics(churned, p) for name, p in churn.items()}).T
    metrics.index.name = "scorer"
    sections["churn"].tables.append(("Churn metrics on this holdout", metrics))

    spend, values = evaluation.holdout_spend(), evaluation.value_scores()
    if spend.sum() > 0:
        sections["gains"].figures.append(_figure("gains", plot_gains(spend, values),
                                                 f"Share of the {evaluation.value_horizon_days}-day spend held by the "
                                                 "customers ranked highest by each score."))
        deciles = decile_table(spend, values[MODEL_SCORER]).set_index("decile")
        sections["gains"].tables.append(("Deciles of the model's predicted spend", deciles))
    else:
        sections["gains"].unavailable = "not available: no spend in the holdout horizon"
    return list(sections.values())


def _tiers(context: _Context) -> ReportSection:
    from crmml.plots import plot_tier_pyramid

    scorer = context.scorer
    if context.scores is not None:
        table = scorer.tier_rule_.table(context.scores["predicted_value"].to_numpy(), context.scores["tier"].to_numpy())
        source = f"The {len(context.scores):,} customers scored as of {context.as_of.date()}."
    else:
        table = scorer.tables_["tiers"]
        source = f"The training population ({scorer.n_customers_:,} customers as of {scorer.as_of_.date()})."
    source += (f" Predicted value is {scorer.config.value_unit()}. Cut points are amounts of predicted value "
               f"learned at training: platinum from {scorer.tier_rule_.platinum_min_value:,.2f}, gold from "
               f"{scorer.tier_rule_.gold_min_value:,.2f}.")
    section = ReportSection("tiers", "Customer pyramid", source=source)
    section.figures.append(_figure("pyramid", plot_tier_pyramid(table), "Share of customers and of predicted "
                                                                        "value per tier."))
    section.tables.append(("Customers and value per tier", table))
    return section


def _insight_table(context: _Context, name: str, compute):
    """A channel/referral table from the scored data (with a customer table), else the training one."""
    if context.scores is not None and context.customers is not None:
        return compute(context.scores, context.customers), f"The customers scored as of {context.as_of.date()}."
    table = context.scorer.tables_.get(name)
    population = "no --customers given: " if context.scores is not None else ""
    return table, f"The training population ({population}as of {context.scorer.as_of_.date()})."


def _channels(context: _Context) -> ReportSection:
    from crmml.insights import value_by_channel
    from crmml.plots import plot_value_by_channel

    table, source = _insight_table(context, "channels", value_by_channel)
    section = ReportSection("channels", "Value by acquisition channel",
                            source=f"{source} Predicted value is {context.scorer.config.value_unit()}.")
    if table is None:
        section.unavailable = "not available: no customer table with an acquisition_channel column"
        return section
    section.figures.append(_figure("channels", plot_value_by_channel(table),
                                   "Share of customers and of predicted value per acquisition channel."))
    section.tables.append(("Per channel (mean_value_lower_95 / _upper_95: 95 % interval of the mean predicted "
                           "value per customer acquired)", table))
    effects = context.scorer.tables_.get("channel_effects")
    if effects is not None:
        from crmml.channel_effects import describe_effects
        from crmml.plots import plot_channel_effects

        section.figures.append(_figure(
            "channel-effects", plot_channel_effects(effects),
            f"Channel effects measured at training ({context.scorer.config.model.transaction_model} with the "
            "channel as a covariate of buying and of leaving): " + "; ".join(describe_effects(effects)) + "."))
        section.tables.append(("Channel effects against the reference channel (ratios with 95 % intervals)",
                               effects))
    return section


def _referrals(context: _Context) -> ReportSection:
    from crmml.insights import referral_summary, referral_value
    from crmml.plots import plot_referral_value

    groups, source = _insight_table(context, "referral_summary", referral_summary)
    top, _ = _insight_table(context, "referrals", lambda s, c: referral_value(s, c, top=10))
    section = ReportSection("referrals", "Referral value",
                            source=f"{source} Predicted value is {context.scorer.config.value_unit()}.")
    if groups is None:
        section.unavailable = "not available: no customer table with a referred_by column"
        return section
    section.figures.append(_figure("referrals", plot_referral_value(groups, value_unit=context.scorer.config.value_unit(short=True)),
                                   "Mean predicted value of referred and unreferred customers, and of referrers."))
    section.tables.append(("Referred against not referred", groups))
    if top is not None:
        section.tables.append(("Top referrers by their referrals' predicted value", top.head(10)))
    return section


def _win_back(context: _Context, top: int) -> ReportSection:
    from crmml.insights import win_back_list

    section = ReportSection("win-back", "Win-back list")
    if context.scores is None:
        section.unavailable = ("not available: needs --transactions (the win-back list is a scoring of "
                               "customers; the model bundle keeps no scores)")
        return section
    scores = context.scores
    listed = win_back_list(scores)
    section.source = (f"Platinum and gold customers at risk as of {context.as_of.date()}: {len(listed):,} of "
                      f"{len(scores):,} scored ({listed['predicted_value'].sum():,.2f} of predicted value), highest "
                      f"value first; at risk = {context.scorer.flag_rule_.at_risk_rule}.")
    table = listed[WIN_BACK_COLUMNS].head(top).set_index("customer_id")
    table.attrs["text_last"] = True
    section.tables.append((f"Top {min(top, len(listed))} of {len(listed):,}", table))
    return section
