"""Real Svix signatures for test deliveries, made with the svix package itself."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from svix.webhooks import Webhook

TEST_SECRET = "whsec_dGVzdC1zZWNyZXQtZm9yLWNvZGF0LXdlYmhvb2tz"
ROTATED_SECRET = "whsec_cm90YXRlZC1zZWNyZXQtZm9yLWNvZGF0LWhvb2tz"
WRONG_SECRET = "whsec_d3Jvbmctc2VjcmV0LW5vdC1jb25maWd1cmVkLWhlcmU="


def sign(
    body: bytes,
    *,
    secret: str = TEST_SECRET,
    msg_id: str | None = None,
    timestamp: datetime | None = None,
    prefix: str = "webhook",
) -> dict[str, str]:
    """Headers exactly as Codat (Svix) sends them: id, timestamp, `v1,` signature."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = timestamp or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, timestamp, body.decode())
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(timestamp.timestamp())),
        f"{prefix}-signature": signature,
        "content-type": "application/json",
    }
