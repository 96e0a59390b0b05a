"""Sending changes to the internal endpoints: a queue of its own, claimed by the workers.

Each delivery is one change for one endpoint (app/changes/record.py writes them with
the change). A worker claims due ones in batches under a lease, posts them signed
(Standard Webhooks, app/changes/signing.py) with a time-out, and settles them all in
one transaction: delivered on a 2xx, else retried with backoff until
`NOTIFY_RETRY_SPAN` after the change, then dead (replayable). It runs beside the event
loop with its own slots (`NOTIFY_CONCURRENCY`), so an endpoint that is down only ever
delays its own deliveries. A worker killed mid-delivery leaves the row leased: it is
sent again when the lease runs out (at least once; consumers dedupe on `webhook-id`).

Where sending should not take the workers' CPU, `NOTIFY_IN_WORKER=false` leaves it to
`codat-webhooks notifier` processes (`run_notifier`), woken by the NOTIFY that every
committed change sends on PostgreSQL. Each POST continues the trace of the work that
made its change (`changes.traceparent`), so the endpoint receives a `traceparent` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import cast
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import SQLAlchemyError

from app import tracing
from app.changes.feed import CHANNEL as CHANGES_CHANNEL
from app.changes.signing import notification_body, signed_headers
from app.config import NotifyEndpoint
from app.metrics import NOTIFICATIONS
from app.models import Change, Delivery, DeliveryStatus, utcnow
from app.processing.context import Context
from app.processing.notify import listen_for_work
from app.processing.queue import PENDING, PROCESSING, backoff_delay, claim_due

log = logging.getLogger(__name__)


def endpoint_label(url: str) -> str:
    """The endpoint as metrics, logs and traces show it: no user or password, no query
    string (either may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class Attempt:
    delivery: Delivery
    ok: bool
    status_code: int | None
    error: str | None


class Notifier:
    """Delivers due changes to the configured endpoints until stopped."""

    def __init__(self, ctx: Context, worker_id: str) -> None:
        self.ctx = ctx
        self.worker_id = worker_id
        settings = ctx.settings
        self.endpoints = {endpoint.url: endpoint for endpoint in settings.notify_endpoints}
        # Claimed a few slots' worth at a time: a claim and a settle are a transaction
        # each, and one per delivery would cost more than the posts under load.
        self.batch = settings.notify_concurrency * 4
        self._slots = asyncio.Semaphore(settings.notify_concurrency)
        # A claimed delivery is settled within the time-out plus a settle: lease both.
        self._lease = timedelta(
            seconds=settings.notify_timeout_seconds + settings.worker_lease_seconds
        )
        self._poll = settings.worker_poll_interval
        self._gather = settings.notify_batch_wait_seconds
        self._wake = asyncio.Event()
        self._http = httpx.AsyncClient(
            timeout=settings.notify_timeout_seconds,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=settings.notify_concurrency),
        )

    def wake(self) -> None:
        """Changes were committed: look for deliveries now rather than at the next poll."""
        self._wake.set()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                sent = await self.deliver_due()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("could not deliver changes", extra={"error": type(exc).__name__})
                sent = 0
            if sent < self.batch and await self._wait(stop) and self._gather:
                # Woken by one change: let the next few join it in one claim and settle.
                await asyncio.sleep(self._gather)

    async def _wait(self, stop: asyncio.Event) -> bool:
        """Until woken, stopped or the poll interval is up; whether we were woken."""
        waiters = {
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
        }
        _, pending = await asyncio.wait(
            waiters, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in pending:
            waiter.cancel()
        return self._wake.is_set() and not stop.is_set()

    async def run_until_idle(self) -> None:
        """Deliver until nothing is due (tests and one-shot commands)."""
        while await self.deliver_due():
            pass

    async def deliver_due(self) -> int:
        """Claim a batch, post it, settle it; how many were tried."""
        now = self.ctx.clock()
        async with self.ctx.engine.begin() as conn:
            claimed = await claim_due(
                conn,
                Delivery,
                worker_id=self.worker_id,
                limit=self.batch,
                now=now,
                lease=self._lease,
            )
            if not claimed:
                return 0
            seqs = {delivery.change_seq for delivery in claimed}
            changes = {
                change.seq: change
                for change in (
                    Change(**row._mapping)
                    for row in await conn.execute(select(Change).where(Change.seq.in_(seqs)))
                )
            }
        attempts = await asyncio.gather(
            *(self._post(delivery, changes.get(delivery.change_seq)) for delivery in claimed)
        )
        await self._settle(attempts)
        return len(attempts)

    async def _post(self, delivery: Delivery, change: Change | None) -> Attempt:
        endpoint = self.endpoints.get(delivery.endpoint)
        if endpoint is None or change is None:
            # The endpoint left the settings (or the change was pruned): nothing to send to.
            why = "endpoint no longer configured" if endpoint is None else "change pruned"
            return Attempt(delivery, False, None, why)
        async with self._slots:
            if not tracing.enabled():
                return Attempt(delivery, *await post_change(self._http, endpoint, change))
            attributes = {
                "codat.change_type": change.change_type,
                "codat.company_id": change.company_id,
                "notify.endpoint": endpoint_label(endpoint.url),
                "notify.attempt": delivery.attempts,
            }
            with tracing.continue_trace(change.traceparent, "notify change", attributes):
                attempt = Attempt(delivery, *await post_change(self._http, endpoint, change))
                tracing.annotate({"http.status_code": attempt.status_code}, failed=not attempt.ok)
                return attempt

    async def _settle(self, attempts: list[Attempt]) -> None:
        now = self.ctx.clock()
        settings = self.ctx.settings
        rows = []
        for attempt in attempts:
            delivery = attempt.delivery
            label = endpoint_label(delivery.endpoint)
            if attempt.ok:
                status, due, outcome = DeliveryStatus.DELIVERED.value, None, "delivered"
            else:
                delay = backoff_delay(
                    delivery.attempts,
                    settings.notify_retry_base_seconds,
                    settings.notify_retry_max_seconds,
                )
                due = now + timedelta(seconds=delay)
                if due > delivery.created_at + settings.notify_retry_span:
                    status, due, outcome = DeliveryStatus.DEAD.value, None, "dead"
                else:
                    status, outcome = PENDING, "retry"
                log.warning(
                    "notification not delivered",
                    extra={
                        "endpoint": label,
                        "change_id": delivery.change_id,
                        "attempts": delivery.attempts,
                        "error": attempt.error,
                        "outcome": outcome,
                    },
                )
            NOTIFICATIONS.labels(endpoint=label, outcome=outcome).inc()
            rows.append(
                {
                    "v_id": delivery.id,
                    "v_status": status,
                    "v_due": due,
                    "v_code": attempt.status_code,
                    "v_error": attempt.error,
                    "v_delivered": now if attempt.ok else None,
                }
            )
        table = cast(Table, Delivery.__table__)
        statement = (
            update(table)
            .where(
                table.c.id == bindparam("v_id"),
                table.c.locked_by == self.worker_id,
                table.c.status == PROCESSING,
            )
            .values(
                status=bindparam("v_status"),
                next_attempt_at=bindparam("v_due"),
                response_status=bindparam("v_code"),
                last_error=bindparam("v_error"),
                delivered_at=bindparam("v_delivered"),
                locked_until=None,
            )
        )
        async with self.ctx.engine.begin() as conn:
            await conn.execute(statement, rows)


async def post_change(
    http: httpx.AsyncClient, endpoint: NotifyEndpoint, change: Change
) -> tuple[bool, int | None, str | None]:
    """One signed POST: (success, status code, error). A 2xx within the time-out is
    success. Neither the secret nor the endpoint's answer is kept: only its status code
    or the kind of failure."""
    body = notification_body(change.change_type, change.id, change.created_at, change.data)
    headers = signed_headers(endpoint.secret.get_secret_value(), change.id, body, utcnow())
    started = time.monotonic()
    try:
        response = await http.post(endpoint.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__} after {time.monotonic() - started:.1f}s"
        return False, None, error
    ok = 200 <= response.status_code < 300
    return ok, response.status_code, None if ok else f"HTTP {response.status_code}"


@tracing.untraced_coroutine
async def run_notifier(ctx: Context, worker_id: str, stop: asyncio.Event) -> None:
    """`codat-webhooks notifier`: only deliveries, woken by each committed change
    (PostgreSQL's NOTIFY; the poll interval on SQLite)."""
    notifier = Notifier(ctx, worker_id)
    listener = asyncio.create_task(listen_for_work(ctx.engine, notifier.wake, CHANGES_CHANNEL))
    endpoints = [endpoint_label(url) for url in notifier.endpoints]
    log.info("notifier started", extra={"worker_id": worker_id, "endpoints": endpoints})
    try:
        await notifier.run(stop)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await notifier.aclose()
        log.info("notifier stopped", extra={"worker_id": worker_id})
