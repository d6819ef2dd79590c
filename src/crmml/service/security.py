"""The optional API key: header ``X-API-Key``, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

__all__ = ["require_api_key"]

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Needed when the service has an API key.")


def require_api_key(request: Request, key: str | None = Security(_header)) -> None:
    """Pass when no key is configured, or the header holds it; else HTTP 401."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    given = (key or "").encode()
    if not hmac.compare_digest(given, expected.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})
