"""The database as the queue: claim due rows under a lease, then finish, retry or release.

Both queues (webhook events and jobs) share these rules. PostgreSQL claims with
`FOR UPDATE SKIP LOCKED`, so many workers never take the same row; SQLite serialises
writers, so one claim at a time is what it gets anyway. A row whose worker died is
claimed again once its lease has run out.
"""

from __future__ import annotations

import functools
import random
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Executable,
    Table,
    and_,
    bindparam,
    case,
    false,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute

from app import tracing
from app.db import Executor, dialect_insert
from app.models import Delivery, EventStatus, Job, JobStatus, WebhookEvent

Queued = TypeVar("Queued", WebhookEvent, Job, Delivery)

# Every queue spells these two states the same way.
PENDING = EventStatus.PENDING.value
PROCESSING = EventStatus.PROCESSING.value
# Marks rows that wait for a pause of calls to Codat to end (not failures).
WAITING_PREFIX = "waiting: "


async def claim_due(
    conn: AsyncConnection,
    model: type[Queued],
    *,
    worker_id: str,
    limit: int,
    now: datetime,
    lease: timedelta,
) -> list[Queued]:
    """Take up to `limit` rows whose lease expired, then due rows in due order, and lease
    them to us.

    Two claims, each an ordered range of the (status, next_attempt_at) index that stops at
    `limit`. One claim of `pending OR lease expired` read and sorted every due row each
    time: 184 ms a claim with 100,000 events waiting, so a bulk recovery drained ever
    slower (bench.scale)."""
    expired = and_(model.status == PROCESSING, model.locked_until < now)
    claimed = await _claim(conn, model, expired, model.locked_until, worker_id, limit, now, lease)
    if len(claimed) < limit:
        due = and_(model.status == PENDING, model.next_attempt_at <= now)
        claimed += await _claim(
            conn, model, due, model.next_attempt_at, worker_id, limit - len(claimed), now, lease
        )
    return claimed


async def _claim(
    conn: AsyncConnection,
    model: type[Queued],
    condition: ColumnElement[bool],
    order: InstrumentedAttribute[datetime | None],
    worker_id: str,
    limit: int,
    now: datetime,
    lease: timedelta,
) -> list[Queued]:
    due = (
        select(model.id)
        .where(condition)
        .order_by(order)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claim = (
        update(model)
        .where(model.id.in_(due.scalar_subquery()))
        .values(
            status=PROCESSING,
            locked_by=worker_id,
            locked_until=now + lease,
            attempts=model.attempts + 1,
        )
        .returning(*model.__table__.columns)
    )
    return [model(**row._mapping) for row in await conn.execute(claim)]


async def renew_leases(
    conn: AsyncConnection, model: type[Queued], ids: list[int], worker_id: str, until: datetime
) -> None:
    if ids:
        await conn.execute(
            update(model)
            .where(model.id.in_(ids), model.locked_by == worker_id, model.status == PROCESSING)
            .values(locked_until=until)
        )


def backoff_delay(attempts: int, base: float, cap: float) -> float:
    """Exponential with full jitter: retries of many rows spread out instead of stampeding."""
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return random.uniform(ceiling / 2, ceiling)


async def reschedule(
    conn: AsyncConnection,
    item: WebhookEvent | Job,
    worker_id: str,
    *,
    at: datetime,
    error: str | None,
    count_attempt: bool,
) -> None:
    """Back to pending for `at`; a pause or a shutdown does not count as an attempt."""
    model = type(item)
    values: dict[str, Any] = {
        "status": PENDING,
        "next_attempt_at": at,
        "locked_by": None,
        "locked_until": None,
    }
    if error is not None:
        values["last_error"] = error[:4000]
    if not count_attempt:
        values["attempts"] = model.attempts - 1
    # Only a row we still hold: never one we finished (a finished event keeps locked_by).
    await conn.execute(
        update(model)
        .where(model.id == item.id, model.locked_by == worker_id, model.status == PROCESSING)
        .values(**values)
    )


async def finish_event(
    conn: AsyncConnection,
    event: WebhookEvent,
    worker_id: str,
    *,
    status: str,
    now: datetime,
    error: str | None = None,
) -> bool:
    """Settle our claim on the event; False if it is no longer ours (lease lost)."""
    params: dict[str, Any] = {
        "v_id": event.id,
        "v_worker": worker_id,
        "v_status": status,
        "v_now": now,
    }
    if error is not None:
        params["v_error"] = error[:4000]
    result = await conn.execute(_finish_event_statement(error is not None), params)
    return bool(result.rowcount)


@functools.cache
def _finish_event_statement(with_error: bool) -> Executable:
    """Built once and run with parameters: this runs for every event (bench/process.py)."""
    table = cast(Table, WebhookEvent.__table__)
    # locked_by stays: it tells which worker finished the row.
    values: dict[str, Any] = {
        "status": bindparam("v_status"),
        "locked_until": None,
        "next_attempt_at": None,
        "processed_at": bindparam("v_now"),
    }
    if with_error:
        values["last_error"] = bindparam("v_error")
    statement: Executable = (
        update(table)
        .where(
            table.c.id == bindparam("v_id"),
            table.c.locked_by == bindparam("v_worker"),
            table.c.status == PROCESSING,
        )
        .values(values)
    )
    return statement


async def finish_job(
    conn: AsyncConnection,
    job: Job,
    worker_id: str,
    *,
    status: str,
    now: datetime,
    error: str | None = None,
) -> bool:
    """Done, or pending again at once if someone asked for it while it ran; False if the
    job is no longer ours (lease lost)."""
    rerun = Job.rerun.is_(True) if status == JobStatus.DONE else false()
    values: dict[str, Any] = {
        "status": case((rerun, PENDING), else_=status),
        "attempts": case((rerun, 0), else_=Job.attempts),
        # A rerun keeps the due time its request asked for (a debounce, a schedule).
        "next_attempt_at": case((rerun, Job.next_attempt_at), else_=None),
        "rerun": False,
        "locked_by": None,
        "locked_until": None,
        "finished_at": now,
        "updated_at": now,
    }
    if error is not None:
        values["last_error"] = error[:4000]
    result = await conn.execute(
        update(Job)
        .where(Job.id == job.id, Job.locked_by == worker_id, Job.status == PROCESSING)
        .values(**values)
    )
    return bool(result.rowcount)


async def enqueue_job(
    session: Executor,
    *,
    kind: str,
    key: str,
    now: datetime,
    due_at: datetime | None = None,
    company_id: str | None = None,
    data_type: str | None = None,
    connection_id: str | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Ask for a job. Asked again while waiting: still one job, at its first due time.
    Asked while running: it runs once more after. Done or dead: armed afresh."""
    insert = dialect_insert(session)(Job).values(
        key=key,
        kind=kind,
        company_id=company_id,
        data_type=data_type,
        connection_id=connection_id,
        params=params,
        status=PENDING,
        attempts=0,
        next_attempt_at=due_at or now,
        rerun=False,
        created_at=now,
        updated_at=now,
        traceparent=tracing.traceparent(),
    )
    new = insert.excluded
    idle = Job.status.in_([JobStatus.DONE, JobStatus.DEAD])
    running = Job.status == PROCESSING
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[Job.key],
            set_={
                "status": case((running, PROCESSING), else_=PENDING),
                "rerun": case((running, True), else_=Job.rerun),
                "next_attempt_at": case(
                    (idle | running, new.next_attempt_at), else_=Job.next_attempt_at
                ),
                "attempts": case((idle, 0), else_=Job.attempts),
                "last_error": case((idle, None), else_=Job.last_error),
                "connection_id": func.coalesce(new.connection_id, Job.connection_id),
                "params": new.params,
                "updated_at": now,
                # A waiting job runs for whoever asked first; a new run, for this asker.
                "traceparent": case((idle | running, new.traceparent), else_=Job.traceparent),
            },
        )
    )


async def resume_waiting(session: Executor, now: datetime) -> None:
    """The rate limit was reset: what waited for it is due now, not at the pause's end."""
    for model in (WebhookEvent, Job):
        await session.execute(
            update(model)
            .where(
                model.status == PENDING,
                model.next_attempt_at > now,
                model.last_error.startswith(WAITING_PREFIX),
            )
            .values(next_attempt_at=now)
        )
