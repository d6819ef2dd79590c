"""End to end: `crmml train` -> MLflow registry (champion gate) -> `crmml score`, the pyfunc in a
fresh process, `mlflow models serve` on 127.0.0.1, and bad inputs to both commands."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmml.cli import main
from crmml.data.simulate import simulate_customer_base
from crmml.scorer import SCORE_COLUMNS

pytest.importorskip("mlflow")

AS_OF = "2025-06-30"
# The quick config on MBG/NBD. On this base no learner beats the BTYD score by more than the noise out of
# time (issue 15), so both configs ship BTYD scores and the gate compares the BTYD models' backtests.
GOOD = (Path(__file__).resolve().parents[1] / "models" / "small.yaml").read_text().replace(
    "transaction_model: bg_nbd", "transaction_model: mbg_nbd")
# Worse here: BG/NBD alone, whose backtest on this base is below MBG/NBD's (churn AUC 0.7846 against 0.7871).
WORSE = """
model:
  churn_window_days: 90
  value_horizon_days: 180
  transaction_model: bg_nbd
  churn_learners: []
  value_learners: []
baseline_models: [bg_nbd]
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    sim = simulate_customer_base(1500, start="2023-01-01", end="2025-06-30", acquisition_end="2025-05-31", seed=5)
    transactions = folder / "transactions.parquet"
    sim.transactions.to_parquet(transactions)
    customers = folder / "customers.csv"
    sim.customers[["customer_id", "acquisition_channel", "region", "signup_date", "referred_by"]].to_csv(
        customers, index=False)
    for name, text in (("good", GOOD), ("worse", WORSE)):
        (folder / f"{name}.yaml").write_text(text)
    return {"folder": folder, "transactions": transactions, "customers": customers,
            "tracking": f"sqlite:///{folder / 'mlflow.db'}", "n_customers": len(sim.customers)}


def _train(ws, config: str) -> int:
    return main(["train", "--transactions", str(ws["transactions"]), "--customers", str(ws["customers"]),
                 "--as-of", AS_OF, "--config", str(ws["folder"] / config), "--tracking-uri", ws["tracking"]])


@pytest.fixture(scope="module")
def trained(workspace):
    assert _train(workspace, "good.yaml") == 0
    output = workspace["folder"] / "scores.parquet"
    assert main(["score", "--model", "models:/crmml-scorer@champion", "--transactions",
                 str(workspace["transactions"]), "--customers", str(workspace["customers"]), "--as-of", AS_OF,
                 "--output", str(output), "--tracking-uri", workspace["tracking"],
                 "--customers-per-partition", "600"]) == 0
    return output


def _client(ws):
    from mlflow import MlflowClient

    return MlflowClient(ws["tracking"])


def test_train_registers_a_champion_and_score_writes_every_column(workspace, trained, capsys):
    client = _client(workspace)
    assert str(client.get_model_version_by_alias("crmml-scorer", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("crmml-scorer", "challenger").version) == "1"
    scores = pd.read_parquet(trained)
    assert list(scores.columns) == SCORE_COLUMNS
    assert len(scores) == workspace["n_customers"] and scores["customer_id"].is_unique
    assert (scores["model_version"] == "crmml-scorer/1").all()
    rejected = pd.read_csv(trained.with_suffix(".rejected.csv"))
    assert len(rejected) == 0


def test_training_run_logs_params_metrics_plots_tables_and_fingerprint(workspace, trained):
    client = _client(workspace)
    version = client.get_model_version("crmml-scorer", "1")
    run = client.get_run(version.run_id)
    assert run.data.params["model.churn_window_days"] == "90"
    assert run.data.params["as_of"] == AS_OF
    assert {"backtest.churn_roc_auc", "backtest.value_normalized_gini"} <= set(run.data.metrics)
    assert any(k.startswith("baseline.BG/NBD") for k in run.data.metrics)
    assert run.data.tags["crmml.gate"] == "promoted"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"data_fingerprint.json", "library_versions.json", "gate.json", "plots", "tables"} <= artifacts
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert any(p.startswith("roc_pr") for p in plots) and any(p.startswith("gains") for p in plots)
    tables = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "tables")}
    assert {"tiers.csv", "channels.csv", "referrals.csv"} <= tables


def test_a_worse_config_stays_challenger(workspace, trained):
    assert _train(workspace, "worse.yaml") == 0
    client = _client(workspace)
    assert str(client.get_model_version_by_alias("crmml-scorer", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("crmml-scorer", "challenger").version) == "2"
    run = client.get_run(client.get_model_version("crmml-scorer", "2").run_id)
    assert run.data.tags["crmml.gate"] == "challenger"
    gate = json.loads(Path(client.download_artifacts(run.info.run_id, "gate.json",
                                                     str(workspace["folder"]))).read_text())
    assert not gate["promoted"] and "below champion v1" in gate["reason"]


def test_pyfunc_in_a_fresh_process_gives_the_scores_of_crmml_score(workspace, trained):
    out = workspace["folder"] / "pyfunc.parquet"
    script = f"""
import mlflow, pandas as pd
mlflow.set_tracking_uri({workspace['tracking']!r})
model = mlflow.pyfunc.load_model("models:/crmml-scorer/1")
rows = pd.read_parquet({str(workspace['transactions'])!r})
table = pd.read_csv({str(workspace['customers'])!r})
rows = rows.merge(table, on="customer_id", how="left")
rows["timestamp"] = rows["timestamp"].astype(str)
model.predict(rows, params={{"as_of": {AS_OF!r}}}).to_parquet({str(out)!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300, cwd=workspace["folder"])
    batch = pd.read_parquet(trained).sort_values("customer_id").reset_index(drop=True)
    pyfunc = pd.read_parquet(out).sort_values("customer_id").reset_index(drop=True)
    # Customers in the table without a purchase have no transaction row to carry them in: batch only.
    batch = batch[batch["customer_id"].isin(pyfunc["customer_id"])].reset_index(drop=True)
    # The pyfunc answers flags and reasons as lists (the service's shape), the file as joined text.
    assert pyfunc["flags"].map(";".join).tolist() == batch["flags"].tolist()
    assert pyfunc["reasons"].map("; ".join).tolist() == batch["reasons"].tolist()
    numbers = [c for c in batch.columns if c not in ("flags", "reasons")]
    pd.testing.assert_frame_equal(pyfunc[numbers].astype(batch[numbers].dtypes.to_dict()), batch[numbers], rtol=1e-9)


def _pyfunc(ws):
    import mlflow

    mlflow.set_tracking_uri(ws["tracking"])
    return mlflow.pyfunc.load_model("models:/crmml-scorer/1")


def test_pyfunc_as_of_defaults_to_today_and_input_errors_are_400s_without_a_stack_trace(workspace, trained):
    from mlflow.exceptions import MlflowException

    model = _pyfunc(workspace)
    assert model.metadata.get_params_schema().params[0].default == ""  # not the training date
    rows = pd.DataFrame({"customer_id": [1, 1, 2], "timestamp": ["2025-01-05", "2025-04-02", "2025-03-01"],
                         "amount": [30.0, 12.5, 8.0]})
    today = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    pd.testing.assert_frame_equal(model.predict(rows), model.predict(rows, params={"as_of": today}))
    later = pd.concat([rows, pd.DataFrame({"customer_id": [3], "timestamp": ["2025-08-01"], "amount": [5.0]})])
    with pytest.raises(MlflowException) as caught:
        model.predict(later, params={"as_of": AS_OF})
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE" and caught.value.get_http_status_code() == 400
    assert "customer_id [3]" in caught.value.message and "as_of 2025-06-30" in caught.value.message
    with pytest.raises(MlflowException, match="customer_id"):  # (MLflow's schema check names it first)
        model.predict(pd.DataFrame({"frequency": [1.0], "recency_days": [3.0], "age_days": [9.0]}),
                      params={"as_of": AS_OF})


def _customer_rows_uri(ws) -> str:
    from crmml.registry import CUSTOMER_ROWS_TAG

    return _client(ws).get_model_version("crmml-scorer", "1").tags[CUSTOMER_ROWS_TAG]


def test_pyfunc_scores_customer_rows_one_for_one_in_the_input_order(workspace, trained):
    import mlflow

    from crmml.data.in_memory import InMemoryTransactions
    from crmml.scorer import Scorer

    mlflow.set_tracking_uri(workspace["tracking"])
    model = mlflow.pyfunc.load_model(_customer_rows_uri(workspace))
    summaries = pd.DataFrame({"customer_id": [900002, 900001, 900003], "frequency": [3.0, 0.0, 12.0],
                              "recency_days": [200.0, 0.0, 500.0], "age_days": [400.0, 30.0, 520.0],
                              "monetary_value": [25.0, 0.0, 60.0],
                              "acquisition_channel": ["email", "referral", "tiktok"]})
    answer = model.predict(summaries, params={"as_of": AS_OF})
    assert answer["customer_id"].tolist() == [900002, 900001, 900003]
    scorer = model.unwrap_python_model().scorer
    assert isinstance(scorer, Scorer)
    no_rows = InMemoryTransactions.from_arrays(np.array([], dtype=np.int64), np.array([], dtype="datetime64[ns]"),
                                               np.array([]))
    expected = scorer.score(no_rows, as_of=AS_OF, summaries=summaries.drop(columns="acquisition_channel"),
                            customers=summaries[["customer_id", "acquisition_channel"]], lists=True)
    expected = expected.set_index("customer_id").loc[[900002, 900001, 900003]].reset_index()
    pd.testing.assert_frame_equal(answer.astype(expected.dtypes.to_dict()), expected, rtol=1e-12)
    assert all("summary" in " ".join(r) or "RFM" in " ".join(r) for r in answer["reasons"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_a_request(workspace, trained):
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    # mlflow starts `uvicorn` by name: the environment's scripts must be on PATH.
    env = {**os.environ, "MLFLOW_TRACKING_URI": workspace["tracking"],
           "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen(
        [str(mlflow_cli), "models", "serve", "-m", "models:/crmml-scorer@champion", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env, cwd=workspace["folder"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("mlflow models serve did not start") from None
                time.sleep(0.5)
        body = {
            "dataframe_split": {"columns": ["customer_id", "timestamp", "amount", "acquisition_channel"],
                                "data": [[1, "2025-01-05", 30.0, "email"], [1, "2025-04-02", 12.5, "email"],
                                         [2, "2024-11-20", 80.0, "referral"]]},
            "params": {"as_of": AS_OF},
        }
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        def no_constant(name):  # NaN / Infinity are not JSON (a strict parser such as Node's refuses them)
            raise ValueError(f"invalid JSON constant {name}")

        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read(), parse_constant=no_constant)["predictions"]
        assert all(p["predicted_profit"] is None and isinstance(p["flags"], list) for p in predictions)
        assert [p["customer_id"] for p in predictions] == [1, 2]
        assert all(p["model_version"] == "crmml-scorer/1" and 0 <= p["churn_probability"] <= 1 for p in predictions)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.parametrize("case", ["missing file", "wrong columns", "as-of before data", "unknown model"])
def test_bad_inputs_exit_2_with_one_line_and_no_output(workspace, trained, case, capsys, tmp_path):
    output = tmp_path / "scores.parquet"
    transactions = str(workspace["transactions"])
    if case == "wrong columns":
        wrong = tmp_path / "wrong.csv"
        pd.DataFrame({"who": [1], "when": ["2025-01-01"], "amount": [1.0]}).to_csv(wrong, index=False)
        transactions = str(wrong)
    elif case == "missing file":
        transactions = str(tmp_path / "nope.parquet")
    as_of = "2001-01-01" if case == "as-of before data" else AS_OF
    model = "models:/no-such-model@champion" if case == "unknown model" else "models:/crmml-scorer@champion"
    common = ["--transactions", transactions, "--as-of", as_of, "--tracking-uri", workspace["tracking"]]
    capsys.readouterr()
    assert main(["score", "--model", model, *common, "--output", str(output)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("crmml score: error:") and len(error.splitlines()) == 1
    assert list(tmp_path.iterdir()) == ([tmp_path / "wrong.csv"] if case == "wrong columns" else [])
    if case != "unknown model":
        assert main(["train", *common, "--model-name", "crmml-bad-input"]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("crmml train: error:") and len(error.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
def test_spark_udf_scores_customer_rows(workspace, trained):
    """``mlflow.pyfunc.spark_udf`` needs one output row per input row: the customer-rows input gives that."""
    spark_api = pytest.importorskip("crmml.spark", reason="CI installs crmml[spark]")
    import mlflow
    from pyspark.sql import functions as F
    from spark_support import TEST_CONF

    mlflow.set_tracking_uri(workspace["tracking"])
    summaries = pd.DataFrame({"customer_id": np.arange(900001, 900041), "frequency": np.arange(40) % 7 * 1.0,
                              "recency_days": np.where(np.arange(40) % 7 > 0, 30.0 + np.arange(40), 0.0),
                              "age_days": 200.0 + np.arange(40), "monetary_value": 20.0 + np.arange(40)})
    uri = _customer_rows_uri(workspace)
    summaries["acquisition_channel"] = np.where(np.arange(40) % 2, "email", "referral")
    summaries["region"] = "north"
    summaries["signup_date"] = "2024-12-01"
    summaries["referred_by"] = np.nan
    expected = mlflow.pyfunc.load_model(uri).predict(summaries, params={"as_of": AS_OF})
    session = spark_api.spark_session("local[2]", conf=TEST_CONF)
    try:
        udf = mlflow.pyfunc.spark_udf(session, uri, env_manager="local", params={"as_of": AS_OF})
        frame = session.createDataFrame(summaries).repartition(3)
        scored = frame.select("customer_id", udf(*[F.col(c) for c in summaries.columns]).alias("score"))
        result = scored.select("customer_id", "score.churn_probability", "score.predicted_value",
                               "score.tier", "score.flags").toPandas()
    finally:
        session.stop()
    result = result.sort_values("customer_id").reset_index(drop=True)
    assert result["customer_id"].tolist() == expected["customer_id"].tolist()
    np.testing.assert_allclose(result["churn_probability"], expected["churn_probability"].astype(float), rtol=1e-12)
    np.testing.assert_allclose(result["predicted_value"], expected["predicted_value"].astype(float), rtol=1e-12)
    assert result["tier"].tolist() == expected["tier"].tolist()
    assert [list(f) for f in result["flags"]] == expected["flags"].tolist()
