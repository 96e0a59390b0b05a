"""What the dashboard shows beyond the status API's answers: the overview's figures and
the companies' freshness grid. Plain functions over a session, as app/api/queries.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, not_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.paging import decode_cursor, encode_cursor
from app.api.queries import tag_clauses
from app.codat.datatypes import Variant
from app.codat.statuses import status_kind
from app.db import dialect_name
from app.models import Company, DataTypeState, EventStatus, WebhookEvent
from app.processing.sweep import is_overdue, overdue_bill_pay_types

HOURS = 24


# -- events per hour ------------------------------------------------------------------------


@dataclass
class HourCounts:
    start: datetime
    received: int = 0
    processed: int = 0
    dead: int = 0
    waiting: int = 0  # pending or processing


def _hour_label(column: Any, dialect: str) -> ColumnElement[str]:
    """`YYYY-MM-DD HH` in UTC, the same text on both databases."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24")
    return func.strftime("%Y-%m-%d %H", column)


async def _first_id_received_since(session: AsyncSession, since: datetime) -> int | None:
    """The smallest id received at or after `since`, by bisecting the primary key.

    Ids grow with `received_at` (the group commit stamps and inserts in order, to within
    a batch), and there is no index on `received_at`: some twenty index reads find the
    window's start where a filter on the time would read the whole table."""
    low = await session.scalar(select(func.min(WebhookEvent.id)))
    high = await session.scalar(select(func.max(WebhookEvent.id)))
    if low is None or high is None:
        return None
    newest = await session.scalar(select(WebhookEvent.received_at).where(WebhookEvent.id == high))
    if newest is None or newest < since:
        return None
    while low < high:
        middle = (low + high) // 2
        row = (
            await session.execute(
                select(WebhookEvent.id, WebhookEvent.received_at)
                .where(WebhookEvent.id >= middle)
                .order_by(WebhookEvent.id)
                .limit(1)
            )
        ).one()
        if row.received_at >= since:
            high = middle  # the answer is at or below the first row from `middle`
        else:
            low = row.id + 1  # every id up to this row's is before the window
    return int(low)


async def events_by_hour(session: AsyncSession, now: datetime) -> list[HourCounts]:
    """The events received in each of the last 24 hours (UTC), by what became of them:
    processed (or ignored), dead, or still waiting. A replayed event counts in the hour
    it was first received."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    hours = [HourCounts(end - timedelta(hours=HOURS - i)) for i in range(HOURS)]
    first_id = await _first_id_received_since(session, hours[0].start)
    if first_id is None:
        return hours
    by_label = {hour.start.strftime("%Y-%m-%d %H"): hour for hour in hours}
    label = _hour_label(WebhookEvent.received_at, dialect_name(session)).label("hour")
    rows = await session.execute(
        select(label, WebhookEvent.status, func.count())
        .where(WebhookEvent.id >= first_id, WebhookEvent.received_at >= hours[0].start)
        .group_by(label, WebhookEvent.status)
    )
    for hour_label, status, count in rows:
        hour = by_label.get(hour_label)
        if hour is None:
            continue
        hour.received += count
        if status in (EventStatus.PROCESSED, EventStatus.IGNORED):
            hour.processed += count
        elif status == EventStatus.DEAD:
            hour.dead += count
        elif status in (EventStatus.PENDING, EventStatus.PROCESSING):
            hour.waiting += count
    return hours


# -- companies ------------------------------------------------------------------------------

COMPANY_STATES = {
    "ready": "Ready",
    "incomplete": "Initial read incomplete",
    "needs_reauth": "Needs re-authorisation",
    "stale": "Stale data",
    "waiting": "Waiting for the initial read",
    "deleted": "Deleted",
}


def company_state_conditions(variant: Variant, cutoff: datetime) -> dict[str, ColumnElement[bool]]:
    """Each state the dashboard filters and counts companies by, as SQL. A company can be
    in more than one (ready and stale)."""
    active = Company.status == "active"
    needs_reauth = Company.needs_reauth.is_(True)
    stale = exists().where(
        DataTypeState.company_id == Company.id, overdue_bill_pay_types(variant, cutoff)
    )
    return {
        "ready": and_(active, Company.initial_read_status == "complete", not_(needs_reauth)),
        "incomplete": and_(active, Company.initial_read_status == "incomplete"),
        "needs_reauth": and_(active, needs_reauth),
        "stale": and_(active, stale),
        "waiting": and_(active, Company.initial_read_status.is_(None)),
        "deleted": Company.status == "deleted",
    }


async def company_state_counts(
    session: AsyncSession, variant: Variant, cutoff: datetime
) -> dict[str, int]:
    conditions = company_state_conditions(variant, cutoff)
    row = (
        await session.execute(
            select(*(func.count().filter(condition) for condition in conditions.values()))
        )
    ).one()
    return dict(zip(conditions, (int(count) for count in row), strict=True))


async def missed_webhooks(session: AsyncSession) -> int:
    """Reads and writes whose webhook never came, caught up by reconcile."""
    reads = await session.scalar(select(func.coalesce(func.sum(DataTypeState.catch_ups), 0)))
    writes = await session.scalar(select(func.coalesce(func.sum(Company.write_catch_ups), 0)))
    return int(reads or 0) + int(writes or 0)


@dataclass(frozen=True)
class Cell:
    """One company's data type in the grid."""

    freshness: str  # fresh, overdue, failed, terminal, reading, unread
    status: str | None
    last_pulled_at: datetime | None
    record_count: int


@dataclass
class GridRow:
    company: Company
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass(frozen=True)
class Grid:
    data_types: Sequence[str]
    rows: list[GridRow]
    next_cursor: str | None


# What a cell shows for each kind of read status (app/codat/statuses.py).
KIND_WORDS = {"in_progress": "reading", "terminal": "terminal", "transient": "failed"}


def freshness_of(status: str | None, overdue: bool) -> str:
    """fresh, overdue, failed, terminal (no refresh can fix it) or reading, for a read
    status and whether the data is overdue."""
    if status is not None and status_kind(status) in KIND_WORDS:
        return KIND_WORDS[status_kind(status)]
    return "overdue" if overdue else "fresh"


def freshness(state: DataTypeState | None, now: datetime, max_age: timedelta) -> str:
    if state is None:
        return "unread"
    return freshness_of(state.last_read_status, is_overdue(state, now, max_age))


async def company_grid(
    session: AsyncSession,
    data_types: Sequence[str],
    *,
    state: str | None,
    tags: list[str],
    limit: int,
    cursor: str | None,
    variant: Variant,
    now: datetime,
    max_age: timedelta,
) -> Grid:
    """A page of companies by id (in a state, with Codat tags `key:value`), each with the
    freshness of every Bill Pay data type."""
    query = select(Company).where(*tag_clauses(tags, dialect_name(session)))
    if state is not None:
        query = query.where(company_state_conditions(variant, now - max_age)[state])
    if cursor:
        (last_id,) = decode_cursor(cursor, str)
        query = query.where(Company.id > last_id)
    companies = list((await session.scalars(query.order_by(Company.id).limit(limit + 1))).all())
    more = len(companies) > limit
    companies = companies[:limit]
    rows = {company.id: GridRow(company) for company in companies}
    if rows:
        states = await session.scalars(
            select(DataTypeState).where(
                DataTypeState.company_id.in_(list(rows)), DataTypeState.data_type.in_(data_types)
            )
        )
        found = {(s.company_id, s.data_type): s for s in states}
        for company_id, row in rows.items():
            for data_type in data_types:
                dts = found.get((company_id, data_type))
                row.cells[data_type] = Cell(
                    freshness=freshness(dts, now, max_age),
                    status=dts.last_read_status if dts else None,
                    last_pulled_at=dts.last_pulled_at if dts else None,
                    record_count=dts.record_count if dts else 0,
                )
    return Grid(
        data_types=data_types,
        rows=list(rows.values()),
        next_cursor=encode_cursor(companies[-1].id) if more else None,
    )
