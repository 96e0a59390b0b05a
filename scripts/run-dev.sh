#!/usr/bin/env bash
# `make run`: the whole service on SQLite, with development settings where none are given.
#
# Anything set in the environment wins. A missing webhook secret or status API token gets a
# development value, and a missing CODAT_API_KEY the local Codat sandbox
# (`codat-webhooks sandbox`), each said in one line. The development values chosen here
# (never secrets given) and the port go to var/dev.env, where the commands of the README's
# walkthrough, run from this checkout in another shell, find them. The production image runs
# `codat-webhooks serve` itself: nothing here, so never the sandbox.
set -euo pipefail
bin=${VENV:-.venv}/bin
dev_env=var/dev.env
dev_secret=whsec_Y29kYXQtd2ViaG9va3MtZGV2LW9ubHkh
dev_token=dev-status-token
sandbox_port=${SANDBOX_PORT:-8100}
sandbox_key=codat-sandbox-key

mkdir -p var
chosen=()
if [ -z "${CODAT_WEBHOOK_SECRETS:-}" ]; then
  export CODAT_WEBHOOK_SECRETS=$dev_secret
  chosen+=("CODAT_WEBHOOK_SECRETS=$dev_secret")
  echo "Using the development webhook secret: $dev_secret"
fi
if [ -z "${STATUS_API_TOKENS:-}" ]; then
  export STATUS_API_TOKENS=$dev_token
  chosen+=("STATUS_API_TOKENS=$dev_token")
  # The dashboard is on the listener of the status API: the internal one when there is one.
  ui="http://${HOST:-127.0.0.1}:${PORT:-8000}/ui"
  [ -z "${INTERNAL_PORT:-}" ] || ui="http://${INTERNAL_HOST:-127.0.0.1}:$INTERNAL_PORT/ui"
  echo "Using the development status API token: $dev_token (sign in to the dashboard with it: $ui)"
fi
if [ -z "${CODAT_API_KEY:-}" ]; then
  export CODAT_API_KEY=$sandbox_key CODAT_BASE_URL=http://127.0.0.1:$sandbox_port
  chosen+=("CODAT_API_KEY=$sandbox_key" "CODAT_BASE_URL=$CODAT_BASE_URL")
  echo "No CODAT_API_KEY: calling the local Codat sandbox at $CODAT_BASE_URL" \
    "(codat-webhooks sandbox; its company is the sample events' 0498e921-9b53-4396-a412-4f2f5983b0a2)"
  # It stops when serve (this shell, after the exec below) ends, however that ends.
  LOG_LEVEL=WARNING "$bin/codat-webhooks" sandbox --port "$sandbox_port" \
    --api-key "$sandbox_key" --exit-with-parent &
fi
# The port too, so that `send-test-event` posts where this service listens.
printf '%s\n' ${chosen[@]+"${chosen[@]}"} "PORT=${PORT:-8000}" > "$dev_env.tmp"
mv "$dev_env.tmp" "$dev_env"

export LOG_FORMAT=${LOG_FORMAT:-console}
"$bin/codat-webhooks" migrate
exec "$bin/codat-webhooks" serve
