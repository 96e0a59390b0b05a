"""Opaque keyset cursors: the last row's sort key, so deep pages cost what the first does."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from app.api.errors import ApiError

MAX_LIMIT = 500
MAX_ID = 2**63 - 1  # ids are BIGINT: anything larger is no id of ours
DEFAULT_LIMIT = 50


def encode_cursor(*values: Any) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        raise ApiError(400, "invalid cursor") from None
    if not isinstance(values, list) or len(values) != size:
        raise ApiError(400, "invalid cursor")
    return values


def cursor_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ApiError(400, "invalid cursor") from None
    return moment  # naive or not, the caller reads it as UTC (queries._utc)
