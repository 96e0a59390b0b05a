"""Reconcile: compare Codat's own data status and push operations with what we saw, and
catch up what a lost webhook would have told us, counting each catch-up as a missed
webhook.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.changes.record import WEBHOOKS_MISSED, write_change_body, write_change_type
from app.codat.datatypes import PULLABLE_DATA_TYPES
from app.codat.events import FINISHED_PUSH
from app.codat.records import DataStatus, PushOperation
from app.metrics import MISSED_WEBHOOKS
from app.models import Company, DataTypeState, Job, WriteOutcome
from app.processing.context import Context, InvalidJob
from app.processing.lifecycle import skipped_for_lifecycle
from app.processing.pulls import PULL, pull_key
from app.processing.queue import enqueue_job
from app.processing.refreshes import request_refresh, request_write_refresh
from app.processing.state import ensure_company, record_write, write_outcome

log = logging.getLogger(__name__)
RECONCILE = "reconcile"


def reconcile_key(company_id: str) -> str:
    return f"{RECONCILE}:{company_id}"


async def request_reconcile(
    session: AsyncSession, company_id: str, now: datetime, *, refresh: list[str] | None = None
) -> None:
    """`refresh`: types to refresh afterwards unless Codat turns out to have read them."""
    await enqueue_job(
        session,
        kind=RECONCILE,
        key=reconcile_key(company_id),
        now=now,
        company_id=company_id,
        params={"refresh": refresh} if refresh else None,
    )


async def run_reconcile(ctx: Context, job: Job) -> None:
    """Compare Codat's data status and push operations with what we saw; catch up the rest."""
    company_id = job.company_id
    if not company_id:
        raise InvalidJob(f"reconcile job {job.key} has no company")
    async with ctx.sessions() as session:
        if await skipped_for_lifecycle(session, job):
            return
    statuses = await ctx.codat.data_status(company_id)
    # Commits the read catch-ups with last_reconciled_at: from here on nothing raises
    # from Codat, since a retry would count the same catch-ups again.
    reads = await _catch_up_reads(ctx, company_id, statuses)
    await _refresh_unread(ctx, company_id, statuses, (job.params or {}).get("refresh") or [])
    now = ctx.clock()
    writes = 0
    if reads or await _push_list_due(ctx, company_id, now):
        writes, listed = await _catch_up_writes(ctx, company_id)
        values: dict[str, Any] = {"write_catch_ups": Company.write_catch_ups + writes}
        if listed:
            values["last_push_reconciled_at"] = now
        async with ctx.sessions.begin() as session:
            await session.execute(update(Company).where(Company.id == company_id).values(**values))
    log.info(
        "reconciled",
        extra={"company_id": company_id, "read_catch_ups": reads, "write_catch_ups": writes},
    )


async def _push_list_due(ctx: Context, company_id: str, now: datetime) -> bool:
    """Listing push operations costs a call: do it where outcomes may be missing.

    That is a company with writes in the lookback window, or one not listed within
    RECONCILE_PUSH_INTERVAL; the caller adds a company whose reads were just caught up
    (its deliveries are being lost)."""
    settings = ctx.settings
    async with ctx.sessions() as session:
        company = await session.get(Company, company_id)
        listed = company.last_push_reconciled_at if company else None
        if listed is None or listed < now - settings.reconcile_push_interval:
            return True
        recent = await session.scalar(
            select(WriteOutcome.push_operation_key)
            .where(
                WriteOutcome.company_id == company_id,
                WriteOutcome.updated_at >= now - settings.reconcile_push_lookback,
            )
            .limit(1)
        )
    return recent is not None


async def _refresh_unread(
    ctx: Context, company_id: str, statuses: dict[str, DataStatus], data_types: list[str]
) -> None:
    """Refresh the overdue types Codat itself has not read within the policy."""
    now = ctx.clock()
    cutoff = now - ctx.settings.freshness_max_age
    async with ctx.sessions.begin() as session:
        for data_type in data_types:
            status = statuses.get(data_type)
            synced = status.last_successful_sync if status else None
            if synced is not None and synced >= cutoff:
                continue  # Codat has it; _catch_up_reads pulled it if we had not
            state = await session.get(DataTypeState, (company_id, data_type))
            await request_refresh(
                session,
                company_id,
                data_type,
                connection_id=state.connection_id if state else None,
                now=now,
                reason="sweep",
            )


async def _catch_up_reads(ctx: Context, company_id: str, statuses: dict[str, Any]) -> int:
    now = ctx.clock()
    caught_up: list[str] = []
    async with ctx.sessions.begin() as session:
        await ensure_company(session, company_id, now)
        for data_type, status in statuses.items():
            if data_type not in PULLABLE_DATA_TYPES:
                continue
            synced = status.last_successful_sync
            if synced is None:
                continue
            state = await session.get(DataTypeState, (company_id, data_type))
            seen = max(
                (t for t in (state.last_pulled_at, state.last_read_at) if t) if state else (),
                default=None,
            )
            if seen is not None and synced <= seen:
                continue
            if state is None:
                session.add(
                    DataTypeState(
                        company_id=company_id,
                        data_type=data_type,
                        record_count=0,
                        catch_ups=1,
                        updated_at=now,
                    )
                )
            else:
                state.catch_ups += 1
            await enqueue_job(
                session,
                kind=PULL,
                key=pull_key(company_id, data_type),
                now=now,
                company_id=company_id,
                data_type=data_type,
                connection_id=state.connection_id if state else None,
            )
            caught_up.append(data_type)
            MISSED_WEBHOOKS.labels(kind="read.completed").inc()
            log.warning(
                "missed webhook caught up",
                extra={
                    "kind": "read.completed",
                    "company_id": company_id,
                    "data_type": data_type,
                    "codat_last_sync": synced.isoformat(),
                    "seen": seen.isoformat() if seen else None,
                },
            )
        if caught_up:
            await ctx.record_change(
                session,
                WEBHOOKS_MISSED,
                company_id,
                {"kind": "read.completed", "dataTypes": caught_up},
            )
        await session.execute(
            update(Company).where(Company.id == company_id).values(last_reconciled_at=now)
        )
    return len(caught_up)


async def _catch_up_writes(ctx: Context, company_id: str) -> tuple[int, bool]:
    """How many missed outcomes were recorded, and whether all were. A failed listing or
    operation is logged, not raised: the reads were counted and committed, and the next
    reconcile due (last_push_reconciled_at left as it was) lists them again."""
    now = ctx.clock()
    async with ctx.sessions() as session:
        finished = set(
            await session.scalars(
                select(WriteOutcome.push_operation_key).where(
                    WriteOutcome.company_id == company_id,
                    WriteOutcome.status.in_([str(s) for s in FINISHED_PUSH]),
                )
            )
        )
        newest = await session.scalar(
            select(WriteOutcome.requested_at)
            .where(WriteOutcome.company_id == company_id, WriteOutcome.requested_at.is_not(None))
            .order_by(WriteOutcome.requested_at.desc())
            .limit(1)
        )
    # Look back from the newest write we know, so one still pending then is seen again.
    since = (
        min(newest, now - ctx.settings.reconcile_push_lookback)
        if newest
        else (now - ctx.settings.reconcile_push_lookback)
    )
    caught_up, complete = 0, True
    try:
        async for page in ctx.codat.push_operations(company_id, requested_since=since):
            for operation in page:
                if not operation.finished or operation.key in finished:
                    continue
                try:
                    await _record_missed_write(ctx, company_id, operation)
                except Exception:  # one bad operation never stops the good ones
                    log.exception(
                        "missed write not recorded; the next reconcile tries it again",
                        extra={"company_id": company_id, "push_operation_key": operation.key},
                    )
                    complete = False
                    continue
                caught_up += 1
    except Exception:  # paging, 5xx, a pause: each outcome recorded is kept
        log.exception(
            "push operations not listed; the next reconcile lists them",
            extra={"company_id": company_id, "write_catch_ups": caught_up},
        )
        complete = False
    return caught_up, complete


async def _record_missed_write(ctx: Context, company_id: str, operation: PushOperation) -> None:
    now = ctx.clock()
    if not operation.succeeded:
        # The full error detail.
        operation = await ctx.codat.push_operation(company_id, operation.key)
    succeeded = operation.succeeded
    outcome = write_outcome(operation, company_id=company_id, source="reconcile", now=now)
    data_type = outcome["data_type"]
    async with ctx.sessions.begin() as session:
        if await record_write(session, outcome):
            await ctx.record_change(
                session,
                write_change_type(data_type, succeeded),
                company_id,
                write_change_body(outcome, succeeded),
            )
            await ctx.record_change(
                session,
                WEBHOOKS_MISSED,
                company_id,
                {"kind": "write", "pushOperationKey": operation.key, "dataType": data_type},
            )
        if succeeded and data_type in PULLABLE_DATA_TYPES:
            await request_write_refresh(
                ctx, session, company_id, data_type, operation.connection_id, now
            )
    MISSED_WEBHOOKS.labels(kind="write").inc()
    log.warning(
        "missed webhook caught up",
        extra={
            "kind": f"{data_type}.write",
            "company_id": company_id,
            "push_operation_key": operation.key,
            "status": operation.status,
        },
    )
