"""Reading and replaying deliveries of changes: plain functions the API and CLI share.

They do not commit: the caller commits once (the API's session, the CLI's helper). Only
`prune_changes` commits, a batch at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import DELETE_BATCH, delete_in_batches
from app.models import Change, Delivery, DeliveryStatus

# A delivery waiting or in hand is already on its way: replaying it would send it twice.
SETTLED = (DeliveryStatus.DELIVERED.value, DeliveryStatus.DEAD.value)


@dataclass(frozen=True)
class DeliveryFilter:
    status: str | None = None
    endpoint: str | None = None
    change_type: str | None = None
    company_id: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.status is not None:
            found.append(Delivery.status == self.status)
        if self.endpoint is not None:
            found.append(Delivery.endpoint == self.endpoint)
        if self.change_type is not None:
            found.append(Delivery.change_type == self.change_type)
        if self.company_id is not None:
            found.append(Delivery.company_id == self.company_id)
        return found


def _replay_values(now: datetime) -> dict[str, Any]:
    """Due now, with a fresh retry span and no attempts spent."""
    return {
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "locked_by": None,
        "locked_until": None,
        "delivered_at": None,
    }


async def replay_delivery(session: AsyncSession, delivery_id: int, now: datetime) -> str | None:
    """Send one delivery again; None if done, else why not (`missing`, or its status)."""
    delivery = await session.get(Delivery, delivery_id)
    if delivery is None:
        return "missing"
    if delivery.status not in SETTLED:
        return delivery.status
    await session.execute(
        update(Delivery).where(Delivery.id == delivery_id).values(**_replay_values(now))
    )
    return None


async def replay_deliveries(session: AsyncSession, filters: DeliveryFilter, now: datetime) -> int:
    """Send every settled delivery that matches again (the caller insists on a filter)."""
    result = await session.execute(
        update(Delivery)
        .where(Delivery.status.in_(SETTLED), *filters.conditions())
        .values(**_replay_values(now))
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def list_deliveries(
    session: AsyncSession, filters: DeliveryFilter, *, before_id: int | None, limit: int
) -> list[Delivery]:
    """Newest first."""
    statement = select(Delivery).where(*filters.conditions()).order_by(Delivery.id.desc())
    if before_id is not None:
        statement = statement.where(Delivery.id < before_id)
    return list(await session.scalars(statement.limit(limit)))


async def prune_changes(
    sessions: async_sessionmaker[AsyncSession], cutoff: datetime, *, batch: int = DELETE_BATCH
) -> int:
    """Delete changes made before `cutoff` with their settled deliveries, in batches (each
    its own transaction); a change still waiting to be delivered somewhere stays until it
    is delivered or dead."""
    waiting = exists().where(Delivery.change_seq == Change.seq, Delivery.status.not_in(SETTLED))

    async def settled_deliveries(session: AsyncSession, after: int, upper: int) -> None:
        await session.execute(
            delete(Delivery).where(
                Delivery.change_seq > after,
                Delivery.change_seq <= upper,
                Delivery.status.in_(SETTLED),
                ~exists().where(Change.seq == Delivery.change_seq),
            )
        )

    return await delete_in_batches(
        sessions,
        Change.seq,
        [Change.created_at < cutoff, ~waiting],
        batch=batch,
        also=settled_deliveries,
    )
