"""Prometheus metrics, defined once per process so every part counts into the same ones."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOKS_RECEIVED = Counter(
    "codat_webhooks_received_total",
    "Webhook deliveries by event type and outcome (stored, duplicate, unprocessable, "
    "rejected_signature, rejected_size, unavailable).",
    ["event_type", "outcome"],
)
