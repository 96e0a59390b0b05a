"""PostgreSQL tells workers that an event was stored, so they need not wait for a poll.

Migration 0005 makes every INSERT into the events table `NOTIFY codat_work_due`. A worker
keeps one connection listening and wakes its claim loop on each notification. Polling
stays: it is the fallback while the listening connection is down, and the only way on
SQLite (where the receiver wakes its embedded worker in-process instead).
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


async def listen_for_work(
    engine: AsyncEngine, wake: Callable[[], None], *, reconnect_seconds: float = RECONNECT_SECONDS
) -> None:
    """Call `wake` whenever an event is stored; run until cancelled. Not on SQLite."""
    if engine.dialect.name != "postgresql":
        return
    while True:
        try:
            await _listen_once(engine, wake)
        except Exception as exc:  # never the worker's end: polling covers until we are back
            log.warning("not listening for stored events", extra={"error": type(exc).__name__})
        await asyncio.sleep(reconnect_seconds)


async def _listen_once(engine: AsyncEngine, wake: Callable[[], None]) -> None:
    """Listen on one pooled connection until the database closes it."""

    def notified(*_: Any) -> None:
        wake()

    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection  # the asyncpg connection under the pool's adapter
        assert driver is not None
        closed = asyncio.Event()

        def terminated(*_: Any) -> None:
            closed.set()

        driver.add_termination_listener(terminated)
        await driver.add_listener(CHANNEL, notified)
        try:
            wake()  # whatever was stored while nobody listened
            await closed.wait()
            log.warning("the connection listening for stored events closed")
        finally:
            if driver.is_closed():
                await connection.invalidate()  # not back into the pool: it is dead
            else:  # cancelled (the worker stops): the connection goes back to the pool clean
                driver.remove_termination_listener(terminated)
                with contextlib.suppress(Exception):  # a failure here closes it anyway
                    await driver.remove_listener(CHANNEL, notified)
