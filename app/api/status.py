"""The internal status API under /api/v1. Thin routes: the work is in `queries`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.api import queries
from app.api.auth import require_token
from app.api.errors import ApiError, ErrorBody
from app.api.paging import DEFAULT_LIMIT, MAX_ID, MAX_LIMIT
from app.api.queries import EventFilter
from app.api.schemas import (
    CompanyDetail,
    CompanyPage,
    EventDetail,
    EventPage,
    Queued,
    RateLimitStatus,
    RecordPage,
    RefreshRequest,
    ReplayRequest,
    ReplayResult,
    WriteItem,
    WritePage,
)
from app.codat.datatypes import BILL_PAY_DATA_TYPES, PULLABLE_DATA_TYPES
from app.models import utcnow

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 422)
}
router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)], responses=ERRORS)


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as db:
        yield db


Session = Annotated[AsyncSession, Depends(session)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
EventId = Annotated[int, Path(ge=1, le=MAX_ID, description="The event's id in this service")]


def event_filter(
    event_type: str | None = None,
    status: str | None = None,
    company_id: str | None = None,
    received_after: datetime | None = None,
    received_before: datetime | None = None,
) -> EventFilter:
    return EventFilter(event_type, status, company_id, received_after, received_before)


@router.get("/events", response_model=EventPage, tags=["events"])
async def list_events(
    db: Session,
    filters: Annotated[EventFilter, Depends(event_filter)],
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> EventPage:
    """Events, newest first."""
    return await queries.list_events(db, filters, limit=limit, cursor=cursor)


@router.get("/events/{event_id}", response_model=EventDetail, tags=["events"])
async def get_event(db: Session, event_id: EventId) -> EventDetail:
    """One event with its payload, attempts, last error and timeline."""
    return await queries.get_event(db, event_id)


@router.post(
    "/events/{event_id}/replay", response_model=ReplayResult, status_code=202, tags=["events"]
)
async def replay_event(db: Session, event_id: EventId) -> ReplayResult:
    """Queue one event to be processed again (handlers are idempotent)."""
    await queries.replay_event(db, event_id, utcnow())
    return ReplayResult(queued=1)


@router.post("/events/replay", response_model=ReplayResult, status_code=202, tags=["events"])
async def replay_events(db: Session, body: Annotated[ReplayRequest, Body()]) -> ReplayResult:
    """Queue every event matching the filters again, e.g. every dead read.completed."""
    filters = EventFilter(**body.model_dump())
    return ReplayResult(queued=await queries.replay_events(db, filters, utcnow()))


@router.get("/companies", response_model=CompanyPage, tags=["companies"])
async def list_companies(
    db: Session, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> CompanyPage:
    return await queries.list_companies(db, limit=limit, cursor=cursor)


@router.get("/companies/{company_id}", response_model=CompanyDetail, tags=["companies"])
async def get_company(request: Request, db: Session, company_id: str) -> CompanyDetail:
    """Connection, initial read, freshness of each data type, and write outcomes."""
    max_age = request.app.state.settings.freshness_max_age
    return await queries.get_company(db, company_id, now=utcnow(), max_age=max_age)


@router.post(
    "/companies/{company_id}/refresh", response_model=Queued, status_code=202, tags=["companies"]
)
async def refresh_company(
    request: Request,
    db: Session,
    company_id: str,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> Queued:
    """Ask Codat to read these data types again (through the worker)."""
    settings = request.app.state.settings
    data_types = (body.dataTypes if body else None) or list(
        BILL_PAY_DATA_TYPES[settings.bill_pay_variant]
    )
    unknown = sorted(set(data_types) - PULLABLE_DATA_TYPES)
    if unknown:
        raise ApiError(400, f"unknown data types: {', '.join(unknown)}")
    queued = await queries.queue_refresh(db, company_id, data_types, utcnow())
    return Queued(company_id=company_id, queued=queued)


@router.post(
    "/companies/{company_id}/reconcile", response_model=Queued, status_code=202, tags=["companies"]
)
async def reconcile_company(db: Session, company_id: str) -> Queued:
    """Compare Codat's status with what was seen and catch up missed webhooks."""
    return Queued(
        company_id=company_id, queued=await queries.queue_reconcile(db, company_id, utcnow())
    )


@router.get(
    "/companies/{company_id}/data/{data_type}", response_model=RecordPage, tags=["companies"]
)
async def list_records(
    db: Session,
    company_id: str,
    data_type: str,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    modified_after: datetime | None = None,
    include_deleted: bool = True,
) -> RecordPage:
    """The local copy of one data type, oldest change first."""
    return await queries.list_records(
        db,
        company_id,
        data_type,
        limit=limit,
        cursor=cursor,
        modified_after=modified_after,
        include_deleted=include_deleted,
    )


@router.get("/writes", response_model=WritePage, tags=["writes"])
async def list_writes(
    db: Session,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    company_id: str | None = None,
    status: str | None = None,
    data_type: str | None = None,
) -> WritePage:
    return await queries.list_writes(
        db, limit=limit, cursor=cursor, company_id=company_id, status=status, data_type=data_type
    )


@router.get("/writes/{push_operation_key}", response_model=WriteItem, tags=["writes"])
async def get_write(db: Session, push_operation_key: str) -> WriteItem:
    return await queries.get_write(db, push_operation_key)


@router.get("/rate-limit", response_model=RateLimitStatus, tags=["rate limit"])
async def get_rate_limit(db: Session) -> RateLimitStatus:
    return await queries.get_rate_limit(db, utcnow())
