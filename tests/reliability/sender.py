"""A sender that behaves like Codat's (Svix's): signs each attempt afresh, and retries a
delivery that did not get a 2xx (503, other 5xx, no answer) until it does."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from tests.support.signing import TEST_SECRET, sign


@dataclass
class Attempt:
    sent: float  # time.monotonic()
    answered: float
    status: int | None  # None: no answer (connection refused, reset, time-out)
    outcome: str  # the answer's "status" or "error", or the exception's name


@dataclass
class Delivery:
    delivery_id: str
    body: bytes
    kind: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return any(a.status is not None and 200 <= a.status < 300 for a in self.attempts)

    @property
    def stored_answers(self) -> int:
        """Answers saying this attempt stored the event (a duplicate says "duplicate")."""
        return sum(
            1
            for a in self.attempts
            if a.status is not None and 200 <= a.status < 300 and a.outcome != "duplicate"
        )


class Sender:
    def __init__(
        self,
        url: str,
        *,
        secret: str = TEST_SECRET,
        retry: bool = True,
        max_attempts: int = 60,
        give_up_after: float = 120.0,
        timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.secret = secret
        self.retry = retry
        self.max_attempts = max_attempts
        self.give_up_after = give_up_after
        self.deliveries: list[Delivery] = []
        # Idle connections are dropped well before the server's keep-alive time-out (uvicorn's
        # 5 s, httpx's default expiry too): with equal times, a request sent on a connection
        # as the server closes it fails with ReadError, HTTP/1.1's own race, not the
        # service's; on a busy machine it showed up as a lost answer under steady load.
        limits = httpx.Limits(
            max_connections=128, max_keepalive_connections=64, keepalive_expiry=1.0
        )
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def attempt(self, delivery: Delivery) -> Attempt:
        headers = sign(delivery.body, secret=self.secret, msg_id=delivery.delivery_id)
        sent = time.monotonic()
        try:
            response = await self._client.post(self.url, content=delivery.body, headers=headers)
        except httpx.TransportError as exc:
            attempt = Attempt(sent, time.monotonic(), None, type(exc).__name__)
        else:
            try:
                answer = response.json()
                outcome = str(answer.get("status") or answer.get("error") or "")
            except ValueError:
                outcome = response.text[:80]
            attempt = Attempt(sent, time.monotonic(), response.status_code, outcome)
        delivery.attempts.append(attempt)
        return attempt

    async def deliver(self, delivery: Delivery) -> Delivery:
        """Post until a 2xx; 4xx is final (Codat would retry it too, but here it is a bug)."""
        started = time.monotonic()
        for number in range(self.max_attempts):
            attempt = await self.attempt(delivery)
            if attempt.status is not None and attempt.status < 500:
                return delivery
            if not self.retry or time.monotonic() - started > self.give_up_after:
                return delivery
            # Svix backs off exponentially; compressed here from minutes to a second or two.
            delay = min(2.0, 0.2 * 2**number)
            await asyncio.sleep(random.uniform(delay / 2, delay))
        return delivery

    def new(self, delivery_id: str, body: bytes, kind: str) -> Delivery:
        delivery = Delivery(delivery_id, body, kind)
        self.deliveries.append(delivery)
        return delivery

    # -- what the sender saw ------------------------------------------------------------

    def attempts(self) -> list[Attempt]:
        return [a for d in self.deliveries for a in d.attempts]

    def answer_counts(self) -> Counter[str]:
        return Counter(str(a.status or a.outcome) for a in self.attempts())

    def latency_ms(self) -> dict[str, float]:
        times = sorted((a.answered - a.sent) * 1000 for a in self.attempts() if a.status)
        if not times:
            return {}
        return {
            "p50": statistics.median(times),
            "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
            "max": times[-1],
        }


@dataclass
class Pace:
    planned: int = 0
    seconds: float = 0.0
    # Starts more than 100 ms behind the schedule (the sender or the machine was busy).
    late: int = 0


async def at_steady_rate(
    rate: float,
    seconds: float,
    start: Callable[[int], Awaitable[object]],
    *,
    max_in_flight: int = 256,
) -> Pace:
    """Start `start(i)` at t0 + i/rate for `seconds`, without waiting for the answers
    (open loop, as a webhook sender is); then wait for everything started to finish."""
    pace = Pace()
    gate = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        try:
            await start(i)
        finally:
            gate.release()

    t0 = time.monotonic()
    total = int(rate * seconds)
    for i in range(total):
        due = t0 + i / rate
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        await gate.acquire()
        if time.monotonic() - due > 0.1:
            pace.late += 1
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    pace.planned = total
    pace.seconds = time.monotonic() - t0
    if tasks:
        await asyncio.gather(*tasks)
    return pace
