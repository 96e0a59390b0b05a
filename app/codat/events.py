"""Codat's event vocabulary: what its webhooks and answers mean, apart from how they
arrive (the receiver) or what the service does with them (processing)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.codat.datatypes import (
    MAX_DATA_TYPE_LENGTH,
    MAX_DATA_TYPES_PER_EVENT,
    WRITE_EVENT,
    write_data_type,
)
from app.codat.ids import is_codat_id
from app.codat.push import PushOperationStatus


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


class Envelope(BaseModel):
    """The standard top-level shape of every Codat event since 2024-10 (CODAT.md §1.1)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1, max_length=255)
    eventType: str = Field(min_length=1, max_length=255)
    generatedDate: str  # kept raw: Codat's examples hold invalid dates
    payload: dict[str, Any]


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


# -- what each event says, typed: handlers read these, never Codat's field names -----------

# Codat says tag values are at most 100 characters; keys and the count are our bound.
MAX_TAGS, MAX_TAG_KEY, MAX_TAG_VALUE = 50, 100, 100


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def company_tags(value: object) -> dict[str, str] | None:
    """Codat's `tags` (string to string), bounded; None when the event has none."""
    if not isinstance(value, dict):
        return None
    tags = {
        key: text
        for key, text in value.items()
        if isinstance(key, str)
        and isinstance(text, str)
        and 0 < len(key) <= MAX_TAG_KEY
        and len(text) <= MAX_TAG_VALUE
    }
    return dict(list(tags.items())[:MAX_TAGS])


@dataclass(frozen=True)
class CompanyReference:
    """`referenceCompany` of read, write and connection events, or a `company.*` payload
    (flat, as Codat's OpenAPI has it, or under `referenceCompany`, as its blog shows)."""

    name: str | None = None
    description: str | None = None
    tags: dict[str, str] | None = None
    link_url: str | None = None  # a company's `redirect`: where its SMB links

    @classmethod
    def of(cls, payload: dict[str, Any], *, company_event: bool = False) -> CompanyReference:
        fields: object = payload if company_event and "id" in payload else None
        if fields is None:
            fields = payload.get("referenceCompany")
        if not isinstance(fields, dict):
            return cls()
        return cls(
            name=_text(fields.get("name")),
            description=_text(fields.get("description")),
            tags=company_tags(fields.get("tags")),
            link_url=_text(fields.get("redirect")),
        )


@dataclass(frozen=True)
class ReadSummary:
    """One element of a read event's `dataTypes`."""

    data_type: str
    status: str | None
    connection_id: str | None
    records_modified: bool
    issues: list[dict[str, Any]]


def read_summaries(payload: dict[str, Any]) -> list[ReadSummary] | None:
    """Every element of `dataTypes` that names a data type; None without the list."""
    items = payload.get("dataTypes")
    if not isinstance(items, list):
        return None
    return [
        ReadSummary(
            data_type=item["dataType"],
            status=_text(item.get("status")),
            connection_id=_text(item.get("connectionId")),
            records_modified=bool(item.get("recordsModified")),
            issues=[i for i in item.get("issues") or [] if isinstance(i, dict)],
        )
        for item in items
        if isinstance(item, dict) and isinstance(item.get("dataType"), str)
    ]


@dataclass(frozen=True)
class WriteNotice:
    """A `{dataType}.write.successful/unsuccessful` payload (CODAT.md §1.3)."""

    push_operation_key: str | None
    write_type: str | None
    status: str | None
    connection_id: str | None
    record_id: str | None
    attachment_id: str | None
    requested_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def of(cls, payload: dict[str, Any]) -> WriteNotice:
        record = payload.get("record")
        key = payload.get("id")
        return cls(
            push_operation_key=key if isinstance(key, str) and key else None,
            write_type=_text(payload.get("type")),
            status=_text(payload.get("status")),
            connection_id=_text(payload.get("connectionId")),
            record_id=_text(record.get("id")) if isinstance(record, dict) else None,
            attachment_id=_text(payload.get("attachmentId")),
            requested_at=parse_datetime(payload.get("requestedOnDate")),
            completed_at=parse_datetime(payload.get("completedOnDate")),
        )


@dataclass(frozen=True)
class RateLimitNotice:
    """A `client.rateLimit.reached/reset` payload (CODAT.md §1.4)."""

    daily_quota: int | None
    quota_remaining: int | None
    expiry: datetime | None

    @classmethod
    def of(cls, payload: dict[str, Any]) -> RateLimitNotice:
        return cls(
            daily_quota=_int_or_none(payload.get("dailyQuota")),
            quota_remaining=_int_or_none(payload.get("quotaRemaining")),
            expiry=parse_datetime(payload.get("expiryDate")),
        )


@dataclass(frozen=True)
class ConnectionNotice:
    """The `connection` of a `connection.*` payload; None without its id."""

    id: str
    status: str | None
    link_url: str | None
    # `sourceType` (Accounting/Banking/BankFeed/Commerce/Expense/Other/Unknown): required
    # in Codat's Connection schema, but None when a payload leaves it out.
    source_type: str | None = None

    @classmethod
    def of(cls, payload: dict[str, Any]) -> ConnectionNotice | None:
        connection = payload.get("connection")
        if not isinstance(connection, dict) or not isinstance(connection.get("id"), str):
            return None
        return cls(
            id=connection["id"],
            status=_text(connection.get("status")),
            link_url=_text(connection.get("linkUrl")),
            source_type=_text(connection.get("sourceType")) or None,
        )

    @property
    def is_accounting(self) -> bool:
        """Whether Bill Pay reads through it: an `Accounting` connection, or one whose
        payload does not say (a guess: Codat's schema requires `sourceType`, so a payload
        without it is taken as before, as the company's accounting connection)."""
        return self.source_type is None or self.source_type.casefold() == "accounting"


FINISHED_PUSH = frozenset(
    {PushOperationStatus.SUCCESS, PushOperationStatus.FAILED, PushOperationStatus.TIMED_OUT}
)
