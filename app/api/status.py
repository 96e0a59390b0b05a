"""The internal status API under /api/v1. Thin routes: what they read is in `queries`, what
they change in `app.processing.commands`.

The token is checked, and the body's size bounded, before a route sees the request
(`app.api.guard`); `require_token` here declares the scheme for /docs and checks again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.api import examples, queries
from app.api.auth import require_token
from app.api.errors import ErrorBody
from app.api.examples import answer
from app.api.paging import DEFAULT_LIMIT, MAX_ID, MAX_LIMIT
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
    ResumeResult,
    WriteItem,
    WritePage,
)
from app.api.types import ISO_EXAMPLE, IsoDateTime
from app.codat.push import PushOperationStatus
from app.models import EventStatus, utcnow
from app.processing import commands
from app.processing.commands import EventFilter

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in (
        (400, "A value no row can match, or a bad cursor"),
        (401, "Missing or invalid bearer token"),
        (404, "No such event, company or write"),
        (409, "The event cannot be replayed in its state"),
        (413, "Body over 16 KiB"),
        (422, "A parameter or body field of the wrong type or out of range"),
    )
}
router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)], responses=ERRORS)


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, committed once when the route has answered without an
    error (before the answer is sent), rolled back otherwise: routes and the functions
    they call never commit."""
    async with request.app.state.sessions() as db:
        try:
            yield db
        except BaseException:
            await db.rollback()
            raise
        await db.commit()


def _iso(what: str) -> str:
    return f"{what} (ISO 8601, e.g. {ISO_EXAMPLE}; without an offset, UTC)"


# scope="function": the commit happens before the answer is sent, so a 202 means queued.
Session = Annotated[AsyncSession, Depends(session, scope="function")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (at most 500)")]
Cursor = Annotated[
    str | None, Query(description="`next_cursor` of the previous page; omit for the first")
]
EventId = Annotated[int, Path(ge=1, le=MAX_ID, description="The event's id in this service")]
CompanyId = Annotated[str, Path(description="Codat's company id")]
CompanyFilter = Annotated[str | None, Query(description="Only this Codat company's")]
DataTypeFilter = Annotated[str | None, Query(description="Only this Codat data type, e.g. bills")]


def event_filter(
    event_type: Annotated[
        str | None, Query(description="Only events of this Codat `eventType`, exactly")
    ] = None,
    status: Annotated[EventStatus | None, Query(description="Only events in this status")] = None,
    company_id: CompanyFilter = None,
    received_after: Annotated[
        IsoDateTime | None, Query(description=_iso("Received at or after this time"))
    ] = None,
    received_before: Annotated[
        IsoDateTime | None, Query(description=_iso("Received before this time"))
    ] = None,
) -> EventFilter:
    return EventFilter(event_type, status, company_id, received_after, received_before)


@router.get(
    "/events",
    response_model=EventPage,
    tags=["events"],
    responses={200: answer(examples.EVENT_PAGE)},
)
async def list_events(
    db: Session,
    filters: Annotated[EventFilter, Depends(event_filter)],
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> EventPage:
    """Webhook deliveries as stored, newest first, with what became of each."""
    return await queries.list_events(db, filters, limit=limit, cursor=cursor)


@router.get(
    "/events/{event_id:int}",
    response_model=EventDetail,
    tags=["events"],
    responses={200: answer(examples.EVENT_DETAIL)},
)
async def get_event(db: Session, event_id: EventId) -> EventDetail:
    """One event with its payload (or raw body if unprocessable), attempts, last error and
    timeline."""
    return await queries.get_event(db, event_id)


@router.post(
    "/events/{event_id:int}/replay",
    response_model=ReplayResult,
    status_code=202,
    tags=["events"],
    responses={202: answer(ReplayResult(queued=1), "Queued")},
)
async def replay_event(db: Session, event_id: EventId) -> ReplayResult:
    """Queue one event to be processed again (handlers are idempotent). An unprocessable
    event, or one being processed now, is a 409."""
    await commands.replay_event(db, event_id, utcnow())
    return ReplayResult(queued=1)


@router.post(
    "/events/replay",
    response_model=ReplayResult,
    status_code=202,
    tags=["events"],
    responses={202: answer(examples.REPLAYED, "Queued")},
)
async def replay_events(db: Session, body: Annotated[ReplayRequest, Body()]) -> ReplayResult:
    """Queue every event matching the filters again, e.g. every dead read.completed of one
    company. At least one filter: an empty body is a 400, not a replay of everything."""
    filters = EventFilter(**body.model_dump())
    return ReplayResult(queued=await commands.replay_events(db, filters, utcnow()))


@router.get(
    "/companies",
    response_model=CompanyPage,
    tags=["companies"],
    responses={200: answer(examples.COMPANY_PAGE)},
)
async def list_companies(
    db: Session,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    tag: Annotated[
        list[str] | None,
        Query(
            description="Only companies with this Codat tag, as `key:value` (e.g. "
            "`customerId:cus_123`); repeat for several, all must match"
        ),
    ] = None,
    needs_reauth: Annotated[
        bool | None,
        Query(description="Only companies that need (true) or do not need (false) re-linking"),
    ] = None,
) -> CompanyPage:
    """The Codat companies events have told of, by id, with their connection, tags,
    whether they need re-authorisation, and their initial read."""
    return await queries.list_companies(
        db, limit=limit, cursor=cursor, tags=tag, needs_reauth=needs_reauth
    )


@router.get(
    "/companies/{company_id}",
    response_model=CompanyDetail,
    tags=["companies"],
    responses={200: answer(examples.COMPANY_DETAIL)},
)
async def get_company(request: Request, db: Session, company_id: CompanyId) -> CompanyDetail:
    """Connection, initial read, freshness of each data type (last read, last pull, record
    count, issues, overdue), catch-ups, and write outcomes by status."""
    max_age = request.app.state.settings.freshness_max_age
    return await queries.get_company(db, company_id, now=utcnow(), max_age=max_age)


@router.post(
    "/companies/{company_id}/refresh",
    response_model=Queued,
    status_code=202,
    tags=["companies"],
    responses={202: answer(examples.QUEUED_REFRESH, "Queued")},
)
async def refresh_company(
    request: Request,
    db: Session,
    company_id: CompanyId,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> Queued:
    """Ask Codat to read these data types again, through the worker (which owns the rate
    limit's pause and the retries). An unknown data type is a 400."""
    queued = await commands.refresh_company(
        db,
        company_id,
        body.dataTypes if body else None,
        variant=request.app.state.settings.bill_pay_variant,
        now=utcnow(),
    )
    return Queued(company_id=company_id, queued=queued)


@router.post(
    "/companies/{company_id}/reconcile",
    response_model=Queued,
    status_code=202,
    tags=["companies"],
    responses={202: answer(examples.QUEUED_RECONCILE, "Queued")},
)
async def reconcile_company(db: Session, company_id: CompanyId) -> Queued:
    """Compare Codat's data status and push operations with what was seen, and catch up the
    webhooks that never came (through the worker)."""
    return Queued(
        company_id=company_id, queued=await commands.reconcile_company(db, company_id, utcnow())
    )


@router.get(
    "/companies/{company_id}/data/{data_type}",
    response_model=RecordPage,
    tags=["companies"],
    responses={200: answer(examples.RECORD_PAGE)},
)
async def list_records(
    db: Session,
    company_id: CompanyId,
    data_type: Annotated[str, Path(description="Codat's data type, e.g. bills, suppliers")],
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    modified_after: Annotated[
        IsoDateTime | None, Query(description=_iso("Only records Codat modified after this time"))
    ] = None,
    include_deleted: Annotated[
        bool, Query(description="Include records deleted in the accounting software")
    ] = True,
) -> RecordPage:
    """The local copy of one data type, oldest change first, so a caller can follow what
    each refresh brought."""
    return await queries.list_records(
        db,
        company_id,
        data_type,
        limit=limit,
        cursor=cursor,
        modified_after=modified_after,
        include_deleted=include_deleted,
    )


@router.get(
    "/writes",
    response_model=WritePage,
    tags=["writes"],
    responses={200: answer(examples.WRITE_PAGE)},
)
async def list_writes(
    db: Session,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    company_id: CompanyFilter = None,
    status: Annotated[
        PushOperationStatus | None, Query(description="Only writes in this Codat status")
    ] = None,
    data_type: DataTypeFilter = None,
) -> WritePage:
    """Outcomes of writes to the accounting software, newest change first; failures carry
    Codat's error message and validation."""
    return await queries.list_writes(
        db, limit=limit, cursor=cursor, company_id=company_id, status=status, data_type=data_type
    )


@router.get(
    "/writes/{push_operation_key}",
    response_model=WriteItem,
    tags=["writes"],
    responses={200: answer(examples.WRITE)},
)
async def get_write(
    db: Session,
    push_operation_key: Annotated[str, Path(description="Codat's push operation key")],
) -> WriteItem:
    """One write's outcome by its push operation key."""
    return await queries.get_write(db, push_operation_key)


@router.get(
    "/rate-limit",
    response_model=RateLimitStatus,
    tags=["rate limit"],
    responses={200: answer(examples.RATE_LIMIT)},
)
async def get_rate_limit(db: Session) -> RateLimitStatus:
    """Whether calls to Codat are paused (a rate-limit event or a 429), until when, and the
    quota figures Codat last gave."""
    return await queries.get_rate_limit(db, utcnow())


@router.post(
    "/rate-limit/resume",
    response_model=ResumeResult,
    tags=["rate limit"],
    responses={200: answer(examples.RESUMED)},
)
async def resume_rate_limit(request: Request, db: Session) -> ResumeResult:
    """Lift the pause on calls to Codat now (a pause from a broken clock, a quota Codat has
    raised); what waited for it runs at once. Logged, and announced as
    `rate_limit.resumed`. A genuine limit returns with Codat's next 429. No body."""
    resumed = await commands.resume_rate_limit(
        db, utcnow(), endpoints=request.app.state.settings.notify_endpoints
    )
    return ResumeResult(
        resumed=resumed.lifted, paused_until=resumed.paused_until, reason=resumed.reason
    )
