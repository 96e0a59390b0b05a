"""What the suite reads back from the service's database to check its invariants."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Job, Record, WebhookEvent
from tests.reliability.sender import Delivery
from tests.reliability.world import World

UNSETTLED = ("pending", "processing")


@dataclass(frozen=True)
class EventRow:
    delivery_id: str
    event_type: str | None
    status: str
    attempts: int
    raw_body: bytes
    locked_by: str | None


async def event_rows(engine: AsyncEngine) -> dict[str, EventRow]:
    query = select(
        WebhookEvent.delivery_id,
        WebhookEvent.event_type,
        WebhookEvent.status,
        WebhookEvent.attempts,
        WebhookEvent.raw_body,
        WebhookEvent.locked_by,
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return {row[0]: EventRow(*row) for row in rows}


async def job_statuses(engine: AsyncEngine, kind: str = "pull") -> Counter[str]:
    query = select(Job.status, func.count()).where(Job.kind == kind).group_by(Job.status)
    async with engine.connect() as connection:
        return Counter({status: int(n) for status, n in (await connection.execute(query)).all()})


async def unsettled(engine: AsyncEngine) -> int:
    """Events not yet processed, plus pull jobs not yet done."""
    events = (
        select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status.in_(UNSETTLED))
    )
    jobs = (
        select(func.count()).select_from(Job).where(Job.kind == "pull", Job.status.in_(UNSETTLED))
    )
    async with engine.connect() as connection:
        return int(await connection.scalar(events) or 0) + int(await connection.scalar(jobs) or 0)


async def wait_settled(engine: AsyncEngine, *, within: float, quiet: float = 0.5) -> bool:
    """True once nothing is left to do (and stays so for `quiet` seconds); False on time-out."""
    deadline = time.monotonic() + within
    calm_since: float | None = None
    while time.monotonic() < deadline:
        try:
            left = await unsettled(engine)
        except OSError:
            left = -1
        if left == 0:
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since >= quiet:
                return True
        else:
            calm_since = None
        await asyncio.sleep(0.2)
    return False


def stored_once(deliveries: list[Delivery], rows: dict[str, EventRow]) -> list[str]:
    """Problems with 'every acknowledged delivery is stored, once, byte for byte'."""
    problems: list[str] = []
    sent: dict[str, bytes] = {}
    for d in deliveries:
        sent.setdefault(d.delivery_id, d.body)
    for d in deliveries:
        if d.acknowledged and d.delivery_id not in rows:
            problems.append(f"{d.delivery_id} acknowledged but not stored")
    for delivery_id, row in rows.items():
        if delivery_id not in sent:
            problems.append(f"{delivery_id} stored but never sent")
        elif row.raw_body != sent[delivery_id]:
            problems.append(f"{delivery_id} stored with a different body")
    return problems


async def local_copy_diff(engine: AsyncEngine, world: World) -> tuple[int, list[str]]:
    """(records compared, differences) between the local copy and the fake's data."""
    fake, companies, data_types = world.fake, sorted(world.companies), list(world.data_types)
    compared = 0
    problems: list[str] = []
    async with engine.connect() as connection:
        for company in companies:
            for data_type in data_types:
                query = select(Record.record_id, Record.data, Record.is_deleted).where(
                    Record.company_id == company, Record.data_type == data_type
                )
                local: dict[str, tuple[Any, bool]] = {
                    record_id: (data, bool(deleted))
                    for record_id, data, deleted in (await connection.execute(query)).all()
                }
                theirs = {r["id"]: r for r in fake.records(company, data_type)}
                compared += len(theirs)
                missing = sorted(set(theirs) - set(local))
                extra = sorted(set(local) - set(theirs))
                if missing:
                    problems.append(f"{company}/{data_type}: missing {missing[:5]}")
                if extra:
                    problems.append(f"{company}/{data_type}: not in Codat {extra[:5]}")
                for record_id in sorted(set(theirs) & set(local)):
                    data, deleted = local[record_id]
                    if data != theirs[record_id]:
                        problems.append(f"{company}/{data_type}/{record_id}: stale copy")
                    if deleted != bool(theirs[record_id]["metadata"]["isDeleted"]):
                        problems.append(f"{company}/{data_type}/{record_id}: deletion not seen")
    return compared, problems


def summarize(problems: list[str], limit: int = 5) -> str:
    if not problems:
        return ""
    more = f" and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more
