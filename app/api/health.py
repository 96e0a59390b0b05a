"""Liveness and readiness, for load balancers and the container's HEALTHCHECK."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.migrate import readiness

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    responses={
        200: {"content": {"application/json": {"example": {"status": "ok"}}}},
        503: {
            "description": "The embedded worker stopped: restart the process",
            "content": {
                "application/json": {
                    "example": {
                        "status": "failed",
                        "reason": "embedded worker stopped: lease renewal",
                    }
                }
            },
        },
    },
)
async def healthz(request: Request) -> JSONResponse:
    """The process is up (liveness); says nothing about the database on purpose. Fails
    only when the embedded worker stopped on its own: a restart is what it needs."""
    runtime = getattr(request.app.state, "runtime", None)
    failure = getattr(runtime, "worker_failure", None)
    if failure:
        return JSONResponse({"status": "failed", "reason": failure}, status_code=503)
    return JSONResponse({"status": "ok"})


def _readiness_answer(description: str, status: str, reason: str) -> dict[str, Any]:
    example = {"status": status, "reason": reason}
    return {"description": description, "content": {"application/json": {"example": example}}}


@router.get(
    "/readyz",
    responses={
        200: _readiness_answer("Ready", "ready", "ready"),
        503: _readiness_answer(
            "Not ready: the database is unreachable or its schema is not this code's",
            "not ready",
            "schema at 0007, expected 0008: run `codat-webhooks migrate`",
        ),
    },
)
async def readyz(request: Request) -> JSONResponse:
    """Ready (readiness) means the database answers and its schema is the one this code
    expects."""
    ready, reason = await readiness(request.app.state.engine)
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "reason": reason},
        status_code=200 if ready else 503,
    )
