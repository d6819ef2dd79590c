"""``POST /v1/score``: customers in, predicted value, tier and flags out."""

from __future__ import annotations

import pydantic_core
from fastapi import APIRouter, Depends, Request, Response

from crmml.service.errors import ERROR_RESPONSES, served_model
from crmml.service.schemas import ScoreRequest, ScoreResponse
from crmml.service.security import require_api_key

router = APIRouter(prefix="/v1", tags=["scoring"], dependencies=[Depends(require_api_key)])


@router.post(
    "/score",
    response_model=ScoreResponse,
    responses={k: ERROR_RESPONSES[k] for k in (401, 413, 422, 503)},
    summary="Score customers",
)
async def score(request: Request, body: ScoreRequest) -> Response:
    """Predicted purchases and value over the model's horizon, P(alive), churn probability, pyramid
    tier and at-risk flags with their reasons, per customer, in the request's order, with the model
    that produced them (also in the ``X-Model-Version`` header). Customers sent as an RFM summary
    are scored by the BTYD and spend models only, and their reasons say so."""
    state = request.app.state
    served = served_model(request)
    result = await state.batcher.score(served, body)
    state.metrics.customers.inc(result["n_customers"])
    payload = pydantic_core.to_json({"model": served.model_json, **result})  # (non-finite floats are None)
    return Response(payload, media_type="application/json",
                    headers={"X-Model-Version": served.ref.version or served.ref.model_version})
