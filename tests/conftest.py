"""Fixtures: every integration test runs on SQLite and on the real PostgreSQL.

Each run gets its own PostgreSQL database, so two runs cannot collide; if the server
cannot be reached the tests fail (they never skip), as CI must.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import create_engine
from app.main import create_app
from app.migrate import upgrade
from app.models import Base
from tests.support.oas import samples_dir
from tests.support.signing import ROTATED_SECRET, TEST_SECRET

SAMPLES_DIR = samples_dir()
# `make run` leaves its development settings in var/dev.env of the checkout, which the
# operator commands read; the tests (and the processes they start) never do.
os.environ["CODAT_WEBHOOKS_DEV_ENV"] = ""
ADMIN_POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]


def load_samples() -> dict[str, bytes]:
    found = {path.stem: path.read_bytes() for path in sorted(SAMPLES_DIR.glob("*.json"))}
    assert len(found) >= 5, f"sample events not found in {SAMPLES_DIR} (set CODAT_SHARED_DIR)"
    return found


def sample(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((SAMPLES_DIR / f"{name}.json").read_bytes())
    return result


class PostgresDatabases:
    """Creates throw-away databases on the test server and drops them at the end."""

    def __init__(self, admin_url: str) -> None:
        self._admin_url = admin_url
        self._created: list[str] = []

    async def create(self) -> str:
        import asyncpg

        name = f"codat_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(_asyncpg_dsn(self._admin_url), timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self._created.append(name)
        return make_url(self._admin_url).set(database=name).render_as_string(hide_password=False)

    async def drop_all(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(_asyncpg_dsn(self._admin_url), timeout=10)
        try:
            for name in self._created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
async def postgres_databases() -> AsyncIterator[PostgresDatabases]:
    databases = PostgresDatabases(ADMIN_POSTGRES_URL)
    yield databases
    await databases.drop_all()


async def new_database_url(
    backend: str, tmp_dir: Path, postgres_databases: PostgresDatabases, *, migrate: bool = True
) -> str:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_dir / f'{uuid.uuid4().hex[:8]}.db'}"
    else:
        url = await postgres_databases.create()
    if migrate:
        await asyncio.to_thread(upgrade, url)
    return url


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases,
) -> str:
    """One migrated database per backend for the whole run; tests clean up after them."""
    return await new_database_url(
        request.param, tmp_path_factory.mktemp(request.param), postgres_databases
    )


@pytest.fixture(scope="session")
async def shared_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def engine(shared_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    yield shared_engine
    async with shared_engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            await connection.execute(delete(table))


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "codat_webhook_secrets": f"{TEST_SECRET},{ROTATED_SECRET}",
        "webhook_max_body_bytes": 64 * 1024,
        "embedded_worker": False,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, reached through an in-process ASGI transport."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings, engine=engine)) as client:
        yield client


async def count_rows(engine: AsyncEngine, table: str = "webhook_events") -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


@pytest.fixture
def samples() -> Iterator[dict[str, bytes]]:
    yield load_samples()


# -- processing: a fake Codat on loopback, a worker, and a clock the tests control -----

API_KEY = "test-codat-api-key-do-not-log"


class Clock:
    """Real time plus an offset the tests move, so no test sleeps to see time pass.

    `set` pins it: logic that depends on the time of day is tested from fixed times,
    never from whatever hour the suite happens to run at."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    @property
    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)

    def set(self, moment: datetime) -> None:
        self.offset = moment - datetime.now(UTC)

    def set_time_of_day(self, hhmm: str) -> datetime:
        """Tomorrow (UTC) at `hhmm`: a fixed hour, and never before anything the real clock
        stamped (events are received, and so due, at real time)."""
        hour, minute = map(int, hhmm.split(":"))
        day = (datetime.now(UTC) + timedelta(days=1)).date()
        self.set(datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC))
        return self.now


@pytest.fixture(scope="session")
def fake_codat_server() -> Iterator[tuple[Any, str]]:
    from app.sandbox.fake_codat import FakeCodat, run_fake_codat

    fake = FakeCodat(api_key=API_KEY)
    with run_fake_codat(fake) as base_url:
        yield fake, base_url


@pytest.fixture
def fake_codat(fake_codat_server: tuple[Any, str]) -> Any:
    fake, _ = fake_codat_server
    fake.reset()
    return fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_context(
    engine: AsyncEngine, base_url: str, clock: Clock, *, page_size: int = 2, **overrides: Any
) -> Any:
    from app.codat.client import CodatClient
    from app.codat.gate import PauseGate
    from app.db import session_factory
    from app.processing.context import Context

    settings = make_settings(
        "sqlite://unused",
        codat_api_key=API_KEY,
        worker_retry_base_seconds=1,
        worker_retry_max_seconds=2,
        **{"pull_debounce_seconds": 0, **overrides},
    )
    client = CodatClient(
        api_key=API_KEY,
        base_url=base_url,
        gate=PauseGate(clock),
        clock=clock,
        page_size=page_size,
        retry_base_delay=0.001,
        timeout=5,
    )
    return Context(sessions=session_factory(engine), codat=client, settings=settings, clock=clock)


@pytest.fixture
async def make_ctx(
    engine: AsyncEngine, fake_codat_server: tuple[Any, str], clock: Clock
) -> AsyncIterator[Callable[..., Any]]:
    """Contexts with settings of the test's own (`make_ctx(worker_concurrency=1)`) on the
    test's database, fake Codat and clock; their clients closed after the test."""
    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        made.append(make_context(engine, fake_codat_server[1], clock, **overrides))
        return made[-1]

    yield make
    for context in made:
        await context.codat.aclose()


@pytest.fixture
async def ctx(
    engine: AsyncEngine, fake_codat_server: tuple[Any, str], fake_codat: Any, clock: Clock
) -> AsyncIterator[Any]:
    context = make_context(engine, fake_codat_server[1], clock)
    fake_codat.now = clock
    yield context
    await context.codat.aclose()
