"""Hostile requests to the status API of a real `serve` process on PostgreSQL (where NUL and
lone surrogates are errors of the database, not just odd text): each gets its documented
4xx, a big body is refused before it is read, and nothing redirects to a client's host."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest

from app.api.guard import API_MAX_BODY_BYTES
from tests.reliability.hostile import COMPANY, ApiCase, api_cases
from tests.reliability.processes import Processes, Service, peak_rss, service_env
from tests.reliability.report import Report, fmt, table

pytestmark = pytest.mark.reliability

TOKEN = "hostile-api-token"
MIB = 1024 * 1024
BIG = 200 * MIB  # the size the security review sent


@dataclass
class BigBody:
    name: str
    status: int  # 0: no answer while the body was held back
    seconds: float
    pushed: int  # bytes the client got into the socket before the server closed it


def _send_big_body(base_url: str, name: str, authorization: str | None) -> BigBody:
    """Declare 200 MB, send 64 KiB of it, wait for the answer, then push the rest until the
    server closes the connection. A server that reads before it answers gives no answer."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    head = (
        f"POST /api/v1/companies/{COMPANY}/refresh HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {BIG}\r\n"
        + (f"Authorization: {authorization}\r\n" if authorization else "")
        + "\r\n"
    ).encode()
    first = b" " * 65536
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        started = time.perf_counter()
        sock.sendall(head + first)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
        seconds = time.perf_counter() - started
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
        pushed, chunk = len(first), b" " * MIB
        try:
            while pushed < BIG:
                sock.sendall(chunk)
                pushed += len(chunk)
        except OSError:
            pass
    return BigBody(name, status, seconds, pushed)


def _send(client: httpx.Client, base_url: str, case: ApiCase) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"} if case.token else {}
    if case.host:
        headers["Host"] = case.host
    if case.body is not None:
        headers["Content-Type"] = "application/json"
    content: bytes | Iterator[bytes] | None = case.body
    if case.body is not None and case.chunks:
        body, step = case.body, -(-len(case.body) // case.chunks)
        content = iter([body[i : i + step] for i in range(0, len(body), step)])
    return client.request(case.method, f"{base_url}{case.path}", content=content, headers=headers)


def _judge(case: ApiCase, response: httpx.Response) -> list[str]:
    problems = []
    if response.status_code != case.expect:
        problems.append(f"answered {response.status_code} {response.text[:80]}")
    if response.is_redirect or "location" in response.headers:
        problems.append(f"redirects to {response.headers.get('location')}")
    if case.allow is not None and response.headers.get("allow") != case.allow:
        problems.append(f"Allow: {response.headers.get('allow')}, expected {case.allow}")
    return problems


def _run_cases(service: Service) -> list[tuple[ApiCase, int, list[str]]]:
    results = []
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        for case in api_cases(API_MAX_BODY_BYTES):
            try:
                response = _send(client, service.base_url, case)
            except httpx.HTTPError as exc:
                results.append((case, 0, [f"no answer: {exc!r:.100}"]))
                continue
            results.append((case, response.status_code, _judge(case, response)))
    return results


async def test_hostile_requests_to_the_status_api_are_refused_before_they_cost_anything(
    postgres_url: str, processes: Processes, reliability_report: Report
) -> None:
    section = reliability_report.section(
        9,
        "Hostile edge: the status API",
        "A `serve` process on PostgreSQL with a status API token. Bodies of 200 MB are "
        "declared to the API with no token, a wrong one, and the right one; then generated "
        "hostile requests: bodies over the 16 KiB cap, redirects with a Host of the client's "
        "choosing, cursors the service never wrote, NUL and bytes that are not UTF-8 in "
        "paths, filters and bodies, dates that are not ISO 8601, unknown statuses, wrong "
        "methods. Each must get its documented 4xx, never a 5xx or a redirect.",
    )
    env = service_env(postgres_url, EMBEDDED_WORKER="false", STATUS_API_TOKENS=TOKEN)
    service = await processes.serve("serve", env)
    pid = service.process.popen.pid
    peak_before = peak_rss(pid)
    big = [
        await asyncio.to_thread(_send_big_body, service.base_url, name, authorization)
        for name, authorization in (
            ("no Authorization", None),
            ("a wrong token", "Bearer wrong"),
            ("the right token (over the cap)", f"Bearer {TOKEN}"),
        )
    ]
    peak_growth = peak_rss(pid) - peak_before
    results = await asyncio.to_thread(_run_cases, service)
    health = await service.get("/healthz")
    log = service.process.log.read_text(errors="replace")

    answers = Counter(code for _, code, _ in results)
    failed = [(case, code, problems) for case, code, problems in results if problems]
    section.add_sent("200 MB bodies (Content-Length declared, 64 KiB sent first)", len(big))
    section.add_sent("generated cases", len(results))
    section.add_seen(
        "peak memory of the service while refusing the 200 MB bodies",
        f"+{peak_growth / MIB:.1f} MiB",
    )
    section.add_seen("answers", ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(answers.items())))
    section.details = [
        "The 200 MB bodies:",
        "",
        *table(
            ["sent with", "answer", "time to answer", "bytes the client pushed before the close"],
            [
                [
                    b.name,
                    b.status or "none",
                    f"{b.seconds * 1000:.0f} ms",
                    f"{b.pushed / MIB:.1f} MiB",
                ]
                for b in big
            ],
        ),
        "",
        "Every case:",
        "",
        *table(
            ["case", "documented", "answer", "as documented"],
            [
                [case.name, case.expect, code, "; ".join(problems) or "yes"]
                for case, code, problems in results
            ],
        ),
    ]
    section.check(
        "a 200 MB body is answered (401 without a valid token, 413 with one) before it is read",
        [b.status for b in big] == [401, 401, 413] and all(b.seconds < 5 for b in big),
        ", ".join(f"{b.status} in {b.seconds:.2f} s" for b in big),
    )
    section.check(
        "the connection is closed after the answer, not read to its end",
        all(b.pushed < BIG for b in big),
        ", ".join(f"{b.pushed / MIB:.0f} MiB" for b in big),
    )
    section.check(
        "refusing them costs the service no memory to speak of (under 16 MiB of peak)",
        peak_growth < 16 * MIB,
        f"{peak_growth / MIB:.1f} MiB",
    )
    section.check(
        "every generated case got its documented answer, none a redirect",
        not failed,
        "; ".join(f"{c.name}: {', '.join(p)}" for c, _, p in failed[:5]),
    )
    section.check("no 5xx", not any(code >= 500 for code in answers), str(dict(answers)))
    section.check(
        "afterwards the service answers /healthz, and its log holds no traceback",
        health.status_code == 200 and "Traceback" not in log,
    )
    section.headline = (
        f"200 MB without a token: {big[0].status} in {big[0].seconds * 1000:.0f} ms, "
        f"+{peak_growth / MIB:.1f} MiB peak; {len(results)} cases, "
        f"{len(results) - len(failed)} as documented"
    )
    section.finish()
