#!/usr/bin/env bash
# Run in-process tests with the machine's clock moved (libfaketime) to hours that once
# broke the suite: just after midnight, early morning, just before the day ends (UTC).
# Usage: scripts/test-at-hours.sh [pytest arguments] (default: the freshness tests).
# Tests that start worker processes against PostgreSQL are left out: PostgreSQL's own
# clock is not faked, so the skew would be the tool's, not the service's.
set -euo pipefail
cd "$(dirname "$0")/.."
today=$(date -u +%F)
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(tests/test_freshness.py)
for hhmm in 00:05 02:30 23:55; do
  echo "== at $today $hhmm UTC: pytest ${args[*]}"
  TZ=UTC faketime -f "@$today $hhmm:00" .venv/bin/pytest -q -p no:cacheprovider "${args[@]}"
done
