"""PostgreSQL tells workers that an event was stored, so they need not wait for a poll.

Migration 0005 makes every INSERT into the events table `NOTIFY codat_work_due`. A worker
keeps one connection listening and wakes its claim loop on each notification. A receiver
also wakes its own embedded worker in-process (on either database); NOTIFY is what
reaches workers in other processes. Polling stays: it is the fallback while the
listening connection is down, and the only way between processes on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

CHANNEL = "codat_work_due"
RECONNECT_SECONDS = 5.0
HEALTH_CHECK_SECONDS = 30.0
HEALTH_CHECK_TIMEOUT = 5.0


async def listen_for_work(
    engine: AsyncEngine, wake: Callable[[], None], channel: str = CHANNEL
) -> None:
    """Call `wake` whenever an event is stored (or whatever `channel` announces: the
    change feed listens for committed changes); run until cancelled. Not on SQLite."""
    if engine.dialect.name != "postgresql":
        return
    while True:
        try:
            await _listen_once(engine, wake, channel)
        except Exception as exc:  # never the worker's end: polling covers until we are back
            log.warning("not listening for stored events", extra={"error": type(exc).__name__})
        await asyncio.sleep(RECONNECT_SECONDS)


async def _listen_once(engine: AsyncEngine, wake: Callable[[], None], channel: str) -> None:
    """Listen on one pooled connection until it closes or stops answering."""

    def notified(*_: Any) -> None:
        wake()

    closed = asyncio.Event()

    def terminated(*_: Any) -> None:
        closed.set()

    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection  # the asyncpg connection under the pool's adapter
        assert driver is not None
        try:
            driver.add_termination_listener(terminated)
            await driver.add_listener(channel, notified)
            wake()  # whatever was stored while nobody listened
            await _until_closed(driver, closed)
            log.warning("the connection listening for stored events closed")
        except asyncio.CancelledError:  # the worker stops: back to the pool, clean
            driver.remove_termination_listener(terminated)
            with contextlib.suppress(Exception):  # a failure here closes it anyway
                await driver.remove_listener(channel, notified)
            raise
        except Exception:  # add_listener failed, or the health check: not trusted again
            await connection.invalidate()
            raise
        await connection.invalidate()  # closed: not back into the pool


async def _until_closed(driver: Any, closed: asyncio.Event) -> None:
    """A connection the database closes says so; a half-open one never does: ask it."""
    while True:
        try:
            await asyncio.wait_for(closed.wait(), timeout=HEALTH_CHECK_SECONDS)
            return
        except TimeoutError:
            await asyncio.wait_for(driver.execute("SELECT 1"), timeout=HEALTH_CHECK_TIMEOUT)
