"""The HTTP server at the edge: uvicorn, with the deadlines and limits it lacks.

uvicorn times out only an idle keep-alive connection: a client that connects and sends
nothing, trickles its headers or trickles its body was held for as long as it liked (1,000
half-sent bodies were all still held after 30 s, and with a small file limit a genuine
delivery then failed). And httptools grows a header value by concatenation: a 100 MB
header stalled the event loop for seconds. `EdgeProtocol` adds, per request, a deadline
for the headers and one for the body, and a cap on the header block that is counted before
the parser sees a byte. Codat sends a ~1 KB body at once, so none of these is ever near.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import Settings

log = logging.getLogger(__name__)

HEAD_END = b"\r\n\r\n"
REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """What one request may take of the server before it has been read."""

    headers_timeout: float
    body_timeout: float
    max_header_bytes: int


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge's deadlines and header cap."""

    limits: ClassVar[EdgeLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request line and headers (or waiting for them)
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far: its end may span two reads
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a byte is held no longer than a slow head.
        self._arm(self.limits.headers_timeout, head=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused: nothing more is parsed
        if self._in_head and not self._count_head(data):
            return
        super().data_received(data)

    def _count_head(self, data: bytes) -> bool:
        """Count the head's bytes in `data` before httptools sees them; False if refused."""
        if self._deadline is None:  # the next request on a kept-alive connection begins
            self._arm(self.limits.headers_timeout, head=True)
        joined = self._tail + data if self._tail else data
        end = joined.find(HEAD_END)
        if end < 0:
            self._head_bytes += len(data)
            self._tail = joined[-(len(HEAD_END) - 1) :]
        else:
            self._head_bytes += end + len(HEAD_END) - len(self._tail)
            self._tail = b""
        if self._head_bytes > self.limits.max_header_bytes:
            log.debug("request refused: headers over %d bytes", self.limits.max_header_bytes)
            self._refuse(431)
            return False
        return True

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._tail = False, 0, b""
        self._arm(self.limits.body_timeout, head=False)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        super().on_message_complete()

    def _arm(self, seconds: float, *, head: bool) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, head)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, head: bool) -> None:
        self._deadline = None
        log.debug("connection closed: its %s took too long", "headers" if head else "body")
        if head:
            self._refuse(408)
        elif not self.transport.is_closing():
            # The request's handler is waiting for the rest: it sees a disconnect. No
            # answer is written beside whatever the handler may be writing.
            self.transport.close()

    def _refuse(self, status: int) -> None:
        """An error and the connection closed, unless a response is still being written
        on it (a pipelined request): then only closed."""
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                % (status, REASONS[status])
            )
        self.transport.close()


def edge_limits(settings: Settings) -> EdgeLimits:
    return EdgeLimits(
        headers_timeout=settings.http_headers_timeout_seconds,
        body_timeout=settings.http_body_timeout_seconds,
        max_header_bytes=settings.http_max_header_bytes,
    )


def edge_protocol(limits: EdgeLimits) -> type[EdgeProtocol]:
    """The protocol class uvicorn instantiates per connection, with these limits."""
    return type("EdgeProtocol", (EdgeProtocol,), {"limits": limits})


def server_config(app: Any, host: str, port: int, settings: Settings) -> uvicorn.Config:
    """One listener, with every wait and size bounded (DESIGN.md, answers to bad input)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=edge_protocol(edge_limits(settings)),
        # Requests and connections at once; past it, a 503 (Codat retries) rather than file
        # descriptors or memory running out.
        limit_concurrency=settings.http_max_connections,
        timeout_keep_alive=settings.http_keep_alive_seconds,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )


SINGLE_LISTENER_WARNING = (
    "one listener serves everything: the webhook, the status API, /metrics and /docs answer"
    " on the same port. Set INTERNAL_PORT to serve all but the webhook and health checks on"
    " an internal listener (the Docker image and compose.yaml do)"
)


def build_servers(settings: Settings, host: str, port: int) -> list[uvicorn.Server]:
    """One listener, or two when INTERNAL_PORT moves the status API off the public one."""
    from app.main import create_app, create_split_apps

    if settings.internal_port is None:
        log.warning(SINGLE_LISTENER_WARNING)
        apps = [(create_app(settings), host, port)]
    else:
        public, internal = create_split_apps(settings)
        apps = [(public, host, port), (internal, settings.internal_host, settings.internal_port)]
    return [uvicorn.Server(server_config(app, h, p, settings)) for app, h, p in apps]


async def run_servers(settings: Settings, host: str, port: int) -> None:
    servers = build_servers(settings, host, port)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:  # one listener stopping (a signal, a failed bind) stops both
        server.should_exit = True
    await asyncio.gather(*tasks)
