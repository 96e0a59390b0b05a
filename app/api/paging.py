"""Opaque keyset cursors: the last row's sort key, so deep pages cost what the first does."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from app.api.errors import ApiError
from app.api.types import is_storable_text

MAX_LIMIT = 500
MAX_ID = 2**63 - 1  # ids are BIGINT: anything larger is no id of ours
DEFAULT_LIMIT = 50


def encode_cursor(*values: Any) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *kinds: type) -> list[Any]:
    """The values `encode_cursor` wrote, of these types; anything else is a 400 (a cursor is
    opaque, but a client can still send any text as one)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        raise ApiError(400, "invalid cursor") from None
    if not isinstance(values, list) or len(values) != len(kinds):
        raise ApiError(400, "invalid cursor")
    for value, kind in zip(values, kinds, strict=True):
        # bool is an int to Python, not to the database: `[true]` was a 500 on PostgreSQL.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ApiError(400, "invalid cursor")
        if isinstance(value, str) and not is_storable_text(value):
            raise ApiError(400, "invalid cursor")
    return values


def cursor_datetime(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "invalid cursor") from None
    return moment  # naive or not, the caller reads it as UTC (queries._utc)
