#!/usr/bin/env bash
# Debian tools the tests drive, installed when missing (as ensure-postgres.sh does for
# PostgreSQL): faketime runs the suite at other hours of the day; promtool (package
# prometheus) checks and unit-tests the alerting rules; chromium is the browser the
# dashboard's tests drive through Playwright (Playwright's own browser download is not
# used: it cannot be fetched on these machines).
set -euo pipefail
missing=()
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-liberation)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian's packages (as the tests need them)" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "not root: install ${missing[*]} (apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  # No recommends: the tests need the tools, not the services they suggest.
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi
