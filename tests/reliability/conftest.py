"""Fixtures of the reliability suite: its size, the report, processes, a fake Codat."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine
from app.sandbox.fake_codat import FakeCodat, run_fake_codat
from tests.conftest import API_KEY, PostgresDatabases, new_database_url
from tests.reliability.postgres import ThrowawayPostgres
from tests.reliability.processes import Processes
from tests.reliability.report import FULL_REPORT_PATH, Report
from tests.reliability.sizes import SeededRandom, Size, current_size, full_size

_written: list[Path] = []


@pytest.fixture(scope="session")
def size() -> Size:
    return current_size()


@pytest.fixture(scope="session", autouse=True)
def reliability_report(size: Size, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    """Written at the end of the session: docs/ at full size, else a temporary file (or
    RELIABILITY_REPORT), so that CI runs leave the working tree alone."""
    report = Report(size)
    yield report
    if full_size():
        path = FULL_REPORT_PATH
    elif os.environ.get("RELIABILITY_REPORT"):
        path = Path(os.environ["RELIABILITY_REPORT"])
    else:
        path = tmp_path_factory.getbasetemp() / "reliability-report.md"
    report.write(path)
    _written.append(path)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for path in _written:
        terminalreporter.write_line(f"reliability report written to {path}")


@pytest.fixture
def rng() -> SeededRandom:
    """Seeded per test (RELIABILITY_SEED to replay a run); the seed goes into the report."""
    seed = int(os.environ.get("RELIABILITY_SEED") or random.SystemRandom().randrange(1 << 32))
    return SeededRandom(seed)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def live_codat() -> Iterator[tuple[FakeCodat, str]]:
    """A fake Codat of this test's own, served on loopback in a thread."""
    fake = FakeCodat(api_key=API_KEY)
    with run_fake_codat(fake) as base_url:
        yield fake, base_url


@pytest.fixture
async def postgres_url(tmp_path: Path, postgres_databases: PostgresDatabases) -> str:
    """A fresh, migrated database on the test PostgreSQL server (dropped at session end)."""
    return await new_database_url("postgresql", tmp_path, postgres_databases)


@pytest.fixture
async def postgres_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A cluster of this test's own; stopped and deleted at the end, whatever happened.
    Request it before `processes`, so the service stops before its database goes."""
    cluster = ThrowawayPostgres()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
