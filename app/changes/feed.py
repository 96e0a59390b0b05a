"""The change feed: pages of changes after a cursor, oldest first, and a long-poll.

On PostgreSQL a change is handed out only once every transaction that began before its
own has ended (`txid_snapshot_xmin`), and the feed is ordered by (transaction, seq): a
reader can then never skip a change that commits late behind one already read. On
SQLite writers take turns, so `seq` alone is commit order (`tx` is 0 there).

A waiting request holds no database connection: each look is a short session of its
own, and between looks it waits for a NOTIFY (PostgreSQL) or the poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import dialect_name
from app.models import Change

# The NOTIFY channel of migration 0007's trigger on `changes`.
CHANNEL = "codat_changes"
MAX_WAIT_SECONDS = 30.0
# Between looks while waiting: the only wake-up on SQLite, the fallback on PostgreSQL
# (a notified change may still wait behind an older open transaction).
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Position:
    """Where a reader is: the (tx, seq) of the last change it was given."""

    tx: int
    seq: int


@dataclass(frozen=True)
class FeedFilter:
    types: Sequence[str] = ()
    company_id: str | None = None


class ChangeSignal:
    """Wakes every waiting reader when changes may have been committed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Until the next notify, or `seconds` at most."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=seconds)


async def read_changes(
    session: AsyncSession, after: Position | None, filters: FeedFilter, limit: int
) -> list[Change]:
    statement = select(Change).order_by(Change.tx, Change.seq).limit(limit)
    if after is not None:
        statement = statement.where(tuple_(Change.tx, Change.seq) > (after.tx, after.seq))
    if dialect_name(session) == "postgresql":
        # Only transactions that ended, and every one before them too.
        statement = statement.where(
            Change.tx < func.txid_snapshot_xmin(func.txid_current_snapshot())
        )
    if filters.types:
        statement = statement.where(Change.change_type.in_(list(filters.types)))
    if filters.company_id is not None:
        statement = statement.where(Change.company_id == filters.company_id)
    return list(await session.scalars(statement))


async def wait_for_changes(
    sessions: async_sessionmaker[AsyncSession],
    signal: ChangeSignal,
    after: Position | None,
    filters: FeedFilter,
    limit: int,
    wait_seconds: float,
) -> list[Change]:
    """A page now, or, when it would be empty, the first page within `wait_seconds`."""
    deadline = time.monotonic() + min(max(wait_seconds, 0.0), MAX_WAIT_SECONDS)
    while True:
        async with sessions() as session:  # closed before any wait: no connection held
            page = await read_changes(session, after, filters, limit)
        remaining = deadline - time.monotonic()
        if page or remaining <= 0:
            return page
        await signal.wait(min(remaining, POLL_SECONDS))
