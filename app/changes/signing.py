"""Standard Webhooks signatures for the notifications this service sends.

`standardwebhooks` (the Standard Webhooks reference library, no dependencies) signs here,
not `svix`: only app/webhooks knows Svix, the sender of what we receive. The signature
is the same scheme, so a consumer verifies with either library's `Webhook.verify`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from standardwebhooks.webhooks import Webhook


def notification_body(change_type: str, change_id: str, at: datetime, data: Any) -> str:
    """`{"type", "id", "timestamp", "data"}`, the body each endpoint receives."""
    return json.dumps(
        {"type": change_type, "id": change_id, "timestamp": at.isoformat(), "data": data},
        separators=(",", ":"),
    )


def signed_headers(secret: str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers (the id is the change id: consumers dedupe on it)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body),
        "content-type": "application/json",
    }
