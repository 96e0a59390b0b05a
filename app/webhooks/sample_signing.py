"""Signing a test delivery (`send-test-event`) as Codat signs its own: with svix, beside
the verifier, the one part of the service that knows Svix."""

from __future__ import annotations

import uuid
from datetime import datetime

from svix.webhooks import Webhook


def new_delivery_id() -> str:
    return f"msg_test_{uuid.uuid4().hex}"


def signed_headers(secret: str, delivery_id: str, body: str, now: datetime) -> dict[str, str]:
    """The headers of one delivery attempt (a retry is signed again, same id)."""
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(delivery_id, now, body),
        "content-type": "application/json",
    }
