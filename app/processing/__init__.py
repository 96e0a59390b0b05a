"""Processing: the worker, claiming and leases, retries, and one handler per event type."""
