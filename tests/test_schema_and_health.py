"""The schema comes only from Alembic; /healthz and /readyz tell the truth about it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine
from app.main import create_app
from app.migrate import downgrade, head_revision, upgrade
from app.models import Base
from tests.conftest import BACKENDS, PostgresDatabases, make_settings, new_database_url, running


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_migrations_build_the_schema_and_tear_it_down(
    backend: str, tmp_path: Path, postgres_databases: PostgresDatabases
) -> None:
    url = await new_database_url(backend, tmp_path, postgres_databases, migrate=False)
    await asyncio.to_thread(upgrade, url)
    assert set(Base.metadata.tables) <= await table_names(url)
    await asyncio.to_thread(downgrade, url, "base")
    assert await table_names(url) <= {"alembic_version"}
    await asyncio.to_thread(upgrade, url)  # and up again, as an upgrade after a rollback
    assert set(Base.metadata.tables) <= await table_names(url)


async def test_healthz_and_readyz_on_a_migrated_database(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_readyz_refuses_a_database_behind_the_code(
    backend: str, tmp_path: Path, postgres_databases: PostgresDatabases
) -> None:
    url = await new_database_url(backend, tmp_path, postgres_databases, migrate=False)
    async with running(create_app(make_settings(url))) as client:
        assert (await client.get("/healthz")).status_code == 200
        not_migrated = await client.get("/readyz")
        assert not_migrated.status_code == 503
        await asyncio.to_thread(upgrade, url)
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.json()


def test_head_revision_is_known() -> None:
    assert head_revision() is not None


async def test_the_shared_engine_is_at_head(engine: AsyncEngine) -> None:
    from app.migrate import current_revision

    assert await current_revision(engine) == head_revision()


async def test_healthz_fails_once_the_embedded_worker_stopped_on_its_own(
    database_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose lease renewal died stopped (and said why): liveness tells the
    orchestrator to restart the process, rather than receiving with nobody processing."""

    async def broken_renewal(*args: object, **kwargs: object) -> None:
        raise RuntimeError("renewal bug")

    monkeypatch.setattr("app.processing.queues.renew_leases", broken_renewal)
    settings = make_settings(database_url, embedded_worker=True, worker_lease_seconds=0.3)
    async with running(create_app(settings, engine=engine)) as client:
        for _ in range(100):
            answer = await client.get("/healthz")
            if answer.status_code != 200:
                break
            await asyncio.sleep(0.05)
        assert answer.status_code == 503
        assert answer.json() == {
            "status": "failed",
            "reason": "embedded worker stopped: lease renewal",
        }
        assert (await client.get("/readyz")).status_code == 200, "the database is fine"
