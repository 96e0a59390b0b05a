"""What Codat's answers hold, as small typed records: the client returns these, so the
rest of the service never reads Codat's field names (`lastSuccessfulSync`,
`requestedOnUtc`, `changes[0].recordRef`, `metadata.isDeleted`, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.codat.events import FINISHED_PUSH, parse_datetime
from app.codat.push import PushOperationStatus


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class DataStatus:
    """One entry of `/dataStatus`: when Codat last read the type, and what it is doing."""

    data_type: str
    last_successful_sync: datetime | None
    current_status: str | None

    @classmethod
    def all_of(cls, body: dict[str, Any]) -> dict[str, DataStatus]:
        return {
            data_type: cls(
                data_type=data_type,
                last_successful_sync=parse_datetime(entry.get("lastSuccessfulSync")),
                current_status=_text(entry.get("currentStatus")),
            )
            for data_type, entry in body.items()
            if isinstance(entry, dict)
        }


@dataclass(frozen=True)
class PushOperation:
    """A write to the SMB's accounting software (`PushOperation`, CODAT.md §1.3)."""

    key: str
    status: str | None
    data_type: str | None
    connection_id: str | None
    record_id: str | None
    requested_at: datetime | None
    completed_at: datetime | None
    error_message: str | None
    validation: dict[str, Any] | None
    status_code: int | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_PUSH

    @property
    def succeeded(self) -> bool:
        return self.status == PushOperationStatus.SUCCESS

    @classmethod
    def of(cls, body: dict[str, Any]) -> PushOperation | None:
        """None for an answer without a push operation key."""
        key = body.get("pushOperationKey")
        if not isinstance(key, str) or not key:
            return None
        changes = body.get("changes") or []
        first = changes[0] if changes and isinstance(changes[0], dict) else {}
        ref = first.get("recordRef")
        record_ref: dict[str, Any] = ref if isinstance(ref, dict) else {}
        status_code = body.get("statusCode")
        validation = body.get("validation")
        return cls(
            key=key,
            status=_text(body.get("status")),
            data_type=_text(body.get("dataType")) or _text(record_ref.get("dataType")),
            connection_id=_text(body.get("dataConnectionKey")),
            record_id=_text(record_ref.get("id")),
            requested_at=parse_datetime(body.get("requestedOnUtc")),
            completed_at=parse_datetime(body.get("completedOnUtc")),
            error_message=_text(body.get("errorMessage")),
            validation=validation if isinstance(validation, dict) else None,
            status_code=status_code
            if isinstance(status_code, int) and not isinstance(status_code, bool)
            else None,
        )


@dataclass(frozen=True)
class CachedRecord:
    """One record of Codat's cache: its id, `modifiedDate`, whether Codat marks it deleted
    (`metadata.isDeleted`), and the record itself, kept whole."""

    id: str | None
    modified_date: datetime | None
    is_deleted: bool
    data: dict[str, Any]

    @classmethod
    def of(cls, record: dict[str, Any]) -> CachedRecord:
        record_id = record.get("id")
        metadata = record.get("metadata")
        return cls(
            id=str(record_id) if isinstance(record_id, str | int) and str(record_id) else None,
            modified_date=parse_datetime(record.get("modifiedDate")),
            is_deleted=bool(isinstance(metadata, dict) and metadata.get("isDeleted")),
            data=record,
        )


@dataclass(frozen=True)
class WebhookConsumer:
    """A webhook consumer of Codat's (`WebhookConsumer`): where it sends which events."""

    id: str | None
    url: str | None
    event_types: list[str]

    @classmethod
    def of(cls, body: dict[str, Any]) -> WebhookConsumer:
        types = body.get("eventTypes")
        return cls(
            id=_text(body.get("id")),
            url=_text(body.get("url")),
            event_types=[t for t in types if isinstance(t, str)] if isinstance(types, list) else [],
        )
