"""Prometheus metrics, defined once per process so every part counts into the same ones."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS_RECEIVED = Counter(
    "codat_webhooks_received_total",
    "Webhook deliveries by event type (Codat's documented ones, else other) and outcome "
    "(stored, duplicate, duplicate_mismatch, unprocessable, rejected_signature, rejected_size, "
    "rejected_delivery_id, unavailable).",
    ["event_type", "outcome"],
)
CODAT_CALLS = Counter(
    "codat_api_calls_total",
    "Calls to Codat's API by operation and HTTP status (or 'error' without an answer).",
    ["operation", "status"],
)
WORK_DONE = Counter(
    "codat_work_processed_total",
    "Events and jobs the worker finished, by kind (event type or job kind) and outcome "
    "(processed, ignored, retry, dead, paused).",
    ["queue", "kind", "outcome"],
)
WORK_SECONDS = Histogram(
    "codat_work_duration_seconds",
    "Time a worker spent on one event or job.",
    ["queue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
QUEUE_DEPTH = Gauge(
    "codat_queue_depth",
    "Events and jobs waiting (pending) or in hand (processing), read at scrape time.",
    ["queue", "status"],
)
OLDEST_DUE_AGE = Gauge(
    "codat_queue_oldest_due_age_seconds",
    "How long the oldest due, unclaimed item has waited; 0 when none is due.",
    ["queue"],
)
CODAT_PAUSED = Gauge(
    "codat_client_paused", "1 while calls to Codat are paused (rate limit or 429), else 0."
)
DEAD_ITEMS = Gauge("codat_dead_total", "Events and jobs that gave up (dead).", ["queue"])
MISSED_WEBHOOKS = Counter(
    "codat_missed_webhooks_total",
    "Catch-ups made by reconcile: reads and write outcomes whose webhook never arrived. "
    "Above zero means deliveries are being lost.",
    ["kind"],
)
# Known from the start, so that the first catch-up shows as an increase (an alert on
# `increase()` does not see a series that is born at 1).
for _kind in ("read.completed", "write"):
    MISSED_WEBHOOKS.labels(kind=_kind)
REFRESHES = Counter(
    "codat_refreshes_requested_total",
    "Refreshes asked of Codat, by why (write, incomplete_read, sweep, api).",
    ["reason"],
)
DATA_TYPES_OVERDUE = Gauge(
    "codat_data_types_overdue",
    "Bill Pay data types of active companies neither pulled nor read complete within "
    "FRESHNESS_MAX_AGE, read at scrape time.",
    ["data_type"],
)
LAST_WEBHOOK_RECEIVED = Gauge(
    "codat_last_webhook_received_timestamp_seconds",
    "Unix time the newest stored delivery was received (0 when none is stored), read at "
    "scrape time.",
)
ACTIVE_COMPANIES = Gauge(
    "codat_active_companies", "Companies whose status is active, read at scrape time."
)
NOTIFICATIONS = Counter(
    "codat_notifications_total",
    "Deliveries of changes to internal endpoints, by endpoint (URL without its query) and "
    "outcome (delivered, retry, dead).",
    ["endpoint", "outcome"],
)
OLDEST_UNDELIVERED_AGE = Gauge(
    "codat_notifications_oldest_undelivered_age_seconds",
    "Age of the oldest change not yet delivered to an endpoint that wants it (0 if none).",
)
