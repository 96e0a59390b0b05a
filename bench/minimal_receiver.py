"""The yardstick: a raw ASGI app that verifies the svix signature and inserts one row.

No framework, no ORM, no parsing of the body: read it, `Webhook(secret).verify`, one
INSERT through the driver (one commit per request), answer 200. It writes to the same
`webhook_events` table as the service, so the row-count check works the same way.

Run by `bench.receive` as `python -m bench.minimal_receiver`, configured like the
service through DATABASE_URL, CODAT_WEBHOOK_SECRETS, HOST and PORT, and served by
uvicorn with the same settings as `codat-webhooks serve` (uvloop and httptools when
installed). BENCH_MINIMAL_MODE=null skips the verify and the insert: the ceiling of
uvicorn plus the load generator on this machine.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import asyncpg
import uvicorn
from svix.webhooks import Webhook, WebhookVerificationError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WEBHOOK_PATH = "/webhooks/codat"
PG_INSERT = (
    "INSERT INTO webhook_events (delivery_id, received_at, raw_body, status, attempts,"
    " next_attempt_at) VALUES ($1, $2, $3, 'pending', 0, $2)"
    " ON CONFLICT (delivery_id) DO NOTHING"
)
SQLITE_INSERT = (
    "INSERT INTO webhook_events (delivery_id, received_at, raw_body, status, attempts,"
    " next_attempt_at) VALUES (?, ?, ?, 'pending', 0, ?)"
    " ON CONFLICT (delivery_id) DO NOTHING"
)


class SqliteStore:
    """One connection owned by one thread: every request is one INSERT and one COMMIT."""

    def __init__(self, path: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._path = path
        self._connection: sqlite3.Connection | None = None

    def _open(self) -> None:
        connection = sqlite3.connect(self._path, timeout=10, check_same_thread=False)
        # The service's pragmas (app/db.py): WAL, and FULL sync so an ack is durable.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=10000")
        self._connection = connection

    def _insert(self, delivery_id: str, body: bytes) -> None:
        assert self._connection is not None
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
        self._connection.execute(SQLITE_INSERT, (delivery_id, now, body, now))
        self._connection.commit()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    async def insert(self, delivery_id: str, body: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._insert, delivery_id, body)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown()


class PostgresStore:
    """An asyncpg pool; each INSERT runs in autocommit, so it is its own transaction."""

    def __init__(self, dsn: str, pool_size: int) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: Any = None

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=self._pool_size, max_size=self._pool_size
        )

    async def insert(self, delivery_id: str, body: bytes) -> None:
        await self._pool.execute(PG_INSERT, delivery_id, datetime.now(UTC), body)

    async def close(self) -> None:
        await self._pool.close()


class NullStore:
    async def start(self) -> None:
        return None

    async def insert(self, delivery_id: str, body: bytes) -> None:
        return None

    async def close(self) -> None:
        return None


Store = SqliteStore | PostgresStore | NullStore


def make_store(database_url: str, null: bool) -> Store:
    if null:
        return NullStore()
    if database_url.startswith("sqlite:///"):
        return SqliteStore(database_url.removeprefix("sqlite:///"))
    if database_url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(database_url, int(os.environ.get("MINIMAL_PG_POOL", "10")))
    raise SystemExit(f"minimal receiver: unsupported DATABASE_URL {database_url!r}")


class MinimalReceiver:
    def __init__(self, secret: str, store: Store, null: bool) -> None:
        self._webhook = Webhook(secret)
        self._store = store
        self._null = null

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "POST" and scope["path"] == WEBHOOK_PATH:
            await self._webhook_request(scope, receive, send)
        elif scope["method"] == "GET" and scope["path"] == "/readyz":
            await _answer(send, 200, b'{"status":"ready"}')
        else:
            await _answer(send, 404, b'{"error":"not found"}')

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._store.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _webhook_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if self._null:
            await _answer(send, 200, b'{"status":"stored"}')
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        try:
            self._webhook.verify(body, headers)
        except WebhookVerificationError:
            await _answer(send, 401, b'{"error":"invalid signature"}')
            return
        await self._store.insert(headers.get("webhook-id", ""), body)
        await _answer(send, 200, b'{"status":"stored"}')


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    null = os.environ.get("BENCH_MINIMAL_MODE", "") == "null"
    database_url = os.environ.get("DATABASE_URL", "")
    secret = os.environ["CODAT_WEBHOOK_SECRETS"].split(",")[0].strip()
    app = MinimalReceiver(secret, make_store(database_url, null), null)
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8001")),
        log_level=os.environ.get("LOG_LEVEL", "WARNING").lower(),
        access_log=False,
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
