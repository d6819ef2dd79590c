"""``GET /v1/model`` (what is served) and ``POST /v1/admin/reload`` (follow a moved alias)."""

from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request

from crmml.registry import ModelNotFoundError
from crmml.service.errors import ERROR_RESPONSES, served_model
from crmml.service.schemas import ModelInfo, ReloadResult
from crmml.service.security import require_api_key
from crmml.service.state import RegistryUnavailableError, SelfCheckError

log = logging.getLogger("crmml.service")

router = APIRouter(tags=["model"], dependencies=[Depends(require_api_key)])


@router.get("/v1/model", response_model=ModelInfo, responses={k: ERROR_RESPONSES[k] for k in (401, 503)},
            summary="The model being served")
async def model_info(request: Request) -> ModelInfo:
    """Name, registry version and alias, training date, the horizons, discount rate and currency of
    its answers, data fingerprint, backtest metrics (the champion gate's numbers), tier cut points
    and flag thresholds, and the acquisition channels' measured effects."""
    served = served_model(request)
    summary = served.scorer.summary()
    return ModelInfo(
        model=served.ref,
        trained_as_of=summary["as_of"],
        **served.units,
        loaded_at=served.loaded_at,
        n_training_customers=summary["n_customers"],
        data_fingerprint=summary["fingerprint"],
        attribute_columns=summary["attribute_columns"],
        backtest=summary["backtest"],
        tiers=summary["tiers"],
        flags=summary["flags"],
        uncertainty=summary["uncertainty"],
        models=summary["models"],
        channel_effects=summary.get("channel_effects") or [],
    )


@router.post("/v1/admin/reload", response_model=ReloadResult,
             responses={k: ERROR_RESPONSES[k] for k in (401, 404, 503)}, summary="Reload the model")
async def reload_model(request: Request) -> ReloadResult:
    """Ask the registry which version the model URI names now and, if it moved, load it, check it
    and swap it in. Requests in progress finish on the model they started with. When the registry
    cannot be reached (503) or the URI names nothing (404), the loaded model goes on serving."""
    state = request.app.state
    try:
        swapped, message = await anyio.to_thread.run_sync(state.holder.reload)
    except ModelNotFoundError as exc:
        state.metrics.reloads.labels("failed").inc()
        raise HTTPException(404, f"{exc}; still serving the loaded model") from exc
    except RegistryUnavailableError as exc:  # (its text names the tracking URI: logged, not answered)
        state.metrics.reloads.labels("failed").inc()
        log.warning("reload failed: %s", exc)
        raise HTTPException(503, "the model registry cannot be reached; still serving the loaded model",
                            headers={"Retry-After": "30"}) from exc
    except SelfCheckError as exc:
        state.metrics.reloads.labels("failed").inc()
        log.warning("reload failed: %s", exc)
        raise HTTPException(503, f"{exc}; still serving the loaded model", headers={"Retry-After": "30"}) from exc
    state.metrics.reloads.labels("swapped" if swapped else "unchanged").inc()
    return ReloadResult(reloaded=swapped, model=served_model(request).ref, message=message)
