"""The console script `codat-webhooks`: one entry point for every process the service runs."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from app import tracing
from app.config import DatabaseSettings, Settings, dev_env_file, get_settings
from app.logs import configure_logging
from app.sandbox import SANDBOX_API_KEY
from app.webhooks import WEBHOOK_PATH

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

# A traceback must never print local variables: they hold DATABASE_URL with its password.
cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=__doc__,
    pretty_exceptions_show_locals=False,
)


def run_fast(coroutine: Coroutine[Any, Any, None]) -> None:
    """The long-running processes get uvloop, as `uvicorn.run` would give them."""
    try:
        import uvloop
    except ImportError:  # not on every platform
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def load_settings(*, dev_env: bool = False) -> Settings:
    """Settings, or a one-line error naming each bad variable, and exit code 2.

    With `dev_env` (the commands one runs beside `make run`, never `serve` or `worker`),
    what the environment leaves unset comes from the file `make run` wrote; the names
    taken from it are said on stderr, their values never.
    """
    env_file = dev_env_file() if dev_env else None
    try:
        settings = get_settings() if env_file is None else Settings(_env_file=env_file)
    except ValidationError as exc:
        problems = dict.fromkeys(
            f"{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        typer.echo(f"error: invalid configuration: {'; '.join(problems)}", err=True)
        raise typer.Exit(code=2) from None
    if env_file is not None:
        from dotenv import dotenv_values

        taken = [name for name in dotenv_values(env_file) if name not in os.environ]
        if taken:
            typer.echo(f"using make run's settings from {env_file}: {', '.join(taken)}", err=True)
    return settings


def start_tracing() -> None:
    """Traces, if the OTEL_* variables configure an exporter; else a one-line error."""
    try:
        tracing.configure()
    except tracing.InvalidTracingConfig as exc:
        typer.echo(f"error: invalid tracing configuration: {exc}", err=True)
        raise typer.Exit(code=2) from None


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: PORT)")] = None,
) -> None:
    """Serve the webhook route and health checks, the status API, and the embedded worker."""
    from app.server import run_servers

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    start_tracing()
    run_fast(run_servers(settings, host or settings.host, settings.port if port is None else port))


@cli.command()
def worker() -> None:
    """Process stored events on their own (several may share one PostgreSQL)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    start_tracing()
    run_fast(run_worker(settings))


@cli.command()
def notifier() -> None:
    """Only send changes to NOTIFY_ENDPOINTS (with NOTIFY_IN_WORKER=false on the workers)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.notify_endpoints:
        typer.echo("error: no endpoints to notify (set NOTIFY_ENDPOINTS)", err=True)
        raise typer.Exit(2)
    start_tracing()
    run_fast(run_worker(settings, notifier_only=True))


async def run_worker(settings: Settings, *, notifier_only: bool = False) -> None:
    """A worker (or a notifier) until SIGTERM or SIGINT, then its graceful stop."""
    from app.db import create_engine, worker_pool_size
    from app.processing.context import build_context
    from app.processing.deliveries import run_notifier
    from app.processing.worker import HelperTaskDied, Worker, new_worker_id

    if settings.worker_metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, addr=settings.internal_host)
    engine = create_engine(settings.database_url, pool_size=worker_pool_size(settings))
    ctx = build_context(settings, engine)
    # What start-up allocated lives as long as the process: keep the collector off it.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        if notifier_only:
            await run_notifier(ctx, new_worker_id(), stop)
        else:
            await Worker(ctx).run(stop)
    except HelperTaskDied:
        raise SystemExit(1) from None  # logged with its cause; the supervisor restarts us
    finally:
        await ctx.codat.aclose()
        await engine.dispose()


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply the database migrations (safe to run again; a no-op when up to date)."""
    from app.migrate import upgrade

    upgrade(DatabaseSettings().database_url, revision)
    typer.echo(f"database migrated to {revision}")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`work` in one session, committed once if it returns (the commands never commit)."""
    from app.db import create_engine, session_factory

    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            result = await work(session)
            await session.commit()
            return result
    finally:
        await engine.dispose()


def _command(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run an operator command; a refusal is its message on stderr and exit code 1,
    whatever its kind (the API tells them apart by HTTP status)."""
    from app.processing.commands import CommandError

    try:
        return _run(_with_session(settings, work))
    except CommandError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from None


@cli.command()
def replay(
    event_id: Annotated[int | None, typer.Option(help="Replay this one event")] = None,
    event_type: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option(help="e.g. dead")] = None,
    company_id: Annotated[str | None, typer.Option()] = None,
    received_after: Annotated[datetime | None, typer.Option()] = None,
    received_before: Annotated[datetime | None, typer.Option()] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count the events a filter would replay")
    ] = False,
) -> None:
    """Queue events to be processed again (same filters as the status API)."""
    from app.models import utcnow
    from app.processing import commands

    settings = load_settings(dev_env=True)
    filters = commands.EventFilter(event_type, status, company_id, received_after, received_before)

    async def work(session: AsyncSession) -> int:
        if event_id is not None:
            await commands.replay_event(session, event_id, utcnow())
            return 1
        if dry_run:
            return await commands.count_replayable(session, filters)
        return await commands.replay_events(session, filters, utcnow())

    if dry_run and event_id is not None:
        typer.echo("error: --dry-run counts what a filter matches; drop --event-id", err=True)
        raise typer.Exit(code=1)
    queued = _command(settings, work)
    typer.echo(f"{'would queue' if dry_run else 'queued'} {queued} event(s)")


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `45m`: how operators write a retention period."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise typer.BadParameter("use a number and a unit: 30d, 12h or 45m")
    return timedelta(**{units[text[-1]]: int(text[:-1])})


@cli.command()
def prune(
    older_than: Annotated[str, typer.Option(help="Age, e.g. 30d, 12h")] = "30d",
) -> None:
    """Delete processed and ignored events older than the given age (never pending,
    failed, dead or unprocessable ones), changes as old whose deliveries are settled, and
    the local copy of companies Codat deleted that long ago.
    In batches, each its own transaction: the service goes on receiving meanwhile."""
    from app.changes.deliveries import prune_changes
    from app.db import create_engine, session_factory
    from app.models import utcnow
    from app.processing.commands import prune_events
    from app.processing.lifecycle import prune_deleted_companies

    age = parse_age(older_than)
    settings = load_settings(dev_env=True)

    async def work() -> tuple[int, int, int]:
        engine = create_engine(settings.database_url)
        try:
            sessions = session_factory(engine)
            cutoff = utcnow() - age
            return (
                await prune_events(sessions, cutoff),
                await prune_changes(sessions, cutoff),
                await prune_deleted_companies(sessions, cutoff),
            )
        finally:
            await engine.dispose()

    events, changes, companies = _run(work())
    typer.echo(
        f"pruned {events} event(s), {changes} change(s) and the local copy of {companies}"
        f" deleted compan(y/ies) older than {older_than}"
    )


@cli.command("notify-endpoints")
def notify_endpoints() -> None:
    """List the endpoints in NOTIFY_ENDPOINTS and the change types each is sent."""
    settings = load_settings()
    if not settings.notify_endpoints:
        typer.echo("no endpoints (set NOTIFY_ENDPOINTS)")
    for endpoint in settings.notify_endpoints:
        typer.echo(f"{endpoint.url}  types: {', '.join(endpoint.types or ['(every type)'])}")


@cli.command("notify-test")
def notify_test(
    url: Annotated[str, typer.Argument(help="An endpoint's URL, as in NOTIFY_ENDPOINTS")],
) -> None:
    """Send one signed test notification (type `notify.test`) to a configured endpoint."""
    import httpx

    from app.changes.record import new_change_id
    from app.models import Change, utcnow
    from app.processing.deliveries import post_change

    settings = load_settings()
    endpoint = next((e for e in settings.notify_endpoints if e.url == url), None)
    if endpoint is None:
        typer.echo(f"error: {url} is not in NOTIFY_ENDPOINTS", err=True)
        raise typer.Exit(code=1)
    now = utcnow()
    change = Change(
        id=new_change_id(now),
        change_type="notify.test",
        created_at=now,
        data={"message": "a test notification from codat-webhooks"},
    )

    async def send() -> tuple[bool, int | None, str | None]:
        async with httpx.AsyncClient(timeout=settings.notify_timeout_seconds) as http:
            return await post_change(http, endpoint, change)

    ok, status_code, error = _run(send())
    typer.echo(f"{'delivered' if ok else 'not delivered'}: {error or status_code} ({change.id})")
    if not ok:
        raise typer.Exit(code=1)


@cli.command("replay-deliveries")
def replay_deliveries_command(
    delivery_id: Annotated[int | None, typer.Option(help="Send this one delivery again")] = None,
    status: Annotated[str | None, typer.Option(help="dead or delivered")] = None,
    endpoint: Annotated[str | None, typer.Option(help="An endpoint's URL")] = None,
    change_type: Annotated[str | None, typer.Option()] = None,
    company_id: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Send settled (dead or delivered) deliveries of changes again, at once."""
    from app.changes.deliveries import DeliveryFilter, replay_deliveries, replay_delivery
    from app.models import utcnow

    settings = load_settings()
    filters = DeliveryFilter(status, endpoint, change_type, company_id)
    if delivery_id is None and not filters.conditions():
        typer.echo("error: give --delivery-id or at least one filter", err=True)
        raise typer.Exit(code=1)

    async def work(session: AsyncSession) -> int | str:
        if delivery_id is not None:
            refused = await replay_delivery(session, delivery_id, utcnow())
            return 1 if refused is None else refused
        return await replay_deliveries(session, filters, utcnow())

    queued = _run(_with_session(settings, work))
    if isinstance(queued, str):
        typer.echo(f"error: delivery {delivery_id} is {queued}: not replayed", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"queued {queued} deliver(ies)")


SAMPLES = Path(__file__).parent / "samples"
SAMPLE_NAMES = ", ".join(sorted(path.stem for path in SAMPLES.glob("*.json")))


@cli.command("send-test-event")
def send_test_event(
    url: Annotated[str | None, typer.Option(help="Webhook URL (default: this service's)")] = None,
    sample: Annotated[
        str,
        typer.Option(help=f"One of: {SAMPLE_NAMES}"),
    ] = "read.completed",
    file: Annotated[Path | None, typer.Option(help="Send this JSON file instead")] = None,
    repeat: Annotated[
        int,
        typer.Option(min=1, max=10, help="Send the same delivery this many times, as a retry"),
    ] = 1,
    delivery_id: Annotated[
        str | None, typer.Option(help="The delivery's webhook-id (default: a new one)")
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            min=0,
            max=600,
            help="Seconds to wait for the worker to process the event and the pulls it"
            " queued (reads DATABASE_URL)",
        ),
    ] = 0,
) -> None:
    """Sign an event with the configured secret and post it: how to check a deployment."""
    import httpx

    from app.sample_delivery import now_utc
    from app.webhooks.sample_signing import new_delivery_id, signed_headers

    settings = load_settings(dev_env=True)
    path = file or SAMPLES / f"{sample}.json"
    if not path.is_file():
        raise typer.BadParameter(f"no such file or sample: {path}")
    body = json.loads(path.read_text())
    body["id"] = str(uuid.uuid4())  # a fresh event, not a duplicate of the last test
    raw = json.dumps(body)
    delivery = delivery_id or new_delivery_id()
    secret = settings.codat_webhook_secrets[0].get_secret_value()
    target = url or f"http://127.0.0.1:{settings.port}{WEBHOOK_PATH}"
    for _ in range(repeat):
        try:
            response = httpx.post(
                target,
                content=raw,
                headers=signed_headers(secret, delivery, raw, now_utc()),
                timeout=15,
            )
        except httpx.HTTPError as exc:
            typer.echo(f"error: could not reach {target}: {type(exc).__name__}", err=True)
            raise typer.Exit(code=1) from None
        typer.echo(f"{response.status_code} {response.text} (delivery {delivery})")
        if response.status_code >= 300:
            raise typer.Exit(code=1)
    if wait:
        _wait_for_processing(settings, delivery, wait)


def _wait_for_processing(settings: Settings, delivery: str, timeout: float) -> None:
    from app.db import create_engine
    from app.sample_delivery import wait_until_processed

    async def work() -> tuple[bool, str]:
        engine = create_engine(settings.database_url)
        try:
            state = await wait_until_processed(engine, delivery, timeout)
        finally:
            await engine.dispose()
        return state.finished, state.summary()

    finished, summary = _run(work())
    typer.echo(summary)
    if not finished:
        raise typer.Exit(code=1)


@cli.command("check-config")
def check_config() -> None:
    """Validate the settings and the database connection, and say what is wrong (once each)."""
    from app.db import create_engine
    from app.migrate import readiness

    settings = load_settings(dev_env=True)
    typer.echo(
        f"settings: ok ({len(settings.codat_webhook_secrets)} webhook secret(s),"
        f" {len(settings.status_api_tokens)} status API token(s), Codat at"
        f" {settings.codat_base_url})"
    )
    problems = []
    if not settings.codat_api_key.get_secret_value():
        problems.append("CODAT_API_KEY is not set: the worker cannot call Codat")
    if not settings.status_api_tokens:
        problems.append("STATUS_API_TOKENS is not set: the status API refuses every request")

    async def database() -> tuple[bool, str]:
        engine = create_engine(settings.database_url)
        try:
            return await readiness(engine)
        finally:
            await engine.dispose()

    ready, reason = _run(database())
    if ready:
        typer.echo(f"database: {reason}")
    else:
        problems.append(f"database: {reason}")
    for problem in problems:
        typer.echo(f"problem: {problem}", err=True)
    if problems:
        raise typer.Exit(code=1)
    typer.echo("configuration ok")


@cli.command()
def refresh(
    company_id: Annotated[str | None, typer.Option(help="Default: every known company")] = None,
    data_type: Annotated[
        list[str] | None, typer.Option(help="Repeatable; default: every Bill Pay type")
    ] = None,
) -> None:
    """Queue refreshes of data types in Codat (the worker sends them)."""
    from app.models import utcnow
    from app.processing import commands

    settings = load_settings(dev_env=True)

    variant = settings.bill_pay_variant

    async def work(session: AsyncSession) -> tuple[list[str], int]:
        types = commands.refresh_types(data_type, variant)
        companies = [company_id] if company_id else await commands.known_company_ids(session)
        for company in companies:
            await commands.refresh_company(session, company, types, variant=variant, now=utcnow())
        return types, len(companies)

    types, count = _command(settings, work)
    typer.echo(f"queued refreshes of {', '.join(types)} for {count} compan(y/ies)")


@cli.command()
def reconcile(
    company_id: Annotated[str | None, typer.Option(help="Default: every known company")] = None,
) -> None:
    """Queue a reconcile pass: compare Codat's status with what was seen, catch up."""
    from app.models import utcnow
    from app.processing import commands

    settings = load_settings(dev_env=True)

    async def work(session: AsyncSession) -> int:
        companies = [company_id] if company_id else await commands.known_company_ids(session)
        for company in companies:
            await commands.reconcile_company(session, company, utcnow())
        return len(companies)

    typer.echo(f"queued reconcile for {_command(settings, work)} compan(y/ies)")


@cli.command()
def resume() -> None:
    """Lift the rate-limit pause on calls to Codat now (logged and announced as a change);
    what waited for it runs at once. A genuine limit returns with Codat's next 429."""
    from app.models import utcnow
    from app.processing import commands

    settings = load_settings(dev_env=True)
    configure_logging(settings.log_level, settings.log_format)

    async def work(session: AsyncSession) -> commands.Resumed:
        return await commands.resume_rate_limit(
            session, utcnow(), endpoints=settings.notify_endpoints
        )

    resumed = _command(settings, work)
    if resumed.paused_until is None:
        typer.echo("no pause in force: nothing to resume")
    else:
        typer.echo(f"resumed: the pause until {resumed.paused_until.isoformat()} is lifted")


@cli.command("register-webhook")
def register_webhook(
    public_url: Annotated[str, typer.Argument(help="e.g. https://hooks.example.com")],
) -> None:
    """Create Codat's webhook consumer for this service (or show the existing one)."""
    from app.codat.datatypes import BILL_PAY_EVENT_TYPES
    from app.codat.records import WebhookConsumer
    from app.processing.context import build_context

    settings = load_settings(dev_env=True)
    url = public_url.rstrip("/") + WEBHOOK_PATH

    async def work() -> tuple[bool, WebhookConsumer]:
        from app.db import create_engine

        engine = create_engine(settings.database_url)
        client = build_context(settings, engine).codat
        try:
            for consumer in await client.webhook_consumers():
                if consumer.url == url:
                    return False, consumer
            created = await client.create_webhook_consumer(url, list(BILL_PAY_EVENT_TYPES))
            return True, created
        finally:
            await client.aclose()
            await engine.dispose()

    created, consumer = _run(work())
    typer.echo(("created" if created else "already registered") + f": {consumer.id} {url}")
    typer.echo(f"events: {', '.join(consumer.event_types)}")
    typer.echo(
        "Codat's API does not expose the signing secret: copy it from the Portal (Monitor >"
        " Webhooks > Events > this endpoint) into CODAT_WEBHOOK_SECRETS."
    )


SANDBOX_PORT = 8100


@cli.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = SANDBOX_PORT,
    api_key: Annotated[
        str,
        typer.Option(help="The API key it accepts (Basic auth, as Codat); empty: any"),
    ] = SANDBOX_API_KEY,
    exit_with_parent: Annotated[
        bool, typer.Option(hidden=True, help="Stop when the starting process ends")
    ] = False,
    log_level: Annotated[str, typer.Option(envvar="LOG_LEVEL")] = "INFO",
    log_format: Annotated[str, typer.Option(envvar="LOG_FORMAT")] = "console",
) -> None:
    """Serve a local stand-in for Codat, for trying the service without a Codat account.

    It holds the company of the bundled sample events with records of every data type, and
    the push operations of the write samples; refreshes finish a second after they are
    queued. Point the service at it with CODAT_BASE_URL=http://HOST:PORT and
    CODAT_API_KEY=the key; `make run` does that when CODAT_API_KEY is not set. Never for
    production: it is the fake Codat the tests use.
    """
    from app.sandbox.server import serve_sandbox

    configure_logging(log_level, "json" if log_format == "json" else "console")
    run_fast(serve_sandbox(host, port, api_key or None, exit_with_parent=exit_with_parent))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
