"""Writing what events tell us, so that an older event never overwrites a newer one.

Every guarded column group carries the `generatedDate` of the event that wrote it; an
upsert only lands when its event is newer (DESIGN.md: order per entity).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Executable, Table, bindparam, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.codat.records import PushOperation
from app.db import Executor, dialect_insert, dialect_name, insert_for
from app.models import Base, Company, DataTypeState, RateLimitState, Record, WriteOutcome

log = logging.getLogger(__name__)

RATE_LIMIT_ROW = 1


def _size(column: InstrumentedAttribute[Any]) -> int | None:
    """A column's declared size (String(n)), which PostgreSQL enforces and SQLite does not."""
    length = getattr(column.expression.type, "length", None)
    return length if isinstance(length, int) else None


def fitting_link_url(link_url: str | None, company_id: str) -> str | None:
    """A link URL too long for its column is dropped, not cut: a cut URL leads nowhere,
    and PostgreSQL would refuse the whole event where SQLite stores it."""
    size = _size(Company.link_url)
    if link_url is None or size is None or len(link_url) <= size:
        return link_url
    log.info(
        "link url dropped: too long",
        extra={"company_id": company_id, "length": len(link_url), "limit": size},
    )
    return None


def fitting_write(values: dict[str, Any]) -> dict[str, Any]:
    """A write outcome's texts cut to their columns' sizes (all but the key), so that a
    long `dataType`, `type` or `status` from Codat is stored alike on both databases."""
    fitted = dict(values)
    for name, value in values.items():
        size = _size(getattr(WriteOutcome, name))
        if name == "push_operation_key" or not isinstance(value, str) or size is None:
            continue
        if len(value) > size:
            log.info(
                "write outcome value cut to its column",
                extra={"column": name, "length": len(value), "limit": size},
            )
            fitted[name] = value[:size]
    return fitted


def _not_older(
    column: InstrumentedAttribute[Any], event_at: datetime | None
) -> ColumnElement[bool]:
    """Same-instant events both apply: processing one event twice must be harmless."""
    if event_at is None:
        return true()
    return or_(column.is_(None), column <= event_at)


async def upsert(
    session: Executor,
    model: type[Base],
    values: dict[str, Any],
    *,
    key: Iterable[str],
    update_columns: Iterable[str],
    newer: InstrumentedAttribute[Any] | None = None,
) -> bool:
    """Insert, or update the given columns; with `newer`, only if the new value is later.
    Whether a row was written."""
    statement = _upsert_statement(
        dialect_name(session),
        cast(Table, model.__table__),
        tuple(values),
        tuple(key),
        tuple(update_columns),
        newer.key if newer is not None else None,
    )
    result = await session.execute(statement, _params(values))
    return _written(result)


def _written(result: object) -> bool:
    """Whether a statement wrote a row (a session's Result hides the cursor's rowcount)."""
    return bool(getattr(result, "rowcount", 0))


def _params(values: dict[str, Any]) -> dict[str, Any]:
    return {f"v_{column}": value for column, value in values.items()}


@functools.cache
def _upsert_statement(
    dialect: str,
    table: Table,
    columns: tuple[str, ...],
    key: tuple[str, ...],
    update_columns: tuple[str, ...],
    newer: str | None,
) -> Executable:
    """Built once per shape and run with parameters: building an upsert costs more CPU
    than running it (bench/process.py), and these run for every event."""
    insert = insert_for(dialect)(table).values({c: bindparam(f"v_{c}") for c in columns})
    guard: ColumnElement[bool] | None = None
    if newer is not None:
        guard = or_(table.c[newer].is_(None), table.c[newer] < insert.excluded[newer])
    statement: Executable = insert.on_conflict_do_update(
        index_elements=list(key),
        set_={column: insert.excluded[column] for column in update_columns},
        where=guard,
    )
    return statement


@functools.cache
def _ensure_company_statement(dialect: str, with_tags: bool) -> Executable:
    """Insert the company, or refresh what the event says of it; tags only when the
    event carries them (an event without `tags` says nothing about them)."""
    table = cast(Table, Company.__table__)
    columns: tuple[str, ...] = ("id", "name", "description", "status", "created_at", "updated_at")
    columns += ("tags",) if with_tags else ()
    insert = insert_for(dialect)(table).values({c: bindparam(f"v_{c}") for c in columns})
    changed: dict[str, Any] = {
        "name": func.coalesce(insert.excluded.name, table.c.name),
        "description": func.coalesce(insert.excluded.description, table.c.description),
        "updated_at": insert.excluded.updated_at,
    }
    if with_tags:
        changed["tags"] = insert.excluded.tags
    statement: Executable = insert.on_conflict_do_update(index_elements=[table.c.id], set_=changed)
    return statement


async def ensure_company(
    session: Executor,
    company_id: str,
    now: datetime,
    *,
    name: str | None = None,
    description: str | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    values: dict[str, Any] = {
        "id": company_id,
        "name": name,
        "description": description,
        "status": "active",
        "created_at": now,
        "updated_at": now,
    }
    if tags is not None:
        values["tags"] = tags
    statement = _ensure_company_statement(dialect_name(session), tags is not None)
    await session.execute(statement, _params(values))


async def record_connection(
    session: AsyncSession,
    company_id: str,
    connection_id: str,
    status: str | None,
    event_at: datetime | None,
    now: datetime,
    *,
    needs_reauth: bool | None = None,
    reason: str | None = None,
    link_url: str | None = None,
) -> bool:
    """Whether it was recorded (not overtaken by a newer connection event).
    `needs_reauth`: block the company (True), lift the block (False), or leave it."""
    await ensure_company(session, company_id, now)
    values: dict[str, Any] = {
        "connection_id": connection_id,
        "connection_status": func.coalesce(status, Company.connection_status),
        "connection_event_at": event_at,
        "link_url": func.coalesce(fitting_link_url(link_url, company_id), Company.link_url),
        "updated_at": now,
    }
    if needs_reauth is not None:
        values |= {"needs_reauth": needs_reauth, "reauth_reason": reason if needs_reauth else None}
    result = await session.execute(
        update(Company)
        .where(Company.id == company_id, _not_older(Company.connection_event_at, event_at))
        .values(**values)
    )
    return _written(result)


async def record_company_status(
    session: AsyncSession,
    company_id: str,
    status: str,
    event_at: datetime | None,
    now: datetime,
    *,
    name: str | None = None,
    description: str | None = None,
    tags: dict[str, str] | None = None,
    link_url: str | None = None,
) -> bool:
    """Whether it was recorded (not overtaken by a newer company event)."""
    await ensure_company(session, company_id, now, name=name, description=description, tags=tags)
    result = await session.execute(
        update(Company)
        .where(Company.id == company_id, _not_older(Company.status_event_at, event_at))
        .values(
            status=status,
            status_event_at=event_at,
            deleted_at=now if status == "deleted" else None,
            link_url=func.coalesce(fitting_link_url(link_url, company_id), Company.link_url),
            updated_at=now,
        )
    )
    return _written(result)


async def record_initial_read(
    session: AsyncSession,
    company_id: str,
    *,
    complete: bool,
    failures: list[dict[str, Any]],
    event_at: datetime | None,
    now: datetime,
) -> bool:
    """Whether it was recorded (not overtaken by a newer initial read)."""
    result = await session.execute(
        update(Company)
        .where(Company.id == company_id, _not_older(Company.initial_read_at, event_at))
        .values(
            initial_read_status="complete" if complete else "incomplete",
            initial_read_failures=failures,
            initial_read_at=event_at or now,
            updated_at=now,
        )
    )
    return _written(result)


async def record_read(
    session: AsyncSession,
    company_id: str,
    data_type: str,
    *,
    connection_id: str | None,
    status: str | None,
    issues: list[dict[str, Any]] | None,
    event_at: datetime,
    now: datetime,
) -> None:
    await upsert(
        session,
        DataTypeState,
        {
            "company_id": company_id,
            "data_type": data_type,
            "connection_id": connection_id,
            "last_read_status": status,
            "last_read_at": event_at,
            "last_read_issues": issues or [],
            "record_count": 0,
            "updated_at": now,
        },
        key=["company_id", "data_type"],
        update_columns=[
            "connection_id",
            "last_read_status",
            "last_read_at",
            "last_read_issues",
            "updated_at",
        ],
        newer=DataTypeState.last_read_at,
    )


async def record_write(session: Executor, values: dict[str, Any]) -> bool:
    """One outcome per push operation key; a later event (or catch-up) wins. Whether
    this one was written."""
    values = fitting_write(values)
    return await upsert(
        session,
        WriteOutcome,
        values,
        key=["push_operation_key"],
        update_columns=[column for column in values if column != "push_operation_key"],
        newer=WriteOutcome.event_at,
    )


# The columns a failed write's push operation adds to what its webhook said.
PUSH_ERROR_COLUMNS = ("error_message", "validation", "status_code")


def write_outcome(
    operation: PushOperation, *, company_id: str | None, source: str, now: datetime
) -> dict[str, Any]:
    """A write outcome's columns from Codat's push operation: the whole outcome for
    reconcile, the error and validation (PUSH_ERROR_COLUMNS) for the write handler.
    `event_at` is None: older than any webhook that may still come, so that one wins."""
    return {
        "push_operation_key": operation.key,
        "company_id": company_id,
        "connection_id": operation.connection_id,
        "data_type": operation.data_type or "unknown",
        "write_type": None,
        "status": operation.status,
        "record_id": operation.record_id,
        "attachment_id": None,
        "requested_at": operation.requested_at,
        "completed_at": operation.completed_at,
        "error_message": operation.error_message,
        "validation": operation.validation,
        "status_code": operation.status_code,
        "source": source,
        "event_at": None,
        "updated_at": now,
    }


async def record_rate_limit(
    session: AsyncSession,
    *,
    paused_until: datetime | None,
    reason: str,
    daily_quota: int | None,
    quota_remaining: int | None,
    event_at: datetime | None,
    now: datetime,
) -> bool:
    return await upsert(
        session,
        RateLimitState,
        {
            "id": RATE_LIMIT_ROW,
            "paused_until": paused_until,
            "reason": reason,
            "daily_quota": daily_quota,
            "quota_remaining": quota_remaining,
            "event_at": event_at,
            "updated_at": now,
        },
        key=["id"],
        update_columns=[
            "paused_until",
            "reason",
            "daily_quota",
            "quota_remaining",
            "event_at",
            "updated_at",
        ],
        newer=RateLimitState.event_at,
    )


async def extend_pause(
    session: AsyncSession | AsyncConnection, until: datetime, reason: str, now: datetime
) -> None:
    """A 429 pauses every process until its Retry-After; it only ever lengthens a pause."""
    insert = dialect_insert(session)(RateLimitState).values(
        id=RATE_LIMIT_ROW, paused_until=until, reason=reason, updated_at=now
    )
    longer = or_(RateLimitState.paused_until.is_(None), RateLimitState.paused_until < until)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[RateLimitState.id],
            set_={"paused_until": until, "reason": reason, "updated_at": now},
            where=longer,
        )
    )


# The reason stored when an operator lifts a pause (commands.resume_rate_limit): workers
# drop a 429 pause of their own on seeing it, not only the stored one.
RESUMED_BY_OPERATOR = "resumed by an operator"


async def current_pause(
    session: AsyncSession | AsyncConnection,
) -> tuple[datetime | None, str | None]:
    row = (
        await session.execute(
            select(RateLimitState.paused_until, RateLimitState.reason).where(
                RateLimitState.id == RATE_LIMIT_ROW
            )
        )
    ).first()
    return (row.paused_until, row.reason) if row else (None, None)


@dataclass
class RecordCounts:
    """What a pull changed in the local copy (for the `data.changed` change)."""

    created: int = 0
    updated: int = 0
    deleted: int = 0

    def __bool__(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def add(self, other: RecordCounts) -> None:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted


def _count_change(
    counts: RecordCounts, row: dict[str, Any], old: tuple[datetime | None, bool] | None
) -> None:
    """Created (new, or back from deleted), updated (a new version), deleted (was not)."""
    modified, deleted = row["modified_date"], row["is_deleted"]
    if old is None:
        counts.created += 0 if deleted else 1
        return
    old_modified, old_deleted = old
    if modified is not None and old_modified is not None and modified < old_modified:
        return  # an older version: not stored
    if deleted and not old_deleted:
        counts.deleted += 1
    elif old_deleted and not deleted:
        counts.created += 1
    elif not deleted and modified != old_modified:
        counts.updated += 1


async def save_records(
    session: AsyncSession,
    company_id: str,
    data_type: str,
    connection_id: str | None,
    rows: list[dict[str, Any]],
    now: datetime,
) -> RecordCounts:
    """Upsert a page into the local copy; a record never goes back to an older version.
    What it created, updated and deleted, compared with what the copy held."""
    counts = RecordCounts()
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        held = {
            row.record_id: (row.modified_date, row.is_deleted)
            for row in await session.execute(
                select(Record.record_id, Record.modified_date, Record.is_deleted).where(
                    Record.company_id == company_id,
                    Record.data_type == data_type,
                    Record.record_id.in_([row["record_id"] for row in chunk]),
                )
            )
        }
        for row in chunk:
            _count_change(counts, row, held.get(row["record_id"]))
        insert = dialect_insert(session)(Record).values(
            [
                {
                    "company_id": company_id,
                    "data_type": data_type,
                    "connection_id": connection_id,
                    "pulled_at": now,
                    **row,
                }
                for row in chunk
            ]
        )
        not_older = or_(
            Record.modified_date.is_(None),
            insert.excluded.modified_date.is_(None),
            Record.modified_date <= insert.excluded.modified_date,
        )
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=[Record.company_id, Record.data_type, Record.record_id],
                set_={
                    "data": insert.excluded.data,
                    "modified_date": insert.excluded.modified_date,
                    "is_deleted": insert.excluded.is_deleted,
                    "connection_id": insert.excluded.connection_id,
                    "pulled_at": insert.excluded.pulled_at,
                },
                where=not_older,
            )
        )
    return counts


async def finish_pull(
    session: AsyncSession,
    company_id: str,
    data_type: str,
    *,
    connection_id: str | None,
    watermark: datetime | None,
    started_at: datetime,
) -> None:
    count = await session.scalar(
        select(func.count())
        .select_from(Record)
        .where(
            Record.company_id == company_id,
            Record.data_type == data_type,
            Record.is_deleted.is_(False),
        )
    )
    await upsert(
        session,
        DataTypeState,
        {
            "company_id": company_id,
            "data_type": data_type,
            "connection_id": connection_id,
            "last_pulled_at": started_at,
            "pull_watermark": watermark,
            "record_count": int(count or 0),
            "last_pull_error": None,
            "updated_at": started_at,
        },
        key=["company_id", "data_type"],
        update_columns=[
            "last_pulled_at",
            "pull_watermark",
            "record_count",
            "last_pull_error",
            "updated_at",
        ],
    )


async def record_pull_error(
    session: AsyncSession, company_id: str, data_type: str, error: str, now: datetime
) -> None:
    """A pull stopped short: say why on the data type (its watermark stays where it was,
    so the next pull asks for those records again)."""
    await upsert(
        session,
        DataTypeState,
        {
            "company_id": company_id,
            "data_type": data_type,
            "last_pull_error": error[:1000],
            "record_count": 0,
            "updated_at": now,
        },
        key=["company_id", "data_type"],
        update_columns=["last_pull_error", "updated_at"],
    )


async def record_quota(
    session: AsyncSession | AsyncConnection,
    *,
    limit: int | None,
    remaining: int | None,
    reset_at: datetime | None,
    read_at: datetime,
) -> None:
    """Codat's own count of the quota (its X-Rate-Limit-* headers), unless a newer
    reading is stored already; the pause is not touched."""
    insert = dialect_insert(session)(RateLimitState).values(
        id=RATE_LIMIT_ROW,
        daily_quota=limit,
        quota_remaining=remaining,
        quota_reset_at=reset_at,
        quota_read_at=read_at,
        updated_at=read_at,
    )
    newer = or_(RateLimitState.quota_read_at.is_(None), RateLimitState.quota_read_at < read_at)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[RateLimitState.id],
            set_={
                "daily_quota": func.coalesce(
                    insert.excluded.daily_quota, RateLimitState.daily_quota
                ),
                "quota_remaining": insert.excluded.quota_remaining,
                "quota_reset_at": insert.excluded.quota_reset_at,
                "quota_read_at": insert.excluded.quota_read_at,
            },
            where=newer,
        )
    )
