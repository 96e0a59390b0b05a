"""The HTTP edge as a client on the network meets it (app/server.py): slow clients, large
headers and bodies cost the service a bounded wait and a bounded number of bytes, and a
genuine delivery still gets through. Real uvicorn on loopback, raw sockets, both databases.

The deadlines here are a fraction of a second so that the tests are quick; every wait
for the server to act is bounded by WAIT, generous for a busy machine."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.server import SINGLE_LISTENER_WARNING, build_servers
from tests.conftest import count_rows, make_settings, sample
from tests.support.ports import free_port
from tests.support.signing import sign

DEADLINE = 0.5
WAIT = 15.0
KIB = 1024


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[list[uvicorn.Server]]:
    servers = build_servers(settings, "127.0.0.1", settings.port)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        while not all(server.started for server in servers):
            assert not any(task.done() for task in tasks), "a listener failed to start"
            await asyncio.sleep(0.01)
        yield servers
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks)


def edge_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "port": free_port(),
        "http_headers_timeout_seconds": DEADLINE,
        "http_body_timeout_seconds": DEADLINE,
        "webhook_max_body_bytes": 64 * KIB,
    }
    return make_settings(database_url, **(values | overrides))


@pytest.fixture
async def edge(database_url: str, engine: AsyncEngine) -> AsyncIterator[Settings]:
    settings = edge_settings(database_url)
    async with serving(settings):
        yield settings


async def connect(settings: Settings) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", settings.port)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server says until it closes the connection (bounded by WAIT)."""
    return await asyncio.wait_for(reader.read(), WAIT)


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    """Send one byte at a time, as a slowloris client does, until the server hangs up;
    what it said before it did."""
    answer = asyncio.create_task(until_closed(reader))
    deadline = time.monotonic() + WAIT
    for byte in data:
        if answer.done():
            break
        assert time.monotonic() < deadline, "the server held a trickling client"
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.05)
    return await answer


def request_head(path: str, headers: dict[str, str], length: int | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: edge.test"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def delivery() -> tuple[bytes, dict[str, str]]:
    body = json.dumps(sample("read.completed")).encode()
    return body, sign(body)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(
        (name.lower(), value.strip())
        for name, _, value in (line.partition(":") for line in header_lines if line)
    )
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def timed(action: Awaitable[bytes]) -> tuple[bytes, float]:
    started = time.monotonic()
    said = await action
    return said, time.monotonic() - started


# -- slow clients ---------------------------------------------------------------------------


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    edge: Settings,
) -> None:
    reader, _ = await connect(edge)
    said, took = await timed(until_closed(reader))
    assert said.startswith(b"HTTP/1.1 408 "), said
    assert took < WAIT


async def test_trickled_headers_are_cut_off_at_the_header_deadline(
    edge: Settings, engine: AsyncEngine
) -> None:
    body, headers = delivery()
    reader, writer = await connect(edge)
    said = await trickle(reader, writer, request_head("/webhooks/codat", headers, len(body)))
    assert said.startswith(b"HTTP/1.1 408 "), said
    assert await count_rows(engine) == 0


async def test_a_trickled_body_is_cut_off_at_the_body_deadline_with_no_error_logged(
    edge: Settings, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    body, headers = delivery()
    reader, writer = await connect(edge)
    writer.write(request_head("/webhooks/codat", headers, len(body)))
    with caplog.at_level(logging.DEBUG):
        said = await trickle(reader, writer, body)
        await asyncio.sleep(0.1)  # the request's handler sees the disconnect
    assert said == b"", "nothing is answered beside a handler still reading"
    assert await count_rows(engine) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("disconnected before its body" in r.getMessage() for r in caplog.records)


async def test_slow_clients_holding_every_slot_are_dropped_and_a_genuine_delivery_then_lands(
    database_url: str, engine: AsyncEngine
) -> None:
    """With its connections all held by clients that send nothing, a server answers 503
    (Codat retries); once the header deadline drops them, the delivery is stored."""
    settings = edge_settings(database_url, http_max_connections=4, http_headers_timeout_seconds=1)
    async with serving(settings):
        idle = [await connect(settings) for _ in range(4)]
        body, headers = delivery()
        reader, writer = await connect(settings)
        writer.write(request_head("/webhooks/codat", headers, len(body)) + body)
        status, _, _ = await read_response(reader)
        assert status == 503
        writer.close()
        for idle_reader, _ in idle:
            assert (await until_closed(idle_reader)).startswith(b"HTTP/1.1 408 ")
        reader, writer = await connect(settings)
        writer.write(request_head("/webhooks/codat", headers, len(body)) + body)
        status, _, answer = await read_response(reader)
        writer.close()
    assert (status, json.loads(answer)) == (200, {"status": "stored"})
    assert await count_rows(engine) == 1


# -- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/webhooks/codat", "/api/v1/events", "/healthz"])
async def test_headers_over_16_kib_are_a_431_and_the_connection_closed(
    edge: Settings, path: str
) -> None:
    reader, writer = await connect(edge)
    writer.write(request_head(path, {"X-Padding": "a" * 17 * KIB}, 0))
    said = await until_closed(reader)
    assert said.startswith(b"HTTP/1.1 431 "), said


async def test_a_100_mb_header_is_refused_after_a_few_of_its_bytes(edge: Settings) -> None:
    """httptools grew such a header value by concatenation and stalled the event loop for
    seconds; the head is now counted before the parser sees it."""
    _, writer = await connect(edge)
    writer.write(b"POST /webhooks/codat HTTP/1.1\r\nX-Big: ")
    chunk, sent = b"a" * (64 * KIB), 0
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        while sent < 100 * KIB * KIB:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), WAIT)
            sent += len(chunk)
            await asyncio.sleep(0)  # let the server read
    took = time.monotonic() - started
    # What the kernel's socket buffers take before the server's close is seen, no more.
    assert sent < 32 * KIB * KIB, sent
    assert took < WAIT
    # The loop is free: the same server answers at once.
    other_reader, other_writer = await connect(edge)
    other_writer.write(b"GET /healthz HTTP/1.1\r\nHost: edge.test\r\n\r\n")
    status, _, _ = await read_response(other_reader)
    assert status == 200


async def test_genuine_deliveries_with_large_headers_and_a_body_in_one_write_are_stored(
    edge: Settings, engine: AsyncEngine
) -> None:
    """Headers just under the cap, the body sent with them (~60 KiB, more than any head
    could be), twice on one kept-alive connection: the head count ends at the headers."""
    reader, writer = await connect(edge)
    for _ in range(2):
        event = sample("read.completed")
        event["padding"] = "p" * (60 * KIB)
        body = json.dumps(event).encode()
        headers = {**sign(body), "X-Padding": "h" * (15 * KIB)}
        writer.write(request_head("/webhooks/codat", headers, len(body)) + body)
        status, _, answer = await read_response(reader)
        assert (status, json.loads(answer)) == (200, {"status": "stored"})
    writer.close()
    assert await count_rows(engine) == 2


async def test_a_webhook_body_over_the_cap_is_a_413_and_the_connection_closed(
    edge: Settings, engine: AsyncEngine
) -> None:
    body, headers = delivery()
    reader, writer = await connect(edge)
    writer.write(request_head("/webhooks/codat", headers, 100 * KIB * KIB) + body)
    status, response_headers, _ = await read_response(reader)
    assert status == 413
    assert response_headers["connection"] == "close"
    assert await until_closed(reader) == b"", "no further request is read on it"
    assert await count_rows(engine) == 0


# -- one listener or two ---------------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True])
def test_one_listener_for_everything_is_said_at_start_up(
    database_url: str, split: bool, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(database_url, internal_port=free_port() if split else None)
    with caplog.at_level(logging.WARNING, logger="app.server"):
        servers = build_servers(settings, "127.0.0.1", free_port())
    assert len(servers) == (2 if split else 1)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ([] if split else [SINGLE_LISTENER_WARNING])
