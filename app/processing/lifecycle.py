"""The connection and company lifecycle: which companies the service may work for.

A company whose connection was disconnected, failed, deleted or deauthorised (or whose
read ended in `AuthError`) needs its SMB to link again: until then no refresh, pull or
reconcile is sent for it, since each would cost a call and fail. A deleted company
stops all work at once, and `prune` removes its local copy after the retention period.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import Executor
from app.models import Company, DataTypeState, Job, JobStatus, Record

log = logging.getLogger(__name__)

DELETED = "deleted"

# Connection events after which the SMB must authorise the connection again, and
# Codat's connection statuses that mean the same whatever the event (CODAT.md §1.5).
REAUTH_EVENTS = frozenset({"connection.disconnected", "connection.failed", "connection.deleted"})
REAUTH_STATUSES = frozenset({"Unlinked", "Deauthorized"})
# Connection events that mean it is linked (again): they lift the block.
LINKED_EVENTS = frozenset({"connection.connected", "connection.reconnected"})


def reauth_after(event_type: str, status: object) -> bool | None:
    """Whether a connection event leaves the company needing re-authorisation: True,
    False (linked again), or None (says nothing, e.g. `connection.created`)."""
    if event_type in REAUTH_EVENTS or status in REAUTH_STATUSES:
        return True
    if event_type in LINKED_EVENTS or status == "Linked":
        return False
    return None


async def blocked_reason(session: Executor, company_id: str) -> str | None:
    """Why no work may be done for the company now (`deleted`, or what needs re-linking),
    or None."""
    row = (
        await session.execute(
            select(Company.status, Company.needs_reauth, Company.reauth_reason).where(
                Company.id == company_id
            )
        )
    ).first()
    if row is None:
        return None
    if row.status == DELETED:
        return DELETED
    if row.needs_reauth:
        return str(row.reauth_reason or "needs re-authorisation")
    return None


async def skipped_for_lifecycle(session: AsyncSession, job: Job) -> bool:
    """A job for a blocked or deleted company is done without calling Codat."""
    if not job.company_id:
        return False
    reason = await blocked_reason(session, job.company_id)
    if reason is not None:
        log.info(
            "skipped: company blocked",
            extra={"job": job.key, "company_id": job.company_id, "reason": reason},
        )
    return reason is not None


async def stop_company_work(session: Executor, company_id: str) -> int:
    """Drop the company's jobs not yet started (one running ends by itself); how many."""
    result = await session.execute(
        delete(Job).where(Job.company_id == company_id, Job.status == JobStatus.PENDING)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def block_for_auth_error(
    session: AsyncSession, company_id: str, event_at: datetime, now: datetime
) -> bool:
    """A read ended in AuthError: the connection needs linking again, unless a newer
    connection event has already said otherwise. Whether it newly blocked the company."""
    result = await session.execute(
        update(Company)
        .where(
            Company.id == company_id,
            Company.needs_reauth.is_(False),
            func.coalesce(Company.connection_event_at, event_at) <= event_at,
        )
        # Stamped as a connection event: an older one arriving late does not undo it.
        .values(
            needs_reauth=True,
            reauth_reason="AuthError",
            connection_event_at=event_at,
            updated_at=now,
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def lift_block_after_initial_read(
    session: AsyncSession, company_id: str, event_at: datetime, now: datetime
) -> bool:
    """Codat sends `read.completed.initial` after each time a connection is authorised:
    one not older than what blocked the company lifts the block, should the
    `connection.reconnected` webhook have been lost (our reading of Codat's words, a
    guess; the initial read's own AuthError, if any, blocks it again)."""
    result = await session.execute(
        update(Company)
        .where(
            Company.id == company_id,
            Company.needs_reauth.is_(True),
            func.coalesce(Company.connection_event_at, event_at) <= event_at,
        )
        .values(
            needs_reauth=False, reauth_reason=None, connection_event_at=event_at, updated_at=now
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def prune_deleted_companies(
    sessions: async_sessionmaker[AsyncSession], cutoff: datetime
) -> int:
    """Remove the local copy (records, freshness) of companies deleted before `cutoff`,
    one company a transaction (the service goes on meanwhile); the company row stays,
    marked deleted. How many companies were pruned."""
    async with sessions() as session:
        gone = list(
            await session.scalars(
                select(Company.id).where(
                    Company.status == DELETED,
                    Company.deleted_at.is_not(None),
                    Company.deleted_at < cutoff,
                )
            )
        )
    for company_id in gone:
        async with sessions.begin() as session:
            await session.execute(delete(Record).where(Record.company_id == company_id))
            await session.execute(
                delete(DataTypeState).where(DataTypeState.company_id == company_id)
            )
    return len(gone)
