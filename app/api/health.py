"""Liveness and readiness, for load balancers and the container's HEALTHCHECK."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.migrate import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up; says nothing about the database on purpose."""
    return {"status": "ok"}


async def readiness(engine: AsyncEngine) -> tuple[bool, str]:
    try:
        current = await current_revision(engine)
    except (SQLAlchemyError, OSError) as exc:
        return False, f"database unreachable or not migrated ({type(exc).__name__})"
    head = head_revision()
    if current != head:
        return False, f"schema at {current}, expected {head}: run `codat-webhooks migrate`"
    return True, "ready"


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready means the database answers and its schema is the one this code expects."""
    ready, reason = await readiness(request.app.state.engine)
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "reason": reason},
        status_code=200 if ready else 503,
    )
