"""What every handler gets: sessions, the Codat client, the settings and a clock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.codat.client import CodatClient
from app.config import Settings
from app.db import session_factory
from app.models import utcnow

log = logging.getLogger(__name__)


class InvalidEvent(Exception):
    """An event that can never be processed (no retry would help): it goes dead at once."""


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
