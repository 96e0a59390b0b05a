"""Processing benchmark: events/s and ack->processed latency of `codat-webhooks worker`.

    .venv/bin/python -m bench.process [--events N] [--delays 0,0.1] [--workers 1,2]
                                      [--notify none,all]

One scenario per (fake Codat delay, number of worker processes), each on a fresh
PostgreSQL database (`CREATE DATABASE bench_proc_<random>`, migrated, dropped after),
a fresh fake Codat in its own process (`bench.process_fake`: answers after `delay`
seconds) and fresh `codat-webhooks worker` processes (WORKER_CONCURRENCY=16 and
WORKER_POLL_INTERVAL=0.5, the defaults: a stored event wakes them through PostgreSQL's
NOTIFY, the poll is only the fallback). Every event is `bills.write.unsuccessful` with its own
event id and push operation key: one GET /companies/{id}/push/{key} each.

Phases, in order, with the workers running throughout:

0. wait for the workers' first freshness sweep to run on the empty database and re-arm
   itself 15 minutes ahead (had it seen companies, reconcile would call Codat);
1. warm-up: 32 events per worker (connections, imports, caches), not measured;
2. throughput: N events stored at once through `EventWriter` (a backlog), events/s
   over the central 90% of completions (the ramp-up and the tail left out);
3. latency: events stored one at a time at a steady rate of `--latency-load` (0.5) x
   the throughput just measured, for `--latency-seconds`; ack->processed is
   `processed_at - received_at` of these rows. (A backlog's latency is only its
   queueing; a steady load below capacity is what a deployment sees.)

Then the workers are stopped (SIGTERM) and every event must be processed exactly
once: status processed, attempts 1, no error, its write outcome carrying the push
operation's error, and exactly one call for its key at the fake, which must have seen
no other call. Otherwise exit 1.

`--notify all` subscribes one internal endpoint (`POST /_bench/notify` on the fake's
process, answering 204 at once) to every change type: each event then records a
`bill_write.failed` change and a delivery, which the workers send beside the events.
`--notify notifier` subscribes the same endpoint but leaves sending to one
`codat-webhooks notifier` process (NOTIFY_IN_WORKER=false on the workers); its CPU is
printed apart from the workers'.
The run waits for every delivery to settle too, checks that every change reached the
endpoint, and reports change->delivered (the endpoint's arrival time minus the change's
`created_at`) for the latency phase's changes. Modes run side by side for each delay
and worker count (`--notify none,all,all,none` for ABBA order); the summary gives
events/s with an endpoint over events/s without (mean of each mode's runs).

With a delay, the bound is what the concurrency allows: workers x WORKER_CONCURRENCY
concurrent events / delay seconds per event; the target is events/s >= 0.8 x bound.
The machine is shared, so per-event CPU and how busy the machine was are printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db import async_url
from app.migrate import upgrade
from app.webhooks.route import incoming_event
from app.webhooks.store import EventWriter, IncomingEvent, StoreResult
from bench.process_fake import CALLS_PATH, CONNECTION_ID, NOTIFY_PATH, push_key, slot_company
from bench.receive import (
    DEFAULT_PG_ADMIN_URL,
    BenchFailure,
    cpu_seconds,
    percentile,
    run_main,
    tail,
)
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_NAME = "bills.write.unsuccessful.json"
SAMPLES = (Path("/work/shared/samples") / SAMPLE_NAME, ROOT / "app" / "samples" / SAMPLE_NAME)
SECRET = "whsec_YmVuY2gtcHJvY2Vzcy1zZWNyZXQtbm90LWZvci1wcm9k"
DRIVER_APP = "bench-process-driver"  # application_name of the driver's own connections
WARMUP_PER_WORKER = 32
CallTimes = dict[str, list[tuple[float, float]]]


# --- CPU ----------------------------------------------------------------------------


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # guest time is already counted in user
    return total - values[3] - values[4], total


@dataclass
class CpuSnapshot:
    at: float
    workers: float
    notifiers: float
    fake: float
    driver: float
    postgres: dict[int, float]
    machine: tuple[int, int]


@dataclass
class PhaseCpu:
    """CPU seconds spent in one phase by each party, and how busy the machine was."""

    seconds: float = 0.0
    workers: float = 0.0
    notifiers: float = 0.0
    fake: float = 0.0
    driver: float = 0.0
    postgres: float = 0.0
    machine_busy: float = 0.0  # fraction of all cores


class CpuMeter:
    def __init__(
        self, worker_pids: list[int], fake_pid: int, notifier_pids: list[int] | None = None
    ) -> None:
        self.worker_pids = worker_pids
        self.notifier_pids = notifier_pids or []
        self.fake_pid = fake_pid

    async def snapshot(self, connection: asyncpg.Connection) -> CpuSnapshot:
        # The workers' backends on this database: not the driver's own connections.
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name <> $1",
            DRIVER_APP,
        )
        return CpuSnapshot(
            at=time.monotonic(),
            workers=sum(cpu_seconds(pid) for pid in self.worker_pids),
            notifiers=sum(cpu_seconds(pid) for pid in self.notifier_pids),
            fake=cpu_seconds(self.fake_pid),
            driver=time.process_time(),
            postgres={row["pid"]: cpu_seconds(row["pid"]) for row in rows},
            machine=machine_ticks(),
        )

    @staticmethod
    def between(start: CpuSnapshot, end: CpuSnapshot) -> PhaseCpu:
        busy = end.machine[0] - start.machine[0]
        total = end.machine[1] - start.machine[1]
        return PhaseCpu(
            seconds=end.at - start.at,
            workers=end.workers - start.workers,
            notifiers=end.notifiers - start.notifiers,
            fake=end.fake - start.fake,
            driver=end.driver - start.driver,
            postgres=sum(cpu - start.postgres.get(pid, 0.0) for pid, cpu in end.postgres.items()),
            machine_busy=busy / total if total else float("nan"),
        )


# --- the database -------------------------------------------------------------------


class ScratchDatabase:
    """`CREATE DATABASE bench_proc_<random>`, migrated; `drop()` removes it."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"bench_proc_{secrets.token_hex(6)}"
        base, _, _ = admin_url.rpartition("/")
        self.url = f"{base}/{self.name}"
        asyncio.run(self._admin(f'CREATE DATABASE "{self.name}"'))
        try:
            upgrade(self.url)
        except BaseException:
            self.drop()
            raise

    async def _admin(self, statement: str) -> None:
        connection = await asyncpg.connect(self.admin_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def drop(self) -> None:
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


# --- processes ----------------------------------------------------------------------


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass(frozen=True)
class FakeServer:
    url: str
    pid: int


@contextlib.contextmanager
def fake_codat(
    delay: float,
    companies: int,
    operations: int,
    log: Path,
    *,
    bill_pages: int = 0,
    skip_every: int = 0,
) -> Iterator[FakeServer]:
    """`bench.process_fake` in its own process; ready once it answers CALLS_PATH."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "bench.process_fake",
        "--port",
        str(port),
        "--delay",
        str(delay),
        "--companies",
        str(companies),
        "--operations",
        str(operations),
        "--bill-pages",
        str(bill_pages),
        "--skip-every",
        str(skip_every),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=2) as client:
            while True:
                if process.poll() is not None:
                    raise BenchFailure(f"fake Codat exited ({process.returncode}): {tail(log)}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url + CALLS_PATH).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise BenchFailure(f"fake Codat not ready after 60 s: {tail(log)}")
                time.sleep(0.1)
        yield FakeServer(url, process.pid)
    finally:
        stop(process)


def fetch_calls(fake: FakeServer) -> tuple[CallTimes, dict[str, int], dict[str, list[float]]]:
    """Push look-ups by key (arrival, end of answer), counts of any other call, and the
    arrivals of each notification by its webhook-id (the change id)."""
    response = httpx.get(fake.url + CALLS_PATH, timeout=30)
    response.raise_for_status()
    raw: dict[str, Any] = response.json()
    push: dict[str, list[list[float]]] = raw["push"]
    other: dict[str, int] = raw["other"]
    notified: dict[str, list[float]] = raw["notified"]
    calls = {key: [(start, end) for start, end in times] for key, times in push.items()}
    return calls, other, notified


def worker_env(
    database_url: str, codat_url: str, args: argparse.Namespace, notify: str
) -> dict[str, str]:
    subscribed = notify in ("all", "notifier")
    endpoints = [{"url": codat_url + NOTIFY_PATH, "secret": SECRET}] if subscribed else []
    return {
        "NOTIFY_ENDPOINTS": json.dumps(endpoints),
        "NOTIFY_IN_WORKER": "false" if notify == "notifier" else "true",
        **os.environ,
        "DATABASE_URL": database_url,
        "CODAT_WEBHOOK_SECRETS": SECRET,
        "CODAT_API_KEY": "bench-api-key",
        "CODAT_BASE_URL": codat_url,
        "WORKER_CONCURRENCY": str(args.concurrency),
        "WORKER_POLL_INTERVAL": str(args.poll_interval),
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
    }


@contextlib.contextmanager
def worker_processes(
    count: int, env: dict[str, str], log: Path, *, notifiers: int = 0
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`codat-webhooks worker` x count, then `notifier` x notifiers; stopped with SIGTERM
    (their graceful drain)."""
    program = str(Path(sys.executable).parent / "codat-webhooks")
    commands = [[program, "worker"]] * count + [[program, "notifier"]] * notifiers
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with log.open("ab") as out:
            for command in commands:
                processes.append(
                    subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
                )
        yield processes
        for process in processes:
            if process.poll() is not None:
                raise BenchFailure(f"a worker exited early ({process.returncode}): {tail(log)}")
    finally:
        for process in processes:
            stop(process)


# --- events -------------------------------------------------------------------------


def load_sample() -> dict[str, Any]:
    for path in SAMPLES:
        if path.is_file():
            body: dict[str, Any] = json.loads(path.read_text())
            return body
    raise BenchFailure(f"no {SAMPLE_NAME} in {', '.join(str(p) for p in SAMPLES)}")


class Events:
    """Event i: its own event id and push key `push_key(i)`, on company i % companies
    (`slot_company`'s, with `skip_every`)."""

    def __init__(self, companies: int, skip_every: int = 0) -> None:
        self.template = load_sample()
        self.companies = companies
        self.skip_every = skip_every

    def make(self, index: int, phase: str) -> IncomingEvent:
        body = copy.deepcopy(self.template)
        now = datetime.now(UTC)
        body["id"] = str(uuid.uuid4())
        body["generatedDate"] = now.isoformat().replace("+00:00", "Z")
        body["payload"]["id"] = push_key(index)
        company = slot_company(index % self.companies, self.skip_every)
        body["payload"]["referenceCompany"]["id"] = company
        body["payload"]["connectionId"] = CONNECTION_ID
        # As the route does once the signature is verified; its clock, just before the ack.
        delivery = f"msg_{phase}_{index:06d}_{uuid.uuid4().hex[:8]}"
        return incoming_event(delivery, json.dumps(body).encode(), datetime.now(UTC))


async def store_all(writer: EventWriter, events: list[IncomingEvent]) -> None:
    results = await asyncio.gather(*(writer.store(event) for event in events))
    if any(result != StoreResult.STORED for result in results):
        raise BenchFailure("an event was not stored")


async def store_steady(
    writer: EventWriter, make: Callable[[int], IncomingEvent], indices: range, rate: float
) -> None:
    """One event every 1/rate seconds, each acknowledged on its own (not awaited in turn)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[StoreResult]] = []
    for n, index in enumerate(indices):
        wait = start + n / rate - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(writer.store(make(index))))
    results = await asyncio.gather(*tasks)
    if any(result != StoreResult.STORED for result in results):
        raise BenchFailure("an event was not stored")


async def wait_settled(
    connection: asyncpg.Connection,
    expected: int,
    within: float,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    """Until every stored event is out of pending/processing; fail fast on any error."""
    deadline = time.monotonic() + within
    while True:
        row = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE status NOT IN ('pending', 'processing')) AS settled, "
            "count(*) FILTER (WHERE last_error IS NOT NULL) AS failed, "
            "min(last_error) AS error FROM webhook_events"
        )
        assert row is not None
        if row["failed"]:
            raise BenchFailure(f"{row['failed']} event(s) failed, e.g.: {row['error']}")
        if row["settled"] >= expected:
            return
        for process in workers:
            if process.poll() is not None:
                raise BenchFailure(f"worker {process.pid} exited ({process.returncode})")
        if time.monotonic() > deadline:
            raise BenchFailure(f"only {row['settled']} of {expected} events settled in time")
        await asyncio.sleep(0.1)


async def wait_sweep_armed(
    connection: asyncpg.Connection, workers: list[subprocess.Popen[bytes]]
) -> None:
    """Each worker queues the freshness sweep as it starts; the first one finds no company
    in the empty database and re-arms itself SWEEP_INTERVAL (15 min) ahead. Events stored
    before then would be reconciled too: extra calls to Codat, not event processing."""
    deadline = time.monotonic() + 60
    while True:
        armed = await connection.fetchval(
            "SELECT count(*) FROM jobs WHERE kind = 'sweep' AND status = 'pending' "
            "AND next_attempt_at > now() + interval '60 seconds'"
        )
        if armed:
            return
        for process in workers:
            if process.poll() is not None:
                raise BenchFailure(f"worker {process.pid} exited ({process.returncode})")
        if time.monotonic() > deadline:
            raise BenchFailure("the workers did not arm the freshness sweep within 60 s")
        await asyncio.sleep(0.1)


# --- measures -----------------------------------------------------------------------


@dataclass
class Row:
    delivery_id: str
    key: str
    status: str
    attempts: int
    received_at: float
    processed_at: float | None


@dataclass
class Scenario:
    delay: float
    workers: int
    slots: int
    notify: str = "none"
    events: int = 0
    events_per_s: float = 0.0
    drain_per_s: float = 0.0
    latency_rate: float = 0.0
    latency_events: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    # where the time of a latency-phase event went (p50, ms)
    before_call_ms: float = float("nan")
    call_ms: float = float("nan")
    after_call_ms: float = float("nan")
    # throughput phase, central window: mean calls in flight at the fake
    in_flight: float = float("nan")
    cpu: PhaseCpu = field(default_factory=PhaseCpu)
    seconds: float = 0.0
    # --notify all: change -> arrival at the endpoint, latency phase (ms); repeats seen
    notify_p50_ms: float = float("nan")
    notify_p99_ms: float = float("nan")
    notify_repeats: int = 0

    @property
    def bound(self) -> float | None:
        return self.slots / self.delay if self.delay > 0 else None

    @property
    def ratio(self) -> float | None:
        return self.events_per_s / self.bound if self.bound else None

    @property
    def slot_ms(self) -> float:
        """Little's law: how long each event held a slot, with every slot busy."""
        return self.slots / self.events_per_s * 1000 if self.events_per_s else float("nan")


def central_rate(done: list[float], trim: float = 0.05) -> tuple[float, float, float]:
    """Completions per second between the trim and 1-trim quantiles of completion time."""
    done = sorted(done)
    low, high = int(len(done) * trim), int(len(done) * (1 - trim)) - 1
    if high <= low or done[high] <= done[low]:
        return float("nan"), done[0], done[-1]
    return (high - low) / (done[high] - done[low]), done[low], done[high]


def mean_in_flight(calls: list[tuple[float, float]], start: float, end: float) -> float:
    busy = sum(max(0.0, min(b, end) - max(a, start)) for a, b in calls)
    return busy / (end - start) if end > start else float("nan")


async def fetch_rows(connection: asyncpg.Connection) -> list[Row]:
    records = await connection.fetch(
        "SELECT delivery_id, convert_from(raw_body, 'UTF8')::jsonb #>> '{payload,id}' AS key, "
        "status, attempts, extract(epoch FROM received_at)::float8 AS received, "
        "extract(epoch FROM processed_at)::float8 AS processed FROM webhook_events"
    )
    return [
        Row(r["delivery_id"], r["key"], r["status"], r["attempts"], r["received"], r["processed"])
        for r in records
    ]


# --- one scenario -------------------------------------------------------------------


def driver_engine(url: str) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=4,
        connect_args={"server_settings": {"application_name": DRIVER_APP}},
    )


async def drive(
    scenario: Scenario,
    database_url: str,
    events: Events,
    meter: CpuMeter,
    workers: list[subprocess.Popen[bytes]],
    args: argparse.Namespace,
) -> None:
    """Warm-up, throughput and latency phases against running workers."""
    engine = driver_engine(database_url)
    writer = EventWriter(engine)
    writer.start()
    connection = await asyncpg.connect(
        database_url, server_settings={"application_name": DRIVER_APP}
    )
    try:
        await wait_sweep_armed(connection, workers)
        warmup = WARMUP_PER_WORKER * scenario.workers
        await store_all(writer, [events.make(i, "warm") for i in range(warmup)])
        await wait_settled(connection, warmup, 120, workers)
        await asyncio.sleep(0.5)

        batch = range(warmup, warmup + args.events)
        start = await meter.snapshot(connection)
        await store_all(writer, [events.make(i, "tput") for i in batch])
        timeout = 60 + 10 * args.events / (scenario.bound or 100)
        await wait_settled(connection, warmup + args.events, timeout, workers)
        scenario.cpu = CpuMeter.between(start, await meter.snapshot(connection))
        rows = [r for r in await fetch_rows(connection) if r.delivery_id.startswith("msg_tput")]
        done = [r.processed_at for r in rows if r.processed_at is not None]
        scenario.events = len(rows)
        scenario.events_per_s, _, _ = central_rate(done)
        scenario.drain_per_s = len(done) / (max(done) - min(r.received_at for r in rows))

        rate = max(1.0, args.latency_load * scenario.events_per_s)
        count = min(args.events, math.ceil(rate * args.latency_seconds))
        steady = range(batch.stop, batch.stop + count)
        await store_steady(writer, lambda i: events.make(i, "lat"), steady, rate)
        await wait_settled(connection, batch.stop + count, 120, workers)
        scenario.latency_rate, scenario.latency_events = rate, count
        await wait_delivered(connection, 120, workers)
    finally:
        await connection.close()
        await writer.close()
        await engine.dispose()


async def wait_delivered(
    connection: asyncpg.Connection, within: float, workers: list[subprocess.Popen[bytes]]
) -> None:
    """Until no delivery of a change waits or is in hand (none at all without endpoints)."""
    deadline = time.monotonic() + within
    query = "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'processing')"
    while await connection.fetchval(query):
        if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
            raise BenchFailure("deliveries of changes did not settle")
        await asyncio.sleep(0.05)


async def fetch_changes(database_url: str) -> dict[str, tuple[str, float]]:
    """Each change's id: (its push operation key, created_at as Unix seconds)."""
    connection = await asyncpg.connect(database_url)
    try:
        records = await connection.fetch(
            "SELECT id, data ->> 'pushOperationKey' AS key, "
            "extract(epoch FROM created_at)::float8 AS created FROM changes"
        )
    finally:
        await connection.close()
    return {r["id"]: (r["key"], r["created"]) for r in records}


def analyse_notifications(
    scenario: Scenario,
    rows: list[Row],
    changes: dict[str, tuple[str, float]],
    notified: dict[str, list[float]],
) -> None:
    """Every change reached the endpoint (none did without one); latency of the steady
    phase's changes from their commit to their first arrival."""
    label = f"delay {scenario.delay:g} s, {scenario.workers} worker(s), notify {scenario.notify}"
    if scenario.notify == "none":
        if notified:
            raise BenchFailure(f"{label}: {len(notified)} notification(s) without an endpoint")
        return
    if len(changes) != len(rows):
        raise BenchFailure(f"{label}: {len(changes)} changes for {len(rows)} events")
    missing = set(changes) - set(notified)
    if missing:
        raise BenchFailure(f"{label}: {len(missing)} change(s) never reached the endpoint")
    scenario.notify_repeats = sum(len(times) - 1 for times in notified.values())
    latency_keys = {r.key for r in rows if r.delivery_id.startswith("msg_lat")}
    waits = [
        min(notified[change_id]) - created
        for change_id, (key, created) in changes.items()
        if key in latency_keys
    ]
    scenario.notify_p50_ms = percentile(waits, 0.50) * 1000
    scenario.notify_p99_ms = percentile(waits, 0.99) * 1000


def analyse(scenario: Scenario, rows: list[Row], calls: CallTimes) -> None:
    tput = [r for r in rows if r.delivery_id.startswith("msg_tput")]
    done = [r.processed_at for r in tput if r.processed_at is not None]
    _, low, high = central_rate(done)
    scenario.in_flight = mean_in_flight([calls[r.key][0] for r in tput], low, high)

    latency = [r for r in rows if r.delivery_id.startswith("msg_lat")]
    waits = [r.processed_at - r.received_at for r in latency if r.processed_at is not None]
    scenario.p50_ms = percentile(waits, 0.50) * 1000
    scenario.p99_ms = percentile(waits, 0.99) * 1000
    before, during, after = [], [], []
    for r in latency:
        arrived, answered = calls[r.key][0]
        assert r.processed_at is not None
        before.append(arrived - r.received_at)
        during.append(answered - arrived)
        after.append(r.processed_at - answered)
    scenario.before_call_ms = percentile(before, 0.5) * 1000
    scenario.call_ms = percentile(during, 0.5) * 1000
    scenario.after_call_ms = percentile(after, 0.5) * 1000


def verify(
    label: str, rows: list[Row], expected: int, calls: CallTimes, other: dict[str, int]
) -> None:
    """Every event processed exactly once, with exactly one call to Codat for its key,
    and no other call to Codat (the measurement would include other work)."""
    problems: list[str] = []
    if other:
        path, count = max(other.items(), key=lambda item: item[1])
        problems.append(f"{sum(other.values())} other call(s) to Codat, e.g. {count} x {path}")
    if len(rows) != expected:
        problems.append(f"{len(rows)} rows, {expected} stored")
    bad = [r for r in rows if r.status != "processed" or r.attempts != 1]
    if bad:
        problems.append(
            f"{len(bad)} not processed exactly once, e.g. {bad[0].delivery_id}: "
            f"status {bad[0].status}, attempts {bad[0].attempts}"
        )
    keys = {r.key for r in rows}
    if len(keys) != len(rows):
        problems.append("push keys are not distinct")
    missing = [key for key in keys if len(calls.get(key, [])) != 1]
    if missing:
        problems.append(
            f"{len(missing)} event(s) without exactly one call to Codat, "
            f"e.g. {missing[0]}: {len(calls.get(missing[0], []))} call(s)"
        )
    if set(calls) - keys:
        problems.append(f"{len(set(calls) - keys)} call(s) for keys no event carries")
    if problems:
        raise BenchFailure(f"{label}: " + "; ".join(problems))


async def read_back(database_url: str) -> tuple[list[Row], int]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await fetch_rows(connection)
        outcomes = await connection.fetchval(
            "SELECT count(*) FROM write_outcomes "
            "WHERE error_message IS NOT NULL AND status_code = 400"
        )
    finally:
        await connection.close()
    return rows, int(outcomes)


def run_scenario(
    delay: float, workers: int, notify: str, args: argparse.Namespace, workdir: Path
) -> Scenario:
    label = f"delay {delay:g} s, {workers} worker(s), notify {notify}"
    scenario = Scenario(
        delay=delay, workers=workers, slots=workers * args.concurrency, notify=notify
    )
    began = time.monotonic()
    operations = WARMUP_PER_WORKER * workers + 2 * args.events
    events = Events(args.companies)
    database = ScratchDatabase(args.pg_admin_url)
    try:
        slug = f"d{delay:g}-w{workers}-{notify}-{secrets.token_hex(2)}"
        with fake_codat(delay, args.companies, operations, workdir / f"{slug}.fake.log") as fake:
            env = worker_env(database.url, fake.url, args, notify)
            log = workdir / f"{slug}.workers.log"
            notifiers = 1 if notify == "notifier" else 0
            with worker_processes(workers, env, log, notifiers=notifiers) as processes:
                pids = [p.pid for p in processes]
                meter = CpuMeter(pids[:workers], fake.pid, pids[workers:])
                asyncio.run(drive(scenario, database.url, events, meter, processes, args))
            # The workers are stopped: nothing can change any more.
            calls, other, notified = fetch_calls(fake)
        rows, outcomes = asyncio.run(read_back(database.url))
        changes = asyncio.run(fetch_changes(database.url))
        stored = WARMUP_PER_WORKER * workers + args.events + scenario.latency_events
        verify(label, rows, stored, calls, other)
        if outcomes != len(rows):
            raise BenchFailure(
                f"{label}: {outcomes} write outcomes with the error, {len(rows)} events"
            )
        warnings = log.read_text(errors="replace").splitlines()
        if warnings:
            print(f"  ({len(warnings)} worker log line(s) at WARNING+, first: {warnings[0][:300]})")
        analyse(scenario, rows, calls)
        analyse_notifications(scenario, rows, changes, notified)
    finally:
        database.drop()
    scenario.seconds = time.monotonic() - began
    return scenario


# --- the whole benchmark ------------------------------------------------------------


def describe(s: Scenario) -> str:
    cpu, n = s.cpu, max(1, s.events)
    bound = f"bound {s.bound:,.0f}/s, ratio {s.ratio:.2f}; " if s.bound and s.ratio else ""
    notified = (
        f"change->delivered p50 {s.notify_p50_ms:.0f} ms, p99 {s.notify_p99_ms:.0f} ms "
        f"({s.notify_repeats} repeat(s)); "
        if s.notify != "none"
        else ""
    )
    return (
        f"  delay {s.delay:g} s, {s.workers} worker(s), notify {s.notify}: {s.events} events at "
        f"{s.events_per_s:,.0f}/s ({bound}drain {s.drain_per_s:,.0f}/s; "
        f"slot held {s.slot_ms:.0f} ms, calls in flight {s.in_flight:.1f} of {s.slots}); "
        f"latency at {s.latency_rate:,.0f}/s x {s.latency_events}: p50 {s.p50_ms:.0f} ms, "
        f"p99 {s.p99_ms:.0f} ms (p50 ack->call {s.before_call_ms:.1f}, call {s.call_ms:.1f}, "
        f"call->processed {s.after_call_ms:.1f} ms); CPU ms/event: workers "
        f"{cpu.workers / n * 1000:.2f}, "
        f"{f'notifier {cpu.notifiers / n * 1000:.2f}, ' if s.notify == 'notifier' else ''}"
        f"postgres {cpu.postgres / n * 1000:.2f}, "
        f"fake {cpu.fake / n * 1000:.2f}, driver {cpu.driver / n * 1000:.2f}; {notified}"
        f"machine busy {cpu.machine_busy:.0%} ({s.seconds:.0f} s)"
    )


def print_table(scenarios: list[Scenario], args: argparse.Namespace) -> None:
    print()
    print(
        f"PostgreSQL, WORKER_CONCURRENCY={args.concurrency}, "
        f"WORKER_POLL_INTERVAL={args.poll_interval:g}, {args.events} events per throughput "
        f"phase, latency at {args.latency_load:g} x that throughput, {args.companies} companies"
    )
    header = (
        f"{'delay':>6} {'workers':>7} {'notify':>8} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'bound/s':>8} {'ratio':>6} {'worker CPU ms/ev':>16} {'busy':>5} {'notify p99':>10}"
    )
    print(header)
    print("-" * len(header))
    for s in scenarios:
        bound = f"{s.bound:>8,.0f}" if s.bound else f"{'-':>8}"
        ratio = f"{s.ratio:>6.2f}" if s.ratio is not None else f"{'-':>6}"
        print(
            f"{s.delay:>5g}s {s.workers:>7} {s.notify:>8} {s.events_per_s:>9,.0f} "
            f"{s.p50_ms:>7.0f} {s.p99_ms:>7.0f} {bound} {ratio} "
            f"{s.cpu.workers / max(1, s.events) * 1000:>16.2f} {s.cpu.machine_busy:>5.0%} "
            f"{s.notify_p99_ms:>10.0f}"
        )
    print_notify_summary(scenarios)
    for s in scenarios:
        if s.ratio is not None:
            verdict = "meets" if s.ratio >= 0.8 else "BELOW"
            print(
                f"delay {s.delay:g} s, {s.workers} worker(s): {s.events_per_s:,.0f} events/s "
                f"vs bound {s.bound:,.0f}/s = {s.ratio:.2f} ({verdict} the 0.8 target)"
            )


def print_notify_summary(scenarios: list[Scenario]) -> None:
    """Events/s with one endpoint subscribed to everything over events/s with none, for
    each way of sending (in the workers, or a notifier process)."""
    pairs = sorted({(s.delay, s.workers) for s in scenarios})
    for delay, workers in pairs:
        runs = [s for s in scenarios if (s.delay, s.workers) == (delay, workers)]
        without = [s for s in runs if s.notify == "none"]
        for mode in ("all", "notifier"):
            with_endpoint = [s for s in runs if s.notify == mode]
            if not with_endpoint or not without:
                continue
            rate_with = sum(s.events_per_s for s in with_endpoint) / len(with_endpoint)
            rate_without = sum(s.events_per_s for s in without) / len(without)
            p99 = max(s.notify_p99_ms for s in with_endpoint)
            ratio = rate_with / rate_without
            who = "the workers" if mode == "all" else "a notifier process"
            print(
                f"delay {delay:g} s, {workers} worker(s), sent by {who}: {rate_with:,.0f} "
                f"events/s with an endpoint vs {rate_without:,.0f} without = {ratio:.2f} "
                f"({'meets' if ratio >= 0.9 else 'BELOW'} the 0.9 target); change->delivered "
                f"p99 {p99:.0f} ms ({'meets' if p99 < 1000 else 'ABOVE'} the 1 s target)"
            )


def parse_list(text: str, kind: Callable[[str], Any]) -> list[Any]:
    return [kind(part.strip()) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.process",
        description="Events/s and ack->processed latency of worker processes on PostgreSQL.",
    )
    parser.add_argument("--events", type=int, default=2000, help="backlog per scenario")
    parser.add_argument("--delays", default="0,0.1", help="fake Codat seconds per answer")
    parser.add_argument("--workers", default="1,2", help="worker process counts")
    parser.add_argument(
        "--notify",
        default="none",
        help="none, all (one endpoint for every change, sent by the workers), notifier "
        "(the same, sent by a notifier process), as a list",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="WORKER_CONCURRENCY")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="WORKER_POLL_INTERVAL")
    parser.add_argument("--companies", type=int, default=50, help="events spread round-robin")
    parser.add_argument("--latency-load", type=float, default=0.5, help="x measured events/s")
    parser.add_argument("--latency-seconds", type=float, default=8.0)
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG_ADMIN_URL),
        help="where to CREATE/DROP the scratch databases (env BENCH_POSTGRES_URL)",
    )
    return parser.parse_args(argv)


def benchmark(args: argparse.Namespace) -> int:
    delays: list[float] = parse_list(args.delays, float)
    counts: list[int] = parse_list(args.workers, int)
    scenarios: list[Scenario] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-process-") as tmp:
        for delay in delays:
            for workers in counts:
                for notify in parse_list(args.notify, str):
                    if notify not in ("none", "all", "notifier"):
                        raise BenchFailure(f"--notify takes none, all and notifier, not {notify!r}")
                    scenario = run_scenario(delay, workers, notify, args, Path(tmp))
                    scenarios.append(scenario)
                    print(describe(scenario), flush=True)
    print_table(scenarios, args)
    print(f"({time.monotonic() - started:.0f} s in all)")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_main(benchmark, parse_args(argv))


if __name__ == "__main__":
    main()
