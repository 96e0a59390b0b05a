"""Codat's event envelope, and the columns the service indexes from it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Envelope(BaseModel):
    """The standard top-level shape of every Codat event since 2024-10 (CODAT.md §1.1)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1, max_length=255)
    eventType: str = Field(min_length=1, max_length=255)
    generatedDate: str  # kept raw: Codat's examples hold invalid dates
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What the receiver indexes; `unprocessable` says why a signed body is kept aside."""

    event_id: str | None = None
    event_type: str | None = None
    company_id: str | None = None
    connection_id: str | None = None
    generated_at: datetime | None = None
    unprocessable: str | None = None


def parse_datetime(value: object) -> datetime | None:
    """Lenient ISO-8601: Codat's dates vary in precision; a bad one becomes None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _short_id(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 255 else None


def _get(mapping: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def company_id_of(event_type: str, payload: dict[str, Any]) -> str | None:
    if event_type.startswith("company."):
        return _short_id(payload.get("id"))
    return _short_id(_get(payload, "referenceCompany", "id"))


def connection_id_of(payload: dict[str, Any]) -> str | None:
    direct = _short_id(payload.get("connectionId")) or _short_id(_get(payload, "connection", "id"))
    if direct:
        return direct
    data_types = payload.get("dataTypes")
    if isinstance(data_types, list) and data_types:
        return _short_id(_get(data_types[0], "connectionId"))
    return None


def read_facts(body: bytes) -> EventFacts:
    """Parse a verified body; never raises, because a signed body is always kept."""
    try:
        envelope = Envelope.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return EventFacts(unprocessable=f"not a Codat envelope: {where}: {first['msg']}"[:500])
    return EventFacts(
        event_id=envelope.id,
        event_type=envelope.eventType,
        company_id=company_id_of(envelope.eventType, envelope.payload),
        connection_id=connection_id_of(envelope.payload),
        generated_at=parse_datetime(envelope.generatedDate),
    )
