"""/docs is enough to learn the API: the OpenAPI says how to authenticate, what every route,
parameter and field means and what an answer looks like; the pages load with no network;
parameters are read as documented or refused."""

from __future__ import annotations

import importlib
import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.conftest import make_settings

TOKEN = "docs-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# jsonschema ships no type information: imported as a plain module (as tests/support/oas.py).
_jsonschema: Any = importlib.import_module("jsonschema")


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, status_api_tokens=TOKEN)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app(make_settings("sqlite:///unused.db")).openapi()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]


def concrete(path: str) -> str:
    """A documented path with its parameters filled in."""
    values = {"event_id": "1", "company_id": "c", "data_type": "bills", "push_operation_key": "k"}
    values["delivery_id"] = "1"
    return re.sub(r"\{(\w+)\}", lambda m: values[m[1]], path)


def test_the_openapi_declares_the_bearer_scheme_on_every_api_operation(
    spec: dict[str, Any],
) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert [(s["type"], s["scheme"]) for s in schemes.values()] == [("http", "bearer")]
    [name] = schemes
    api = [(m, p, op) for m, p, op in operations(spec) if p.startswith("/api/")]
    assert len(api) >= 12
    for method, path, operation in api:
        assert operation.get("security") == [{name: []}], (method, path)


def test_every_operation_parameter_and_field_is_described(spec: dict[str, Any]) -> None:
    undescribed = []
    for method, path, operation in operations(spec):
        if not operation.get("description"):
            undescribed.append(f"{method} {path}")
        for parameter in operation.get("parameters", []):
            if not parameter.get("description"):
                undescribed.append(f"{method} {path} {parameter['in']} {parameter['name']}")
    for name, schema in spec["components"]["schemas"].items():
        for field, field_schema in schema.get("properties", {}).items():
            if not field_schema.get("description"):
                undescribed.append(f"schema {name}.{field}")
    assert undescribed == []


def test_every_operation_shows_an_example_answer_that_fits_its_schema(
    spec: dict[str, Any],
) -> None:
    for method, path, operation in operations(spec):
        success = [code for code in operation["responses"] if code.startswith("2")]
        assert success, (method, path)
        for media in operation["responses"][success[0]]["content"].values():
            assert "example" in media, (method, path)
            if media["schema"].get("type") == "string":
                continue  # /metrics: Prometheus text
            validator = _jsonschema.Draft202012Validator(
                {**media["schema"], "components": spec["components"]}
            )
            assert not list(validator.iter_errors(media["example"])), (method, path)


def test_status_filters_are_enums(spec: dict[str, Any]) -> None:
    def status_values(path: str) -> set[str]:
        [parameter] = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == "status"]
        [ref] = [s["$ref"] for s in parameter["schema"]["anyOf"] if "$ref" in s]
        return set(spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["enum"])

    assert status_values("/api/v1/events") == {
        "pending",
        "processing",
        "processed",
        "ignored",
        "dead",
        "unprocessable",
    }
    assert status_values("/api/v1/writes") == {"Pending", "Success", "Failed", "TimedOut"}


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/api/v1/events?status=deadd", None),
        ("GET", "/api/v1/events?status=DEAD", None),
        ("GET", "/api/v1/writes?status=failed", None),
        ("POST", "/api/v1/events/replay", {"status": "deadd"}),
    ],
)
async def test_an_unknown_status_is_a_422_not_an_empty_list(
    client: httpx.AsyncClient, method: str, url: str, body: Any
) -> None:
    response = await client.request(method, url, json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert "status" in response.json()["error"]


async def test_a_known_status_is_accepted(client: httpx.AsyncClient) -> None:
    for url in ("/api/v1/events?status=dead", "/api/v1/writes?status=TimedOut"):
        response = await client.get(url, headers=AUTH)
        assert (response.status_code, response.json()["items"]) == (200, [])


# -- dates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["0.5", "20260503", "1777888329", "-1", "2026-5-3", "03/05/2026", "yesterday"]
)
@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/events?received_before={}",
        "/api/v1/events?received_after={}",
        "/api/v1/companies/c/data/bills?modified_after={}",
    ],
)
async def test_a_date_that_is_not_iso_8601_is_a_422(
    client: httpx.AsyncClient, url: str, value: str
) -> None:
    response = await client.get(url.format(value), headers=AUTH)
    assert response.status_code == 422, response.text
    assert "ISO 8601" in response.json()["error"]


@pytest.mark.parametrize("value", [0.5, 20260503, "20260503"])
async def test_a_replay_filter_date_that_is_not_iso_8601_is_a_422(
    client: httpx.AsyncClient, value: Any
) -> None:
    response = await client.post(
        "/api/v1/events/replay", json={"received_before": value}, headers=AUTH
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "value",
    [
        "2026-05-03",
        "2026-05-03T10:00",
        "2026-05-03T10:00:00Z",
        "2026-05-03T10:00:00.123456+02:00",
        "2026-05-03 10:00:00",
    ],
)
async def test_iso_8601_dates_are_accepted(client: httpx.AsyncClient, value: str) -> None:
    response = await client.get("/api/v1/events", params={"received_after": value}, headers=AUTH)
    assert response.status_code == 200, response.text


# -- methods and redirects ----------------------------------------------------------------


async def test_a_wrong_method_is_a_405_with_the_methods_the_path_allows(
    client: httpx.AsyncClient, spec: dict[str, Any]
) -> None:
    checked = 0
    for path, item in spec["paths"].items():
        allowed = {method.upper() for method in item}
        for method in set(METHODS) - allowed:
            response = await client.request(method, concrete(path), headers=AUTH)
            assert response.status_code == 405, (method, path, response.text)
            assert set(response.headers["allow"].split(", ")) == allowed, (method, path)
            checked += 1
    assert checked >= 50


async def test_no_answer_redirects_to_a_host_the_client_chose(
    client: httpx.AsyncClient, spec: dict[str, Any]
) -> None:
    paths = [concrete(p) for p in spec["paths"]] + ["/docs", "/redoc", "/openapi.json"]
    for path in paths:
        for variant in (path + "/", path + "//", path.upper()):
            response = await client.get(variant, headers={**AUTH, "Host": "evil.example"})
            assert not response.is_redirect, (variant, response.headers.get("location"))
            assert "evil.example" not in response.headers.get("location", ""), variant
    slash = await client.get("/healthz/", headers={"Host": "evil.example"})
    assert (slash.status_code, slash.headers.get("location")) == (404, None)


# -- the pages ----------------------------------------------------------------------------


def referenced(html: str) -> list[str]:
    """Every URL a docs page makes the browser load: scripts, styles, icons, the spec."""
    return re.findall(r'(?:src|href|spec-url)="([^"]+)"', html) + re.findall(
        r"url: '([^']+)'", html
    )


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_load_everything_from_the_service_itself(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"https?:|//[\w.-]+\.[a-z]", html), "a URL outside the service"
    urls = referenced(html)
    assert "/openapi.json" in urls
    assert any(url.endswith(".js") for url in urls)
    for url in urls:
        assert not urlsplit(url).netloc, url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    if page == "/docs":
        assert "swagger-ui-bundle.js" in html and "swagger-ui.css" in html
    else:
        assert "redoc.standalone.js" in html


async def test_the_oauth2_redirect_page_of_swagger_ui_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert "https:" not in response.text
