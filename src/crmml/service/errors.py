"""Every error the service gives is JSON (:class:`~crmml.service.schemas.ErrorResponse`), never a trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from crmml.errors import DataValidationError
from crmml.service.batching import ScoringFailedError
from crmml.service.schemas import ErrorResponse
from crmml.service.scoring import InputError

__all__ = ["ERROR_RESPONSES", "error_body", "install_error_handlers", "served_model"]

log = logging.getLogger("crmml.service")

ERROR_RESPONSES = {
    401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key (when the service has a key)."},
    404: {"model": ErrorResponse, "description": "The model URI names no model now."},
    413: {"model": ErrorResponse, "description": "The body is larger than CRMML_MAX_BODY_BYTES."},
    422: {"model": ErrorResponse, "description": "Invalid input; `errors` names each field at fault."},
    503: {"model": ErrorResponse, "description": "No model loaded yet, the worker is at capacity "
                                                 "(with Retry-After), or the registry is unreachable."},
}


def served_model(request: Request):
    """The model this request is answered with (taken once, kept to the end), or HTTP 503."""
    served = request.app.state.holder.current
    if served is None:
        raise HTTPException(503, "no model is loaded yet; see /health/ready", headers={"Retry-After": "5"})
    return served


def error_body(detail: str, errors=()) -> dict:
    """The JSON of every error answer (:class:`~crmml.service.schemas.ErrorResponse`)."""
    return {"detail": detail, "errors": list(errors)}


def _location(loc) -> str:
    return ".".join(str(part) for part in loc)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        errors = [{"loc": [p if isinstance(p, (int, str)) else str(p) for p in e.get("loc", ())],
                   "msg": str(e.get("msg", "")), "type": str(e.get("type", "value_error"))} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return JSONResponse(error_body(f"{_location(first['loc'])}: {first['msg']}{more}", errors), status_code=422)

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError):
        error = {"loc": list(exc.loc), "msg": str(exc), "type": exc.kind}
        return JSONResponse(error_body(f"{_location(exc.loc)}: {exc}", [error]), status_code=422)

    @app.exception_handler(DataValidationError)
    async def data_error(request: Request, exc: DataValidationError):
        loc = ["body", "customers"] + ([exc.column] if exc.column else [])
        return JSONResponse(error_body(str(exc), [{"loc": loc, "msg": str(exc), "type": "value_error"}]), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (not UTF-8, for one): malformed input
            error = {"loc": ["body"], "msg": "the body is not valid JSON text", "type": "json_invalid"}
            return JSONResponse(error_body("body: the body is not valid JSON text", [error]), status_code=422)
        return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ScoringFailedError)
    async def scoring_failed(request: Request, exc: ScoringFailedError):
        # (logged where it happened; answered here so that the connection stays open, unlike the
        # catch-all below, after which Starlette re-raises and the server closes the connection)
        return JSONResponse(error_body("internal error; it has been logged"), status_code=500)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal error; it has been logged"), status_code=500)
