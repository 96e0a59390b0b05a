"""Serving the sandbox on a port of its own, as `codat-webhooks sandbox` (and `make run`
without a Codat key) does.

Two things make it behave like a Codat tenant over time rather than a frozen fixture: a
refresh the service queues is finished a moment later, as Codat's read would be; and with
`exit_with_parent` it stops when the process that started it is gone, so that `make run`
never leaves it behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import uvicorn

from app.sandbox.demo import seed
from app.sandbox.fake_codat import FakeCodat

log = logging.getLogger(__name__)

#: How long a queued refresh takes in the sandbox (Codat's take minutes; nobody waits here).
REFRESH_SECONDS = 1.0


def finish_queued_pulls(fake: FakeCodat) -> int:
    """Complete every pull in progress, as Codat does once its read is done; how many."""
    finished = 0
    for company_id, data_type in fake.queued_pulls:
        with contextlib.suppress(KeyError):  # finished meanwhile
            fake.finish_pull(company_id, data_type)
            finished += 1
    return finished


async def _finish_pulls_forever(fake: FakeCodat) -> None:
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        finish_queued_pulls(fake)


async def _until_orphaned(server: uvicorn.Server, parent: int) -> None:
    """Stop the server when the parent process ends (the child is then re-parented)."""
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            break
    log.info("the process that started the sandbox ended: stopping")
    server.should_exit = True


async def serve_sandbox(
    host: str, port: int, api_key: str | None, *, exit_with_parent: bool = False
) -> None:
    fake = FakeCodat(api_key=api_key)
    company = seed(fake)
    config = uvicorn.Config(
        fake.app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        interface="asgi3",
    )
    server = uvicorn.Server(config)
    helpers = [asyncio.create_task(_finish_pulls_forever(fake))]
    if exit_with_parent:
        helpers.append(asyncio.create_task(_until_orphaned(server, os.getppid())))
    log.info(
        "Codat sandbox serving",
        extra={
            "url": f"http://{host}:{port}",
            "company_id": company.id,
            "company": company.name,
            "data_types": len(company.data_types),
        },
    )
    try:
        await server.serve()
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
