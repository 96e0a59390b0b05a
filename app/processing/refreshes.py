"""Refreshes: asking Codat to read a data type again (after writes, after a failed read,
or when the sweep or an operator asks), debounced into one job per company and type.

A webhook says Codat has read new data; it does not make Codat read. Freshness is kept
on purpose by three parts: these refreshes, the sweep (app/processing/sweep.py) and
reconcile (app/processing/reconcile.py).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Executor
from app.metrics import REFRESHES
from app.models import DataTypeState, Job
from app.processing.context import Context, InvalidJob
from app.processing.lifecycle import skipped_for_lifecycle
from app.processing.queue import enqueue_job

log = logging.getLogger(__name__)
REFRESH = "refresh"


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
