"""Load generator: C keep-alive connections posting distinct, signed ~1 KB events.

Run as its own process (`python -m bench.loadgen --url ... --secret ...`) so that it
does not share an event loop with the server it measures. Each connection is a
closed loop: send one request, wait for the answer, send the next. The window that
counts starts after `--warmup` seconds and lasts `--seconds`; after it, no request
is started and the ones in flight are awaited. Prints one JSON object on stdout.

The default client is a small HTTP/1.1 client on asyncio's protocol API (uvloop when
installed); `--client httpx` is the same loop through httpx, to check that the
client is not what limits the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from svix.webhooks import Webhook

SAMPLE = Path("/work/shared/samples/read.completed.json")
REQUEST_TIMEOUT = 30.0

# A read.completed envelope like the Codat sample, compact (~1.2 KB once the ids vary).
FALLBACK_SAMPLE: dict[str, Any] = {
    "id": "743ec94a-8aa4-44bb-8bd4-e1855ee0e74b",
    "eventType": "read.completed",
    "generatedDate": "2026-05-04T07:12:09.344522Z",
    "payload": {
        "referenceCompany": {
            "id": "0498e921-9b53-4396-a412-4f2f5983b0a2",
            "name": "Toft stores",
            "description": "cust_123",
            "links": {"portal": "https://app.codat.io/companies/0498e921/summary"},
            "tags": {"region": "uk"},
        },
        "modifiedFromDate": "2026-05-03T10:00:23Z",
        "dataTypes": [
            {
                "connectionId": "2e9d2c44-f675-40ba-8049-353bfcb5e171",
                "dataType": name,
                "recordsModified": True,
                "status": "Complete",
                "issues": [],
            }
            for name in ("bills", "suppliers", "billPayments", "bankAccounts", "taxRates")
        ],
    },
}


class EventFactory:
    """Distinct bodies from one template: new event, company and connection ids each time."""

    _EVENT = "00000000-0000-4000-8000-00000000e1e1"
    _COMPANY = "00000000-0000-4000-8000-00000000c0c0"
    _CONNECTION = "00000000-0000-4000-8000-00000000cccc"
    _DATE = "2000-01-01T00:00:00.000000Z"

    def __init__(self, secret: str, sample: dict[str, Any]) -> None:
        event = json.loads(json.dumps(sample))
        event["id"] = self._EVENT
        event["generatedDate"] = self._DATE
        payload = event["payload"]
        payload["referenceCompany"]["id"] = self._COMPANY
        for data_type in payload.get("dataTypes", []):
            data_type["connectionId"] = self._CONNECTION
        template = json.dumps(event, separators=(",", ":"))
        for marker in (self._EVENT, self._COMPANY, self._CONNECTION, self._DATE):
            if marker not in template:
                raise ValueError(f"sample has no place for {marker}")
        self._template = template
        self._webhook = Webhook(secret)
        self._prefix = f"msg_{secrets.token_hex(6)}_"
        self._count = 0

    def next(self) -> tuple[str, bytes, dict[str, str]]:
        """(delivery id, body, signature headers) for a new, never-sent delivery."""
        self._count += 1
        msg_id = f"{self._prefix}{self._count:010d}"
        now = datetime.now(UTC)
        body = (
            self._template.replace(self._EVENT, str(uuid.uuid4()))
            .replace(self._COMPANY, str(uuid.uuid4()))
            .replace(self._CONNECTION, str(uuid.uuid4()))
            .replace(self._DATE, now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        )
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(msg_id, now, body),
        }
        return msg_id, body.encode(), headers


class RecoveryFactory:
    """Event i: a `bills.write.unsuccessful` for push operation `push_key(i)` on company
    `slot_company(i % companies, skip_every)`, its delivery id `msg_rec_<i>`."""

    def __init__(self, secret: str, companies: int, skip_every: int = 0) -> None:
        from bench.process import load_sample as load_write_sample
        from bench.process_fake import CONNECTION_ID, push_key, slot_company

        self._template = load_write_sample()
        self._template["payload"]["connectionId"] = CONNECTION_ID
        self._slot_company, self._push_key = slot_company, push_key
        self._companies, self._skip_every = companies, skip_every
        self._webhook = Webhook(secret)
        self._count = 0

    def next(self) -> tuple[str, bytes, dict[str, str]]:
        index = self._count
        self._count += 1
        msg_id = f"msg_rec_{index:07d}"
        now = datetime.now(UTC)
        event = json.loads(json.dumps(self._template))
        event["id"] = str(uuid.uuid4())
        event["generatedDate"] = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event["payload"]["id"] = self._push_key(index)
        company = self._slot_company(index % self._companies, self._skip_every)
        event["payload"]["referenceCompany"]["id"] = company
        body = json.dumps(event, separators=(",", ":"))
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(msg_id, now, body),
        }
        return msg_id, body.encode(), headers


def load_sample() -> dict[str, Any]:
    if SAMPLE.is_file():
        loaded: dict[str, Any] = json.loads(SAMPLE.read_text())
        return loaded
    return FALLBACK_SAMPLE


class HttpProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; answers must carry a Content-Length."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave like one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            waiter.set_exception(ConnectionError("answer without content-length"))
            return
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        del self._buffer[:total]
        waiter.set_result(int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def request(self, data: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self._buffer.clear()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter


Send = Callable[[str, bytes, dict[str, str]], Awaitable[int]]


class RawClient:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._path = parts.path or "/"
        self._start = (
            f"POST {self._path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        self._protocol: HttpProtocol | None = None

    async def _connect(self) -> HttpProtocol:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(HttpProtocol, self._host, self._port)
        return protocol

    async def send(self, msg_id: str, body: bytes, headers: dict[str, str]) -> int:
        if self._protocol is None or self._protocol.lost:
            self._protocol = await self._connect()
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        data = b"".join([self._start, f"Content-Length: {len(body)}\r\n{head}\r\n".encode(), body])
        try:
            return await asyncio.wait_for(self._protocol.request(data), REQUEST_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


class HttpxClient:
    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self._url = url
        self._client = client

    async def send(self, msg_id: str, body: bytes, headers: dict[str, str]) -> int:
        answer = await self._client.post(
            self._url, content=body, headers={**headers, "content-type": "application/json"}
        )
        return answer.status_code

    def close(self) -> None:
        return None


@dataclass
class Tally:
    window_start: float
    window_end: float
    acked_ids: list[str] = field(default_factory=list)
    window_latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    limit: int = 0  # --events: stop once this many are sent, whenever that is

    def more(self, now: float) -> bool:
        return self.sent < self.limit if self.limit else now < self.window_end


async def worker(
    client: RawClient | HttpxClient, factory: EventFactory | RecoveryFactory, tally: Tally
) -> None:
    clock = time.perf_counter
    while tally.more(clock()):
        msg_id, body, headers = factory.next()
        tally.sent += 1
        started = clock()
        try:
            status = await client.send(msg_id, body, headers)
        except (OSError, TimeoutError, ConnectionError) as exc:
            name = type(exc).__name__
            tally.errors[name] = tally.errors.get(name, 0) + 1
            await asyncio.sleep(0.01)
            continue
        done = clock()
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            tally.acked_ids.append(msg_id)
            if tally.window_start <= done <= tally.window_end:
                tally.window_latencies.append(done - started)
    client.close()


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary, detail): the detail holds the acknowledged ids and the latencies."""
    factory: EventFactory | RecoveryFactory
    if args.recovery_companies:
        factory = RecoveryFactory(args.secret, args.recovery_companies, args.skip_every)
        body_bytes = len(
            RecoveryFactory(args.secret, args.recovery_companies, args.skip_every).next()[1]
        )
    else:
        factory = EventFactory(args.secret, load_sample())
        body_bytes = len(factory.next()[1])
    now = time.perf_counter()
    if args.events:
        # Every answer counts; the window closes when the last one is in.
        tally = Tally(window_start=now, window_end=float("inf"), limit=args.events)
    else:
        tally = Tally(window_start=now + args.warmup, window_end=now + args.warmup + args.seconds)
    async with contextlib.AsyncExitStack() as stack:
        clients: list[RawClient | HttpxClient]
        if args.client == "httpx":
            limits = httpx.Limits(
                max_connections=args.concurrency, max_keepalive_connections=args.concurrency
            )
            shared = await stack.enter_async_context(
                httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT)
            )
            clients = [HttpxClient(args.url, shared) for _ in range(args.concurrency)]
        else:
            clients = [RawClient(args.url) for _ in range(args.concurrency)]
        await asyncio.gather(*(worker(client, factory, tally) for client in clients))
    seconds = time.perf_counter() - now if args.events else args.seconds
    latencies = sorted(tally.window_latencies)
    non_2xx = sum(count for status, count in tally.statuses.items() if not 200 <= status < 300)
    summary = {
        "client": args.client,
        "concurrency": args.concurrency,
        "seconds": seconds,
        "body_bytes": body_bytes,
        "sent": tally.sent,
        "acknowledged": len(tally.acked_ids),
        "window_acknowledged": len(latencies),
        "events_per_s": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "non_2xx": non_2xx,
        "statuses": {str(status): count for status, count in sorted(tally.statuses.items())},
        "errors": tally.errors,
    }
    return summary, {"acked_ids": tally.acked_ids, "latencies": latencies}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8000/webhooks/codat")
    parser.add_argument("--secret", required=True, help="the whsec_ secret the target expects")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--detail-out", help="write acknowledged ids and latencies here (JSON)")
    parser.add_argument("--events", type=int, default=0, help="send exactly N, then stop")
    parser.add_argument(
        "--recovery-companies",
        type=int,
        default=0,
        help="send bills.write.unsuccessful events over C companies (bench.process_fake's)",
    )
    parser.add_argument("--skip-every", type=int, default=0, help="bench.process_fake's")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        result, detail = asyncio.run(run(args))
    else:
        result, detail = uvloop.run(run(args))
    if args.detail_out:
        Path(args.detail_out).write_text(json.dumps(detail))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
