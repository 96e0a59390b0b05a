"""Codat's ids, and how any value goes into one of Codat's URL paths.

The one place for both rules: the receiver refuses events whose ids break the first, and
the client builds every path with the second, so that no value from a payload (or the
database, or an API caller) can change which endpoint the API key is sent to.
"""

from __future__ import annotations

import re
from typing import TypeGuard
from urllib.parse import quote

from app.codat.errors import NotACodatId

# Codat's OpenAPI declares companyId, connectionId (dataConnectionKey) and
# pushOperationKey `format: uuid` (Codat-Platform.json, Codat-Sync-Payables*.json). Any
# version (its own example, 8a210b68-6988-11ed-..., is a version 1 UUID), either case,
# always the hyphenated 36-character form its examples and answers use.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_codat_id(value: object) -> TypeGuard[str]:
    """A company id, connection id or push operation key as Codat makes them (a UUID)."""
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def segment(value: str) -> str:
    """One path segment, percent-encoded: `/`, `?`, `#`, `%` and `..` stay inside it.

    `quote` leaves dots alone, so a segment of only dots is spelled `%2E`: httpx (like
    browsers) resolves a literal `..` and would climb out of `/companies/...`."""
    if not value:
        raise ValueError("an empty path segment")
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded.strip(".") == "" else encoded


def id_segment(value: str, what: str) -> str:
    """A Codat id as a path segment; anything else is refused before a call is made."""
    if not is_codat_id(value):
        raise NotACodatId(what)
    return segment(value)
