"""`send-test-event`: a signed delivery of a sample event, and waiting for what it caused.

Signed with svix exactly as Codat's deliveries are (app/webhooks/sample_signing.py, beside
the verifier), so that a deployment (or `make run`) is checked through the real webhook
route. Waiting reads the database the service writes:
the event's row, then the pulls it queued, so that the walkthrough's next command sees
the local copy filled.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.models import DataTypeState, EventStatus, Job, JobStatus, WebhookEvent
from app.processing.pulls import PULL

_UNFINISHED_EVENT = (EventStatus.PENDING, EventStatus.PROCESSING)
_UNFINISHED_JOB = (JobStatus.PENDING, JobStatus.PROCESSING)


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Processed:
    """What became of a delivery, as far as the wait went."""

    status: str | None  # None: never stored
    error: str | None
    company_id: str | None
    pulls_waiting: int
    seconds: float
    #: Records per data type of the company, when the event queued pulls.
    local_copy: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status not in (None, *_UNFINISHED_EVENT) and not self.pulls_waiting

    def summary(self) -> str:
        if self.status is None:
            return "not stored: nothing to wait for"
        if self.status in _UNFINISHED_EVENT:
            return f"still {self.status} after {self.seconds:.0f} s (is the worker running?)"
        text = f"{self.status} (waited {self.seconds:.1f} s)"
        if self.error and self.status != EventStatus.PROCESSED:
            text += f": {self.error[:300]}"
        if self.pulls_waiting:
            text += f"; {self.pulls_waiting} pull(s) still waiting"
        if self.local_copy:
            counts = ", ".join(f"{name} {count}" for name, count in self.local_copy.items())
            text += f"; local copy of {self.company_id}: {counts}"
        return text


async def wait_until_processed(engine: AsyncEngine, delivery_id: str, within: float) -> Processed:
    """Poll until the event is finished and its company has no pull waiting, at most `within`
    seconds (the service runs elsewhere: there is nothing to be woken by)."""
    started = time.monotonic()
    pulls_seen = False
    while True:
        async with engine.connect() as connection:
            state = await _processed(connection, delivery_id, time.monotonic() - started)
            pulls_seen = pulls_seen or state.pulls_waiting > 0
            out_of_time = time.monotonic() - started >= within
            if state.finished or state.status is None or out_of_time:
                if pulls_seen and state.company_id is not None:
                    local_copy = await _record_counts(connection, state.company_id)
                    state = replace(state, local_copy=local_copy)
                return state
        await asyncio.sleep(0.2)


async def _processed(connection: AsyncConnection, delivery_id: str, seconds: float) -> Processed:
    event = (
        await connection.execute(
            select(WebhookEvent.status, WebhookEvent.last_error, WebhookEvent.company_id).where(
                WebhookEvent.delivery_id == delivery_id
            )
        )
    ).one_or_none()
    if event is None:
        return Processed(None, None, None, 0, seconds)
    status, error, company_id = event
    waiting: int | None = 0
    if company_id is not None and status not in _UNFINISHED_EVENT:
        # The handler queues its pulls in the transaction that finishes the event.
        waiting = await connection.scalar(
            select(func.count()).where(
                Job.kind == PULL,
                Job.company_id == company_id,
                Job.status.in_(_UNFINISHED_JOB),
            )
        )
    return Processed(status, error, company_id, int(waiting or 0), seconds)


async def _record_counts(connection: AsyncConnection, company_id: str) -> dict[str, int]:
    rows = await connection.execute(
        select(DataTypeState.data_type, DataTypeState.record_count)
        .where(DataTypeState.company_id == company_id, DataTypeState.record_count > 0)
        .order_by(DataTypeState.data_type)
    )
    return {str(name): int(count) for name, count in rows}
