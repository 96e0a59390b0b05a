"""Bearer tokens for the status API, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from app.api.errors import ApiError

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="StatusApiToken",
    description="One of the tokens in STATUS_API_TOKENS (`Authorization: Bearer <token>`)",
)
UNAUTHORIZED = "missing or invalid bearer token"
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, read as HTTPBearer reads it."""
    scheme, token = get_authorization_scheme_param(authorization)
    return token if scheme.lower() == "bearer" and token else None


def token_matches(given: str | None, tokens: Iterable[bytes]) -> bool:
    """Any configured token passes; the answer says nothing about the data or the tokens."""
    presented = (given or "").encode()
    # Compare against every token, so the time taken does not tell which one was close.
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented, token)
    return given is not None and matched


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Declares the bearer scheme (the Authorize button of /docs) and checks it again.

    The check that counts runs before the body is read (`app.api.guard.ApiGuard`): FastAPI
    reads and parses a body before it resolves dependencies.
    """
    given = credentials.credentials if credentials else None
    if not token_matches(given, request.app.state.api_tokens):
        raise ApiError(401, UNAUTHORIZED, headers=CHALLENGE)
