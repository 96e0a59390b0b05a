"""The sweep: every SWEEP_INTERVAL, reconcile a share of the companies, and send those
with Bill Pay types older than the freshness policy to reconcile with those types to
refresh, within SWEEP_QUOTA_SHARE of Codat's daily quota over any 24 hours.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.codat.datatypes import BILL_PAY_DATA_TYPES, Variant
from app.codat.statuses import COMPLETE, TERMINAL
from app.models import Company, DataTypeState, Job, RateLimitState
from app.processing.context import Context
from app.processing.queue import enqueue_job
from app.processing.reconcile import request_reconcile
from app.processing.state import RATE_LIMIT_ROW

log = logging.getLogger(__name__)
SWEEP = "sweep"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW = timedelta(days=1)  # the sweep's share is of a day's quota, over any 24 hours
SWEEP_KEY = "sweep"
# Codat's default quota is 1,000 x (1 + companies) a day (CODAT.md §3.4).
QUOTA_PER_COMPANY = 1000
# Companies whose overdue types one statement loads (a bound on its parameters).
SWEEP_SLICE = 1000


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
