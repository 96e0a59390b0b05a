#!/usr/bin/env bash
# The tests run against a real PostgreSQL (TEST_POSTGRES_URL, default the local one).
# Start the machine's cluster if it is installed but stopped; install it if missing.
set -euo pipefail
host=${TEST_POSTGRES_HOST:-127.0.0.1}
port=${TEST_POSTGRES_PORT:-5432}

if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
  exit 0
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "PostgreSQL is not installed; installing it from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "starting PostgreSQL $version on $host:$port" >&2
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  pg_isready -q -h "$host" -p "$port" && exit 0
  sleep 1
done
echo "PostgreSQL did not come up on $host:$port: the tests need it" >&2
exit 1
