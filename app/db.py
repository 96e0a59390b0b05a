"""Engine and sessions for any SQLAlchemy URL, with the driver chosen for the user.

Operators write `sqlite:///path` or `postgresql://user:pass@host/db`; the service is
async throughout, so it swaps in the async driver for each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, delete, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import StatementError
from sqlalchemy.ext import asyncio as sqlalchemy_asyncio
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
)
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

if TYPE_CHECKING:
    from sqlalchemy.orm import InstrumentedAttribute

    from app.config import Settings

# Connections the web side keeps: receiving's group commits and the status API's reads.
WEB_POOL_SIZE = 10

ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
SHORT_ERROR_CHARS = 200


def short_error(exc: BaseException) -> str:
    """An error's class and the first line of its reason, for logs and `last_error`.

    SQLAlchemy's text of a failed statement carries the SQL and its parameters (payload
    data, raw bodies): only the driver's own message is kept, without its DETAIL lines."""
    if isinstance(exc, StatementError) and exc.orig is not None:
        cause: BaseException = exc.orig
        text = str(cause)
    else:
        cause, text = exc, str(exc)
    lines = text.strip().splitlines()
    reason = lines[0][:SHORT_ERROR_CHARS] if lines else ""
    return f"{type(cause).__name__}: {reason}" if reason else type(cause).__name__


def async_url(database_url: str) -> URL:
    """`postgres://`, `postgresql://`, `postgresql+psycopg://`... all become asyncpg."""
    if database_url.startswith("postgres://"):
        database_url = "postgresql://" + database_url.removeprefix("postgres://")
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend not in ASYNC_DRIVERS:
        raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return url.set(drivername=ASYNC_DRIVERS[backend])


# What runs a statement: a plain connection (cheaper, for hot paths) or an ORM session.
Executor = AsyncConnection | AsyncSession


def dialect_name(bind: AsyncEngine | AsyncConnection | AsyncSession) -> str:
    return bind.get_bind().dialect.name if isinstance(bind, AsyncSession) else bind.dialect.name


def insert_for(dialect: str) -> Callable[..., Any]:
    """INSERT with ON CONFLICT: both databases have it, each under its own dialect."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def dialect_insert(bind: AsyncEngine | AsyncConnection | AsyncSession) -> Callable[..., Any]:
    return insert_for(dialect_name(bind))


def _prepare_sqlite_file(url: URL) -> None:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        # If this fails, connecting fails too, and /readyz and the 503s say so.
        with contextlib.suppress(OSError):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; FULL sync means an ack is durable."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(database_url: str, *, pool_size: int = WEB_POOL_SIZE) -> AsyncEngine:
    url = async_url(database_url)
    if url.get_backend_name() == "sqlite":
        _prepare_sqlite_file(url)
        engine = sqlalchemy_asyncio.create_async_engine(url, connect_args={"timeout": 10})
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        return engine
    # Looked up when called: with tracing on, OpenTelemetry has wrapped it (app/tracing.py).
    return sqlalchemy_asyncio.create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=5,
        pool_pre_ping=False,
        # A database that hangs must turn into a 503, not a request that never ends.
        connect_args={"timeout": 5, "command_timeout": 15},
    )


def worker_pool_size(settings: Settings) -> int:
    """Every running event may hold a connection, plus the claim, the lease renewal and
    the listener for stored events, and the notifier's claim or settle: a smaller pool
    opens and closes connections all day."""
    return settings.worker_concurrency + 4


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


# Rows one pruning transaction deletes: small enough that a writer waiting for it (every
# writer, on SQLite) waits milliseconds, large enough that the per-batch cost is small.
DELETE_BATCH = 5000


async def delete_in_batches(
    sessions: async_sessionmaker[AsyncSession],
    key: InstrumentedAttribute[int],
    conditions: Sequence[ColumnElement[bool]],
    *,
    batch: int = DELETE_BATCH,
    also: Callable[[AsyncSession, int, int], Awaitable[None]] | None = None,
) -> int:
    """Delete the rows matching `conditions`, `batch` at a time in key order, each batch
    its own short transaction; how many were deleted.

    One DELETE of a million rows holds its locks (SQLite: the whole database) and its WAL
    until it ends; batches let receiving go on between them. Each batch starts after the
    last key of the one before, so it never walks again over what was just deleted.
    `also(session, after, upper)` runs in each batch's transaction for the rows it
    deleted, keys in (after, upper]."""
    deleted, after = 0, 0
    while True:
        async with sessions.begin() as session:
            first = (
                select(key).where(*conditions, key > after).order_by(key).limit(batch).subquery()
            )
            upper = await session.scalar(select(func.max(first.c[0])))
            if upper is None:
                return deleted
            result = await session.execute(
                delete(key.class_).where(*conditions, key > after, key <= upper)
            )
            deleted += int(getattr(result, "rowcount", 0) or 0)
            if also is not None:
                await also(session, after, upper)
        after = upper
