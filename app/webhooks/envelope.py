"""Codat's event envelope, and the columns the service indexes from it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.codat.datatypes import (
    MAX_DATA_TYPE_LENGTH,
    MAX_DATA_TYPES_PER_EVENT,
    WRITE_EVENT,
    write_data_type,
)
from app.codat.events import as_utc
from app.codat.ids import is_codat_id


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


# How far ahead of the receive time a generatedDate may be: clocks differ a little (Svix
# allows 5 minutes either way for its timestamp). Beyond it, a date is taken as the receive
# time plus this: an event dated 9999 froze the state it wrote, since an older event never
# overwrites a newer one.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def clamped_to_receipt(generated_at: datetime | None, received_at: datetime) -> datetime | None:
    """`generatedDate` for ordering events: never later than it could be."""
    latest = received_at + MAX_CLOCK_SKEW
    return latest if generated_at is not None and generated_at > latest else generated_at


def _get(mapping: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _company_id_field(event_type: str, payload: dict[str, Any]) -> tuple[str, object]:
    """CODAT.md §1: `referenceCompany.id`, or `payload.id` for `company.*` events (falling
    back to `referenceCompany.id`, the shape Codat's 2024 blog shows for them)."""
    if event_type.startswith("company.") and "id" in payload:
        return "payload.id", payload.get("id")
    return "payload.referenceCompany.id", _get(payload, "referenceCompany", "id")


def _connection_id_fields(payload: dict[str, Any]) -> Iterator[tuple[str, object]]:
    yield "payload.connectionId", payload.get("connectionId")
    yield "payload.connection.id", _get(payload, "connection", "id")
    data_types = payload.get("dataTypes")
    if isinstance(data_types, list):
        for item in data_types:
            yield "payload.dataTypes[].connectionId", _get(item, "connectionId")


def odd_id(event_type: str, payload: dict[str, Any]) -> str | None:
    """Where the payload holds an id Codat cannot have made (not a UUID), if it does: every
    id the worker may put into a call to Codat (a write event's `payload.id` is the push
    operation key)."""
    ids = [_company_id_field(event_type, payload), *_connection_id_fields(payload)]
    if WRITE_EVENT.fullmatch(event_type):
        ids.append(("payload.id", payload.get("id")))
    for where, value in ids:
        if value is not None and not is_codat_id(value):
            return where
    return None


def company_id_of(event_type: str, payload: dict[str, Any]) -> str | None:
    _, company_id = _company_id_field(event_type, payload)
    return company_id if is_codat_id(company_id) else None


def connection_id_of(payload: dict[str, Any]) -> str | None:
    for _, value in _connection_id_fields(payload):
        if is_codat_id(value):
            return value
    return None


def _holds_nul(value: object) -> bool:
    """A NUL in any key or string: PostgreSQL's text and jsonb cannot hold one (SQLite
    can), so such a body is kept aside on both rather than processed on one only."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _refuse_constant(name: str) -> None:
    raise ValueError(name)


def _holds_non_json_number(body: bytes) -> bool:
    """NaN or Infinity: Python's parsers take them, JSON (RFC 8259) has neither, and
    PostgreSQL's jsonb refuses them where SQLite keeps them. Parsed again only when the
    bytes appear."""
    if b"NaN" not in body and b"Infinity" not in body:
        return False
    try:
        json.loads(body, parse_constant=_refuse_constant)
    except ValueError:
        return True
    return False


def oversized(event_type: str, payload: dict[str, Any]) -> str | None:
    """Why the event names more than one event can (app/codat/datatypes.py), if it does."""
    items = payload.get("dataTypes")
    if isinstance(items, list):
        if len(items) > MAX_DATA_TYPES_PER_EVENT:
            return f"payload.dataTypes has {len(items)} items, more than {MAX_DATA_TYPES_PER_EVENT}"
        for item in items:
            name = _get(item, "dataType")
            if isinstance(name, str) and len(name) > MAX_DATA_TYPE_LENGTH:
                return f"payload.dataTypes[].dataType longer than {MAX_DATA_TYPE_LENGTH}"
    match = WRITE_EVENT.fullmatch(event_type)
    if match and len(write_data_type(match[1])) > MAX_DATA_TYPE_LENGTH:
        return f"the eventType's data type is longer than {MAX_DATA_TYPE_LENGTH}"
    return None


def read_facts(body: bytes) -> EventFacts:
    """Parse a verified body; never raises, because a signed body is always kept."""
    try:
        envelope = Envelope.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return EventFacts(unprocessable=f"not a Codat envelope: {where}: {first['msg']}"[:500])
    # JSON spells a NUL `\u0000` (a raw one is refused by the parser): look only then.
    if b"\\u0000" in body and _holds_nul(envelope.model_dump()):
        return EventFacts(unprocessable="a string holds a NUL (\\u0000)")
    if _holds_non_json_number(body):
        return EventFacts(unprocessable="not JSON: NaN or Infinity")
    event_type, payload = envelope.eventType, envelope.payload
    unprocessable: str | None = None
    try:
        generated_at = as_utc(envelope.generatedDate)
    except OverflowError:
        generated_at, unprocessable = None, "generatedDate has no UTC form (out of range)"
    if (odd := odd_id(event_type, payload)) is not None:
        unprocessable = f"{odd} is not a Codat id (a UUID)"
    elif (too_many := oversized(event_type, payload)) is not None:
        unprocessable = too_many
    return EventFacts(
        event_id=envelope.id,
        event_type=event_type,
        company_id=company_id_of(event_type, payload),
        connection_id=connection_id_of(payload),
        generated_at=generated_at,
        unprocessable=unprocessable,
    )
