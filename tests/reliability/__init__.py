"""The reliability suite: load, database loss, worker crashes, Codat faults, bad input.

Every test here drives the real service (`codat-webhooks serve` / `worker` processes on
loopback) with real Svix signatures, and adds its section to the report that the session
writes at the end (docs/reliability-report.md at full size, RELIABILITY_FULL=1).
"""
