"""The worker: claims due events and jobs, runs many at once, and settles each one.

Each event or job ends processed (or ignored, or done), is retried later with backoff,
waits out a pause of calls to Codat without spending an attempt, or goes dead after
`WORKER_MAX_ATTEMPTS` with its last error kept. A worker that dies holds nothing for
long: its leases run out and another worker claims the rows again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from app import tracing
from app.codat.client import QuotaReading
from app.codat.errors import CodatPaused, CodatRequestError
from app.db import short_error
from app.metrics import WORK_DONE, WORK_SECONDS
from app.models import EventStatus
from app.processing.context import Context, InvalidWork
from app.processing.deliveries import Notifier
from app.processing.handlers import Outcome
from app.processing.notify import listen_for_work
from app.processing.queue import (
    WAITING_PREFIX,
    backoff_delay,
    enqueue_job,
    reschedule,
)
from app.processing.queues import EVENTS, QUEUES, Item, queue_of
from app.processing.state import RESUMED_BY_OPERATOR, current_pause, extend_pause, record_quota
from app.processing.sweep import SWEEP, SWEEP_KEY

log = logging.getLogger(__name__)

_FINISHED_EVENT = frozenset({EventStatus.PROCESSED, EventStatus.IGNORED})


class LeaseLost(Exception):
    """The item's lease ran out and another worker claimed it: its work is not ours."""


class HelperTaskDied(Exception):
    """A task the worker cannot run without (lease renewal, the listener, the notifier)
    failed: the worker stopped and handed its work back; its supervisor restarts it."""


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class SerialLocks:
    """One lock per serial key, kept only while someone holds or waits for it: a
    long-running worker sees every company, and would otherwise keep a lock for each."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Worker:
    def __init__(self, ctx: Context, *, worker_id: str | None = None) -> None:
        self.ctx = ctx
        self.worker_id = worker_id or new_worker_id()
        settings = ctx.settings
        self.concurrency = settings.worker_concurrency
        self._lease = timedelta(seconds=settings.worker_lease_seconds)
        self._running: dict[asyncio.Task[None], Item] = {}
        # Claimed ahead (with when), so that a slot that frees starts its next item at
        # once rather than after a claim's round trips; leased like running items, and
        # handed back if no slot freed within a lease renewal (`_renew_leases_forever`).
        self._ready: deque[tuple[float, Item]] = deque()
        self._accepting = True
        self.serial_locks = SerialLocks()
        self._wake = asyncio.Event()
        self._poll = timedelta(seconds=settings.worker_poll_interval)
        self._claim_batch = max(1, self.concurrency // 4)
        self._pause_read_at: datetime | None = None
        # The client's last X-Rate-Limit-* reading that this worker stored.
        self._quota_stored: QuotaReading | None = None
        # Sends changes to NOTIFY_ENDPOINTS, beside the events, with slots of its own
        # (unless `codat-webhooks notifier` processes do it: NOTIFY_IN_WORKER=false).
        sends = settings.notify_endpoints and settings.notify_in_worker
        self.notifier = Notifier(ctx, self.worker_id) if sends else None

    def wake(self) -> None:
        """Something was stored: look for work now rather than at the next poll."""
        self._wake.set()

    # -- loops ----------------------------------------------------------------------------

    async def schedule_sweep(self) -> None:
        """Make sure the periodic sweep exists; many workers still run it once at a time."""
        now = self.ctx.clock()
        try:
            async with self.ctx.sessions.begin() as session:
                await enqueue_job(session, kind=SWEEP, key=SWEEP_KEY, now=now)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not schedule the sweep", extra={"error": type(exc).__name__})

    @tracing.untraced_coroutine
    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run work until `stop`. A helper task that fails stops the worker the
        same way (its work handed back), then raises `HelperTaskDied`: a worker without
        lease renewal would lose its items to others mid-work, and one without its
        listener or notifier would go on quietly doing less."""
        log.info("worker started", extra={"worker_id": self.worker_id})
        await self.schedule_sweep()
        # Cancelled at the stop; the notifier instead ends its batch in hand (each post is
        # bounded by its time-out) and returns once `stop` is set.
        cancelled_at_stop = [
            asyncio.create_task(self._renew_leases_forever(), name="lease renewal"),
            # Returns at once on SQLite (nothing to listen to): that is not a failure.
            asyncio.create_task(listen_for_work(self.ctx.engine, self.wake), name="listener"),
        ]
        helpers = list(cancelled_at_stop)
        if self.notifier is not None:
            helpers.append(asyncio.create_task(self.notifier.run(stop), name="notifier"))
        died: list[asyncio.Task[None]] = []

        def watch(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                died.append(task)
                stop.set()

        for helper in helpers:
            helper.add_done_callback(watch)
        try:
            while not stop.is_set():
                # Cleared before the claim: a wake-up that comes while we claim is kept.
                self._wake.clear()
                claimed = await self._fill()
                if claimed == 0 or len(self._running) >= self.concurrency:
                    await self._wait(stop)
        finally:
            self._accepting = False
            for helper in cancelled_at_stop:
                helper.cancel()
            await self._drain(self.ctx.settings.worker_shutdown_grace_seconds)
            await asyncio.gather(*helpers, return_exceptions=True)
            if self.notifier is not None:
                await self.notifier.aclose()
            for task in died:
                log.error(
                    "worker helper task failed: the worker stopped",
                    exc_info=task.exception(),
                    extra={"worker_id": self.worker_id, "task": task.get_name()},
                )
            log.info("worker stopped", extra={"worker_id": self.worker_id})
        if died:
            raise HelperTaskDied(", ".join(task.get_name() for task in died))

    @tracing.untraced_coroutine
    async def run_until_idle(self) -> None:
        """Work until nothing is due and nothing runs (tests and one-shot commands)."""
        while True:
            # Work that finishes while we claim may have queued more: look once more.
            was_running = bool(self._running)
            claimed = await self._fill()
            if claimed == 0 and not self._running and not self._ready and not was_running:
                return
            if self._running and (claimed == 0 or len(self._running) >= self.concurrency):
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)

    async def _wait(self, stop: asyncio.Event) -> None:
        waiters: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
            *self._running,
        }
        done, _ = await asyncio.wait(
            waiters, timeout=self._poll.total_seconds(), return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in waiters:
            if waiter not in self._running and waiter not in done:
                waiter.cancel()

    async def _drain(self, grace: float) -> None:
        """On SIGTERM: let running work finish for a while, then hand the rest back."""
        await self._hand_back([item for _, item in self._ready])
        self._ready.clear()
        if self._running:
            await asyncio.wait(self._running, timeout=grace)
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.wait(self._running)

    async def _hand_back(self, items: list[Item]) -> None:
        """Back to the queue, due now, the attempt unspent: another worker may take them."""
        for item in items:
            await self._settle(
                reschedule, item, at=self.ctx.clock(), error=None, count_attempt=False
            )

    async def _renew_leases_forever(self) -> None:
        interval = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            # Claimed ahead but still waiting for a slot after a whole interval (long jobs
            # hold them all): not hoarded, handed back for idle workers to take.
            waited_since = time.monotonic() - interval
            stale = [item for since, item in self._ready if since <= waited_since]
            self._ready = deque((since, i) for since, i in self._ready if since > waited_since)
            await self._hand_back(stale)
            until = self.ctx.clock() + self._lease
            items = [*self._running.values(), *(item for _, item in self._ready)]
            try:
                async with self.ctx.engine.begin() as conn:
                    for queue in QUEUES:
                        await queue.renew(conn, items, self.worker_id, until)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("could not renew leases", extra={"error": type(exc).__name__})

    # -- claiming -------------------------------------------------------------------------

    async def _fill(self) -> int:
        """Start what was claimed ahead, then claim more if a batch is missing."""
        self._start_ready()
        free = self.concurrency + self._claim_batch - len(self._running) - len(self._ready)
        # A busy worker claims a few at a time, not one per finished item: a claim is a
        # transaction, and one per event was a third of a worker's CPU (bench/process.py).
        if free <= 0 or (self._running and free < self._claim_batch):
            return 0
        now = self.ctx.clock()
        items: list[Item] = []
        try:
            async with self.ctx.engine.begin() as conn:
                await self._sync_pause(conn, now)
                for queue in QUEUES:
                    if len(items) < free:
                        items.extend(
                            await queue.claim(
                                conn, self.worker_id, free - len(items), now, self._lease
                            )
                        )
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not claim work", extra={"error": type(exc).__name__})
            return 0
        # A lease of ours that ran out (renewals failed) makes our own rows claimable again.
        held = {(type(i), i.id) for i in self._running.values()}
        held |= {(type(i), i.id) for _, i in self._ready}
        claimed_at = time.monotonic()
        self._ready.extend((claimed_at, i) for i in items if (type(i), i.id) not in held)
        self._start_ready()
        return len(items)

    def _start_ready(self) -> None:
        while self._ready and self._accepting and len(self._running) < self.concurrency:
            _, item = self._ready.popleft()
            task = asyncio.create_task(self._execute(item))
            self._running[task] = item
            task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._start_ready()

    async def _sync_pause(self, conn: AsyncConnection, now: datetime) -> None:
        """Read the shared pause at most once a poll interval, not once per claim."""
        if self._pause_read_at and now - self._pause_read_at < self._poll:
            return
        self._pause_read_at = now
        quota = self.ctx.codat.quota
        if quota is not None and quota != self._quota_stored:
            await record_quota(
                conn,
                limit=quota.limit,
                remaining=quota.remaining,
                reset_at=quota.reset_at,
                read_at=quota.read_at,
            )
            self._quota_stored = quota
        until, reason = await current_pause(conn)
        gate = self.ctx.codat.gate
        if until is None and gate.paused and gate.reason == "429" and reason != RESUMED_BY_OPERATOR:
            return  # a 429 seen here a moment ago is newer than what the table says
        gate.set(until, reason)

    # -- running one item -----------------------------------------------------------------

    async def _execute(self, item: Item) -> None:
        """One item; with tracing on, in a span that continues the trace that queued it."""
        if not tracing.enabled():
            await self._work(item)
            return
        name, attributes = queue_of(item).span(item)
        with tracing.continue_trace(item.traceparent, name, attributes):
            outcome = await self._work(item)
            tracing.annotate({"codat.outcome": str(outcome)}, failed=outcome in ("retry", "dead"))

    async def _work(self, item: Item) -> str:
        queue = queue_of(item)
        started = time.monotonic()
        outcome = "processed"
        try:
            async with self.serial_locks.hold(queue.serial_key(item)):
                result = await queue.run(self.ctx, item)
                outcome = await self._complete(item, result)
        except LeaseLost:
            outcome = "lease_lost"
            log.warning("lease lost: another worker has the item", extra=queue.ids(item))
        except CodatPaused as paused:
            outcome = "paused"
            await self._settle_paused(item, paused)
        except asyncio.CancelledError:
            outcome = "released"
            await self._hand_back([item])
            raise
        except Exception as exc:  # every failure is recorded on the row, never lost
            outcome = await self._settle_failed(item, exc)
        finally:
            seconds = time.monotonic() - started
            WORK_DONE.labels(queue=queue.label, kind=queue.kind(item), outcome=outcome).inc()
            WORK_SECONDS.labels(queue=queue.label).observe(seconds)
            if queue is EVENTS and outcome in _FINISHED_EVENT:
                # Retries, deaths and lost leases have their own warning lines.
                log.info(
                    "event processed",
                    extra={
                        **queue.ids(item),
                        "outcome": outcome,
                        "duration_ms": round(seconds * 1000, 1),
                    },
                )
        return outcome

    async def _complete(self, item: Item, outcome: Outcome) -> str:
        """The handler's writes and the item's ending, in one transaction: both or neither.
        If our lease was lost meanwhile, the row is another worker's: roll back, it redoes."""
        async with self.ctx.sessions.begin() as session:
            if outcome.write is not None:
                await outcome.write(session)
            connection = await session.connection()
            finish = queue_of(item).finish
            now = self.ctx.clock()
            if not await finish(connection, item, self.worker_id, status=outcome.status, now=now):
                raise LeaseLost
        if self.notifier is not None:
            self.notifier.wake()  # the work may have recorded changes to deliver
        return outcome.status

    async def _settle(
        self, operation: Callable[..., Awaitable[object]], item: Item, **kwargs: object
    ) -> None:
        """Write the item's new state; if the database is away, the lease will run out
        and the item comes back: at least once, and handlers are idempotent."""
        try:
            async with self.ctx.engine.begin() as conn:
                await operation(conn, item, self.worker_id, **kwargs)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not settle work item", extra={"error": type(exc).__name__})

    async def _settle_paused(self, item: Item, paused: CodatPaused) -> None:
        if paused.reason == "429":
            try:
                async with self.ctx.engine.begin() as conn:
                    await extend_pause(conn, paused.until, "429", self.ctx.clock())
            except (SQLAlchemyError, OSError):
                pass  # the in-process gate still holds the pause
        await self._settle(
            reschedule,
            item,
            at=paused.until,
            error=WAITING_PREFIX + str(paused),
            count_attempt=False,
        )

    async def _settle_failed(self, item: Item, exc: Exception) -> str:
        queue = queue_of(item)
        error = short_error(exc)
        tracing.record_exception(exc)
        settings = self.ctx.settings
        if _hopeless(exc) or item.attempts >= settings.worker_max_attempts:
            log.error("work item dead", extra={**queue.ids(item), "error": error[:500]})
            await self._settle(
                queue.finish, item, status=queue.dead, now=self.ctx.clock(), error=error
            )
            return "dead"
        delay = backoff_delay(
            item.attempts, settings.worker_retry_base_seconds, settings.worker_retry_max_seconds
        )
        log.warning(
            "work item will be retried",
            extra={**queue.ids(item), "error": error[:500], "in_seconds": round(delay, 1)},
        )
        await self._settle(
            reschedule,
            item,
            at=self.ctx.clock() + timedelta(seconds=delay),
            error=error,
            count_attempt=True,
        )
        return "retry"


def _hopeless(exc: Exception) -> bool:
    """No retry can help: bad work, or Codat refusing the request itself (not auth)."""
    if isinstance(exc, CodatRequestError):
        return exc.status_code not in (401, 403)
    return isinstance(exc, InvalidWork)
