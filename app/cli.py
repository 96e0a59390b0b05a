"""The console script `codat-webhooks`: one entry point for every process the service runs."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError

from app.config import DatabaseSettings, Settings, get_settings
from app.logs import configure_logging

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def load_settings() -> Settings:
    """Settings, or a one-line error naming the variable, and exit code 2."""
    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        typer.echo(f"error: invalid configuration: {problems}", err=True)
        raise typer.Exit(code=2) from None


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: PORT)")] = None,
) -> None:
    """Serve the webhook route, health checks and the status API."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    from app.main import create_app

    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=settings.port if port is None else port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )


@cli.command()
def worker() -> None:
    """Process stored events on their own (several may share one PostgreSQL)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run_worker(settings))


async def run_worker(settings: Settings) -> None:
    from app.db import create_engine
    from app.processing.context import build_context
    from app.processing.worker import Worker

    engine = create_engine(settings.database_url)
    worker = Worker(build_context(settings, engine))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await worker.run(stop)
    finally:
        await worker.ctx.codat.aclose()
        await engine.dispose()


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply the database migrations (safe to run again; a no-op when up to date)."""
    from app.migrate import upgrade

    upgrade(DatabaseSettings().database_url, revision)
    typer.echo(f"database migrated to {revision}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
