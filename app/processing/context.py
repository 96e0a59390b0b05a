"""What every handler gets: sessions, the Codat client, the settings and a clock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.changes.record import record_change
from app.codat.client import CodatClient
from app.config import Settings
from app.db import Executor, session_factory
from app.models import utcnow

log = logging.getLogger(__name__)


class InvalidWork(Exception):
    """Work that can never be done (no retry would help): it goes dead at once."""


class InvalidEvent(InvalidWork):
    """An event whose payload cannot be processed."""


class InvalidJob(InvalidWork):
    """A job without what its kind needs (a company, a data type), or of no known kind."""


@dataclass
class Context:
    sessions: async_sessionmaker[AsyncSession]
    codat: CodatClient
    settings: Settings
    clock: Callable[[], datetime] = field(default=utcnow)

    @property
    def engine(self) -> AsyncEngine:
        """For the worker's bookkeeping, done on plain connections (cheaper than sessions)."""
        engine: AsyncEngine = self.sessions.kw["bind"]
        return engine

    async def record_change(
        self, session: Executor, change_type: str, company_id: str | None, data: dict[str, Any]
    ) -> None:
        """Announce a change in the caller's transaction, to the endpoints that want it."""
        await record_change(
            session,
            change_type,
            company_id=company_id,
            data=data,
            now=self.clock(),
            endpoints=self.settings.notify_endpoints,
        )


def build_context(settings: Settings, engine: AsyncEngine) -> Context:
    """The production wiring: the Codat client from settings, sessions on `engine`."""
    api_key = settings.codat_api_key.get_secret_value()
    if not api_key:
        log.warning("CODAT_API_KEY is not set: every call to Codat will be refused")
    client = CodatClient(
        api_key=api_key,
        base_url=settings.codat_base_url,
        timeout=settings.codat_timeout_seconds,
        max_concurrency=settings.codat_max_concurrency,
        page_size=settings.codat_page_size,
    )
    return Context(sessions=session_factory(engine), codat=client, settings=settings)
