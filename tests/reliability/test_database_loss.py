"""Database loss: the suite's own PostgreSQL stopped (immediate) in the middle of a load.

While it is down the receiver answers 503, never a 2xx for an event it did not store;
a sender that retries the 503s as Codat does ends with every event stored once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from app.db import create_engine
from app.migrate import upgrade
from tests.reliability.checks import event_rows, stored_once, summarize, wait_settled
from tests.reliability.events import (
    connection_event,
    encode,
    new_delivery_id,
    read_completed,
    unknown_event,
    write_event,
)
from tests.reliability.postgres import ThrowawayPostgres
from tests.reliability.processes import Processes, service_env
from tests.reliability.report import Report, fmt
from tests.reliability.sender import Sender, at_steady_rate
from tests.reliability.sizes import SeededRandom, Size

pytestmark = pytest.mark.reliability

COMPANIES = [f"00000000-0000-4000-8000-{n:012}" for n in range(8)]
CONNECTION = "2e9d2c44-f675-40ba-8049-353bfcb5e171"


def make_event(rng: SeededRandom, n: int) -> tuple[str, dict[str, Any]]:
    """Events whose processing needs no call to Codat: only the database can fail here."""
    company = rng.choice(COMPANIES)
    roll = rng.random()
    if roll < 0.5:
        modified = {"bills": False, "suppliers": False}
        return "read.completed", read_completed(company, CONNECTION, modified)
    if roll < 0.7:
        push_key = f"10000000-0000-4000-8000-{n:012}"
        return "bills.write.successful", write_event(company, CONNECTION, push_key)
    if roll < 0.85:
        return "connection.*", connection_event(company, CONNECTION, connected=roll < 0.8)
    return "unknown type", unknown_event(company)


async def test_database_loss_mid_load_gives_503s_and_loses_nothing(
    size: Size,
    reliability_report: Report,
    rng: SeededRandom,
    throwaway_postgres: ThrowawayPostgres,
    processes: Processes,
) -> None:
    pg = throwaway_postgres
    section = reliability_report.section(
        2,
        "Database loss",
        f"A steady {size.outage_load_rate:g} events/s for {size.outage_load_seconds:g} s "
        f"into one `serve` process (embedded worker) on a PostgreSQL cluster of the suite's "
        f"own; {size.outage_load_seconds * 0.4:g} s in, the cluster is stopped with "
        f"`pg_ctl stop -m immediate` for {size.outage_seconds:g} s and started again. The "
        "sender retries every 503 or unanswered request with backoff, as Codat (Svix) does.",
    )
    reliability_report.facts["PostgreSQL"] = pg.version()
    await asyncio.to_thread(upgrade, pg.url)
    env = service_env(
        pg.url,
        EMBEDDED_WORKER="true",
        WORKER_LEASE_SECONDS="5",
        REFRESH_DEBOUNCE_SECONDS="3600",
    )
    service = await processes.serve("serve", env)
    section.setup = [
        f"throw-away cluster: initdb in {pg.dir}, port {pg.port}, run as the postgres user",
        "`codat-webhooks serve` with its embedded worker, WORKER_LEASE_SECONDS=5",
        "events that need no call to Codat (reads without changes, write outcomes, "
        "connection changes, an unknown type), so only the database can fail",
        f"random seed {rng.seed_value}",
    ]

    marks: dict[str, float] = {}
    readyz_while_down: list[int] = []
    sender = Sender(service.webhook_url, give_up_after=120)

    async def outage() -> None:
        await asyncio.sleep(size.outage_load_seconds * 0.4)
        marks["stop"] = time.monotonic()
        await asyncio.to_thread(pg.stop)
        marks["down"] = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as client:
            while time.monotonic() - marks["down"] < size.outage_seconds:
                response = await client.get(f"{service.base_url}/readyz")
                readyz_while_down.append(response.status_code)
                await asyncio.sleep(0.5)
        marks["restart"] = time.monotonic()
        await asyncio.to_thread(pg.start)
        marks["up"] = time.monotonic()

    async def send(i: int) -> None:
        kind, event = make_event(rng, i)
        await sender.deliver(sender.new(new_delivery_id(), encode(event), kind))

    engine = None
    try:
        pace, _ = await asyncio.gather(
            at_steady_rate(size.outage_load_rate, size.outage_load_seconds, send), outage()
        )
        engine = create_engine(pg.url, pool_size=2)
        settled = await wait_settled(engine, within=120)
        rows = await event_rows(engine)
    finally:
        await sender.aclose()
        if engine is not None:
            await engine.dispose()
    ready_after = await service.get("/readyz")

    attempts = sender.attempts()
    answers = sender.answer_counts()
    down, restart = marks["down"], marks["restart"]
    during = [a for a in attempts if marks["stop"] <= a.answered and a.sent <= marks["up"]]
    # Sent after the cluster was gone and answered before it was asked to start again:
    # nothing can have been stored, so nothing may have been acknowledged.
    blind = [a for a in attempts if a.sent >= down and a.answered <= restart]
    blind_2xx = [a for a in blind if a.status is not None and 200 <= a.status < 300]
    retried = [d for d in sender.deliveries if len(d.attempts) > 1]
    ambiguous = [
        d
        for d in retried
        if any(a.status == 503 for a in d.attempts) and d.attempts[-1].outcome == "duplicate"
    ]
    section.add_sent("distinct events", len(sender.deliveries))
    section.add_sent("requests (with retries)", len(attempts))
    section.add_sent("pace", f"{pace.planned / pace.seconds:.1f}/s over {pace.seconds:.1f} s")
    section.add_sent(
        "outage",
        f"stop took {down - marks['stop']:.2f} s, down for {restart - down:.1f} s, "
        f"start took {marks['up'] - restart:.2f} s",
    )
    section.add_seen("answers", ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(answers.items())))
    section.add_seen("requests answered around the outage", len(during))
    section.add_seen("requests sent and answered while the database was down", len(blind))
    section.add_seen("events that needed a retry", len(retried))
    section.add_seen(
        "events answered 503 whose row was committed anyway (the retry said duplicate)",
        len(ambiguous),
    )
    section.add_seen("/readyz while down", ", ".join(map(str, sorted(set(readyz_while_down)))))
    section.add_seen("rows in webhook_events", len(rows))
    section.add_seen(
        "event statuses",
        ", ".join(
            f"{k} {fmt(v)}" for k, v in sorted(Counter(r.status for r in rows.values()).items())
        ),
    )
    section.add_seen(
        "claims per event",
        ", ".join(
            f"{k}: {fmt(v)}" for k, v in sorted(Counter(r.attempts for r in rows.values()).items())
        ),
    )

    section.check(
        "the receiver answered 503 while the database was down",
        answers.get("503", 0) > 0 and bool(blind) and all(a.status == 503 for a in blind),
        f"{answers.get('503', 0)} answers 503; {len(blind)} requests fully inside the outage",
    )
    section.check(
        "no 2xx for a request sent after the database stopped and answered before it restarted",
        not blind_2xx,
        f"{len(blind_2xx)} such 2xx" if blind_2xx else "",
    )
    unexpected = {k: v for k, v in answers.items() if k not in ("200", "503")}
    section.check(
        "every answer was 200 or 503 (no 500, no 4xx, no dropped connection)",
        not unexpected,
        str(unexpected) if unexpected else "",
    )
    unacknowledged = [d.delivery_id for d in sender.deliveries if not d.acknowledged]
    section.check(
        "retrying the 503s as Codat does, every event was acknowledged in the end",
        not unacknowledged,
        f"{len(unacknowledged)} never acknowledged" if unacknowledged else "",
    )
    problems = stored_once(sender.deliveries, rows)
    section.check(
        "every event is in webhook_events exactly once, byte for byte; nothing is missing",
        not problems and len(rows) == len(sender.deliveries),
        summarize(problems) or f"{len(rows)} rows for {len(sender.deliveries)} events",
    )
    stored_twice = [d.delivery_id for d in sender.deliveries if d.stored_answers > 1]
    section.check(
        "no event was answered `stored` twice",
        not stored_twice,
        f"{len(stored_twice)} ids" if stored_twice else "",
    )
    not_done = [r for r in rows.values() if r.status not in ("processed", "ignored")]
    section.check(
        "the worker came back by itself and processed every event (waited up to 120 s)",
        settled and not not_done,
        f"{len(not_done)} not processed" if not_done else "",
    )
    section.check(
        "/readyz said 503 while the database was down and 200 after",
        bool(readyz_while_down)
        and all(s == 503 for s in readyz_while_down)
        and ready_after.status_code == 200,
        f"after: {ready_after.status_code}",
    )
    section.check("the service process is still running", service.process.alive)
    section.headline = (
        f"{fmt(len(sender.deliveries))} events, database down {restart - down:.1f} s: "
        f"{fmt(answers.get('503', 0))} answers 503, 0 lost, {fmt(len(rows))} rows"
        if not problems and not blind_2xx
        else f"{len(problems)} storage problems, {len(blind_2xx)} 2xx while down"
    )
    section.finish()
