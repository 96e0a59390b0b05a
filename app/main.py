"""create_app(): the routes and the lifespan that owns the engine and the writer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api import health
from app.config import Settings, get_settings
from app.db import create_engine
from app.webhooks.route import Receiver, codat_webhook_endpoint
from app.webhooks.signature import SignatureVerifier
from app.webhooks.store import EventWriter

WEBHOOK_PATH = "/webhooks/codat"


def create_app(settings: Settings | None = None, *, engine: AsyncEngine | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        app.state.engine = engine or create_engine(settings.database_url)
        writer = EventWriter(app.state.engine)
        writer.start()
        app.state.receiver = Receiver(
            verifier=SignatureVerifier(
                [secret.get_secret_value() for secret in settings.codat_webhook_secrets]
            ),
            writer=writer,
            max_body_bytes=settings.webhook_max_body_bytes,
        )
        try:
            yield
        finally:
            await writer.close()
            if own_engine:
                await app.state.engine.dispose()

    app = FastAPI(
        title="Codat Bill Pay webhook receiver",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_route(WEBHOOK_PATH, codat_webhook_endpoint, methods=["POST"], include_in_schema=False)
    app.include_router(health.router)
    return app
