"""Value types of the status API's parameters and bodies: what a client may send, refused
with a clear 422 when it is anything else (never silently read as something it is not)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

# ISO 8601 extended form (RFC 3339 and the shorter forms Python writes): a date, then
# optionally a time and an offset. pydantic alone also reads numbers as Unix seconds, so
# `0.5` or `20260503` became a moment in 1970.
_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)
ISO_EXAMPLE = "2026-05-03T10:00:00Z"


def _iso_only(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATETIME.fullmatch(value):
        return value
    raise ValueError(f"expected an ISO 8601 date-time such as {ISO_EXAMPLE}")


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]
"""A date-time written in ISO 8601 (`2026-05-03T10:00:00Z`); without an offset it is UTC."""


def is_storable_text(value: str) -> bool:
    """PostgreSQL's text holds neither NUL nor a lone surrogate: such a value matches no
    stored row, and passing it to the database would be an error, not an empty answer."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(value: str) -> str:
    if not is_storable_text(value):
        raise ValueError("text with a NUL character or an unpaired surrogate")
    return value


Text = Annotated[str, AfterValidator(_storable)]
"""A string a body may carry: anything but NUL and unpaired surrogates."""
