"""The status API at its edge: the token is checked before a body is read, bodies are
capped, and no text a client sends (a cursor, NUL, bytes that are not UTF-8) gets a 500 on
either database."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.guard import API_MAX_BODY_BYTES
from app.config import Settings
from app.models import Company
from tests.conftest import make_settings

TOKEN = "edge-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MIB = 1024 * 1024


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, status_api_tokens=TOKEN)


class CountedBody:
    """A request body made as it is read, counting what the server asked for."""

    def __init__(self, chunks: int, size: int) -> None:
        self.chunks = chunks
        self.chunk = b"x" * size
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.read += 1
            yield self.chunk


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", TOKEN])
async def test_a_200_mb_body_without_a_valid_token_is_refused_before_it_is_read(
    client: httpx.AsyncClient, declared: bool, authorization: str | None
) -> None:
    body = CountedBody(200, MIB)
    headers = {"Content-Type": "application/json"}
    if declared:
        headers["Content-Length"] = str(200 * MIB)
    if authorization:
        headers["Authorization"] = authorization
    response = await client.post("/api/v1/companies/x/refresh", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "missing or invalid bearer token"}
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["connection"] == "close"
    assert body.read == 0, "the body was read before the token was checked"


async def test_a_body_that_is_not_json_without_a_token_is_a_401_not_a_422(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/v1/events/replay", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_an_api_body_over_16_kib_is_a_413_read_no_further(
    client: httpx.AsyncClient, declared: bool
) -> None:
    body = CountedBody(100, 1024)
    headers = {**AUTH, "Content-Type": "application/json"}
    if declared:
        headers["Content-Length"] = str(100 * 1024)
    response = await client.post("/api/v1/events/replay", content=body, headers=headers)
    assert response.status_code == 413
    assert response.json() == {"error": f"body larger than {API_MAX_BODY_BYTES} bytes"}
    assert response.headers["connection"] == "close"
    assert body.read <= (0 if declared else API_MAX_BODY_BYTES // 1024 + 1)


async def test_a_body_just_under_the_cap_is_read_as_usual(client: httpx.AsyncClient) -> None:
    filters = {"event_type": "e" * (API_MAX_BODY_BYTES - 100)}
    assert len(json.dumps(filters)) <= API_MAX_BODY_BYTES
    response = await client.post("/api/v1/events/replay", json=filters, headers=AUTH)
    assert (response.status_code, response.json()) == (202, {"queued": 0})


# -- text no row can hold -----------------------------------------------------------------


def cursor_of(values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


LISTS = [
    "/api/v1/events",
    "/api/v1/companies",
    "/api/v1/companies/c/data/bills",
    "/api/v1/writes",
]


@pytest.mark.parametrize("url", LISTS)
@pytest.mark.parametrize(
    "values",
    [
        [True],
        [False],
        [True, True],
        ["\x00"],
        ["2026-05-03T10:00:00", "\x00"],
        ["\ud800"],
        ["2026-05-03T10:00:00", "\ud800"],
        [1.5],
        [None],
        [None, "k"],
        [["nested"]],
        [{"a": 1}],
        ["not a date", "k"],
        [],
    ],
    ids=repr,
)
async def test_a_cursor_we_did_not_write_is_a_400(
    client: httpx.AsyncClient, engine: AsyncEngine, url: str, values: list[Any]
) -> None:
    if url.endswith("/data/bills"):
        await _company(engine)
    response = await client.get(url, params={"cursor": cursor_of(values)}, headers=AUTH)
    assert (response.status_code, response.json()) == (400, {"error": "invalid cursor"})


async def _company(engine: AsyncEngine) -> None:
    """Company `c`, so the records route reaches its cursor."""
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(insert(Company).values(id="c", created_at=now, updated_at=now))


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/api/v1/companies/%00"),
        ("GET", "/api/v1/companies/a%00b/data/bills"),
        ("GET", "/api/v1/companies/c/data/%00"),
        ("POST", "/api/v1/companies/%00/refresh"),
        ("POST", "/api/v1/companies/%00/reconcile"),
        ("GET", "/api/v1/writes/%00"),
        ("GET", "/api/v1/events?company_id=%00"),
        ("GET", "/api/v1/events?event_type=read%00completed"),
        ("GET", "/api/v1/writes?company_id=%00"),
        ("GET", "/api/v1/writes?data_type=%00"),
        ("GET", "/api/v1/events?cursor=%00"),
    ],
)
async def test_nul_in_a_path_or_query_is_a_400(
    client: httpx.AsyncClient, method: str, url: str
) -> None:
    response = await client.request(method, url, headers=AUTH)
    assert (response.status_code, response.json()) == (400, {"error": "NUL character in the URL"})


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/companies/%ff",
        "/api/v1/companies/%ed%a0%80",
        "/api/v1/companies/%c0%af",
        "/api/v1/writes/%ff%fe",
        "/api/v1/companies/%F0%9F%92%B8",
    ],
)
async def test_bytes_that_are_not_utf_8_in_a_path_are_a_404(
    client: httpx.AsyncClient, url: str
) -> None:
    response = await client.get(url, headers=AUTH)
    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    "query", ["company_id=%ff", "event_type=%ed%a0%80", "company_id=%c0%af&event_type=%ff"]
)
async def test_bytes_that_are_not_utf_8_in_a_filter_match_nothing(
    client: httpx.AsyncClient, query: str
) -> None:
    response = await client.get(f"/api/v1/events?{query}", headers=AUTH)
    assert (response.status_code, response.json()["items"]) == (200, [])


@pytest.mark.parametrize(
    "body",
    [
        b'{"company_id": "\\u0000"}',
        b'{"event_type": "read\\u0000completed"}',
        b'{"company_id": "\\ud800"}',
        b'{"event_type": "\\udfff\\ud800"}',
    ],
)
async def test_a_replay_filter_no_row_can_hold_is_a_422(
    client: httpx.AsyncClient, body: bytes
) -> None:
    response = await client.post(
        "/api/v1/events/replay",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert "NUL" in response.json()["error"]
