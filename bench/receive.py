"""Receive benchmark: the service's webhook route against a minimal receiver.

    .venv/bin/python -m bench.receive [--seconds N] [--concurrency C]
                                      [--backends sqlite,postgresql]

For each backend, each target gets a fresh, migrated database and its own server
process (one uvicorn worker on loopback): the service as `codat-webhooks serve`, the
yardstick as `python -m bench.minimal_receiver` (verify + one raw INSERT and commit
per request). A separate load-generator process (`bench.loadgen`) sends distinct,
signed ~1 KB read.completed events over C keep-alive connections. The runs alternate
minimal, service, service, minimal (ABBA, so linear drift on a shared machine cancels)
and each target's rounds are pooled. After every run the database must hold exactly
the acknowledged deliveries, or the script exits 1.

The machine is shared (server, database and generator on the same cores), so only
the ratio service/minimal within one run is meaningful, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.migrate import upgrade
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_YmVuY2gtcmVjZWl2ZS1zZWNyZXQtbm90LWZvci1wcm9k"
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
TARGETS = ("minimal", "service")
WEBHOOK_PATH = "/webhooks/codat"


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank value at `fraction` (0.99 for p99); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class BenchFailure(Exception):
    pass


@dataclass
class Pooled:
    seconds: float = 0.0
    window_acknowledged: int = 0
    latencies: list[float] = field(default_factory=list)
    non_2xx: int = 0
    errors: int = 0
    runs: list[float] = field(default_factory=list)
    server_cpu_us: list[float] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.window_acknowledged / self.seconds if self.seconds else 0.0

    def percentile_ms(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) * 1000


# --- databases ----------------------------------------------------------------------


class Database:
    url: str

    def delivery_ids(self) -> set[str]:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError


class SqliteDatabase(Database):
    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / f"{name}.db"
        self.url = f"sqlite:///{self.path}"

    def delivery_ids(self) -> set[str]:
        with contextlib.closing(sqlite3.connect(self.path)) as connection:
            return {row[0] for row in connection.execute("SELECT delivery_id FROM webhook_events")}

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


class PostgresDatabase(Database):
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"bench_{secrets.token_hex(6)}"
        base, _, _ = admin_url.rpartition("/")
        self.url = f"{base}/{self.name}"
        asyncio.run(self._admin(f'CREATE DATABASE "{self.name}"'))

    async def _admin(self, statement: str) -> None:
        connection = await asyncpg.connect(self.admin_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def delivery_ids(self) -> set[str]:
        async def fetch() -> set[str]:
            connection = await asyncpg.connect(self.url)
            try:
                rows = await connection.fetch("SELECT delivery_id FROM webhook_events")
            finally:
                await connection.close()
            return {row[0] for row in rows}

        return asyncio.run(fetch())

    def drop(self) -> None:
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def make_database(backend: str, directory: Path, name: str, pg_admin_url: str) -> Database:
    database: Database
    if backend == "sqlite":
        database = SqliteDatabase(directory, name)
    else:
        database = PostgresDatabase(pg_admin_url)
    try:
        upgrade(database.url)
    except BaseException:
        database.drop()
        raise
    return database


# --- servers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc), 0.0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(
    target: str,
    database_url: str,
    log_path: Path,
    *,
    null: bool = False,
    embedded_worker: bool = False,
    log_level: str = "INFO",
    tracing: bool = False,
) -> Iterator[Server]:
    """Start one target on a free loopback port; yield its webhook URL and pid; stop it."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CODAT_WEBHOOK_SECRETS": SECRET,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": log_level,
        "LOG_FORMAT": "json",
        # Receiving alone, as the minimal receiver does: no event processing in-process
        # (it would call the Codat API); --embedded-worker keeps the service's default.
        "EMBEDDED_WORKER": "true" if embedded_worker else "false",
    }
    # Tracing as asked, never inherited: off, as in production without an exporter.
    env = {key: value for key, value in env.items() if not key.startswith("OTEL_")}
    stdout: int | None = None
    if target == "service":
        command = [str(Path(sys.executable).parent / "codat-webhooks"), "serve"]
        if tracing:
            # Every span made and exported: the console exporter serialises each one (as
            # OTLP would) and writes it to /dev/null, so no collector's cost is counted.
            env |= {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "bench-receive"}
            stdout = subprocess.DEVNULL
    else:
        command = [sys.executable, "-m", "bench.minimal_receiver"]
        if null:
            env["BENCH_MINIMAL_MODE"] = "null"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log if stdout is None else stdout, stderr=log
        )
    try:
        wait_ready(process, f"http://127.0.0.1:{port}/readyz", log_path)
        yield Server(f"http://127.0.0.1:{port}{WEBHOOK_PATH}", process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchFailure(f"server exited ({process.returncode}): {tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.1)
    raise BenchFailure(f"{url} not ready after 30 s: {tail(log_path)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- one run ------------------------------------------------------------------------


def load(
    target: Server,
    args: argparse.Namespace,
    detail: Path,
    seconds: float,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """One `bench.loadgen` run against `target` (`extra`: more of its options)."""
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--url",
        target.url,
        "--secret",
        SECRET,
        "--seconds",
        str(seconds),
        "--warmup",
        str(args.warmup),
        "--concurrency",
        str(args.concurrency),
        "--detail-out",
        str(detail),
        *extra,
    ]
    server_cpu = cpu_seconds(target.pid)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchFailure(f"load generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # CPU over the whole load (warm-up and tail too), per acknowledged event.
    acked = max(1, result["acknowledged"])
    result["server_cpu_us"] = (cpu_seconds(target.pid) - server_cpu) / acked * 1e6
    loadgen_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    result["loadgen_cpu_us"] = loadgen_cpu / acked * 1e6
    return result


def run_once(
    backend: str, target: str, label: str, workdir: Path, args: argparse.Namespace
) -> tuple[dict[str, Any], list[float]]:
    database = make_database(backend, workdir, label, args.pg_admin_url)
    try:
        detail = workdir / f"{label}.detail.json"
        log = workdir / f"{label}.log"
        with server(
            target,
            database.url,
            log,
            embedded_worker=args.embedded_worker,
            log_level=args.log_level,
            tracing=args.tracing,
        ) as running:
            result = load(running, args, detail, args.seconds)
        result["stored_log_lines"] = sum(
            '"event": "event stored"' in line or '"event": "events stored"' in line
            for line in log.read_text(errors="replace").splitlines()
        )
        data = json.loads(detail.read_text())
        acked = set(data["acked_ids"])
        stored = database.delivery_ids()
    finally:
        database.drop()
    missing = acked - stored
    if len(acked) != len(data["acked_ids"]) or missing or len(stored) != len(acked):
        raise BenchFailure(
            f"{backend}/{target}: {len(data['acked_ids'])} acknowledged "
            f"({len(acked)} distinct), {len(stored)} rows stored, "
            f"{len(missing)} acknowledged but missing"
        )
    result["rows"] = len(stored)
    latencies: list[float] = data["latencies"]
    return result, latencies


def ceiling(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """uvicorn answering 200 without work: what the generator and the loop can do here."""
    with server("minimal", "", workdir / "ceiling.log", null=True) as running:
        return load(running, args, workdir / "ceiling.detail.json", min(args.seconds, 3.0))


# --- the whole benchmark ------------------------------------------------------------


def order(rounds: int) -> list[str]:
    """ABBA ABBA ...: minimal, service, service, minimal."""
    sequence: list[str] = []
    for index in range(rounds):
        sequence += list(TARGETS) if index % 2 == 0 else list(reversed(TARGETS))
    return sequence


def benchmark(args: argparse.Namespace) -> int:
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    for backend in backends:
        if backend not in ("sqlite", "postgresql"):
            raise SystemExit(f"unknown backend {backend!r}: use sqlite and/or postgresql")
    results: dict[tuple[str, str], Pooled] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-receive-") as tmp:
        workdir = Path(tmp)
        if not args.no_ceiling:
            top = ceiling(workdir, args)
            print(
                f"ceiling (uvicorn answering 200, no verify, no insert): "
                f"{top['events_per_s']:,.0f} events/s, p50 {top['p50_ms']:.1f} ms, "
                f"p99 {top['p99_ms']:.1f} ms; CPU/event: server {top['server_cpu_us']:.0f} us, "
                f"loadgen {top['loadgen_cpu_us']:.0f} us",
                flush=True,
            )
        for backend in backends:
            for index, target in enumerate(order(args.rounds)):
                label = f"{backend}-{target}-{index}"
                result, latencies = run_once(backend, target, label, workdir, args)
                pooled = results.setdefault((backend, target), Pooled())
                pooled.seconds += result["seconds"]
                pooled.window_acknowledged += result["window_acknowledged"]
                pooled.latencies += latencies
                pooled.non_2xx += result["non_2xx"]
                pooled.errors += sum(result["errors"].values())
                pooled.runs.append(result["events_per_s"])
                pooled.server_cpu_us.append(result["server_cpu_us"])
                print(
                    f"  {label:<22} {result['events_per_s']:>6,.0f} events/s  "
                    f"p50 {result['p50_ms']:5.1f} ms  p99 {result['p99_ms']:5.1f} ms  "
                    f"acked {result['acknowledged']:>6} = rows {result['rows']:>6}  "
                    f"non-2xx {result['non_2xx']}  errors {sum(result['errors'].values())}  "
                    f"CPU/event: server {result['server_cpu_us']:.0f} us, "
                    f"loadgen {result['loadgen_cpu_us']:.0f} us  "
                    f"'stored' log lines {result['stored_log_lines']}",
                    flush=True,
                )
    print_table(backends, results, args)
    print(f"(body {result['body_bytes']} B, {time.monotonic() - started:.0f} s in all)")
    return 0


def print_table(
    backends: list[str], results: dict[tuple[str, str], Pooled], args: argparse.Namespace
) -> None:
    print()
    worker = "on" if args.embedded_worker else "off"
    print(
        f"concurrency {args.concurrency}, {args.seconds:g} s x {args.rounds} rounds per target, "
        f"one uvicorn worker each, service's embedded event worker {worker}, "
        f"LOG_LEVEL={args.log_level}, tracing {'on' if args.tracing else 'off'}"
    )
    header = (
        f"{'backend':<11} {'target':<8} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'srv CPU us/ev':>13}  events/s per run"
    )
    print(header)
    print("-" * len(header))
    for backend in backends:
        for target in TARGETS:
            pooled = results[(backend, target)]
            runs = " / ".join(f"{value:,.0f}" for value in pooled.runs)
            cpu = sum(pooled.server_cpu_us) / len(pooled.server_cpu_us)
            print(
                f"{backend:<11} {target:<8} {pooled.events_per_s:>9,.0f} "
                f"{pooled.percentile_ms(0.50):>7.1f} {pooled.percentile_ms(0.99):>7.1f} "
                f"{cpu:>13.0f}  {runs}"
            )
        minimal = results[(backend, "minimal")].events_per_s
        service = results[(backend, "service")].events_per_s
        ratio = service / minimal if minimal else float("nan")
        verdict = "meets" if ratio >= 1.0 else "below"
        print(f"{backend:<11} service/minimal events/s = {ratio:.2f}x ({verdict} the 1.0x target)")
        for target in TARGETS:
            pooled = results[(backend, target)]
            if pooled.non_2xx or pooled.errors:
                print(
                    f"{backend:<11} warning: {target} had {pooled.non_2xx} non-2xx answers "
                    f"and {pooled.errors} connection errors or timeouts"
                )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.receive",
        description="Events/s, p50 and p99 of the webhook route and of a minimal receiver.",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured lead-in per run")
    parser.add_argument("--concurrency", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=2, help="runs per target (ABBA order)")
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG_ADMIN_URL),
        help="where to CREATE/DROP the scratch databases (env BENCH_POSTGRES_URL)",
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the no-work calibration")
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="the service's LOG_LEVEL: INFO, as production runs, logs each commit's events",
    )
    parser.add_argument(
        "--embedded-worker",
        action="store_true",
        help="leave the service's in-process event worker on (EMBEDDED_WORKER=true)",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="the service with OpenTelemetry tracing on (console exporter, to /dev/null)",
    )
    return parser.parse_args(argv)


def run_main(
    benchmark: Callable[[argparse.Namespace], int | None], args: argparse.Namespace
) -> None:
    """Every benchmark's exit: its own code, or 1 with the reason when a check failed."""
    try:
        sys.exit(benchmark(args))
    except BenchFailure as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    run_main(benchmark, parse_args(argv))


if __name__ == "__main__":
    main()
