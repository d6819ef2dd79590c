"""What the service's answers mean (issue 18, the app developer's part): units in the OpenAPI schema,
as_of / horizons / discount rate / currency in every answer, attribute values the model never saw,
the version serving in header and body alike, and the docs pages without a CDN."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from service_support import AS_OF, CONFIG, ServerThread, service_settings

from crmml.flags import FLAGS
from crmml.pyramid import TIERS
from crmml.service import create_app

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

_ONE = {"customer_id": 1, "transactions": [{"timestamp": "2025-01-01", "amount": 10.0}]}


@pytest.fixture(scope="module")
def client(service_model):
    with TestClient(create_app(service_settings(service_model))) as test_client:
        yield test_client


# ----------------------------------------------------------------------------------------------
# Units in the schema and in every answer
# ----------------------------------------------------------------------------------------------


def _schemas_under(schema: dict, name: str) -> dict[str, dict]:
    """The component ``name`` and every component it refers to, by name."""
    components, found, todo = schema["components"]["schemas"], {}, [name]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found[current] = components[current]
        todo.extend(re.findall(r'"#/components/schemas/([^"]+)"', str(components[current]).replace("'", '"')))
    return found


def test_openapi_describes_every_answer_field_with_its_unit_and_enumerates_tiers_and_flags(client):
    schema = client.get("/openapi.json").json()
    answer = _schemas_under(schema, "ScoreResponse")
    assert {"ScoreResponse", "CustomerScore", "ModelRef", "Horizons"} <= set(answer)
    for model_name, model in answer.items():
        for field, spec in model["properties"].items():
            assert spec.get("description", "").strip(), f"{model_name}.{field} has no description"
    row = answer["CustomerScore"]["properties"]
    assert row["tier"]["enum"] == list(TIERS)
    assert row["flags"]["items"]["enum"] == list(FLAGS)
    value = row["predicted_value"]["description"]
    assert all(word in value for word in ("currency", "value_horizon_days", "annual_discount_rate"))
    assert "churn_window_days" in row["churn_probability"]["description"]
    assert "value_horizon_days" in row["expected_purchases"]["description"]
    top = answer["ScoreResponse"]["properties"]
    assert {"as_of", "horizons", "annual_discount_rate", "currency"} <= set(top)


def test_every_answer_carries_as_of_horizons_discount_rate_and_currency(service_model, monkeypatch):
    scorer = service_model.scorer
    horizons = {"churn_window_days": CONFIG["model"]["churn_window_days"],
                "value_horizon_days": CONFIG["model"]["value_horizon_days"]}
    assert horizons == {"churn_window_days": scorer.config.model.churn_window_days,
                        "value_horizon_days": scorer.config.model.value_horizon_days}
    monkeypatch.setenv("CRMML_CURRENCY", "EUR")  # the setting is read from the environment
    with TestClient(create_app(service_settings(service_model))) as euro:
        body = euro.post("/v1/score", json={"as_of": "2025-05-31", "customers": [_ONE]}).json()
        info = euro.get("/v1/model").json()
    assert body["as_of"] == "2025-05-31" and body["horizons"] == horizons
    assert body["annual_discount_rate"] == scorer.config.annual_discount_rate == 0.10
    assert body["currency"] == "EUR"
    assert (info["horizons"], info["annual_discount_rate"], info["currency"]) == (horizons, 0.10, "EUR")
    monkeypatch.delenv("CRMML_CURRENCY")
    with TestClient(create_app(service_settings(service_model))) as plain:
        assert plain.post("/v1/score", json={"as_of": AS_OF, "customers": [_ONE]}).json()["currency"] == "unspecified"


def test_the_currency_label_comes_from_the_model_config_unless_the_operator_sets_one(service_model, tmp_path,
                                                                                     monkeypatch):
    import copy
    from dataclasses import replace

    from crmml.scorer import ScorerConfig

    scorer = copy.copy(service_model.scorer)
    scorer.config = replace(scorer.config, currency="SEK")
    assert ScorerConfig.from_dict(scorer.config.to_dict()).currency == "SEK"  # the config key round-trips
    assert scorer.config.value_unit().endswith("%/yr, in SEK")
    bundle = scorer.save(tmp_path / "bundle")
    settings = service_settings(service_model, model_uri=str(bundle))
    with TestClient(create_app(settings)) as local:
        assert local.post("/v1/score", json={"as_of": AS_OF, "customers": [_ONE]}).json()["currency"] == "SEK"
        assert local.get("/v1/model").json()["currency"] == "SEK"
    monkeypatch.setenv("CRMML_CURRENCY", "EUR")
    with TestClient(create_app(service_settings(service_model, model_uri=str(bundle)))) as overridden:
        assert overridden.get("/v1/model").json()["currency"] == "EUR"
    with pytest.raises(ValueError, match="currency"):
        replace(scorer.config, currency=" SEK")


def test_a_local_bundle_is_served_without_asking_a_registry(service_model, tmp_path):
    """A local bundle stayed 'not ready' when the (unused) tracking URI named a SQLite file that does
    not exist, as the default sqlite:///mlflow.db does in any other folder."""
    from crmml.scorer import Scorer

    bundle = service_model.folder / "bundle"
    settings = service_settings(service_model, model_uri=str(bundle), tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")
    with TestClient(create_app(settings)) as local:
        assert local.get("/health/ready").status_code == 200
        response = local.post("/v1/score", json={"as_of": AS_OF, "customers": [_ONE]})
        assert response.headers["x-model-version"] == response.json()["model"]["model_version"]
        assert response.json()["model"]["model_version"] == Scorer.load(bundle).model_version  # the bundle's label


def test_a_blank_currency_label_is_refused(service_model):
    from pydantic import ValidationError

    for label in ("", " EUR", "a" * 21):
        with pytest.raises(ValidationError, match="currency"):
            service_settings(service_model, currency=label)


# ----------------------------------------------------------------------------------------------
# X-Model-Version: the version serving, in header and body alike
# ----------------------------------------------------------------------------------------------


def test_header_and_body_name_the_registry_version_serving_after_the_alias_moves(service_model):
    """A registry version made from version 1's artifacts carries the label fixed at training
    (crmml-scorer/1); once an alias moves to it, header and body both name the version serving."""
    from mlflow import MlflowClient

    name = "crmml-scorer"
    registry = MlflowClient(tracking_uri=service_model.tracking_uri, registry_uri=service_model.tracking_uri)
    first = registry.get_model_version(name, "1")
    registry.set_registered_model_alias(name, "canary", "1")
    body = {"as_of": AS_OF, "customers": [_ONE]}
    with TestClient(create_app(service_settings(service_model, model_uri=f"models:/{name}@canary"))) as running:
        before = running.post("/v1/score", json=body)
        assert before.headers["x-model-version"] == before.json()["model"]["model_version"] == f"{name}/1"
        copy = registry.create_model_version(name, source=first.source, run_id=first.run_id, model_id=first.model_id)
        registry.set_registered_model_alias(name, "canary", copy.version)
        assert running.post("/v1/admin/reload").json()["reloaded"] is True
        serving = f"{name}/{copy.version}"
        assert running.app.state.holder.current.scorer.model_version == f"{name}/1"  # the label in the bundle
        after = running.post("/v1/score", json=body)
        assert after.headers["x-model-version"] == after.json()["model"]["model_version"] == serving
        assert after.json()["model"]["version"] == str(copy.version)
        assert running.get("/health/ready").json()["model_version"] == serving
        assert running.get("/v1/model").json()["model"]["model_version"] == serving
        assert f'model_version="{serving}"' in running.get("/metrics").text


# ----------------------------------------------------------------------------------------------
# Attribute values the model never saw
# ----------------------------------------------------------------------------------------------

# Channels that differ in purchase rate and dropout, so that the learners ship and read the channel
# (as in test_customer_model's customer-table tests).
_CHANNELS = {
    "referral": (0.3, {"r": 4.0, "alpha": 8.0, "a": 1.0, "b": 20.0}),
    "organic": (0.4, {"r": 4.0, "alpha": 40.0, "a": 1.0, "b": 6.0}),
    "paid_social": (0.3, {"r": 4.0, "alpha": 400.0, "a": 2.0, "b": 2.0}),
}


@pytest.fixture(scope="module")
def channel_model(tmp_path_factory):
    """A scorer whose learners read acquisition_channel and region, saved as a local bundle."""
    from crmml.data.simulate import SimulationParams, simulate_customer_base
    from crmml.scorer import Scorer, ScorerConfig

    segments = {name: (share, SimulationParams(**params)) for name, (share, params) in _CHANNELS.items()}
    sim = simulate_customer_base(3000, segments=segments, start="2023-01-01", end="2025-06-30",
                                 acquisition_end="2025-05-31", seed=3)
    customers = sim.customers[["customer_id", "acquisition_channel", "region"]]
    scorer = Scorer(ScorerConfig.from_dict(CONFIG)).fit(sim.transactions, as_of=AS_OF, customers=customers)
    assert scorer.model_.churn_learner_ is not None, "the test needs a model whose learners read the attributes"
    folder = scorer.save(tmp_path_factory.mktemp("channels") / "bundle")
    return folder, sim.transactions


def test_unseen_categories_are_listed_per_customer_scored_as_unknown_and_counted(channel_model):
    from crmml.service.settings import ServiceSettings

    folder, transactions = channel_model
    mine = transactions[(transactions["customer_id"] == transactions["customer_id"].iloc[0])
                        & (transactions["timestamp"] <= pd.Timestamp(AS_OF))]
    history = [{"timestamp": t.isoformat(), "amount": float(a)} for t, a in zip(mine["timestamp"], mine["amount"],
                                                                                strict=True)]
    customers = [
        {"customer_id": "new-channel", "transactions": history,
         "attributes": {"acquisition_channel": "tiktok", "region": "mars"}},
        {"customer_id": "unknown", "transactions": history,
         "attributes": {"acquisition_channel": None, "region": None}},
        {"customer_id": "known", "transactions": history,
         "attributes": {"acquisition_channel": "organic", "region": "mars"}},
        {"customer_id": "summary", "summary": {"frequency": 2, "recency_days": 50, "age_days": 90},
         "attributes": {"acquisition_channel": "tiktok", "region": "north"}},
    ]
    with TestClient(create_app(ServiceSettings(model_uri=str(folder)))) as running:
        response = running.post("/v1/score", json={"as_of": AS_OF, "customers": customers})
        assert response.status_code == 200, response.text
        rows = {row["customer_id"]: row for row in response.json()["customers"]}
        metrics = running.get("/metrics").text
    assert rows["new-channel"]["unknown_categories"] == {"acquisition_channel": "tiktok", "region": "mars"}
    assert rows["unknown"]["unknown_categories"] == {}  # null is unknown, not a new value
    assert rows["known"]["unknown_categories"] == {"region": "mars"}
    assert rows["summary"]["unknown_categories"] == {}  # the learners do not score a summary
    for name in ("expected_purchases", "churn_probability", "predicted_value"):  # scored as an unknown value
        assert rows["new-channel"][name] == rows["unknown"][name], name
    assert rows["known"]["churn_probability"] != rows["unknown"]["churn_probability"]  # the channel is read
    assert 'crmml_unknown_categories_total{column="acquisition_channel"} 1.0' in metrics
    assert 'crmml_unknown_categories_total{column="region"} 2.0' in metrics


def test_unseen_categories_read_the_learners_one_hot_block():
    """Categorical codes and numbers in a column trained on text: a value given that no indicator
    matches is unseen; a missing value is not."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from crmml.learner_matrix import LearnerRows, unseen_categories
    from crmml.learners import DesignMatrix

    train = pd.DataFrame({"frequency": [1.0, 2.0, 3.0, 4.0], "channel": pd.Categorical(["a", "b", "a", "b"])})
    learner = Pipeline([("design", DesignMatrix()), ("model", LogisticRegression())]).fit(train, [0, 1, 0, 1])
    codes = LearnerRows(4, {"frequency": np.ones(4)}, {"channel": (np.array([0, 1, 2, -1]), pd.Index(["a", "b", "z"]))})
    assert unseen_categories([learner, None], codes)["channel"].tolist() == [False, False, True, False]
    numbers = LearnerRows(2, {"frequency": np.ones(2), "channel": np.array([np.nan, 5.0])})
    assert unseen_categories([learner], numbers)["channel"].tolist() == [False, True]
    known = LearnerRows(1, {"frequency": np.ones(1)}, {"channel": (np.array([0]), pd.Index(["a"]))})
    assert unseen_categories([learner], known) == {}


# ----------------------------------------------------------------------------------------------
# /docs and /redoc without a CDN
# ----------------------------------------------------------------------------------------------


def _asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_local_assets_that_answer(client, page):
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", response.text), response.text
    urls = _asset_urls(response.text)
    assert any(url.endswith(".js") for url in urls), urls
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
    script = next(url for url in urls if url.endswith(".js"))
    assert "javascript" in client.get(script).headers["content-type"]


def test_docs_and_their_assets_stay_closed_with_an_api_key(service_model):
    with TestClient(create_app(service_settings(service_model, api_key="k"))) as guarded:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui-bundle.js"):
            assert guarded.get(path, headers={"X-API-Key": "k"}).status_code == 404, path


def test_docs_pages_render_the_api_in_a_browser_that_reaches_nothing_else(service_model, chromium):
    """Offline: every request outside the service is refused, and both pages still render the
    operations (Swagger UI 5 reads the OpenAPI 3.1 schema; Swagger UI 4 would say 'Unable to render').
    The one request that leaves is ReDoc's "API docs by Redocly" footer logo (its script names that
    URL): offline it is a missing image, nothing else."""
    from browser_support import CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    outside, problems = [], []
    with ServerThread(create_app(service_settings(service_model))) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def local_only(route):
                if route.request.url.startswith(server.url):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", local_only)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{server.url}/docs", wait_until="load")
            page.locator(".opblock-summary-path", has_text="/v1/score").wait_for(timeout=30_000)
            assert "Unable to render" not in page.content()
            assert outside == []
            page.goto(f"{server.url}/redoc", wait_until="load")
            page.locator("h2", has_text="Score customers").wait_for(timeout=30_000)
            page.wait_for_load_state("networkidle")
        finally:
            browser.close()
    assert set(outside) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"} and problems == []
