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
from app.api.paging import DEFAULT_LIMIT, MAX_ID, MAX_LIMIT, decode_cursor, encode_cursor
from app.api.status import ERRORS, Session
from app.changes.deliveries import (
    DeliveryFilter,
    list_deliveries,
    replay_deliveries,
    replay_delivery,
)
from app.changes.feed import MAX_WAIT_SECONDS, FeedFilter, Position, wait_for_changes
from app.changes.record import CHANGE_TYPES
from app.models import Change, utcnow

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)], responses=ERRORS)


class ChangeItem(BaseModel):
    """One change, in the shape a notification's body has."""

    type: str = Field(examples=["company.ready"])
    id: str = Field(description="Unique, sorts by creation time", examples=["chg_..."])
    timestamp: datetime
    data: dict[str, Any] = Field(examples=[{"companyId": "8a210b68-6988-11ed-a1eb-0242ac120002"}])


class ChangePage(BaseModel):
    items: list[ChangeItem]
    next_cursor: str | None = Field(
        description="Give it back as `cursor` for what comes next (also when items is empty)"
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


@router.get("/changes", response_model=ChangePage, tags=["changes"])
async def list_changes(
    request: Request,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    types: Annotated[
        str | None, Query(description="Comma-separated change types", examples=["data.changed"])
    ] = None,
    company_id: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
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
        tx, seq = decode_cursor(cursor, 2)
        if not isinstance(tx, int) or not isinstance(seq, int):
            raise ApiError(400, "invalid cursor")
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
    id: int
    change_id: str
    change_type: str
    company_id: str | None
    endpoint: str
    status: str = Field(examples=["pending", "processing", "delivered", "dead"])
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    response_status: int | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryItem]
    next_cursor: str | None


class DeliveryReplayRequest(BaseModel):
    status: str | None = Field(default=None, examples=["dead"])
    endpoint: str | None = None
    change_type: str | None = None
    company_id: str | None = None


class DeliveryReplayResult(BaseModel):
    queued: int


def delivery_filter(
    status: str | None = None,
    endpoint: str | None = None,
    change_type: str | None = None,
    company_id: str | None = None,
) -> DeliveryFilter:
    return DeliveryFilter(status, endpoint, change_type, company_id)


@router.get("/deliveries", response_model=DeliveryPage, tags=["changes"])
async def get_deliveries(
    db: Session,
    filters: Annotated[DeliveryFilter, Depends(delivery_filter)],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> DeliveryPage:
    """Deliveries of changes to the endpoints, newest first; filter `status=dead`."""
    before = None
    if cursor:
        [before] = decode_cursor(cursor, 1)
        if not isinstance(before, int):
            raise ApiError(400, "invalid cursor")
    rows = await list_deliveries(db, filters, before_id=before, limit=limit)
    return DeliveryPage(
        items=[DeliveryItem.model_validate(row, from_attributes=True) for row in rows],
        next_cursor=encode_cursor(rows[-1].id) if len(rows) == limit else None,
    )


@router.post(
    "/deliveries/{delivery_id}/replay",
    response_model=DeliveryReplayResult,
    status_code=202,
    tags=["changes"],
)
async def replay_one_delivery(
    db: Session, delivery_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> DeliveryReplayResult:
    """Send one delivered or dead delivery again, at once."""
    refused = await replay_delivery(db, delivery_id, utcnow())
    if refused == "missing":
        raise ApiError(404, f"no delivery {delivery_id}")
    if refused is not None:
        raise ApiError(409, f"delivery {delivery_id} is {refused} and cannot be replayed")
    return DeliveryReplayResult(queued=1)


@router.post(
    "/deliveries/replay", response_model=DeliveryReplayResult, status_code=202, tags=["changes"]
)
async def replay_matching_deliveries(
    db: Session, body: Annotated[DeliveryReplayRequest, Body()]
) -> DeliveryReplayResult:
    """Send every delivered or dead delivery matching the filters again (at least one)."""
    filters = DeliveryFilter(**body.model_dump())
    if not filters.conditions():
        raise ApiError(400, "give at least one filter to replay in bulk")
    return DeliveryReplayResult(queued=await replay_deliveries(db, filters, utcnow()))
