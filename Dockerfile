# One image for every process of the service, chosen by its command:
#   docker run IMAGE            -> serve   (the webhook receiver, health checks, status API)
#   docker run IMAGE worker     -> worker  (processes stored events; run as many as needed)
#   docker run IMAGE migrate    -> migrate (one-shot: applies the database migrations)
# tests/test_deploy.py runs this file's builder commands in a fresh virtual environment
# and then the image's commands, so keep them plain `RUN` lines of shell.

# ---- builder: a virtual environment in /opt/venv with the dependencies, then the project ----
FROM python:3.11-slim-bookworm AS builder

# pip compiles the bytecode into /opt/venv here, since the runtime user cannot write there.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
RUN python -m venv /opt/venv

# The dependencies in a layer of their own: it is rebuilt only when they change, not when
# the code does. requirements.lock pins every one of them with its hashes (`make lock`
# writes it from pyproject.toml; tests/test_lock.py checks they agree), so an image holds
# exactly the reviewed versions and pip refuses any file whose hash differs.
COPY pyproject.toml requirements.lock ./
RUN /opt/venv/bin/python -m pip install --require-hashes -r requirements.lock

# The code: build the project's wheel (migrations included, as app/_migrations) and install
# it alone; its dependencies are already there.
COPY . .
RUN python -m pip wheel --no-deps --wheel-dir /tmp/dist . \
    && /opt/venv/bin/python -m pip install --no-deps /tmp/dist/*.whl

# ---- runtime: the virtual environment and nothing of the build ----
FROM python:3.11-slim-bookworm AS runtime

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    INTERNAL_HOST=0.0.0.0 \
    INTERNAL_PORT=8001 \
    LOG_FORMAT=json

# A user without a login or a home of its own; /app/var is where the SQLite default lives.
RUN groupadd --system --gid 10001 codat \
    && useradd --system --uid 10001 --gid codat --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin codat \
    && mkdir -p /app/var \
    && chown codat:codat /app/var

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Numeric, so that a runtime (e.g. Kubernetes runAsNonRoot) can tell it is not root.
USER 10001:10001
# 8000: the webhook and health checks, the only port to publish. 8001: the status API,
# /metrics and /docs (INTERNAL_PORT, set above so that the image is split by default;
# keep that port internal).
EXPOSE 8000 8001

# `codat-webhooks` is PID 1 (exec form): SIGTERM reaches it directly. `serve` then stops
# taking connections and finishes requests in flight (up to 20 s); `worker` finishes the
# event in hand (WORKER_SHUTDOWN_GRACE_SECONDS, 20 s). Give `docker stop` 30 s.
STOPSIGNAL SIGTERM

# /healthz says the process answers (never the database: that is /readyz). No curl in a
# slim image, so Python asks; PORT is read when the check runs. Meaningful for `serve` only:
# compose.yaml turns it off for `worker` and `migrate`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

ENTRYPOINT ["codat-webhooks"]
CMD ["serve"]
