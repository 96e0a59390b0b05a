"""GET /metrics: counters kept in-process plus queue gauges read from the database."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.queries import queue_depths
from app.codat.datatypes import BILL_PAY_DATA_TYPES
from app.config import Settings
from app.metrics import (
    ACTIVE_COMPANIES,
    CODAT_PAUSED,
    DATA_TYPES_OVERDUE,
    DEAD_ITEMS,
    LAST_WEBHOOK_RECEIVED,
    OLDEST_DUE_AGE,
    OLDEST_UNDELIVERED_AGE,
    QUEUE_DEPTH,
)
from app.models import Company, DataTypeState, Delivery, RateLimitState, WebhookEvent, utcnow
from app.processing.sweep import overdue_bill_pay_types

router = APIRouter(tags=["metrics"])


async def refresh_database_gauges(session: AsyncSession, settings: Settings, now: datetime) -> None:
    """What every worker shares, read where it is kept. Of the queues only pending,
    processing and dead rows are counted: the indexed, small part."""
    for depth in await queue_depths(session, now):
        QUEUE_DEPTH.labels(queue=depth.queue, status="pending").set(depth.pending)
        QUEUE_DEPTH.labels(queue=depth.queue, status="processing").set(depth.processing)
        DEAD_ITEMS.labels(queue=depth.queue).set(depth.dead)
        OLDEST_DUE_AGE.labels(queue=depth.queue).set(depth.oldest_due_seconds)
    undelivered = await session.scalar(
        select(func.min(Delivery.created_at)).where(Delivery.status.in_(["pending", "processing"]))
    )
    age = (now - undelivered).total_seconds() if undelivered is not None else 0.0
    OLDEST_UNDELIVERED_AGE.set(max(0.0, age))
    paused_until = await session.scalar(select(RateLimitState.paused_until))
    CODAT_PAUSED.set(1 if paused_until is not None and paused_until > now else 0)
    await _refresh_freshness_gauges(session, settings, now)


async def _refresh_freshness_gauges(
    session: AsyncSession, settings: Settings, now: datetime
) -> None:
    """Overdue data and silence from Codat: what the alerts on freshness read."""
    overdue = dict(
        (
            await session.execute(
                select(DataTypeState.data_type, func.count())
                .join(Company, Company.id == DataTypeState.company_id)
                .where(
                    overdue_bill_pay_types(
                        settings.bill_pay_variant, now - settings.freshness_max_age
                    )
                )
                .group_by(DataTypeState.data_type)
            )
        ).all()
    )
    for data_type in BILL_PAY_DATA_TYPES[settings.bill_pay_variant]:
        DATA_TYPES_OVERDUE.labels(data_type=data_type).set(overdue.get(data_type, 0))
    # The newest row by primary key, not max(received_at): an index read, not a scan.
    newest = await session.scalar(
        select(WebhookEvent.received_at).order_by(WebhookEvent.id.desc()).limit(1)
    )
    LAST_WEBHOOK_RECEIVED.set(newest.timestamp() if newest is not None else 0)
    active = await session.scalar(select(func.count()).where(Company.status == "active"))
    ACTIVE_COMPANIES.set(active or 0)


METRICS_EXAMPLE = """\
# TYPE codat_webhooks_received_total counter
codat_webhooks_received_total{event_type="read.completed",outcome="stored"} 42.0
# TYPE codat_queue_depth gauge
codat_queue_depth{queue="events",status="pending"} 0.0
"""


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"example": METRICS_EXAMPLE}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text format): deliveries received, work processed, queue depth
    and age, dead items, calls to Codat, the pause, refreshes, missed webhooks."""
    try:
        async with request.app.state.sessions() as session:
            await refresh_database_gauges(session, request.app.state.settings, utcnow())
    except (SQLAlchemyError, OSError):
        pass  # the in-process counters are still worth serving
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
