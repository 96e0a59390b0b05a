"""Signing in to the dashboard: a status API token on a form gives a session cookie.

The cookie holds no token and needs no table: `v1.<expiry>.<nonce>.<mac>`, the MAC an
HMAC-SHA256 keyed with the token that signed in. So any process holding the same
STATUS_API_TOKENS checks it, a cookie ends at its expiry whatever the browser does, and
removing a token from STATUS_API_TOKENS ends every session it opened. Each form's CSRF
token is an HMAC of the session's nonce under the same key, so it cannot be made
without the session; the sign-in form, which comes before any session, uses a
double-submit cookie instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qsl

from starlette.requests import Request

from app.models import utcnow

SESSION_COOKIE = "dashboard_session"
SIGN_IN_COOKIE = "dashboard_sign_in"
PREFIX = "/ui"
# Bounds what a form post may cost before it is refused: the largest genuine one (a
# replay filter) is a few hundred bytes.
MAX_FORM_BYTES = 8 * 1024
MAX_FORM_FIELDS = 32


class SignInRequired(Exception):
    """No valid session: the answer is 401 and the sign-in form, before any body is read."""


class BadForm(Exception):
    """A form post refused before it reached a command (size, encoding, CSRF)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True)
class DashboardSession:
    nonce: str
    expires: datetime
    csrf: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _mac(key: bytes, *parts: str) -> str:
    return _b64(hmac.new(key, "|".join(parts).encode(), hashlib.sha256).digest())


def new_session_cookie(token: bytes, now: datetime, lifetime: timedelta) -> str:
    expires = str(int((now + lifetime).timestamp()))
    nonce = secrets.token_urlsafe(16)
    return f"v1.{expires}.{nonce}.{_mac(token, 'session', expires, nonce)}"


def read_session(cookie: str | None, tokens: Sequence[bytes], now: datetime) -> DashboardSession:
    """The session a cookie proves, or SignInRequired (malformed, forged, expired, or
    signed by a token no longer configured)."""
    parts = (cookie or "").split(".")
    if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
        raise SignInRequired
    _, expires, nonce, mac = parts
    found: bytes | None = None
    # Every token is tried, so the time taken does not tell which one was close.
    for token in tokens:
        if hmac.compare_digest(mac.encode(), _mac(token, "session", expires, nonce).encode()):
            found = token
    if found is None or int(expires) <= now.timestamp():
        raise SignInRequired
    return DashboardSession(
        nonce=nonce,
        expires=datetime.fromtimestamp(int(expires), now.tzinfo),
        csrf=_mac(found, "csrf", nonce),
    )


async def require_session(request: Request) -> DashboardSession:
    """Every page and action depends on this; it reads no body."""
    session = read_session(
        request.cookies.get(SESSION_COOKIE), request.app.state.api_tokens, utcnow()
    )
    request.state.dashboard_session = session
    return session


async def read_form(request: Request) -> dict[str, str]:
    """A url-encoded form of at most MAX_FORM_BYTES, read only that far."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise BadForm(413, f"form larger than {MAX_FORM_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadForm(413, f"form larger than {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise BadForm(400, "the form could not be read") from None
    if any("\x00" in key or "\x00" in value for key, value in pairs):
        raise BadForm(400, "NUL character in the form")
    return dict(pairs)


def check_csrf(expected: str | None, given: str | None) -> None:
    if not expected or not given or not hmac.compare_digest(expected, given):
        raise BadForm(403, "the form has expired or did not come from this dashboard: reload")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path only, never another host."""
    if target and target.startswith(PREFIX + "/") and not any(c in target for c in "\\\r\n"):
        return target
    return PREFIX
