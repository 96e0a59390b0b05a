"""The hostile edge of a real `serve` process on PostgreSQL (issue 16): slow clients, big
headers, big unauthenticated bodies, a poisoned batch and dates from the future, while a
Codat-like sender keeps delivering genuine events (retrying a 503 or a lost answer, as Svix
does). For each attack: the time and memory it costs the service to refuse it, and at the
end the genuine deliveries lost, which must be none."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import WebhookEvent
from tests.reliability.checks import event_rows, stored_once
from tests.reliability.events import company_ref, encode, envelope, new_delivery_id, unknown_event
from tests.reliability.processes import Processes, Service, peak_rss, service_env
from tests.reliability.report import Report, fmt, table
from tests.reliability.sender import Delivery, Sender
from tests.reliability.sizes import Size, full_size

pytestmark = pytest.mark.reliability

TOKEN = "hostile-edge-token"
MIB = 1024 * 1024
COMPANY = "0498e921-9b53-4396-a412-4f2f5983b0a2"
CONNECTION = "2e9d2c44-f675-40ba-8049-353bfcb5e171"
FAR_FUTURE = "9999-12-31T23:59:59Z"


@dataclass
class Attack:
    """One row of the report's table: what was tried and what it cost the service."""

    name: str
    tried: str
    answer: str = ""
    seconds: float = 0.0  # time to refuse (the slowest, where there were many)
    peak_growth: int = 0  # bytes of peak resident memory the service grew by
    loop_stall_ms: float = 0.0  # the slowest /healthz answer while it ran
    pushed: int = 0  # bytes a big request got into the socket before the server closed it
    ok: bool = False
    detail: str = ""


@dataclass
class Genuine:
    """Codat's own traffic during the attacks: one delivery every `every` seconds."""

    sender: Sender
    every: float
    deliveries: list[Delivery] = field(default_factory=list)
    _tasks: set[asyncio.Task[Delivery]] = field(default_factory=set)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            delivery = self.sender.new(new_delivery_id(), encode(unknown_event(COMPANY)), "genuine")
            self.deliveries.append(delivery)
            task = asyncio.create_task(self.sender.deliver(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(self.every)
        await asyncio.gather(*self._tasks)


async def probe_health(base_url: str, stop: asyncio.Event) -> float:
    """The slowest /healthz answer (ms) until `stop`: how long the event loop stalled."""
    worst = 0.0
    async with httpx.AsyncClient(timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await client.get(f"{base_url}/healthz")
            worst = max(worst, (time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.05)
    return worst


async def measured(service: Service, attack: Attack, work: Callable[[], Awaitable[None]]) -> Attack:
    """Run one attack with a /healthz prober beside it; peak memory before and after."""
    pid = service.process.popen.pid
    before = peak_rss(pid)
    stop = asyncio.Event()
    prober = asyncio.create_task(probe_health(service.base_url, stop))
    try:
        await work()
    finally:
        stop.set()
        attack.loop_stall_ms = await prober
    attack.peak_growth = peak_rss(pid) - before
    return attack


# -- slow clients -------------------------------------------------------------------------


async def _hold(
    host: str, port: int, kind: str, started: float, give_up: float
) -> tuple[str, float | None, bytes]:
    """One slow client: (kind, seconds until the server closed it or None, what it said)."""
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST /webhooks/codat HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\nwebhook-id: msg_slow\r\n\r\n"
    ).encode()
    answer = asyncio.create_task(reader.read())
    try:
        if kind == "half a body":
            writer.write(head + b"{" * 500)
        elif kind == "trickled headers":
            for byte in head:
                if answer.done() or time.monotonic() - started > give_up:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1)
        said = await asyncio.wait_for(answer, max(0.1, give_up - (time.monotonic() - started)))
        return kind, time.monotonic() - started, said
    except (TimeoutError, ConnectionError):
        return kind, (time.monotonic() - started) if answer.done() else None, b""
    finally:
        answer.cancel()
        writer.close()


async def slow_clients(service: Service, count: int, give_up: float) -> Attack:
    kinds = ["nothing", "trickled headers", "half a body"]
    attack = Attack(
        "slow clients",
        f"{fmt(count)} connections at once: a third send nothing, a third trickle their "
        "headers a byte a second, a third send headers and half a body, then wait",
    )
    parts = urlsplit(service.base_url)
    assert parts.hostname and parts.port
    host, port = parts.hostname, parts.port
    results: list[tuple[str, float | None, bytes]] = []

    async def work() -> None:
        started = time.monotonic()
        results.extend(
            await asyncio.gather(
                *(_hold(host, port, kinds[i % 3], started, give_up) for i in range(count))
            )
        )

    await measured(service, attack, work)
    closed = [seconds for _, seconds, _ in results if seconds is not None]
    held_30 = sum(1 for _, seconds, _ in results if seconds is None or seconds > 30)
    answers = Counter(
        said.split(b" ", 2)[1].decode() if said.startswith(b"HTTP/1.1 ") else "closed"
        for _, seconds, said in results
        if seconds is not None
    )
    attack.seconds = max(closed, default=give_up)
    attack.answer = ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(answers.items()))
    attack.ok = len(closed) == count and held_30 == 0
    attack.detail = f"{fmt(held_30)} still held after 30 s (before the fix: every one)"
    return attack


# -- big headers, big bodies ----------------------------------------------------------------


def _push(base_url: str, head: bytes, fill: int, total: int) -> tuple[str, float, int]:
    """Send `head`, then bytes of `fill` until `total` or the server closes; (the answer's
    status or `closed`, seconds until the answer or the close, bytes pushed)."""
    parts = urlsplit(base_url)
    assert parts.hostname and parts.port
    chunk = bytes([fill]) * (1024 * 1024)
    pushed = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        started = time.perf_counter()
        sock.settimeout(0.001)
        answer = b""
        try:
            sock.sendall(head)
            while pushed < total:
                try:
                    answer += sock.recv(65536)
                    if answer:
                        break
                except TimeoutError:
                    pass
                sock.settimeout(30)
                sock.sendall(chunk)
                pushed += len(chunk)
                sock.settimeout(0.001)
        except OSError:
            pass
        sock.settimeout(5)
        try:
            while b"\r\n" not in answer:
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        except OSError:
            pass
        seconds = time.perf_counter() - started
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"
    return status, seconds, pushed


async def big_request(
    service: Service, name: str, tried: str, head: bytes, total: int, expect: str
) -> Attack:
    attack = Attack(name, tried)
    outcome: list[tuple[str, float, int]] = []

    async def work() -> None:
        outcome.append(await asyncio.to_thread(_push, service.base_url, head, ord("a"), total))

    await measured(service, attack, work)
    status, attack.seconds, attack.pushed = outcome[0]
    attack.answer = status
    attack.ok = status == expect
    attack.detail = f"{attack.pushed / MIB:.1f} MiB pushed before the close"
    return attack


def header_head(size: str) -> bytes:
    return f"POST /webhooks/codat HTTP/1.1\r\nHost: edge\r\nX-Big: {size}".encode()


def body_head(path: str, declared: int | None) -> bytes:
    length = f"Content-Length: {declared}\r\n" if declared else "Transfer-Encoding: chunked\r\n"
    return f"POST {path} HTTP/1.1\r\nHost: edge\r\n{length}\r\n".encode()


# -- the poisoned batch and the future ------------------------------------------------------


async def poisoned_batch(service: Service, sender: Sender) -> tuple[Attack, list[Delivery]]:
    attack = Attack(
        "poisoned batch",
        "100 genuine deliveries and one signed body whose company id holds a NUL, at once",
    )
    genuine = [
        sender.new(new_delivery_id(), encode(unknown_event(COMPANY)), "batch") for _ in range(100)
    ]
    event = unknown_event(COMPANY)
    event["payload"]["referenceCompany"]["id"] = COMPANY + "\x00"
    poisoned = sender.new(new_delivery_id(), encode(event), "poisoned")
    answers: list[Delivery] = []

    async def work() -> None:
        started = time.perf_counter()
        answers.extend(
            await asyncio.gather(
                *(sender.deliver(d) for d in [*genuine[:50], poisoned, *genuine[50:]])
            )
        )
        attack.seconds = time.perf_counter() - started

    await measured(service, attack, work)
    first = Counter(f"{d.attempts[0].status} {d.attempts[0].outcome}" for d in answers)
    attack.answer = ", ".join(f"{k}: {v}" for k, v in sorted(first.items()))
    attack.ok = first == Counter({"200 stored": 100, "200 unprocessable": 1})
    attack.detail = "first answers (before the fix: 78 of 100 genuine got 503)"
    return attack, [*genuine, poisoned]


async def future_dates(
    service: Service, sender: Sender, engine: AsyncEngine
) -> tuple[Attack, list[Delivery]]:
    attack = Attack(
        "future dates",
        "a signed client.rateLimit.reached and a read.completed both dated 9999-12-31, then "
        "`POST /api/v1/rate-limit/resume`",
    )
    reached = envelope(
        "client.rateLimit.reached",
        {"dailyQuota": 12000, "quotaRemaining": 0, "expiryDate": FAR_FUTURE},
    )
    read = envelope(
        "read.completed",
        {
            "referenceCompany": company_ref(COMPANY),
            "connectionId": CONNECTION,
            "dataTypes": [
                {"connectionId": CONNECTION, "dataType": "x", "status": "Complete"},
            ],
        },
    )
    deliveries = []
    notes: list[str] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def work() -> None:
        started = time.perf_counter()
        for event in (reached, read):
            event["generatedDate"] = FAR_FUTURE
            delivery = sender.new(new_delivery_id(), encode(event), "future")
            deliveries.append(await sender.deliver(delivery))
        async with httpx.AsyncClient(base_url=service.base_url, headers=headers) as client:
            for _ in range(100):  # the embedded worker applies the pause
                state = (await client.get("/api/v1/rate-limit")).json()
                if state["paused"]:
                    break
                await asyncio.sleep(0.1)
            until = datetime.fromisoformat(state["paused_until"].replace("Z", "+00:00"))
            cap = datetime.now(UTC) + timedelta(hours=24)
            notes.append(f"pause until {until:%Y-%m-%d %H:%M} UTC (cap {cap:%Y-%m-%d %H:%M})")
            resumed = (await client.post("/api/v1/rate-limit/resume")).json()
            after = (await client.get("/api/v1/rate-limit")).json()
        attack.seconds = time.perf_counter() - started
        query = select(WebhookEvent.generated_at, WebhookEvent.received_at).where(
            WebhookEvent.delivery_id == deliveries[1].delivery_id
        )
        async with engine.connect() as connection:
            generated, received = (await connection.execute(query)).one()
        assert generated is not None, "the read dated 9999 was refused, not kept"
        skew = generated - received
        notes.append(f"the read dated 9999 is ordered at its receive time + {skew}")
        attack.ok = (
            state["paused"]
            and until <= cap
            and resumed["resumed"] is True
            and after["paused"] is False
            and skew <= timedelta(minutes=5)
        )

    await measured(service, attack, work)
    attack.answer = "stored; paused for a day at most; resumed"
    attack.detail = "; ".join(notes)
    return attack, deliveries


# -- the test ---------------------------------------------------------------------------------


async def test_the_hostile_edge_costs_the_service_little_and_loses_no_genuine_delivery(
    postgres_url: str,
    postgres_engine: AsyncEngine,
    processes: Processes,
    reliability_report: Report,
    size: Size,
) -> None:
    section = reliability_report.section(
        10,
        "Hostile edge: slow clients, big headers and bodies, poisoned batch, future dates",
        "One `serve` process (embedded worker) on PostgreSQL, with the service's HTTP limits "
        "(at full size its defaults: headers within 10 s and 16 KiB, body within 20 s, 1,000 "
        "requests and connections at once; see the set-up). The "
        "attacks below run one after the other while a Codat-like sender delivers a "
        "genuine event every 0.1 s throughout, retrying a 503 or a lost answer as Svix "
        "does. For each: its answer, the time to refuse it, how much the service's peak "
        "memory grew and the slowest /healthz answer meanwhile (a stalled event loop).",
    )
    slow_count = 1000 if full_size() else 90
    limits = (
        {}
        if full_size()
        else {"HTTP_HEADERS_TIMEOUT_SECONDS": "3", "HTTP_BODY_TIMEOUT_SECONDS": "3"}
    )
    env = service_env(postgres_url, STATUS_API_TOKENS=TOKEN, **limits)
    service = await processes.serve("serve", env)
    section.setup = [
        f"slow clients: {fmt(slow_count)}; deadlines "
        + (", ".join(f"{k}={v}" for k, v in limits.items()) or "the service's defaults"),
        f"load average {reliability_report.load_at_start:.2f} when the suite started",
    ]
    sender = Sender(service.webhook_url, give_up_after=180)
    genuine = Genuine(sender, every=0.1)
    stop = asyncio.Event()
    background = asyncio.create_task(genuine.run(stop))
    attacks: list[Attack] = []
    api = f"/api/v1/companies/{COMPANY}/refresh"
    try:
        attacks.append(await slow_clients(service, slow_count, give_up=60))
        attacks.append(
            await big_request(
                service,
                "8 MB header",
                "one header value of 8 MiB",
                header_head(""),
                8 * MIB,
                "431",
            )
        )
        attacks.append(
            await big_request(
                service,
                "100 MB header",
                "one header value of 100 MiB, pushed until closed",
                header_head(""),
                100 * MIB,
                "431",
            )
        )
        attacks.append(
            await big_request(
                service,
                "unsigned 200 MB webhook body",
                "Content-Length: 200 MiB, no signature",
                body_head("/webhooks/codat", 200 * MIB),
                200 * MIB,
                "413",
            )
        )
        attacks.append(
            await big_request(
                service,
                "unsigned chunked webhook body",
                "200 MiB chunked, no length, no signature",
                body_head("/webhooks/codat", None) + b"200000\r\n",
                200 * MIB,
                "413",
            )
        )
        attacks.append(
            await big_request(
                service,
                "200 MB API body without a token",
                "Content-Length: 200 MiB to the status API",
                body_head(api, 200 * MIB),
                200 * MIB,
                "401",
            )
        )
        batch_attack, batch = await poisoned_batch(service, sender)
        attacks.append(batch_attack)
        future_attack, future = await future_dates(service, sender, postgres_engine)
        attacks.append(future_attack)
    finally:
        stop.set()
        await background
    rows = await event_rows(postgres_engine)
    log = service.process.log.read_text(errors="replace")
    await sender.aclose()

    ours = [*genuine.deliveries, *batch, *future]
    lost = [d for d in genuine.deliveries if not d.acknowledged]
    problems = stored_once(ours, {k: v for k, v in rows.items() if k != "msg_slow"})
    answers = sender.answer_counts()
    section.add_sent("genuine deliveries during the attacks", len(genuine.deliveries))
    section.add_seen(
        "answers to the genuine sender (every attempt)",
        ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(answers.items())),
    )
    section.add_seen("genuine deliveries lost", len(lost))
    section.details = [
        *table(
            [
                "attack",
                "what was tried",
                "answer",
                "time to refuse",
                "peak memory",
                "slowest /healthz",
                "as expected",
                "detail",
            ],
            [
                [
                    a.name,
                    a.tried,
                    a.answer,
                    f"{a.seconds:.2f} s",
                    f"+{a.peak_growth / MIB:.1f} MiB",
                    f"{a.loop_stall_ms:.0f} ms",
                    a.ok,
                    a.detail,
                ]
                for a in attacks
            ],
        )
    ]
    for attack in attacks:
        section.check(f"{attack.name}: refused as documented", attack.ok, attack.detail)
    section.check(
        "refusing a big header or body costs under 16 MiB of peak memory and stalls no answer 1 s",
        all(a.peak_growth < 16 * MIB and a.loop_stall_ms < 1000 for a in attacks[1:6]),
        ", ".join(
            f"{a.name}: +{a.peak_growth / MIB:.1f} MiB, {a.loop_stall_ms:.0f} ms"
            for a in attacks[1:6]
        ),
    )
    section.check(
        "a 100 MB header and 200 MB bodies are not read to their end",
        all(a.pushed < 100 * MIB for a in attacks[2:6]),
        ", ".join(f"{a.name}: {a.pushed / MIB:.0f} MiB" for a in attacks[2:6]),
    )
    section.check("no genuine delivery lost", not lost, f"{len(lost)} lost")
    section.check(
        "every acknowledged delivery stored once, byte for byte",
        not problems,
        "; ".join(problems[:5]),
    )
    section.check("the service's log holds no traceback", "Traceback" not in log)
    slow = attacks[0]
    section.headline = (
        f"{fmt(slow_count)} slow clients all cut off within {slow.seconds:.0f} s; 100 MB header "
        f"refused in {attacks[2].seconds:.2f} s, +{attacks[2].peak_growth / MIB:.1f} MiB; "
        f"genuine deliveries lost: {len(lost)}"
    )
    section.finish()
