"""The fake Codat for `bench.process`, served in its own process.

    python -m bench.process_fake --port P [--delay 0.1] [--companies 50] [--operations N]
                                 [--bill-pages P]

`app.sandbox.fake_codat.FakeCodat` under uvicorn on 127.0.0.1 (its own interpreter,
so it does not share a GIL with the benchmark driver), answering every call after
`--delay` seconds (`delay_all`). Before it listens it holds companies
`company_id(0..C-1)` and, for each event index i below N, one Failed push operation
`push_key(i)` on company `company_id(i % C)`: what a `bills.write.unsuccessful` event
with that key looks up.

With `--bill-pages P`, every company's bills list (`GET /companies/{id}/data/bills`) is
P pages of 5,000 bills each (Codat's largest page), rendered once before it listens and
sent as bytes: 16 pulls asking at once get their pages at once, as they would from
Codat, instead of waiting in turn for the fake to build each page (`bench.scale`'s
memory measure).

`GET /_bench/calls` answers `{"push": {key: [[arrived, answered], ...]}, "other":
{path: count}, "notified": {webhook-id: [arrived, ...]}}`: for each push operation key
looked up so far, the wall clock (Unix seconds) of each call's arrival and of the end of
its answer, so that the driver can check one call per event and see where the time
went; every other call; and the arrivals of the service's notifications of changes,
which `POST /_bench/notify` takes (the internal endpoint of `--notify all`: it answers
204 at once and checks nothing, so it costs the measurement as little as it can).
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.sandbox.fake_codat import FakeCodat, make_bill

CONNECTION_ID = "2e9d2c44-f675-40ba-8049-353bfcb5e171"
CALLS_PATH = "/_bench/calls"
NOTIFY_PATH = "/_bench/notify"
BILLS_PATH = re.compile(r"^/companies/([^/]+)/data/bills$")
PAGE_SIZE = 5000
VALIDATION_ERRORS = [
    {
        "itemId": "supplierRef.id",
        "message": "The supplier is archived in the accounting platform.",
        "validatorName": "Bill",
    }
]


def company_id(index: int) -> str:
    return f"00000000-0000-4000-8000-{index:012d}"


def slot_company(slot: int, skip_every: int = 0) -> str:
    """The company of slot `slot`: `company_id(slot)`, or with `skip_every` = N the
    slot-th company whose index i has i % N != N - 1 (bench.scale's world blocks those:
    deleted or needing re-authorisation, so no event of theirs calls Codat)."""
    return company_id(slot + slot // (skip_every - 1) if skip_every > 1 else slot)


def push_key(index: int) -> str:
    return f"10000000-0000-4000-8000-{index:012d}"


def render_bill_pages(pages: int) -> list[bytes]:
    """Each page's body up to its `_links` (which name the company): 5,000 bills of about
    1 KB, ids distinct across pages, modified in order."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    bodies = []
    for page in range(pages):
        results = []
        for n in range(PAGE_SIZE):
            index = page * PAGE_SIZE + n
            bill = make_bill(f"bill-{index:07d}", amount=100 + index % 900)
            bill["modifiedDate"] = (start + timedelta(seconds=index)).isoformat()
            results.append(bill)
        head = {"results": results, "pageNumber": page + 1, "pageSize": PAGE_SIZE}
        bodies.append(json.dumps(head).encode()[:-1])
    return bodies


class Recorder:
    """ASGI middleware: times every push-operation look-up, answers CALLS_PATH, and
    serves the pre-rendered bill pages."""

    def __init__(self, app: ASGIApp, pages: list[bytes] | None = None) -> None:
        self.app = app
        self.pages = pages or []
        self.calls: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
        self.other: Counter[str] = Counter()
        self.notified: defaultdict[str, list[float]] = defaultdict(list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] == "http" and path == NOTIFY_PATH:
            headers = dict(scope.get("headers") or [])
            self.notified[headers.get(b"webhook-id", b"").decode()].append(time.time())
            while (await receive()).get("more_body"):
                pass
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["type"] == "http" and path == CALLS_PATH:
            body = json.dumps(
                {"push": self.calls, "other": self.other, "notified": self.notified}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        bills = BILLS_PATH.match(path) if self.pages else None
        if scope["type"] == "http" and bills is not None:
            await self._bill_page(scope, send, path)
            return
        if scope["type"] != "http" or "/push/" not in path:
            if scope["type"] == "http":
                self.other[f"{scope.get('method')} {path}"] += 1
            await self.app(scope, receive, send)
            return
        arrived = time.time()

        async def timed_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.calls[path.rsplit("/", 1)[1]].append((arrived, time.time()))

        await self.app(scope, receive, timed_send)

    async def _bill_page(self, scope: Scope, send: Send, path: str) -> None:
        self.other[f"GET {path}"] += 1
        query = dict(
            part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part
        )
        page = int(query.get("page", "1"))
        links: dict[str, Any] = {"current": {"href": f"{path}?page={page}"}}
        if page < len(self.pages):
            links["next"] = {"href": f"{path}?page={page + 1}&pageSize={PAGE_SIZE}"}
        body = self.pages[page - 1] + b', "_links": ' + json.dumps(links).encode() + b"}"
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def build(
    delay: float, companies: int, operations: int, bill_pages: int = 0, skip_every: int = 0
) -> Recorder:
    fake = FakeCodat()
    for index in range(companies):
        fake.add_company(slot_company(index, skip_every), CONNECTION_ID, name=f"Company {index}")
    requested = datetime.now(UTC) - timedelta(minutes=5)
    for index in range(operations):
        fake.add_push_operation(
            slot_company(index % companies, skip_every),
            key=push_key(index),
            data_type="bills",
            status="Failed",
            requested=requested,
            error_message="Validation failed",
            validation_errors=VALIDATION_ERRORS,
        )
    fake.reset_calls()
    fake.delay_all = delay
    return Recorder(fake.app, render_bill_pages(bill_pages))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.process_fake")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--companies", type=int, default=50)
    parser.add_argument("--operations", type=int, required=True, help="push operations to hold")
    parser.add_argument("--bill-pages", type=int, default=0, help="pages of 5,000 bills each")
    parser.add_argument("--skip-every", type=int, default=0, help="see slot_company")
    args = parser.parse_args(argv)
    app = build(args.delay, args.companies, args.operations, args.bill_pages, args.skip_every)
    # A TCP-proto listener, as run_fake_codat has it: accepted sockets get TCP_NODELAY.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        interface="asgi3",
        backlog=1024,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
