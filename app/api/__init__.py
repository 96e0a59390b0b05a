"""The internal HTTP API: the status API and change feed under /api/v1, health checks,
metrics and the offline docs."""
