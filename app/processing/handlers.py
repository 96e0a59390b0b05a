"""One handler per event type (DESIGN.md, "What each event does").

A handler makes its calls to Codat, then says what the event ends as and which writes
go with that: the worker commits those writes in the same transaction that marks the
event done, so an event's effects and its completion land together or not at all.
Handlers are idempotent: running one twice leaves what running it once left. Work that
needs many calls to Codat (pulls) is queued as a job, so that waiting pulls of one
company and data type collapse into one and never run twice at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.changes.record import (
    COMPANY_DELETED,
    COMPANY_INCOMPLETE,
    COMPANY_NEEDS_REAUTH,
    COMPANY_READY,
    COMPANY_RECONNECTED,
    DATA_TYPE_UNAVAILABLE,
    RATE_LIMIT_PAUSED,
    RATE_LIMIT_RESUMED,
    write_change_body,
    write_change_type,
)
from app.codat.datatypes import (
    BILL_PAY_DATA_TYPES,
    PULLABLE_DATA_TYPES,
    WRITE_EVENT,
    write_data_type,
)
from app.codat.events import (
    CompanyReference,
    ConnectionNotice,
    Envelope,
    RateLimitNotice,
    ReadSummary,
    WriteNotice,
    read_summaries,
)
from app.codat.gate import capped_pause
from app.codat.statuses import COMPLETE, NEEDS_RELINK, status_kind
from app.models import Company, DataTypeState, EventStatus, WebhookEvent
from app.processing.context import Context, InvalidEvent
from app.processing.lifecycle import (
    DELETED,
    REAUTH_EVENTS,
    block_for_auth_error,
    blocked_reason,
    lift_block_after_initial_read,
    reauth_after,
    stop_company_work,
)
from app.processing.lifecycle import REAUTH_STATUSES as REAUTH_STATUSES
from app.processing.pulls import PULL, pull_key
from app.processing.queue import enqueue_job, resume_waiting
from app.processing.reconcile import request_reconcile
from app.processing.refreshes import request_write_refresh, retry_failed_read
from app.processing.state import (
    PUSH_ERROR_COLUMNS,
    current_pause,
    ensure_company,
    record_company_status,
    record_connection,
    record_initial_read,
    record_rate_limit,
    record_read,
    record_write,
    write_outcome,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivered:
    """An event as handlers see it: the envelope plus when Codat made it."""

    envelope: Envelope
    company_id: str | None
    generated_at: datetime

    @property
    def payload(self) -> dict[str, Any]:
        return self.envelope.payload


Write = Callable[[AsyncSession], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    """What an event ends as, and the writes that commit with that ending."""

    status: str
    write: Write | None = None


Handler = Callable[[Context, Delivered], Awaitable[Outcome]]


def _data_types(delivered: Delivered) -> list[ReadSummary]:
    items = read_summaries(delivered.payload)
    if items is None:
        raise InvalidEvent("read event without a dataTypes list")
    return items


def _reference(delivered: Delivered) -> CompanyReference:
    return CompanyReference.of(delivered.payload)


def _company_id(delivered: Delivered) -> str:
    if not delivered.company_id:
        raise InvalidEvent(f"{delivered.envelope.eventType} without a company id")
    return delivered.company_id


async def _record_reads(ctx: Context, delivered: Delivered, *, initial: bool) -> Outcome:
    company_id = _company_id(delivered)
    items = _data_types(delivered)
    now = ctx.clock()
    reference = _reference(delivered)

    async def write(session: AsyncSession) -> None:
        await ensure_company(
            session,
            company_id,
            now,
            name=reference.name,
            description=reference.description,
            tags=reference.tags,
        )
        if initial and await lift_block_after_initial_read(
            session, company_id, delivered.generated_at, now
        ):
            await _resume_company_work(ctx, session, company_id, now)
        blocked = await blocked_reason(session, company_id) is not None
        required_types = BILL_PAY_DATA_TYPES[ctx.settings.bill_pay_variant]
        if initial:
            failures = initial_read_failures(items, required_types)
            recorded = await record_initial_read(
                session,
                company_id,
                complete=not failures,
                failures=failures,
                event_at=delivered.generated_at,
                now=now,
            )
            if recorded:
                await ctx.record_change(
                    session,
                    COMPANY_INCOMPLETE if failures else COMPANY_READY,
                    company_id,
                    {"failures": failures} if failures else {},
                )
        for item in items:
            if status_kind(item.status) == "terminal":
                await _announce_unavailable(ctx, session, company_id, item, delivered.generated_at)
            if item.status in NEEDS_RELINK:
                blocked = True
                await _block_for_auth_error(ctx, session, delivered, item)
            # The initial read pulls everything complete; later reads only what changed.
            wanted = item.status == COMPLETE and (initial or item.records_modified)
            pullable = wanted and item.data_type in PULLABLE_DATA_TYPES
            await record_read(
                session,
                company_id,
                item.data_type,
                connection_id=item.connection_id,
                status=item.status,
                issues=item.issues,
                event_at=delivered.generated_at,
                now=now,
            )
            if blocked:
                continue  # recorded; pulled when linked again (_resume_company_work)
            if item.data_type in required_types:
                await _refresh_if_incomplete(ctx, session, company_id, item, now)
            if pullable:
                await enqueue_job(
                    session,
                    kind=PULL,
                    key=pull_key(company_id, item.data_type),
                    now=now,
                    due_at=now + timedelta(seconds=ctx.settings.pull_debounce_seconds),
                    company_id=company_id,
                    data_type=item.data_type,
                    connection_id=item.connection_id,
                )

    return Outcome(EventStatus.PROCESSED, write)


async def _announce_unavailable(
    ctx: Context,
    session: AsyncSession,
    company_id: str,
    item: ReadSummary,
    event_at: datetime,
) -> None:
    """`data_type.unavailable` when a type's read ends in a status no refresh can fix,
    once per status (the same status again, or an older read, announces nothing)."""
    state = await session.get(DataTypeState, (company_id, item.data_type))
    if state is not None and (
        state.last_read_status == item.status
        or (state.last_read_at is not None and state.last_read_at > event_at)
    ):
        return
    await ctx.record_change(
        session,
        DATA_TYPE_UNAVAILABLE,
        company_id,
        {
            "dataType": item.data_type,
            "status": item.status,
            "issues": item.issues,
            "needsReauth": item.status in NEEDS_RELINK,
        },
    )


async def _block_for_auth_error(
    ctx: Context, session: AsyncSession, delivered: Delivered, item: ReadSummary
) -> None:
    """A read that ended in AuthError: the connection must be linked again."""
    company_id = _company_id(delivered)
    if await block_for_auth_error(session, company_id, delivered.generated_at, ctx.clock()):
        link_url = await session.scalar(select(Company.link_url).where(Company.id == company_id))
        await ctx.record_change(
            session,
            COMPANY_NEEDS_REAUTH,
            company_id,
            {
                "connectionId": item.connection_id,
                "event": delivered.envelope.eventType,
                "dataType": item.data_type,
                "status": item.status,
                "linkUrl": link_url,
            },
        )


async def _refresh_if_incomplete(
    ctx: Context, session: AsyncSession, company_id: str, item: ReadSummary, now: datetime
) -> None:
    """A Bill Pay type whose read failed for a reason that may pass is refreshed (a few
    times); one that completed resets. A terminal status is left alone (a refresh cannot
    fix it), as is a read still on its way."""
    kind = status_kind(item.status)
    if kind == "complete":
        await session.execute(
            update(DataTypeState)
            .where(
                DataTypeState.company_id == company_id, DataTypeState.data_type == item.data_type
            )
            .values(refresh_retries=0)
        )
    elif kind == "transient":
        await retry_failed_read(ctx, session, company_id, item.data_type, item.connection_id, now)


def initial_read_failures(
    items: list[ReadSummary], required: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The Bill Pay types that did not complete, with Codat's status and issues (`Missing`
    when Codat did not report the type)."""
    by_type = {item.data_type: item for item in items}
    failures: list[dict[str, Any]] = []
    for data_type in required:
        item = by_type.get(data_type)
        if item is None:
            failures.append({"dataType": data_type, "status": "Missing", "issues": []})
        elif item.status != COMPLETE:
            failures.append({"dataType": data_type, "status": item.status, "issues": item.issues})
    return failures


async def handle_initial_read(ctx: Context, delivered: Delivered) -> Outcome:
    return await _record_reads(ctx, delivered, initial=True)


async def handle_read_completed(ctx: Context, delivered: Delivered) -> Outcome:
    return await _record_reads(ctx, delivered, initial=False)


async def handle_write(ctx: Context, delivered: Delivered) -> Outcome:
    match = WRITE_EVENT.fullmatch(delivered.envelope.eventType)
    assert match is not None
    data_type, successful = write_data_type(match[1]), match[2] == "successful"
    notice = WriteNotice.of(delivered.payload)
    key = notice.push_operation_key
    if key is None:
        raise InvalidEvent("write event without payload.id (the push operation key)")
    company_id = delivered.company_id
    values: dict[str, Any] = {
        "push_operation_key": key,
        "company_id": company_id,
        "connection_id": notice.connection_id,
        "data_type": data_type,
        "write_type": notice.write_type,
        "status": notice.status or ("Success" if successful else "Failed"),
        "record_id": notice.record_id,
        "attachment_id": notice.attachment_id,
        "requested_at": notice.requested_at,
        "completed_at": notice.completed_at,
        "source": "webhook",
        "event_at": delivered.generated_at,
    }
    now = ctx.clock()
    if not successful and company_id and not await _deleted(ctx, company_id):
        # The webhook carries no reason; the push operation has the error and validation.
        operation = await ctx.codat.push_operation(company_id, key)
        from_codat = write_outcome(operation, company_id=company_id, source="webhook", now=now)
        values |= {column: from_codat[column] for column in PUSH_ERROR_COLUMNS}
    reference = _reference(delivered)

    async def write(session: AsyncSession) -> None:
        if company_id:
            await ensure_company(session, company_id, now, name=reference.name, tags=reference.tags)
        if await record_write(session, {**values, "updated_at": now}):
            await ctx.record_change(
                session,
                write_change_type(data_type, successful),
                company_id,
                write_change_body(values, successful),
            )
        if (
            successful
            and company_id
            and notice.write_type in ("Create", "Update", "Delete")
            and await blocked_reason(session, company_id) is None
        ):
            await request_write_refresh(
                ctx, session, company_id, data_type, notice.connection_id, now
            )

    return Outcome(EventStatus.PROCESSED, write)


async def _deleted(ctx: Context, company_id: str) -> bool:
    """A deleted company's work has stopped: its write outcomes are kept as the event
    says, without asking Codat for more."""
    # A bare connection, not an ORM session: this runs for every failed write.
    async with ctx.engine.connect() as connection:
        return await blocked_reason(connection, company_id) == DELETED


async def handle_rate_limit(ctx: Context, delivered: Delivered) -> Outcome:
    reached = delivered.envelope.eventType == "client.rateLimit.reached"
    notice = RateLimitNotice.of(delivered.payload)
    now = ctx.clock()
    until: datetime | None = None
    if reached:
        # Codat's quota resets at midnight UTC: the fallback when expiryDate is unreadable.
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        until = capped_pause(notice.expiry or midnight, now)

    async def write(session: AsyncSession) -> None:
        recorded = await record_rate_limit(
            session,
            paused_until=until,
            reason="rateLimit.reached" if reached else "rateLimit.reset",
            daily_quota=notice.daily_quota,
            quota_remaining=notice.quota_remaining,
            event_at=delivered.generated_at,
            now=now,
        )
        paused_until, reason = await current_pause(session)
        if paused_until is None:
            await resume_waiting(session, now)
        if recorded:
            await ctx.record_change(
                session,
                RATE_LIMIT_PAUSED if reached else RATE_LIMIT_RESUMED,
                None,
                {"until": until.isoformat()} if until else {},
            )
        # Before the commit: should it fail, the worker reads the table again within a
        # poll interval and the gate follows what was stored.
        ctx.codat.gate.set(paused_until, reason)
        log.info("rate limit %s", "reached" if reached else "reset", extra={"until": str(until)})

    return Outcome(EventStatus.PROCESSED, write)


async def handle_connection(ctx: Context, delivered: Delivered) -> Outcome:
    """Record the accounting connection's status; a broken one blocks the company's work
    until it is linked again, and `connection.reconnected` reconciles it at once. Other
    source types (banking, commerce...) are logged and ignored."""
    company_id = _company_id(delivered)
    event_type = delivered.envelope.eventType
    connection = ConnectionNotice.of(delivered.payload)
    if connection is None:
        raise InvalidEvent("connection event without payload.connection.id")
    if not connection.is_accounting:
        # Bill Pay reads from the company's accounting connection: a banking or commerce
        # connection breaking or linking neither blocks the company nor lifts its block.
        log.info(
            "connection event ignored: not an accounting connection",
            extra={
                "company_id": company_id,
                "connection_id": connection.id,
                "source_type": connection.source_type,
                "event_type": event_type,
            },
        )
        return Outcome(EventStatus.IGNORED)
    needs_reauth = reauth_after(event_type, connection.status)
    reference = _reference(delivered)
    now = ctx.clock()

    async def write(session: AsyncSession) -> None:
        await ensure_company(session, company_id, now, name=reference.name, tags=reference.tags)
        was_blocked = await blocked_reason(session, company_id) is not None
        recorded = await record_connection(
            session,
            company_id,
            connection.id,
            connection.status,
            delivered.generated_at,
            now,
            needs_reauth=needs_reauth,
            reason=event_type if event_type in REAUTH_EVENTS else str(connection.status),
            link_url=connection.link_url,
        )
        if not recorded:
            return
        await _announce_connection(ctx, session, delivered, company_id, connection)
        if await blocked_reason(session, company_id) is not None:
            return
        if was_blocked:
            await _resume_company_work(ctx, session, company_id, now)
        if event_type == "connection.reconnected":
            # Whatever happened while it was unlinked: catch up now, not at the next sweep.
            await request_reconcile(session, company_id, now)

    return Outcome(EventStatus.PROCESSED, write)


async def _resume_company_work(
    ctx: Context, session: AsyncSession, company_id: str, now: datetime
) -> None:
    """Linked again: pull every type Codat has read, since reads that came while the
    company was blocked were recorded but not pulled (each pull asks only for what is
    newer than its watermark, so one with nothing new costs a call)."""
    states = await session.scalars(
        select(DataTypeState).where(
            DataTypeState.company_id == company_id,
            DataTypeState.last_read_status == COMPLETE,
            DataTypeState.data_type.in_(PULLABLE_DATA_TYPES),
        )
    )
    for state in states:
        await enqueue_job(
            session,
            kind=PULL,
            key=pull_key(company_id, state.data_type),
            now=now,
            due_at=now + timedelta(seconds=ctx.settings.pull_debounce_seconds),
            company_id=company_id,
            data_type=state.data_type,
            connection_id=state.connection_id,
        )


async def _announce_connection(
    ctx: Context,
    session: AsyncSession,
    delivered: Delivered,
    company_id: str,
    connection: ConnectionNotice,
) -> None:
    """`company.reconnected` when linked again; `company.needs_reauth` when it broke."""
    event_type = delivered.envelope.eventType
    body: dict[str, Any] = {"connectionId": connection.id, "event": event_type}
    if event_type == "connection.reconnected":
        await ctx.record_change(session, COMPANY_RECONNECTED, company_id, body)
    elif reauth_after(event_type, connection.status):
        body["linkUrl"] = connection.link_url
        await ctx.record_change(session, COMPANY_NEEDS_REAUTH, company_id, body)


async def handle_company(ctx: Context, delivered: Delivered) -> Outcome:
    """`company.created` records what Codat says of it; `company.deleted` stops all work."""
    event_type = delivered.envelope.eventType
    if event_type not in ("company.created", "company.deleted"):
        return Outcome(EventStatus.IGNORED)
    company_id = _company_id(delivered)
    now = ctx.clock()
    company = CompanyReference.of(delivered.payload, company_event=True)
    status = DELETED if event_type == "company.deleted" else "active"

    async def write(session: AsyncSession) -> None:
        recorded = await record_company_status(
            session,
            company_id,
            status,
            delivered.generated_at,
            now,
            name=company.name,
            description=company.description,
            tags=company.tags,
            link_url=company.link_url,
        )
        if recorded and status == DELETED:
            dropped = await stop_company_work(session, company_id)
            await ctx.record_change(session, COMPANY_DELETED, company_id, {})
            log.info("company deleted", extra={"company_id": company_id, "jobs_dropped": dropped})

    return Outcome(EventStatus.PROCESSED, write)


async def handle_other(ctx: Context, delivered: Delivered) -> Outcome:
    return Outcome(EventStatus.IGNORED)


HANDLERS: dict[str, Handler] = {
    "read.completed.initial": handle_initial_read,
    "read.completed": handle_read_completed,
    "client.rateLimit.reached": handle_rate_limit,
    "client.rateLimit.reset": handle_rate_limit,
}


def handler_for(event_type: str) -> Handler:
    if event_type in HANDLERS:
        return HANDLERS[event_type]
    if WRITE_EVENT.fullmatch(event_type):
        return handle_write
    if event_type.startswith("connection."):
        return handle_connection
    if event_type.startswith("company."):
        return handle_company
    return handle_other


def serial_key(event: WebhookEvent) -> str:
    """Events sharing a key never run at once in one worker: same company and data type."""
    event_type = event.event_type or ""
    match = WRITE_EVENT.fullmatch(event_type)
    topic = write_data_type(match[1]) if match else event_type
    return f"{event.company_id}:{topic}"


async def handle_event(ctx: Context, event: WebhookEvent) -> Outcome:
    """Run the event's handler: what the event ends as, and the writes that go with it."""
    envelope = Envelope.model_validate_json(event.raw_body)
    delivered = Delivered(
        envelope=envelope,
        company_id=event.company_id,
        generated_at=event.generated_at or event.received_at,
    )
    return await handler_for(envelope.eventType)(ctx, delivered)
