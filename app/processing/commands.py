"""What an operator can ask the service to do: replay events, refresh or reconcile a
company (and resume after a rate-limit pause). One plain function each, used alike by the
status API, the CLI and the dashboard, so there is no second way to change state.

Each works inside the caller's session and does not commit: the caller commits once (the
API's session dependency, the CLI's session helper), so a refused request changes nothing.
A refusal is a `CommandError`; the API maps its kinds to HTTP statuses in one place
(app/api/errors.py), the CLI to an exit code. Whatever needs Codat is queued for the
worker, which owns the rate-limit pause and the retries. Pruning (CLI only) is the
exception: it commits a batch at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.record import RATE_LIMIT_RESUMED, record_change
from app.codat.datatypes import BILL_PAY_DATA_TYPES, PULLABLE_DATA_TYPES, Variant
from app.config import NotifyEndpoint
from app.db import DELETE_BATCH, delete_in_batches
from app.models import Company, DataTypeState, EventStatus, RateLimitState, WebhookEvent
from app.processing.queue import resume_waiting
from app.processing.reconcile import request_reconcile
from app.processing.refreshes import request_refresh
from app.processing.state import RATE_LIMIT_ROW, RESUMED_BY_OPERATOR

log = logging.getLogger(__name__)

# An unprocessable event has nothing to run; one being processed would run twice.
NOT_REPLAYABLE = (EventStatus.UNPROCESSABLE, EventStatus.PROCESSING)


class CommandError(Exception):
    """A request refused, with the reason in words an operator can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(CommandError):
    """The event or company asked for is not known here."""


class Conflict(CommandError):
    """The thing exists, but its state forbids the request (e.g. replaying an event now
    being processed)."""


class InvalidRequest(CommandError):
    """The request itself is wrong: no filter for a bulk replay, an unknown data type, a
    date with no UTC form."""


def as_utc(moment: datetime) -> datetime:
    """Naive means UTC; a date that has no UTC form (year 1 at +01:00) is refused."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(f"date out of range: {moment.isoformat()}") from None


@dataclass(frozen=True)
class EventFilter:
    """The filters every event list and replay takes, in the API, the CLI and the
    dashboard alike."""

    event_type: str | None = None
    status: str | None = None
    company_id: str | None = None
    received_after: datetime | None = None
    received_before: datetime | None = None
    delivery_id: str | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.event_type is not None:
            clauses.append(WebhookEvent.event_type == self.event_type)
        if self.status is not None:
            clauses.append(WebhookEvent.status == self.status)
        if self.company_id is not None:
            clauses.append(WebhookEvent.company_id == self.company_id)
        if self.received_after is not None:
            clauses.append(WebhookEvent.received_at >= as_utc(self.received_after))
        if self.received_before is not None:
            clauses.append(WebhookEvent.received_at < as_utc(self.received_before))
        if self.delivery_id is not None:
            clauses.append(WebhookEvent.delivery_id == self.delivery_id)
        return clauses


# -- replay ---------------------------------------------------------------------------------


def _replay_values(now: datetime) -> dict[str, Any]:
    return {
        "status": EventStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "locked_until": None,
        "last_error": None,
        "processed_at": None,
    }


async def replay_event(session: AsyncSession, event_id: int, now: datetime) -> None:
    """Queue one event to be processed again (handlers are idempotent)."""
    event = await session.get(WebhookEvent, event_id)
    if event is None:
        raise NotFound(f"no event {event_id}")
    if event.status in NOT_REPLAYABLE:
        raise Conflict(f"event {event_id} is {event.status} and cannot be replayed")
    await session.execute(
        update(WebhookEvent).where(WebhookEvent.id == event_id).values(**_replay_values(now))
    )


def _bulk_replay_clauses(filters: EventFilter) -> list[ColumnElement[bool]]:
    """At least one filter, so nothing is replayed by accident."""
    clauses = filters.clauses()
    if not clauses:
        raise InvalidRequest("give at least one filter to replay in bulk")
    return [*clauses, WebhookEvent.status.not_in(NOT_REPLAYABLE)]


async def count_replayable(session: AsyncSession, filters: EventFilter) -> int:
    """The dry run of `replay_events`: how many events it would queue now."""
    query = select(func.count()).select_from(WebhookEvent).where(*_bulk_replay_clauses(filters))
    return int((await session.execute(query)).scalar_one())


async def replay_events(session: AsyncSession, filters: EventFilter, now: datetime) -> int:
    """Queue every matching event again; how many were queued."""
    result = await session.execute(
        update(WebhookEvent).where(*_bulk_replay_clauses(filters)).values(**_replay_values(now))
    )
    return int(getattr(result, "rowcount", 0) or 0)


# -- retention ------------------------------------------------------------------------------

# Finished for good: nothing will look at them again, so they may go after a while.
PRUNABLE = (EventStatus.PROCESSED, EventStatus.IGNORED)


async def prune_events(
    sessions: async_sessionmaker[AsyncSession], cutoff: datetime, *, batch: int = DELETE_BATCH
) -> int:
    """Delete processed and ignored events finished before `cutoff` (never pending, failed,
    dead or unprocessable ones); how many. Unlike the other commands it commits, a batch at
    a time, so that receiving goes on while a month of events is deleted."""
    conditions = [WebhookEvent.status.in_(PRUNABLE), WebhookEvent.processed_at < cutoff]
    return await delete_in_batches(sessions, WebhookEvent.id, conditions, batch=batch)


# -- companies ------------------------------------------------------------------------------


async def _company(session: AsyncSession, company_id: str) -> Company:
    company = await session.get(Company, company_id)
    if company is None:
        raise NotFound(f"no company {company_id}")
    return company


async def known_company_ids(session: AsyncSession) -> list[str]:
    """Every company events have told of, for the commands run on all of them."""
    return list((await session.scalars(select(Company.id).order_by(Company.id))).all())


def refresh_types(data_types: Sequence[str] | None, variant: Variant) -> list[str]:
    """The types asked for, or every one Bill Pay needs; an unknown one is refused."""
    types = list(data_types or BILL_PAY_DATA_TYPES[variant])
    unknown = sorted(set(types) - PULLABLE_DATA_TYPES)
    if unknown:
        raise InvalidRequest(f"unknown data types: {', '.join(unknown)}")
    return types


async def refresh_company(
    session: AsyncSession,
    company_id: str,
    data_types: Sequence[str] | None,
    *,
    variant: Variant,
    now: datetime,
) -> list[str]:
    """Queue refreshes of these data types (default: every one Bill Pay needs) for the
    worker; the types queued."""
    types = refresh_types(data_types, variant)
    company = await _company(session, company_id)
    for data_type in types:
        state = await session.get(DataTypeState, (company_id, data_type))
        connection_id = (state.connection_id if state else None) or company.connection_id
        await request_refresh(
            session, company_id, data_type, connection_id=connection_id, now=now, reason="api"
        )
    return types


async def reconcile_company(session: AsyncSession, company_id: str, now: datetime) -> list[str]:
    """Queue a reconcile pass: compare Codat's status with what was seen, catch up."""
    await _company(session, company_id)
    await request_reconcile(session, company_id, now)
    return ["reconcile"]


# -- the rate limit -------------------------------------------------------------------------


@dataclass(frozen=True)
class Resumed:
    """What `resume_rate_limit` lifted: the pause in force, if there was one."""

    paused_until: datetime | None
    reason: str | None

    @property
    def lifted(self) -> bool:
        return self.paused_until is not None


async def resume_rate_limit(
    session: AsyncSession, now: datetime, *, endpoints: Sequence[NotifyEndpoint] = ()
) -> Resumed:
    """Lift the pause on calls to Codat now: for a pause an operator knows is wrong (an
    event from a broken clock, a quota Codat has raised). What waited for it is due at
    once; the change is announced (`rate_limit.resumed`) and logged. Workers follow the
    stored state within a poll. A genuine limit comes back by itself: Codat answers 429
    and its Retry-After pauses again. No pause in force: nothing is written."""
    state = await session.get(RateLimitState, RATE_LIMIT_ROW)
    if state is None or state.paused_until is None or state.paused_until <= now:
        return Resumed(None, None)
    until = state.paused_until
    lifted = Resumed(until, state.reason)
    state.paused_until = None
    state.reason = RESUMED_BY_OPERATOR
    state.updated_at = now
    # An event generated before this is older than the operator's word (ordering state.py).
    state.event_at = max(state.event_at, now) if state.event_at else now
    await session.flush()
    await resume_waiting(session, now)
    await record_change(
        session,
        RATE_LIMIT_RESUMED,
        company_id=None,
        data={"reason": RESUMED_BY_OPERATOR, "pausedUntil": until.isoformat()},
        now=now,
        endpoints=endpoints,
    )
    log.warning(
        "rate-limit pause lifted by an operator",
        extra={"paused_until": until.isoformat(), "reason": lifted.reason},
    )
    return lifted
