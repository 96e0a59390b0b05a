"""The fake Codat for `bench.process`, served in its own process.

    python -m bench.process_fake --port P [--delay 0.1] [--companies 50] [--operations N]

`app.sandbox.fake_codat.FakeCodat` under uvicorn on 127.0.0.1 (its own interpreter,
so it does not share a GIL with the benchmark driver), answering every call after
`--delay` seconds (`delay_all`). Before it listens it holds companies
`company_id(0..C-1)` and, for each event index i below N, one Failed push operation
`push_key(i)` on company `company_id(i % C)`: what a `bills.write.unsuccessful` event
with that key looks up.

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
import socket
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.sandbox.fake_codat import FakeCodat

CONNECTION_ID = "2e9d2c44-f675-40ba-8049-353bfcb5e171"
CALLS_PATH = "/_bench/calls"
NOTIFY_PATH = "/_bench/notify"
VALIDATION_ERRORS = [
    {
        "itemId": "supplierRef.id",
        "message": "The supplier is archived in the accounting platform.",
        "validatorName": "Bill",
    }
]


def company_id(index: int) -> str:
    return f"00000000-0000-4000-8000-{index:012d}"


def push_key(index: int) -> str:
    return f"10000000-0000-4000-8000-{index:012d}"


class Recorder:
    """ASGI middleware: times every push-operation look-up, and answers CALLS_PATH."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
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


def build(delay: float, companies: int, operations: int) -> Recorder:
    fake = FakeCodat()
    for index in range(companies):
        fake.add_company(company_id(index), CONNECTION_ID, name=f"Company {index}")
    requested = datetime.now(UTC) - timedelta(minutes=5)
    for index in range(operations):
        fake.add_push_operation(
            company_id(index % companies),
            key=push_key(index),
            data_type="bills",
            status="Failed",
            requested=requested,
            error_message="Validation failed",
            validation_errors=VALIDATION_ERRORS,
        )
    fake.reset_calls()
    fake.delay_all = delay
    return Recorder(fake.app)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.process_fake")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--companies", type=int, default=50)
    parser.add_argument("--operations", type=int, required=True, help="push operations to hold")
    args = parser.parse_args(argv)
    app = build(args.delay, args.companies, args.operations)
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
