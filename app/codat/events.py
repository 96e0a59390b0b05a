"""Codat's event vocabulary: what its webhooks and answers mean, apart from how they
arrive (the receiver) or what the service does with them (processing)."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: object) -> datetime | None:
    """ISO-8601 as UTC; None if unreadable; OverflowError if it has no UTC form (year 1
    at +01:00, year 9999 at -01:00)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_datetime(value: object) -> datetime | None:
    """Lenient ISO-8601: Codat's dates vary in precision; a bad one becomes None."""
    try:
        return as_utc(value)
    except OverflowError:
        return None
