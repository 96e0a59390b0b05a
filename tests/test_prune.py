"""Pruning deletes in batches (each its own transaction) and still deletes exactly what it
should: old processed and ignored events, old changes whose deliveries are settled, with
those deliveries; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.changes.deliveries import prune_changes
from app.changes.record import record_change
from app.config import NotifyEndpoint
from app.db import session_factory
from app.models import Change, Delivery, WebhookEvent
from app.processing.commands import prune_events
from tests.conftest import Clock

STATUSES = ["processed", "ignored", "dead", "pending", "unprocessable", "processing"]


async def test_events_are_pruned_in_batches_and_only_the_old_finished_ones(
    engine: AsyncEngine, clock: Clock
) -> None:
    now = clock()
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    rows = []
    for i in range(60):
        status = STATUSES[i % len(STATUSES)]
        finished = status in ("processed", "ignored", "dead")
        # Old and recent interleaved, so batches meet rows they must step over.
        processed_at = (old if i % 4 else recent) if finished else None
        rows.append(
            {
                "delivery_id": f"d{i}",
                "received_at": processed_at or now,
                "raw_body": b"{}",
                "status": status,
                "attempts": 1,
                "processed_at": processed_at,
            }
        )
    async with engine.begin() as connection:
        await connection.execute(insert(WebhookEvent), rows)
    expected_gone = {
        row["delivery_id"]
        for row in rows
        if row["status"] in ("processed", "ignored") and row["processed_at"] == old
    }
    assert len(expected_gone) > 3 * 4  # several batches of 4

    pruned = await prune_events(session_factory(engine), now - timedelta(days=30), batch=4)

    async with engine.connect() as connection:
        left = set(await connection.scalars(select(WebhookEvent.delivery_id)))
    assert pruned == len(expected_gone)
    assert left == {row["delivery_id"] for row in rows} - expected_gone
    # Nothing left to prune: a second run deletes nothing.
    assert await prune_events(session_factory(engine), now - timedelta(days=30), batch=4) == 0


async def test_changes_are_pruned_in_batches_keeping_those_still_being_delivered(
    engine: AsyncEngine, clock: Clock
) -> None:
    endpoint = NotifyEndpoint(url="https://platform.example/hooks", secret="whsec_c2VjcmV0")
    old = clock() - timedelta(days=40)
    ids: list[str] = []
    async with engine.begin() as connection:
        for i in range(15):
            at = old if i < 12 else clock()
            ids.append(
                await record_change(
                    connection,
                    "company.ready",
                    company_id=f"c{i}",
                    data={},
                    now=at,
                    endpoints=[endpoint],
                )
            )
        # Old ones: most delivered, two dead, three still waiting (they must stay).
        for i, change_id in enumerate(ids[:12]):
            status = "pending" if i in (2, 7, 11) else "dead" if i in (4, 5) else "delivered"
            await connection.execute(
                update(Delivery).where(Delivery.change_id == change_id).values(status=status)
            )
    waiting = {ids[2], ids[7], ids[11]}

    pruned = await prune_changes(session_factory(engine), clock() - timedelta(days=30), batch=2)

    async with engine.connect() as connection:
        left = set(await connection.scalars(select(Change.id)))
        deliveries = set(await connection.scalars(select(Delivery.change_id)))
    assert pruned == 9
    assert left == waiting | set(ids[12:])
    # The pruned changes' settled deliveries went with them; the others stay.
    assert deliveries == left
