"""GET /metrics: counters kept in-process plus queue gauges read from the database."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.metrics import CODAT_PAUSED, DEAD_ITEMS, OLDEST_DUE_AGE, QUEUE_DEPTH
from app.models import Job, RateLimitState, WebhookEvent, utcnow

router = APIRouter(tags=["metrics"])


async def refresh_queue_gauges(session: AsyncSession, now: datetime) -> None:
    """Only pending, processing and dead rows are counted: the indexed, small part."""
    for name, model in (("events", WebhookEvent), ("jobs", Job)):
        counts = dict(
            (
                await session.execute(
                    select(model.status, func.count())
                    .where(model.status.in_(["pending", "processing", "dead"]))
                    .group_by(model.status)
                )
            ).all()
        )
        QUEUE_DEPTH.labels(queue=name, status="pending").set(counts.get("pending", 0))
        QUEUE_DEPTH.labels(queue=name, status="processing").set(counts.get("processing", 0))
        DEAD_ITEMS.labels(queue=name).set(counts.get("dead", 0))
        oldest = await session.scalar(
            select(func.min(model.next_attempt_at)).where(
                model.status == "pending", model.next_attempt_at <= now
            )
        )
        age = (now - oldest).total_seconds() if oldest is not None else 0.0
        OLDEST_DUE_AGE.labels(queue=name).set(max(0.0, age))
    paused_until = await session.scalar(select(RateLimitState.paused_until))
    CODAT_PAUSED.set(1 if paused_until is not None and paused_until > now else 0)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    try:
        async with request.app.state.sessions() as session:
            await refresh_queue_gauges(session, utcnow())
    except (SQLAlchemyError, OSError):
        pass  # the in-process counters are still worth serving
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
