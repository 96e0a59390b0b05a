"""What the worker needs to know of each queue it takes work from, in one place.

The worker treats events and jobs alike: claim, run one at a time per serial key,
finish, retry or dead-letter. What differs between them is here, one `Queue` each,
so that the worker's loop asks `queue_of(item)` instead of testing types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from app.codat.datatypes import event_type_label
from app.models import EventStatus, Job, JobStatus, WebhookEvent
from app.processing.context import Context, InvalidJob
from app.processing.handlers import Outcome, handle_event, serial_key
from app.processing.pulls import PULL, run_pull
from app.processing.queue import claim_due, finish_event, finish_job, renew_leases
from app.processing.reconcile import RECONCILE, run_reconcile
from app.processing.refreshes import REFRESH, run_refresh
from app.processing.sweep import SWEEP, run_sweep

Item = WebhookEvent | Job
JobRunner = Callable[[Context, Job], Awaitable[None]]
JOB_RUNNERS: dict[str, JobRunner] = {
    PULL: run_pull,
    REFRESH: run_refresh,
    SWEEP: run_sweep,
    RECONCILE: run_reconcile,
}


Q = TypeVar("Q", WebhookEvent, Job)


@dataclass(frozen=True)
class Queue(Generic[Q]):
    """One queue: its table, how its items are named, serialised, run and ended."""

    label: str  # metrics' `queue` label and log lines
    table: type[Q]
    dead: str  # the status of an item that will never be tried again
    finish: Callable[..., Awaitable[bool]]  # finish_event / finish_job
    run: Callable[[Context, Q], Awaitable[Outcome]]
    serial_key: Callable[[Q], str]  # items sharing a key never run at once here
    kind: Callable[[Q], str]  # metrics' `kind` label
    span: Callable[[Q], tuple[str, dict[str, object]]]  # a trace's name and attributes
    ids: Callable[[Q], dict[str, object]]  # what a log line says of the item

    async def claim(
        self, conn: AsyncConnection, worker_id: str, limit: int, now: datetime, lease: timedelta
    ) -> list[Q]:
        return await claim_due(
            conn, self.table, worker_id=worker_id, limit=limit, now=now, lease=lease
        )

    async def renew(
        self, conn: AsyncConnection, items: Iterable[Item], worker_id: str, until: datetime
    ) -> None:
        ids = [item.id for item in items if isinstance(item, self.table)]
        await renew_leases(conn, self.table, ids, worker_id, until)


async def run_job(ctx: Context, job: Job) -> Outcome:
    runner = JOB_RUNNERS.get(job.kind)
    if runner is None:
        raise InvalidJob(f"no runner for job kind {job.kind!r}")
    await runner(ctx, job)
    return Outcome(JobStatus.DONE)


def _event_span(event: WebhookEvent) -> tuple[str, dict[str, object]]:
    return f"process {event.event_type or 'event'}", {
        "codat.event_id": event.event_id,
        "codat.event_type": event.event_type,
        "codat.delivery_id": event.delivery_id,
        "codat.company_id": event.company_id,
        "codat.attempt": event.attempts,
    }


def _job_span(job: Job) -> tuple[str, dict[str, object]]:
    return " ".join(filter(None, (job.kind, job.data_type))), {
        "codat.job": job.key,
        "codat.company_id": job.company_id,
        "codat.data_type": job.data_type,
        "codat.attempt": job.attempts,
    }


def _event_ids(event: WebhookEvent) -> dict[str, object]:
    return {
        "event_id": event.event_id,
        "delivery_id": event.delivery_id,
        "event_type": event.event_type,
        "company_id": event.company_id,
        "attempts": event.attempts,
    }


EVENTS: Queue[WebhookEvent] = Queue(
    label="events",
    table=WebhookEvent,
    dead=EventStatus.DEAD,
    finish=finish_event,
    run=handle_event,
    serial_key=serial_key,
    kind=lambda event: event_type_label(event.event_type) or "unknown",  # bounded
    span=_event_span,
    ids=_event_ids,
)
JOBS: Queue[Job] = Queue(
    label="jobs",
    table=Job,
    dead=JobStatus.DEAD,
    finish=finish_job,
    run=run_job,
    serial_key=lambda job: job.key,
    kind=lambda job: job.kind or "unknown",
    span=_job_span,
    ids=lambda job: {"job": job.key, "attempts": job.attempts},
)
# In claim order: events first, then the jobs they and the sweep queued.
QUEUES = (EVENTS, JOBS)
_BY_TABLE: dict[type[Item], Queue[Any]] = {queue.table: queue for queue in QUEUES}


def queue_of(item: Item) -> Queue[Any]:
    return _BY_TABLE[type(item)]
