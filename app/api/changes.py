"""The change feed (`GET /api/v1/changes`) and the deliveries of changes to endpoints.

The feed's route takes no session of its own: a long-poll holds no database
connection while it waits (app/changes/feed.py looks in short sessions).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from app.api.auth import require_token
from app.api.errors import ApiError
from app.api.examples import COMPANY, CURSOR, PUSH_KEY, RECEIVED, answer
from app.api.paging import DEFAULT_LIMIT, MAX_ID, decode_cursor, encode_cursor
from app.api.status import ERRORS, CompanyFilter, Cursor, Limit, Session
from app.changes.deliveries import (
    DeliveryFilter,
    list_deliveries,
    replay_deliveries,
    replay_delivery,
)
from app.changes.feed import MAX_WAIT_SECONDS, FeedFilter, Position, wait_for_changes
from app.changes.record import CHANGE_TYPES
from app.models import Change, DeliveryStatus, utcnow

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)], responses=ERRORS)


class ChangeItem(BaseModel):
    """One change, in the shape a notification's body has."""

    type: str = Field(description="The change type (README, the change types)")
    id: str = Field(description="Unique, sorts by creation time; a notification's webhook-id")
    timestamp: datetime = Field(description="When the change was recorded (UTC)")
    data: dict[str, Any] = Field(description="What changed; `companyId` when it has a company")


class ChangePage(BaseModel):
    items: list[ChangeItem] = Field(description="Oldest first")
    next_cursor: str | None = Field(
        description="Give it back as `cursor` for what comes next (also when items is empty)"
    )


CHANGE_PAGE = ChangePage(
    items=[
        ChangeItem(
            type="bill_write.failed",
            id="chg_019ad3f2a1b0c1d2e3f4a5b6c7d8",
            timestamp=RECEIVED,
            data={
                "companyId": COMPANY,
                "pushOperationKey": PUSH_KEY,
                "dataType": "bills",
                "status": "Failed",
                "recordId": None,
                "errorMessage": "Supplier not found",
                "validation": None,
            },
        )
    ],
    next_cursor=CURSOR,
)


def change_item(change: Change) -> ChangeItem:
    return ChangeItem(
        type=change.change_type, id=change.id, timestamp=change.created_at, data=change.data
    )


def _types(text: str | None) -> list[str]:
    types = [part.strip() for part in (text or "").split(",") if part.strip()]
    unknown = sorted(set(types) - set(CHANGE_TYPES))
    if unknown:
        raise ApiError(400, f"unknown change types: {', '.join(unknown)[:200]}")
    return types


@router.get(
    "/changes",
    response_model=ChangePage,
    tags=["changes"],
    responses={200: answer(CHANGE_PAGE)},
)
async def list_changes(
    request: Request,
    cursor: Cursor = None,
    types: Annotated[
        str | None, Query(description="Only these change types, comma-separated")
    ] = None,
    company_id: CompanyFilter = None,
    limit: Limit = DEFAULT_LIMIT,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Seconds to wait for a change when there is none after the cursor",
        ),
    ] = 0,
) -> ChangePage:
    """What changed, oldest first, at least once: keep `next_cursor` and ask again."""
    after = None
    if cursor:
        tx, seq = decode_cursor(cursor, int, int)
        after = Position(tx, seq)
    page = await wait_for_changes(
        request.app.state.sessions,
        request.app.state.change_signal,
        after,
        FeedFilter(_types(types), company_id),
        limit,
        wait,
    )
    last = page[-1] if page else None
    return ChangePage(
        items=[change_item(change) for change in page],
        next_cursor=encode_cursor(last.tx, last.seq) if last else cursor,
    )


class DeliveryItem(BaseModel):
    id: int = Field(description="The delivery's id in this service")
    change_id: str = Field(description="The change sent (its webhook-id)")
    change_type: str = Field(description="The change's type")
    company_id: str | None = Field(description="The change's company, if any")
    endpoint: str = Field(description="The endpoint's URL, as in NOTIFY_ENDPOINTS")
    status: DeliveryStatus = Field(description="pending, processing, delivered or dead")
    attempts: int = Field(description="Posts tried so far")
    next_attempt_at: datetime | None = Field(description="When it is tried next, if pending")
    last_error: str | None = Field(description="The last failure: HTTP status or error kind")
    response_status: int | None = Field(description="The endpoint's last HTTP status")
    created_at: datetime = Field(description="When it was queued (or replayed)")
    delivered_at: datetime | None = Field(description="When a 2xx came back")


class DeliveryPage(BaseModel):
    items: list[DeliveryItem] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Give it back as `cursor` for the next page")


class DeliveryReplayRequest(BaseModel):
    status: DeliveryStatus | None = Field(default=None, description="Only deliveries in this")
    endpoint: str | None = Field(default=None, description="Only those to this endpoint URL")
    change_type: str | None = Field(default=None, description="Only changes of this type")
    company_id: str | None = Field(default=None, description="Only this company's changes")


class DeliveryReplayResult(BaseModel):
    queued: int = Field(description="Deliveries queued to be sent again")


DELIVERY_PAGE = DeliveryPage(
    items=[
        DeliveryItem(
            id=7,
            change_id=CHANGE_PAGE.items[0].id,
            change_type="bill_write.failed",
            company_id=COMPANY,
            endpoint="https://platform.internal/codat-changes",
            status=DeliveryStatus.DEAD,
            attempts=14,
            next_attempt_at=None,
            last_error="HTTP 503",
            response_status=503,
            created_at=RECEIVED,
            delivered_at=None,
        )
    ],
    next_cursor=None,
)


def delivery_filter(
    status: Annotated[
        DeliveryStatus | None, Query(description="Only deliveries in this status")
    ] = None,
    endpoint: Annotated[str | None, Query(description="Only those to this endpoint URL")] = None,
    change_type: Annotated[str | None, Query(description="Only changes of this type")] = None,
    company_id: CompanyFilter = None,
) -> DeliveryFilter:
    return DeliveryFilter(status, endpoint, change_type, company_id)


@router.get(
    "/deliveries",
    response_model=DeliveryPage,
    tags=["changes"],
    responses={200: answer(DELIVERY_PAGE)},
)
async def get_deliveries(
    db: Session,
    filters: Annotated[DeliveryFilter, Depends(delivery_filter)],
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> DeliveryPage:
    """Deliveries of changes to the endpoints, newest first; filter `status=dead`."""
    before = None
    if cursor:
        [before] = decode_cursor(cursor, int)
    rows = await list_deliveries(db, filters, before_id=before, limit=limit)
    return DeliveryPage(
        items=[DeliveryItem.model_validate(row, from_attributes=True) for row in rows],
        next_cursor=encode_cursor(rows[-1].id) if len(rows) == limit else None,
    )


@router.post(
    "/deliveries/{delivery_id:int}/replay",
    response_model=DeliveryReplayResult,
    status_code=202,
    tags=["changes"],
    responses={202: answer(DeliveryReplayResult(queued=1), "Queued")},
)
async def replay_one_delivery(
    db: Session,
    delivery_id: Annotated[
        int, Path(ge=1, le=MAX_ID, description="The delivery's id in this service")
    ],
) -> DeliveryReplayResult:
    """Send one delivered or dead delivery again, at once."""
    refused = await replay_delivery(db, delivery_id, utcnow())
    if refused == "missing":
        raise ApiError(404, f"no delivery {delivery_id}")
    if refused is not None:
        raise ApiError(409, f"delivery {delivery_id} is {refused} and cannot be replayed")
    return DeliveryReplayResult(queued=1)


@router.post(
    "/deliveries/replay",
    response_model=DeliveryReplayResult,
    status_code=202,
    tags=["changes"],
    responses={202: answer(DeliveryReplayResult(queued=3), "Queued")},
)
async def replay_matching_deliveries(
    db: Session, body: Annotated[DeliveryReplayRequest, Body()]
) -> DeliveryReplayResult:
    """Send every delivered or dead delivery matching the filters again (at least one)."""
    filters = DeliveryFilter(**body.model_dump(mode="json"))
    if not filters.conditions():
        raise ApiError(400, "give at least one filter to replay in bulk")
    return DeliveryReplayResult(queued=await replay_deliveries(db, filters, utcnow()))
