"""Probes and metrics: ``/health/live``, ``/health/ready`` and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from crmml.service.errors import ERROR_RESPONSES
from crmml.service.schemas import Health
from crmml.service.security import require_api_key

router = APIRouter(tags=["operations"])


@router.get("/health/live", response_model=Health, summary="Liveness")
async def live() -> Health:
    """The process answers (no API key needed)."""
    return Health(status="ok")


@router.get("/health/ready", response_model=Health,
            responses={503: {"model": Health, "description": "No model has loaded and passed its self-check yet."}},
            summary="Readiness")
async def ready(request: Request):
    """200 once a model is loaded and has answered the self-check (no API key needed)."""
    holder = request.app.state.holder
    if holder.current is None:  # (the error itself, with paths and URIs, is in the log, not here)
        detail = "the model registry cannot be reached; retrying" if holder.last_error else "loading the model"
        return JSONResponse(Health(status="not ready", detail=detail).model_dump(), status_code=503)
    return Health(status="ok", model_version=holder.current.version)


@router.get("/metrics", response_class=Response, dependencies=[Depends(require_api_key)],
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                             "description": "Prometheus text format."},
                       401: ERROR_RESPONSES[401]},
            summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    """Request counts and latency histograms by route, method and status; customers scored; load
    shedding; reloads; and the model served (``crmml_model_info``)."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
