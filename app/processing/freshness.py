"""Keeping the local copy fresh on purpose: refreshes, the sweep, and reconcile.

A webhook says Codat has read new data; it does not make Codat read, and a lost one
leaves the copy stale silently. So: refresh after writes and failed reads, sweep for data
older than the policy within a share of the daily quota, and reconcile Codat's own status
with what we saw, counting every catch-up as a missed webhook.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.changes.record import WEBHOOKS_MISSED, write_change_body, write_change_type
from app.codat.datatypes import BILL_PAY_DATA_TYPES, PULLABLE_DATA_TYPES, Variant
from app.codat.events import FINISHED_PUSH
from app.codat.records import DataStatus, PushOperation
from app.codat.statuses import COMPLETE, TERMINAL
from app.db import Executor
from app.metrics import MISSED_WEBHOOKS, REFRESHES
from app.models import Company, DataTypeState, Job, RateLimitState, WriteOutcome
from app.processing.context import Context, InvalidJob
from app.processing.lifecycle import skipped_for_lifecycle
from app.processing.pulls import PULL, pull_key
from app.processing.queue import enqueue_job
from app.processing.state import RATE_LIMIT_ROW, ensure_company, record_write, write_outcome

log = logging.getLogger(__name__)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW = timedelta(days=1)  # the sweep's share is of a day's quota, over any 24 hours

REFRESH, SWEEP, RECONCILE = "refresh", "sweep", "reconcile"
SWEEP_KEY = "sweep"
# Codat's default quota is 1,000 x (1 + companies) a day (CODAT.md §3.4).
QUOTA_PER_COMPANY = 1000
# Companies whose overdue types one statement loads (a bound on its parameters).
SWEEP_SLICE = 1000


def refresh_key(company_id: str, data_type: str) -> str:
    return f"{REFRESH}:{company_id}:{data_type}"


async def request_refresh(
    session: Executor,
    company_id: str,
    data_type: str,
    *,
    connection_id: str | None,
    now: datetime,
    delay: timedelta = timedelta(0),
    reason: str,
) -> None:
    """Queue a refresh; asked again while it waits, it is still one request (debounce)."""
    await enqueue_job(
        session,
        kind=REFRESH,
        key=refresh_key(company_id, data_type),
        now=now,
        due_at=now + delay,
        company_id=company_id,
        data_type=data_type,
        connection_id=connection_id,
        params={"reason": reason},
    )


async def request_write_refresh(
    ctx: Context,
    session: Executor,
    company_id: str,
    data_type: str,
    connection_id: str | None,
    now: datetime,
) -> None:
    """Codat does not cache what was written: ask it to read the type again, once a burst."""
    await request_refresh(
        session,
        company_id,
        data_type,
        connection_id=connection_id,
        now=now,
        delay=timedelta(seconds=ctx.settings.refresh_debounce_seconds),
        reason="write",
    )


async def run_refresh(ctx: Context, job: Job) -> None:
    company_id, data_type = job.company_id, job.data_type
    if not company_id or not data_type:
        raise InvalidJob(f"refresh job {job.key} has no company or data type")
    async with ctx.sessions() as session:
        if await skipped_for_lifecycle(session, job):
            return
    if not await ctx.codat.queue_refresh(company_id, data_type, job.connection_id):
        # Codat says a read is already queued or running: that is done.
        log.info(
            "refresh already in progress", extra={"company_id": company_id, "data_type": data_type}
        )
    reason = str((job.params or {}).get("reason", "unknown"))
    REFRESHES.labels(reason=reason).inc()
    now = ctx.clock()
    async with ctx.sessions.begin() as session:
        await session.execute(
            update(DataTypeState)
            .where(DataTypeState.company_id == company_id, DataTypeState.data_type == data_type)
            .values(last_refresh_requested_at=now, updated_at=now)
        )


async def retry_failed_read(
    ctx: Context,
    session: AsyncSession,
    company_id: str,
    data_type: str,
    connection_id: str | None,
    now: datetime,
) -> None:
    """A Bill Pay type did not complete: refresh it, a few times, with growing gaps."""
    state = await session.get(DataTypeState, (company_id, data_type))
    retries = state.refresh_retries if state else 0
    if retries >= ctx.settings.refresh_max_retries:
        return
    delay = timedelta(seconds=ctx.settings.refresh_retry_base_seconds * 2**retries)
    await session.execute(
        update(DataTypeState)
        .where(DataTypeState.company_id == company_id, DataTypeState.data_type == data_type)
        .values(refresh_retries=retries + 1)
    )
    await request_refresh(
        session,
        company_id,
        data_type,
        connection_id=connection_id,
        now=now,
        delay=delay,
        reason="incomplete_read",
    )


# -- the sweep ------------------------------------------------------------------------------


def daily_quota(ctx: Context, state: RateLimitState | None, companies: int) -> int:
    """What Codat told us last, else the setting, else Codat's documented default."""
    if state and state.daily_quota:
        return state.daily_quota
    return ctx.settings.codat_daily_quota or QUOTA_PER_COMPANY * (1 + companies)


async def run_sweep(ctx: Context, job: Job) -> None:
    """Each interval: reconcile the companies due for it (a share of them, so reconciles do
    not come in waves), and, within the sweep's share of the quota, send companies with
    overdue Bill Pay types to reconcile with those types to refresh. Re-arms itself.

    Overdue data goes through reconcile rather than straight to a refresh: if Codat has
    read the type since (and its webhook was lost), a pull is what is needed, and a
    refresh first would make that loss invisible."""
    settings = ctx.settings
    now = ctx.clock()
    async with ctx.sessions.begin() as session:
        # Run again at the next interval, whatever happens below.
        await enqueue_job(
            session, kind=SWEEP, key=SWEEP_KEY, now=now, due_at=now + settings.sweep_interval
        )
        if ctx.codat.gate.paused:
            return  # webhook-driven reads keep the room that is left
        state = await session.get(RateLimitState, RATE_LIMIT_ROW)
        active = and_(Company.status == "active", Company.needs_reauth.is_(False))
        companies = int(await session.scalar(select(func.count()).where(active)) or 0)
        for company_id in await _due_for_reconcile(session, ctx, now, companies):
            await request_reconcile(session, company_id, now)

        budget = sweep_budget(ctx, state, companies, now)
        overdue = await _overdue_by_company(session, ctx, now, budget)
        for company_id, types in overdue.items():
            for data_type_state in types:
                # Stamped now so the next sweep does not ask again before Codat has answered.
                data_type_state.last_refresh_requested_at = now
            await request_reconcile(session, company_id, now, refresh=[t.data_type for t in types])
        spent = sum(sweep_cost(len(types)) for types in overdue.values())
        await _spend_sweep_budget(session, state, now, spent)
    if overdue:
        log.info("sweep found overdue data", extra={"companies": len(overdue), "calls": spent})


async def _due_for_reconcile(
    session: AsyncSession, ctx: Context, now: datetime, companies: int
) -> list[str]:
    """The companies reconciled longest ago, past RECONCILE_INTERVAL: a sweep's share."""
    settings = ctx.settings
    share = math.ceil(companies * (settings.sweep_interval / settings.reconcile_interval))
    stale_before = now - settings.reconcile_interval
    query = (
        select(Company.id)
        .where(
            Company.status == "active",
            Company.needs_reauth.is_(False),
            or_(Company.last_reconciled_at.is_(None), Company.last_reconciled_at < stale_before),
        )
        .order_by(Company.last_reconciled_at.nulls_first(), Company.id)
        .limit(max(1, share))
    )
    return list((await session.scalars(query)).all())


@dataclass(frozen=True)
class SweepBudget:
    """What one sweep may spend: `pace` spreads the share evenly over the day, `room` is
    what is left of the share in the last 24 hours (a hard cap)."""

    pace: int
    room: int


def sweep_cost(data_types: int) -> int:
    """A company's data-status read (its reconcile) plus a refresh per overdue type."""
    return 1 + data_types if data_types else 0


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _spent_in_window(spent: dict[str, int] | None, now: datetime) -> dict[str, int]:
    """The hourly tallies that may overlap the 24 hours before `now`.

    An hour that began more than 25 hours ago lies wholly outside the window; the one
    that began 24-25 hours ago is still counted, so the cap errs on the safe side."""
    since = _hour(now) - WINDOW
    return {
        hour: calls
        for hour, calls in (spent or {}).items()
        if datetime.fromisoformat(hour) >= since
    }


def sweep_budget(
    ctx: Context, state: RateLimitState | None, companies: int, now: datetime
) -> SweepBudget:
    """A rolling 24-hour window, not the calendar day: a day started at any hour gets the
    same share. (Codat's own quota resets at 00:00 UTC; a rolling window is never looser.)"""
    share = int(daily_quota(ctx, state, companies) * ctx.settings.sweep_quota_share)
    spent = sum(_spent_in_window(state.sweep_spent if state else None, now).values())
    pace = math.ceil(share * (ctx.settings.sweep_interval / WINDOW))
    return SweepBudget(pace=pace, room=max(0, share - spent))


async def _overdue_by_company(
    session: AsyncSession, ctx: Context, now: datetime, budget: SweepBudget
) -> dict[str, list[DataTypeState]]:
    """Whole companies, stalest first, while their cost fits the pace and the room.

    A company's types go in one sweep, so its data-status read is paid once: picking
    types one by one let that overhead spend the share before every type was asked for.
    The first company always goes if the room allows, so a pace below one company's cost
    still makes progress; one bigger than the whole room goes in part."""
    if budget.room < sweep_cost(1):
        return {}
    overdue = _overdue_condition(ctx, now)
    stalest = func.min(func.coalesce(DataTypeState.last_pulled_at, EPOCH))
    limit = min(budget.pace, budget.room)
    # Each company costs at least two calls: no more can fit than limit // 2.
    candidates = (
        await session.execute(
            select(DataTypeState.company_id, func.count())
            .join(Company, Company.id == DataTypeState.company_id)
            .where(*overdue)
            .group_by(DataTypeState.company_id)
            .order_by(stalest, DataTypeState.company_id)
            .limit(max(1, limit // sweep_cost(1)))
        )
    ).all()
    counts: dict[str, int] = {}
    spent = 0
    for company_id, overdue_types in candidates:
        count = int(overdue_types)
        if not counts:
            count = min(count, budget.room - 1)  # the first company, in part if need be
        elif spent + sweep_cost(count) > limit:
            break
        counts[company_id] = count
        spent += sweep_cost(count)
    chosen: dict[str, list[DataTypeState]] = {company_id: [] for company_id in counts}
    # In slices: a sweep after a long outage may choose tens of thousands of companies,
    # more than one statement may carry as parameters (32,767 on asyncpg).
    ids = list(counts)
    for start in range(0, len(ids), SWEEP_SLICE):
        rows = await session.scalars(
            select(DataTypeState)
            .join(Company, Company.id == DataTypeState.company_id)
            .where(*overdue, DataTypeState.company_id.in_(ids[start : start + SWEEP_SLICE]))
            .order_by(DataTypeState.last_pulled_at.nulls_first(), DataTypeState.data_type)
        )
        for row in rows:
            chosen[row.company_id].append(row)
    return {company_id: types[: counts[company_id]] for company_id, types in chosen.items()}


async def _spend_sweep_budget(
    session: AsyncSession, state: RateLimitState | None, now: datetime, calls: int
) -> None:
    hour = _hour(now).isoformat()
    if state is None:
        session.add(
            RateLimitState(
                id=RATE_LIMIT_ROW, reason=None, updated_at=now, sweep_spent={hour: calls}
            )
        )
        return
    spent = _spent_in_window(state.sweep_spent, now)
    spent[hour] = spent.get(hour, 0) + calls
    state.sweep_spent = spent  # a new dict: the JSON column sees the change


def is_overdue(state: DataTypeState, now: datetime, max_age: timedelta) -> bool:
    """Neither pulled nor read complete (nothing to pull) within the policy, and not
    stopped by a status no refresh can fix."""
    if state.last_read_status in TERMINAL:
        return False
    cutoff = now - max_age
    fresh = [state.last_pulled_at]
    if state.last_read_status == COMPLETE:
        fresh.append(state.last_read_at)
    return not any(moment is not None and moment >= cutoff for moment in fresh)


def overdue_bill_pay_types(variant: Variant, cutoff: datetime) -> ColumnElement[bool]:
    """Bill Pay types of active companies neither pulled nor read complete since `cutoff`:
    `is_overdue` in SQL, for the sweep and the `codat_data_types_overdue` gauge (joined
    with `companies`). A type whose last read is terminal is not overdue: a refresh
    cannot fix it, so the sweep must not spend calls on it."""
    return and_(
        Company.status == "active",
        Company.needs_reauth.is_(False),
        DataTypeState.data_type.in_(BILL_PAY_DATA_TYPES[variant]),
        func.coalesce(DataTypeState.last_read_status, "").not_in(TERMINAL),
        or_(DataTypeState.last_pulled_at.is_(None), DataTypeState.last_pulled_at < cutoff),
        # A complete read with nothing modified leaves the copy as fresh as a pull would.
        not_(
            and_(
                func.coalesce(DataTypeState.last_read_status, "") == COMPLETE,
                func.coalesce(DataTypeState.last_read_at, EPOCH) >= cutoff,
            )
        ),
    )


def _overdue_condition(ctx: Context, now: datetime) -> list[ColumnElement[bool]]:
    """Bill Pay types of active companies neither pulled nor read complete within the
    policy, and not already asked for within it."""
    cutoff = now - ctx.settings.freshness_max_age
    return [
        overdue_bill_pay_types(ctx.settings.bill_pay_variant, cutoff),
        or_(
            DataTypeState.last_refresh_requested_at.is_(None),
            DataTypeState.last_refresh_requested_at < cutoff,
        ),
    ]


# -- reconcile ------------------------------------------------------------------------------


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
    reads = await _catch_up_reads(ctx, company_id, statuses)
    await _refresh_unread(ctx, company_id, statuses, (job.params or {}).get("refresh") or [])
    now = ctx.clock()
    values: dict[str, Any] = {"last_reconciled_at": now}
    writes = 0
    if reads or await _push_list_due(ctx, company_id, now):
        writes = await _catch_up_writes(ctx, company_id)
        values |= {
            "last_push_reconciled_at": now,
            "write_catch_ups": Company.write_catch_ups + writes,
        }
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
    return len(caught_up)


async def _catch_up_writes(ctx: Context, company_id: str) -> int:
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
    caught_up = 0
    async for page in ctx.codat.push_operations(company_id, requested_since=since):
        for operation in page:
            if not operation.finished or operation.key in finished:
                continue
            await _record_missed_write(ctx, company_id, operation)
            caught_up += 1
    return caught_up


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
