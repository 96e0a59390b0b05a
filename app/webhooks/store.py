"""Storing deliveries once, with group commit.

Each request hands its row to one writer task per process and waits. While a commit
is in flight the next requests queue up, and the writer inserts all of them in one
statement and one commit. No request is answered before its row is durable, and the
unique delivery id makes a retry or a racing duplicate a no-op.

A signed body is always kept: if the database refuses a batch for what a row holds
(not because it is away), the rows are stored one by one, and a row refused again is
kept aside as `unprocessable`, its raw body byte for byte (the column is binary) and
none of the values read from it. Only a database that is away gets a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, select
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db import dialect_insert, short_error
from app.models import EventStatus, WebhookEvent

log = logging.getLogger(__name__)


class StoreResult(enum.StrEnum):
    STORED = "stored"
    UNPROCESSABLE = "unprocessable"  # stored, kept aside: never offered to the worker
    DUPLICATE = "duplicate"
    # A delivery id already stored with another body: answered as a duplicate (the first
    # body is the one kept), but a sender reusing ids, or a replay of a captured id with a
    # new body, is worth a warning and a count.
    DUPLICATE_MISMATCH = "duplicate_mismatch"

    @property
    def answer(self) -> str:
        """What the sender is told."""
        return StoreResult.DUPLICATE.value if self is StoreResult.DUPLICATE_MISMATCH else self.value


class DatabaseUnavailable(Exception):
    """The row is not stored; the sender must retry (the route answers 503)."""


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    delivery_id: str
    raw_body: bytes
    received_at: datetime
    event_id: str | None
    event_type: str | None
    company_id: str | None
    connection_id: str | None
    generated_at: datetime | None
    unprocessable_reason: str | None
    traceparent: str | None = None

    def kept_aside(self, reason: str) -> IncomingEvent:
        """The row as it can always be stored: none of the values read from the body."""
        return IncomingEvent(
            delivery_id=self.delivery_id,
            raw_body=self.raw_body,
            received_at=self.received_at,
            event_id=None,
            event_type=None,
            company_id=None,
            connection_id=None,
            generated_at=None,
            unprocessable_reason=reason,
            traceparent=self.traceparent,
        )

    def row(self) -> dict[str, Any]:
        status = EventStatus.UNPROCESSABLE if self.unprocessable_reason else EventStatus.PENDING
        return {
            "delivery_id": self.delivery_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "company_id": self.company_id,
            "connection_id": self.connection_id,
            "generated_at": self.generated_at,
            "received_at": self.received_at,
            "raw_body": self.raw_body,
            "status": status.value,
            "attempts": 0,
            "next_attempt_at": None if self.unprocessable_reason else self.received_at,
            "last_error": self.unprocessable_reason,
            "traceparent": self.traceparent,
        }


def _insert_ignoring_duplicates(engine: AsyncEngine) -> Insert:
    insert: Insert = (
        dialect_insert(engine)(WebhookEvent)
        .on_conflict_do_nothing(index_elements=["delivery_id"])
        .returning(WebhookEvent.delivery_id)
    )
    return insert


_Pending = tuple[IncomingEvent, "asyncio.Future[StoreResult]"]


class EventWriter:
    """One per process; `store` is what the webhook route awaits."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = 500,
        writers: int | None = None,
        on_stored: Callable[[], None] | None = None,
    ):
        self._engine = engine
        self._on_stored = on_stored
        self._max_batch = max_batch
        # SQLite has one writer at a time anyway; PostgreSQL overlaps two commits.
        self._writers = writers or (1 if engine.dialect.name == "sqlite" else 2)
        self._insert = _insert_ignoring_duplicates(engine)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self._writers)]

    async def close(self) -> None:
        """Finish what was handed in, then stop."""
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def store(self, event: IncomingEvent) -> StoreResult:
        if not self._tasks:
            raise RuntimeError("EventWriter.start() was not called")
        future: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((event, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[_Pending]) -> None:
        events = [event for event, _ in batch]
        results: list[StoreResult | DatabaseUnavailable]
        try:
            results = list(await self._insert_rows(events))
        except Exception as exc:  # a writer task that dies would leave every request waiting
            if _row_refused(exc):
                log.warning(
                    "event batch refused: storing its rows one by one",
                    extra={"batch": len(batch), "error": short_error(exc)},
                )
                results = await self._insert_one_by_one(events)
            else:
                log.warning(
                    "event store failed", extra={"batch": len(batch), "error": short_error(exc)}
                )
                results = [DatabaseUnavailable(type(exc).__name__) for _ in batch]
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, DatabaseUnavailable):
                _settle(future, exc=result)
            else:
                _settle(future, result=result)
        if self._on_stored and StoreResult.STORED in results:
            self._on_stored()
        if log.isEnabledFor(logging.INFO):
            log_commit([event for event, _ in batch], results)

    async def _insert_one_by_one(
        self, events: list[IncomingEvent]
    ) -> list[StoreResult | DatabaseUnavailable]:
        """Each row alone; one the database refuses again is kept aside. Once the database
        is away, the rest are not tried: they get their 503 at once."""
        results: list[StoreResult | DatabaseUnavailable] = []
        for event in events:
            if results and isinstance(results[-1], DatabaseUnavailable):
                results.append(results[-1])
                continue
            try:
                [result] = await self._insert_rows([event])
            except Exception as exc:
                if _row_refused(exc):
                    results.append(await self._keep_aside(event, short_error(exc)))
                else:
                    results.append(DatabaseUnavailable(type(exc).__name__))
            else:
                results.append(result)
        return results

    async def _keep_aside(
        self, event: IncomingEvent, error: str
    ) -> StoreResult | DatabaseUnavailable:
        reason = f"the database refused the row as read from the body ({error})"[:500]
        try:
            [result] = await self._insert_rows([event.kept_aside(reason)])
        except Exception as exc:
            log.warning("event store failed", extra={"batch": 1, "error": short_error(exc)})
            return DatabaseUnavailable(type(exc).__name__)
        log.warning(
            "signed body kept as unprocessable",
            extra={"delivery_id": event.delivery_id, "reason": reason},
        )
        return result

    async def _insert_rows(self, events: list[IncomingEvent]) -> list[StoreResult]:
        """One result per event, in order; only the first of twins in a batch is new."""
        first_by_id: dict[str, IncomingEvent] = {}
        for event in events:
            first_by_id.setdefault(event.delivery_id, event)
        rows = [event.row() for event in first_by_id.values()]
        async with self._engine.begin() as connection:
            inserted = set((await connection.execute(self._insert, rows)).scalars())
            # Bodies already stored under the ids of this batch's duplicates (rare).
            stored = await _stored_bodies(connection, set(first_by_id) - inserted)
        results = []
        for event in events:
            if event.delivery_id not in inserted:
                kept = stored.get(event.delivery_id, first_by_id[event.delivery_id].raw_body)
                results.append(_duplicate(event, kept))
            elif event.unprocessable_reason is None:
                results.append(StoreResult.STORED)
            else:
                results.append(StoreResult.UNPROCESSABLE)
            inserted.discard(event.delivery_id)
        return results


async def _stored_bodies(connection: AsyncConnection, delivery_ids: set[str]) -> dict[str, bytes]:
    if not delivery_ids:
        return {}
    rows = await connection.execute(
        select(WebhookEvent.delivery_id, WebhookEvent.raw_body).where(
            WebhookEvent.delivery_id.in_(delivery_ids)
        )
    )
    return {row.delivery_id: row.raw_body for row in rows}


def _duplicate(event: IncomingEvent, kept: bytes) -> StoreResult:
    if event.raw_body == kept:
        return StoreResult.DUPLICATE
    log.warning(
        "duplicate delivery id with a different body: the first body is kept",
        extra={"delivery_id": event.delivery_id, "size": len(event.raw_body)},
    )
    return StoreResult.DUPLICATE_MISMATCH


def _row_refused(exc: BaseException) -> bool:
    """The database refused what a row holds (a value its column type cannot take, a
    constraint), rather than being away. Anything else, such as a server starting up or
    a connection lost, is the database's fault: a 503, and Codat retries (DESIGN.md)."""
    if isinstance(exc, sqlalchemy_exc.DataError | sqlalchemy_exc.IntegrityError):
        return True
    if isinstance(exc, DBAPIError):
        # PostgreSQL's SQLSTATE classes 22 (data exception: a NUL, a value too long) and
        # 23 (integrity constraint violation); asyncpg's errors carry it.
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        return sqlstate.startswith(("22", "23"))
    # Refused while binding the row (a column type's check), before any database saw it.
    return isinstance(exc, sqlalchemy_exc.StatementError)


_ONE_EVENT = {
    StoreResult.STORED: "event stored",
    StoreResult.DUPLICATE: "duplicate delivery ignored",
}


def log_commit(
    events: list[IncomingEvent], results: list[StoreResult | DatabaseUnavailable]
) -> None:
    """One line per commit: it names the event when the commit holds one (every delivery
    while someone follows the log) and counts them by type when a burst shares it. A JSON
    line costs 240-390 us of CPU, a third to a half of receiving an event: one per event
    would have taken that off the receive rate (bench/receive.py counts the lines).
    Unprocessable rows and failures have warning lines of their own."""
    if len(events) == 1:
        event, result = events[0], results[0]
        message = _ONE_EVENT.get(result) if isinstance(result, StoreResult) else None
        if message is not None:
            log.info(
                message,
                extra={
                    "event_type": event.event_type,
                    "delivery_id": event.delivery_id,
                    "company_id": event.company_id,
                },
            )
        return
    stored = Counter(
        event.event_type or ""
        for event, result in zip(events, results, strict=True)
        if result is StoreResult.STORED
    )
    duplicates = sum(
        result in (StoreResult.DUPLICATE, StoreResult.DUPLICATE_MISMATCH) for result in results
    )
    if stored or duplicates:
        log.info(
            "events stored",
            extra={
                "stored": stored.total(),
                "duplicates": duplicates,
                "event_types": dict(stored),
            },
        )


def _settle(
    future: asyncio.Future[StoreResult],
    *,
    result: StoreResult | None = None,
    exc: BaseException | None = None,
) -> None:
    if future.done():  # the request was cancelled (client went away)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None
        future.set_result(result)
