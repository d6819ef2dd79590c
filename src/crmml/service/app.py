"""The app factory: :func:`create_app` builds the FastAPI app; its lifespan loads the model.

Nothing happens at import. At start-up the lifespan loads the model the settings name and runs
its self-check (``/health/ready`` turns 200 after that). If the registry cannot be reached, the
app starts anyway, not ready, and retries every ``load_retry_seconds``; a URI that names no model
stops the start-up with that message. With ``reload_interval_seconds`` set, a background task
follows the alias.

Scoring runs in a worker thread, one batch at a time per process (requests that queue meanwhile
are scored together next: :class:`~crmml.service.batching.ScoringBatcher`), so the event loop
stays free to answer probes and to shed load (:class:`~crmml.service.metrics.GuardMiddleware`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from crmml.registry import ModelNotFoundError
from crmml.service.batching import ScoringBatcher
from crmml.service.errors import install_error_handlers
from crmml.service.metrics import GuardMiddleware, ServiceMetrics
from crmml.service.routers import docs, health, model, score
from crmml.service.settings import ServiceSettings
from crmml.service.state import ModelHolder, RegistryUnavailableError

__all__ = ["create_app"]

log = logging.getLogger("crmml.service")

DESCRIPTION = """Predicted value, customer-pyramid tier and at-risk flags (with reasons) per customer,
from its transactions or an RFM summary, by the model registered in MLflow.

Errors are JSON: `detail` (one line) and `errors` (the fields at fault). With an API key configured,
send it in `X-API-Key` to every route but `/health/live` and `/health/ready`."""


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """A new app (settings default to the ``CRMML_*`` environment; see :class:`ServiceSettings`)."""
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()
    holder = ModelHolder(settings, on_change=metrics.model_changed)
    batcher = ScoringBatcher(settings, max_customers=settings.batch_max_customers)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        tasks = []
        try:
            await _first_load(holder, metrics)
        except RegistryUnavailableError as exc:
            log.error("%s; retrying every %s s", exc, settings.load_retry_seconds)
            tasks.append(asyncio.create_task(_retry_first_load(holder, metrics)))
        if settings.reload_interval_seconds > 0:
            tasks.append(asyncio.create_task(_follow_alias(holder, metrics)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await batcher.stop()
            gc.unfreeze()  # what the model load froze (see ModelHolder) is collectable again

    from crmml import __version__

    # With a key, the schema and docs pages are not served (they would be open to anyone). Without,
    # the docs pages are served with local assets (docs.install_docs), not FastAPI's CDN-backed ones.
    closed = settings.api_key is not None
    app = FastAPI(title="crmml scoring service", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  openapi_url=None if closed else "/openapi.json", docs_url=None, redoc_url=None)
    app.state.settings, app.state.metrics, app.state.holder, app.state.batcher = settings, metrics, holder, batcher
    install_error_handlers(app)
    for router in (score.router, model.router, health.router):
        app.include_router(router)
    if not closed:
        docs.install_docs(app)
    app.add_middleware(GuardMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       max_in_flight=settings.max_in_flight, body_timeout=settings.body_timeout_seconds)
    app.openapi = functools.partial(_openapi, app)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema, plus the request bodies the routes parse themselves (:data:`REQUEST_SCHEMAS`)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model_class in score.REQUEST_SCHEMAS:
            body = model_class.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model_class.__name__] = body
        app.openapi_schema = schema
    return app.openapi_schema


async def _first_load(holder: ModelHolder, metrics: ServiceMetrics) -> None:
    try:
        await anyio.to_thread.run_sync(holder.reload)
    except ModelNotFoundError:
        metrics.reloads.labels("failed").inc()
        raise
    except RegistryUnavailableError as exc:
        metrics.reloads.labels("failed").inc()
        holder.last_error = str(exc)
        raise
    metrics.reloads.labels("swapped").inc()


async def _retry_first_load(holder: ModelHolder, metrics: ServiceMetrics) -> None:
    while holder.current is None:
        await asyncio.sleep(holder.settings.load_retry_seconds)
        try:
            await _first_load(holder, metrics)
        except (RegistryUnavailableError, ModelNotFoundError) as exc:
            holder.last_error = str(exc)
            log.warning("model not loaded yet: %s", exc)


async def _follow_alias(holder: ModelHolder, metrics: ServiceMetrics) -> None:
    """Poll the registry; swap when the alias moves; keep serving when it cannot be reached."""
    while True:
        await asyncio.sleep(holder.settings.reload_interval_seconds)
        if holder.current is None:
            continue
        try:
            swapped, _ = await anyio.to_thread.run_sync(holder.reload)
        except (RegistryUnavailableError, ModelNotFoundError) as exc:
            metrics.reloads.labels("failed").inc()
            log.warning("reload failed, still serving the loaded model: %s", exc)
            continue
        except Exception:  # a model that fails its self-check must not stop the polling
            metrics.reloads.labels("failed").inc()
            log.exception("reload failed, still serving the loaded model")
            continue
        metrics.reloads.labels("swapped" if swapped else "unchanged").inc()
