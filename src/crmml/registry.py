"""MLflow: log a trained scorer, register it, gate it against the champion, and load it back.

:func:`log_and_register` does the training run's bookkeeping:

- params (the config, flattened), the backtest metrics of the shipped model and of every baseline,
  the plots, the tier, channel and referral tables, the data fingerprint and library versions;
  metric names are ``backtest.<metric>`` for the shipped model and ``baseline.<scorer>.<metric>``
  for a baseline, ``<scorer>`` as the report's backtest table names it (``BG/NBD P(no purchase)``)
  with each character MLflow refuses in a metric name (all but letters, digits, ``_ - . /``,
  spaces) replaced by ``_`` (:func:`metric_name`); ``backtest/metric_names.json`` maps each back;
- the training data as an MLflow dataset input (``mlflow.log_input``, context ``training``: its
  source, the data fingerprint's content hash as digest, rows and customers as tags), and a
  description of the run and of the model version (what was trained on what, and what shipped);
- the model report (:mod:`crmml.report`): ``report/report.html`` and its figures as
  ``report/figures/*.png``;
- the model as an MLflow **pyfunc** (:class:`crmml.mlflow_model.ScorerModel`) with signature and
  input example, registered as a new version of the model name. The version is created first and
  written into the scorer, so every score row (from ``crmml score``, ``mlflow.pyfunc`` or
  ``mlflow models serve``) says ``<name>/<version>``;
- the **champion gate**: the new version gets alias ``challenger``; it becomes ``champion`` when
  there is none, with ``promote="always"``, or when its backtest metrics (:data:`GATE_METRICS`)
  are at least the champion's *on the same cutoff*. A champion backtested at another cutoff has its
  config backtested again at the challenger's cutoff on the challenger's data. The decision and the
  numbers are logged (``gate.json``, ``crmml.gate`` tag). Aliases, not the deprecated stages.

:func:`load_scorer` resolves ``models:/<name>@<alias>``, ``models:/<name>/<version>``, a local
bundle folder or a downloaded MLflow model folder to a :class:`~crmml.scorer.Scorer`.
"""

from __future__ import annotations

import logging
import platform
import re
import tempfile
import threading
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from crmml.defaults import DEFAULT_EXPERIMENT, DEFAULT_MODEL_NAME, DEFAULT_TRACKING_URI
from crmml.errors import CrmmlError, first_line
from crmml.scorer import BUNDLE_FILE, Scorer

__all__ = [
    "CUSTOMER_ROWS_ARTIFACT",
    "CUSTOMER_ROWS_TAG",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_TRACKING_URI",
    "GATE_METRICS",
    "GateDecision",
    "ModelNotFoundError",
    "ModelTarget",
    "RegistryError",
    "TrainingRecord",
    "library_versions",
    "load_scorer",
    "load_target",
    "log_and_register",
    "metric_name",
    "resolve_model_uri",
]

#: Metrics the challenger must match or beat (all higher is better): the selection rules' metrics.
GATE_METRICS = ("churn_roc_auc", "value_normalized_gini")
_LIBRARIES = ("crmml", "numpy", "scipy", "pandas", "scikit-learn", "duckdb", "pyarrow", "joblib", "mlflow")
_MODEL_ARTIFACT = "scorer"
#: The customer-rows pyfunc (:class:`crmml.mlflow_model.CustomerRowsModel`) logged beside the registered
#: model in the same run; the model version's tag :data:`CUSTOMER_ROWS_TAG` holds its URI.
CUSTOMER_ROWS_ARTIFACT = "customer_scorer"
CUSTOMER_ROWS_TAG = "crmml.customer_rows_model_uri"
_MAX_TAG_CHARS = 4900  # MLflow's limit on a tag value is 5000
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class ModelNotFoundError(CrmmlError, LookupError):
    """The model URI names nothing that can be loaded (the message names the tracking URI asked)."""


class RegistryError(CrmmlError, RuntimeError):
    """The MLflow tracking server or registry refused a request (the message names its URI)."""


@dataclass(frozen=True)
class GateDecision:
    """Whether the challenger became champion, and on what numbers."""

    promoted: bool
    reason: str
    cutoff: str | None
    challenger: dict
    champion: dict | None
    champion_version: str | None


@dataclass(frozen=True)
class TrainingRecord:
    """What :func:`log_and_register` did."""

    run_id: str
    experiment_id: str
    model_name: str
    version: str
    model_uri: str
    aliases: tuple[str, ...]
    gate: GateDecision


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --------------------------------------------------------------------------------------------------
# Training run
# --------------------------------------------------------------------------------------------------


def log_and_register(
    scorer: Scorer,
    *,
    transactions=None,
    customers: pd.DataFrame | None = None,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    experiment: str = DEFAULT_EXPERIMENT,
    model_name: str = DEFAULT_MODEL_NAME,
    promote: str = "auto",
    input_example: pd.DataFrame | None = None,
    run_name: str | None = None,
) -> TrainingRecord:
    """Log a fitted scorer's training run to MLflow, register it and apply the champion gate.

    Parameters
    ----------
    scorer : Scorer
        Fitted (its backtest result still attached, for the plots).
    transactions, customers
        The training data: needed only when the champion must be backtested again at this cutoff.
    tracking_uri, experiment, model_name : str
    promote : {"auto", "always", "never"}
        ``auto``: the gate decides; ``always``: promote; ``never``: stay challenger.
    input_example : pandas.DataFrame, optional
        A few transaction rows (``customer_id``, ``timestamp``, ``amount``, attributes) for the
        pyfunc signature.

    Returns
    -------
    TrainingRecord
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if promote not in ("auto", "always", "never"):
        raise ValueError(f"promote must be 'auto', 'always' or 'never'; got {promote!r}.")
    _quiet_mlflow()
    try:
        mlflow.set_tracking_uri(tracking_uri)
        client = MlflowClient(tracking_uri)
        experiment_id = _experiment_id(client, experiment)
        summary = scorer.summary()
        run_name = run_name or f"train as of {summary['as_of']}"
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                              description=_description(scorer)) as run:
            run_id = run.info.run_id
            mlflow.log_params(_params(scorer))
            _log_training_data(scorer)
            mlflow.set_tags({"crmml.model_id": scorer.model_id_, "crmml.as_of": summary["as_of"],
                             "crmml.data_hash": scorer.fingerprint_["content_hash"]})
            _log_backtest(scorer)
            mlflow.log_dict(scorer.fingerprint_, "data_fingerprint.json")
            mlflow.log_dict(library_versions(), "library_versions.json")
            for name, table in scorer.tables_.items():
                mlflow.log_text(table.to_csv(), f"tables/{name}.csv")

            version_number = _register(client, scorer, model_name, run_id, input_example)
            summary = scorer.summary()
            mlflow.log_dict(summary, "scorer.json")
            _log_report(scorer, transactions, customers)
            client.set_registered_model_alias(model_name, "challenger", version_number)
            gate = _gate(client, scorer, model_name, version_number, promote, transactions, customers)
            mlflow.log_dict(asdict(gate), "gate.json")
            mlflow.set_tag("crmml.gate", "promoted" if gate.promoted else "challenger")
            for metric, number in (gate.champion or {}).items():
                mlflow.log_metric(f"gate.champion.{metric}", number)
            aliases = ["challenger"]
            if gate.promoted:
                client.set_registered_model_alias(model_name, "champion", version_number)
                aliases.append("champion")
            client.set_model_version_tag(model_name, version_number, "crmml.gate", gate.reason[:_MAX_TAG_CHARS])
        return TrainingRecord(run_id, experiment_id, model_name, version_number,
                              f"models:/{model_name}/{version_number}", tuple(aliases), gate)
    except MlflowException as exc:  # a refused request: name the server it came from
        raise RegistryError(f"MLflow at {tracking_uri} refused the training run's registration: "
                            f"{first_line(exc)}") from exc


@contextmanager
def tracking_store_opened(tracking_uri: str):
    """Open the tracking and registry stores at ``tracking_uri`` in a background thread while the
    block runs (MLflow's import and a new SQLite database's creation and migrations: ~3 s), so that
    :func:`log_and_register` after a long fit finds them ready.

    MLflow keeps one store per URI, so the later call reuses what the thread opened. The thread's own
    errors are left for :func:`log_and_register` to raise with its message. When the block fails, a
    SQLite database the thread created is removed: a run that stops on bad data leaves no registry.
    """
    path = _sqlite_path(tracking_uri)
    new_file = path is not None and not path.exists()

    def open_stores() -> None:
        try:
            from mlflow import MlflowClient

            _quiet_mlflow()
            MlflowClient(tracking_uri).search_registered_models(max_results=1)  # both stores
        except Exception:  # noqa: BLE001, S110 - log_and_register opens the store again and reports
            pass

    thread = threading.Thread(target=open_stores, name="crmml-open-tracking-store", daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        thread.join()
        if new_file and path.exists():
            path.unlink()
        raise
    thread.join()


def _experiment_id(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _params(scorer: Scorer) -> dict[str, str]:
    flat = {"as_of": str(scorer.as_of_.date()), "backtest_cutoff": (scorer.backtest_ or {}).get("cutoff", "")}
    for section, values in scorer.config.to_dict().items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            flat[section] = values
    for task in ("churn", "value"):
        choice = getattr(scorer.model_, f"{task}_choice_")
        flat[f"{task}.shipped"] = choice.shipped
        flat[f"{task}.choice"] = choice.rule  # why, with the folds and the measured noise (scorer.json has all)
    covariates = getattr(scorer.model_, "transaction_choice_", None)  # (absent in bundles from before it)
    if covariates is not None:
        flat["transaction_model.covariates_shipped"] = covariates.shipped
        flat["transaction_model.covariates_choice"] = covariates.reason
    flat["flags.at_risk_threshold_learned"] = round(scorer.flag_rule_.at_risk_threshold, 6)
    flat["tiers.platinum_min_value"] = round(scorer.tier_rule_.platinum_min_value, 6)
    flat["tiers.gold_min_value"] = round(scorer.tier_rule_.gold_min_value, 6)
    return {k: str(v)[:6000] for k, v in flat.items()}


def metric_name(scorer: str | None, metric: str) -> str:
    """The MLflow metric name of one training-backtest number (see the module docstring).

    ``scorer`` is None for the shipped model (``backtest.<metric>``), else a baseline's name as the
    report's backtest table shows it (``baseline.<scorer>.<metric>``); characters MLflow refuses in
    metric names (anything but letters, digits, ``_ - . /`` and spaces) become ``_``.
    """
    if scorer is None:
        return f"backtest.{metric}"
    return "baseline." + re.sub(r"[^A-Za-z0-9_\-./ ]", "_", scorer) + f".{metric}"


def _log_backtest(scorer: Scorer) -> None:
    import mlflow

    if scorer.backtest_ is None:
        mlflow.set_tag("crmml.backtest", f"skipped: {scorer.backtest_skipped_}")
        return
    metrics = {metric_name(None, k): v for k, v in scorer.backtest_["metrics"].items()}
    names = {name: {"scorer": "crmml", "metric": k} for k in scorer.backtest_["metrics"]
             for name in [metric_name(None, k)]}
    for baseline, values in scorer.backtest_["baselines"].items():
        for k, v in values.items():
            metrics[metric_name(baseline, k)] = v
            names[metric_name(baseline, k)] = {"scorer": baseline, "metric": k}
    mlflow.log_metrics(metrics)
    mlflow.log_dict(names, "backtest/metric_names.json")
    result = scorer.backtest_.get("result")
    if result is not None:
        from crmml.backtest import write_plots

        mlflow.log_text(result.metrics.to_csv(index=False), "backtest/metrics.csv")
        with tempfile.TemporaryDirectory(prefix="crmml-plots-") as folder:
            write_plots(result, folder)
            mlflow.log_artifacts(folder, "plots")


def _description(scorer: Scorer) -> str:
    """What a training run and its model version are: data, date, horizons and the shipped models."""
    data, cfg, choices = scorer.fingerprint_, scorer.config.model, scorer.model_.summary()
    return (
        f"crmml scorer trained as of {scorer.as_of_.date()} on {data['rows_valid']:,} rows and "
        f"{data['customers']:,} customers of {data['source']} (data hash {data['content_hash']}, "
        f"{data['first_timestamp']} to {data['last_timestamp']}, time zone {scorer.config.columns.timezone}). "
        f"Churn: P(no purchase in the next {cfg.churn_window_days} days), shipped {choices['churn']['shipped']}. "
        f"Value: spend over the next {cfg.value_horizon_days} days discounted at "
        f"{100 * scorer.config.annual_discount_rate:g} %/yr, shipped {choices['value']['shipped']}."
    )


def _log_training_data(scorer: Scorer) -> None:
    """The training log as an MLflow dataset input: its source, content hash and counts (no rows copied)."""
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    data = scorer.fingerprint_
    path = Path(data["source"])
    if path.exists():
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local file
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            source = resolve_dataset_source(str(path.absolute()))
    else:  # a DataFrame, or a glob
        source = CodeDatasetSource({"crmml.source": data["source"]})
    dataset = MetaDataset(source, name="transactions", digest=data["content_hash"])
    tags = {key: str(data[key]) for key in ("rows_valid", "rows_rejected", "customers", "first_timestamp",
                                            "last_timestamp") if key in data}
    mlflow.log_input(dataset, context="training", tags=tags)


def _log_report(scorer: Scorer, transactions, customers) -> None:
    """The model report and its figures under ``report/``: the training backtest's charts, the pyramid,
    channels and referrals, and with the training data the win-back list. A report that cannot be built
    does not stop the registration: it is logged as a warning and in the tag ``crmml.report``."""
    import mlflow

    from crmml.report import build_report

    try:
        report = (build_report(scorer) if transactions is None else
                  build_report(scorer, transactions=transactions, as_of=scorer.as_of_, customers=customers))
        with tempfile.TemporaryDirectory(prefix="crmml-report-") as folder:
            report.write_files(folder)
            mlflow.log_artifacts(folder, "report")
    except Exception as exc:  # noqa: BLE001 - the report is a record; the model still registers
        logging.getLogger("crmml.registry").warning("model report not logged: %s", first_line(exc))
        mlflow.set_tag("crmml.report", f"not logged: {first_line(exc)}"[:_MAX_TAG_CHARS])


def _register(client, scorer: Scorer, model_name: str, run_id: str, input_example) -> str:
    """Create the model version first, so the logged scorer carries its own version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from crmml.mlflow_model import CustomerRowsModel, ScorerModel, customer_rows_example, model_signature

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description="crmml customer scorer: value, tier, at-risk flags")
    logged = mlflow.initialize_logged_model(name=_MODEL_ARTIFACT)
    created = client.create_model_version(model_name, source=f"models:/{logged.model_id}", run_id=run_id,
                                          model_id=logged.model_id, description=_description(scorer))
    previous = scorer.model_version
    scorer.model_version = f"{model_name}/{created.version}"
    try:
        with tempfile.TemporaryDirectory(prefix="crmml-bundle-") as folder, _expected_mlflow_notices():
            bundle = scorer.save(Path(folder) / "bundle")
            example = input_example if input_example is not None else None
            requirements = [f"{name}=={v}" for name, v in library_versions().items()
                            if name not in ("python", "crmml") and v != "not installed"]
            mlflow.pyfunc.log_model(
                name=_MODEL_ARTIFACT,
                python_model=ScorerModel(),
                artifacts={"scorer": str(bundle)},
                signature=model_signature(scorer, example),
                input_example=example,
                pip_requirements=requirements,
                model_id=logged.model_id,
            )
            customer_rows = mlflow.pyfunc.log_model(  # the same scorer fed one row per customer (spark_udf)
                name=CUSTOMER_ROWS_ARTIFACT,
                python_model=CustomerRowsModel(),
                artifacts={"scorer": str(bundle)},
                signature=model_signature(scorer, example, customer_rows=True),
                input_example=customer_rows_example(scorer, example),
                pip_requirements=requirements,
            )
    except BaseException:
        scorer.model_version = previous
        client.delete_model_version(model_name, created.version)
        raise
    client.set_model_version_tag(model_name, created.version, "crmml.model_id", scorer.model_id_)
    client.set_model_version_tag(model_name, created.version, CUSTOMER_ROWS_TAG, customer_rows.model_uri)
    return str(created.version)


def _gate(client, scorer: Scorer, model_name: str, version_number: str, promote: str, transactions, customers):
    challenger = {m: scorer.backtest_["metrics"].get(m) for m in GATE_METRICS} if scorer.backtest_ else {}
    cutoff = scorer.backtest_["cutoff"] if scorer.backtest_ else None
    champion_version = _alias_version(client, model_name, "champion")
    if promote == "always":
        return GateDecision(True, "promoted: --promote always", cutoff, challenger, None, champion_version)
    if promote == "never":
        return GateDecision(False, "kept as challenger: --promote never", cutoff, challenger, None, champion_version)
    if champion_version is None:
        return GateDecision(True, "promoted: there was no champion", cutoff, challenger, None, None)
    if scorer.backtest_ is None:
        return GateDecision(False, f"kept as challenger: no backtest to compare ({scorer.backtest_skipped_})",
                            cutoff, challenger, None, champion_version)
    champion = _champion_metrics(client, model_name, champion_version, cutoff, scorer, transactions, customers)
    worse = [m for m in GATE_METRICS if not (challenger.get(m) is not None and champion.get(m) is not None
                                             and challenger[m] >= champion[m])]
    numbers = ", ".join(f"{m} {challenger.get(m, float('nan')):.4f} vs {champion.get(m, float('nan')):.4f}"
                        for m in GATE_METRICS)
    if worse:
        return GateDecision(False, f"kept as challenger: below champion v{champion_version} at {cutoff} on "
                                   f"{', '.join(worse)} ({numbers})", cutoff, challenger, champion, champion_version)
    return GateDecision(True, f"promoted: at least champion v{champion_version} at {cutoff} ({numbers})",
                        cutoff, challenger, champion, champion_version)


def _alias_version(client, model_name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def _champion_metrics(client, model_name, champion_version, cutoff, scorer, transactions, customers) -> dict:
    """The champion's gate metrics at ``cutoff``: as logged if it was backtested there, else its
    config backtested again at ``cutoff`` on the challenger's data."""
    run_id = client.get_model_version(model_name, champion_version).run_id
    run = client.get_run(run_id)
    if run.data.params.get("backtest_cutoff") == cutoff:
        return {m: run.data.metrics.get(f"backtest.{m}") for m in GATE_METRICS}
    if transactions is None:
        raise ValueError("The champion was backtested at another cutoff; pass the training data to compare.")
    from crmml.backtest import MODEL_SCORER, backtest

    champion = load_scorer(f"models:/{model_name}/{champion_version}", tracking_uri=client.tracking_uri)
    result = backtest(transactions, cutoffs=[cutoff], config=champion.config.model, customers=customers,
                      baseline_models=())
    rows = result.metrics[result.metrics["scorer"] == MODEL_SCORER]
    metrics = {}
    for metric in GATE_METRICS:
        task, _, name = metric.partition("_")
        metrics[metric] = float(rows.loc[rows["task"] == task, name].iloc[0])
    return metrics


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def load_scorer(uri: str, *, tracking_uri: str | None = None) -> Scorer:
    """A :class:`~crmml.scorer.Scorer` from ``models:/name@alias``, ``models:/name/version``, a
    local bundle folder (``Scorer.save``) or an MLflow model folder.

    Raises
    ------
    ModelNotFoundError
        When the URI names no model, version, alias or bundle, or the registry cannot be asked (the
        message names the tracking URI). Reading never creates a registry: a ``sqlite:`` tracking URI
        must name an existing file.
    """
    if _MODELS_URI.match(uri) is None:
        return load_target(resolve_model_uri(uri), tracking_uri=tracking_uri)
    from mlflow.exceptions import MlflowException

    tracking_uri = registry_to_read(tracking_uri)
    try:
        target = resolve_model_uri(uri, tracking_uri=tracking_uri)
    except (MlflowException, RegistryError) as exc:
        raise ModelNotFoundError(f"Cannot load {uri} from the registry at {tracking_uri}: {first_line(exc)}") from exc
    return load_target(target, tracking_uri=tracking_uri)


def registry_to_read(tracking_uri: str | None = None) -> str:
    """The tracking URI to read a model from (``tracking_uri``, else MLflow's current one), checked.

    MLflow creates an empty SQLite database when asked about one that does not exist, and then
    reports the model as not found; reading here never creates one: a ``sqlite:`` URI must name an
    existing file. A relative SQLite path (``sqlite:///mlflow.db``, the default) is relative to the
    working directory.

    Raises
    ------
    ModelNotFoundError
        When a ``sqlite:`` URI names no file, naming the URI and the absolute path looked at.
    """
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    path = _sqlite_path(uri)
    if path is not None and not path.is_file():
        raise ModelNotFoundError(
            f"No MLflow registry at {uri}: {path.absolute()} does not exist (a relative sqlite path is relative to "
            "the working directory). Pass --tracking-uri (or set MLFLOW_TRACKING_URI) to the registry the model "
            "was registered in."
        )
    return uri


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` URI (None for other URIs and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def load_target(target: ModelTarget, *, tracking_uri: str | None = None) -> Scorer:
    """The scorer :func:`resolve_model_uri` found (a pinned version is downloaded; no new lookup of
    the alias, so a caller that resolved first loads exactly that version).

    Raises
    ------
    ModelNotFoundError
        When the version cannot be downloaded or holds no crmml model.
    """
    if target.name is None:
        return _load_local(Path(target.load_uri), target.load_uri)
    import mlflow
    from mlflow.exceptions import MlflowException

    tracking_uri = registry_to_read(tracking_uri)
    try:
        mlflow.set_tracking_uri(tracking_uri)
        with tempfile.TemporaryDirectory(prefix="crmml-model-") as folder:
            local = mlflow.artifacts.download_artifacts(artifact_uri=target.load_uri, dst_path=folder)
            return _load_local(Path(local), target.load_uri)
    except MlflowException as exc:
        raise ModelNotFoundError(f"Cannot load {target.load_uri} from {tracking_uri}: {first_line(exc)}") from exc



@dataclass(frozen=True)
class ModelTarget:
    """What a model URI names right now: a registered version (``name``, ``version``, the ``alias``
    that led there) or a local path (all three None); ``load_uri`` pins it for :func:`load_scorer`."""

    name: str | None
    version: str | None
    alias: str | None
    load_uri: str

    def describe(self) -> str:
        if self.name is None:
            return self.load_uri
        via = f" (@{self.alias})" if self.alias else ""
        return f"{self.name} version {self.version}{via}"


def resolve_model_uri(uri: str, *, tracking_uri: str | None = None) -> ModelTarget:
    """Ask the registry which version ``uri`` names now (cheap: no download).

    Raises
    ------
    ModelNotFoundError
        When the URI names no model, version, alias or path, or a ``sqlite:`` tracking URI names no
        file (see :func:`registry_to_read`); the message names the tracking URI.
    RegistryError
        When the registry answers with another error (naming the tracking URI).
    Exception
        Whatever the MLflow client raises when the registry cannot be reached (left to the caller,
        who may keep serving the model it has).
    """
    match = _MODELS_URI.match(uri)
    if match is None:
        if uri.startswith(("models:", "runs:", "s3:", "http:", "https:")):
            raise ModelNotFoundError(f"Unsupported model URI {uri!r}: use models:/<name>@<alias>, "
                                     "models:/<name>/<version> or a local path.")
        if not Path(uri).exists():
            raise ModelNotFoundError(f"No model at {uri}: the path does not exist.")
        return ModelTarget(None, None, None, uri)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    _quiet_mlflow()
    tracking_uri = registry_to_read(tracking_uri)
    client = MlflowClient(tracking_uri)
    name, alias, number = match["name"], match["alias"], match["version"]
    try:
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ModelNotFoundError(f"Cannot load {uri} from the registry at {tracking_uri}: {first_line(exc)}") from exc
        raise RegistryError(f"The registry at {tracking_uri} could not say what {uri} names: {first_line(exc)}") from exc
    return ModelTarget(name, str(found.version), alias, f"models:/{name}/{found.version}")


def _load_local(path: Path, uri: str) -> Scorer:
    if not path.exists():
        raise ModelNotFoundError(f"No model at {uri}: the path does not exist.")
    if path.is_file():
        return Scorer.load(path)
    bundles = sorted(path.rglob(BUNDLE_FILE))
    if not bundles:
        raise ModelNotFoundError(f"No crmml model at {uri}: no {BUNDLE_FILE} under it.")
    return Scorer.load(bundles[0])


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextmanager
def _expected_mlflow_notices():
    """Silence two notices that do not apply here: the scorer is pickled by reference to the
    installed crmml (not by value), and ``customer_id`` is an integer that is never missing
    (attributes, which can be, enter the schema as floats)."""
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    notice = _DropMessage("Passing a Python object as `python_model`")
    pyfunc_logger.addFilter(notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            yield
    finally:
        pyfunc_logger.removeFilter(notice)


def _quiet_mlflow() -> None:
    """MLflow's INFO lines (database migrations, signature inference) say nothing a user acts on."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)

