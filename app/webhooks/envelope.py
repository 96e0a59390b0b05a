"""The columns the receiver indexes from a verified body (Codat's shapes are in
app/codat/events.py), and why a signed body may be kept aside."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from app.codat.events import (
    Envelope,
    as_utc,
    company_id_of,
    connection_id_of,
    odd_id,
    oversized,
)


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
