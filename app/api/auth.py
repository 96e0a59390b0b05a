"""Bearer tokens for the status API, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="A token from STATUS_API_TOKENS")


async def require_token(request: Request) -> None:
    """Any configured token passes; the error says nothing about the data or the tokens."""
    credentials: HTTPAuthorizationCredentials | None = await _bearer(request)
    tokens: list[bytes] = request.app.state.api_tokens
    given = credentials.credentials.encode() if credentials else b""
    # Compare against every token, so the time taken does not tell which one was close.
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token)
    if not credentials or not matched:
        raise ApiError(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
