"""Run Alembic from code: the `migrate` command, the tests and `/readyz` use it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine


def _migrations_dir() -> Path:
    """Inside an installed wheel the scripts ship as `app/_migrations`."""
    packaged = Path(__file__).parent / "_migrations"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_migrations_dir()))
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return result.scalar_one_or_none()


async def readiness(engine: AsyncEngine) -> tuple[bool, str]:
    """Whether the database answers with this code's schema, and why not: `/readyz` and
    `check-config` say the same."""
    try:
        current = await current_revision(engine)
    except (SQLAlchemyError, OSError) as exc:
        return False, f"database unreachable or not migrated ({type(exc).__name__})"
    head = head_revision()
    if current != head:
        return False, f"schema at {current}, expected {head}: run `codat-webhooks migrate`"
    return True, "ready"
