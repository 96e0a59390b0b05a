"""/docs (Swagger UI) and /redoc, with their scripts and styles served by the service.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on an internal network with no
way out they render blank. The files come from the `fastapi-offline` package.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """The two pages and their assets; the app's OpenAPI is at its `openapi_url`."""
    assert app.openapi_url is not None
    openapi_url = app.openapi_url
    app.mount(ASSETS_URL, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    def url(request: Request, path: str) -> str:
        """Relative to the app, wherever a proxy mounted it (root_path)."""
        return f"{request.scope.get('root_path', '')}{path}"

    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=url(request, openapi_url),
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=url(request, OAUTH2_REDIRECT_URL),
            swagger_js_url=url(request, f"{ASSETS_URL}/swagger-ui-bundle.js"),
            swagger_css_url=url(request, f"{ASSETS_URL}/swagger-ui.css"),
            swagger_favicon_url=url(request, f"{ASSETS_URL}/favicon.png"),
            # No badge fetched from swagger.io's online validator.
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=url(request, openapi_url),
            title=f"{app.title} - ReDoc",
            redoc_js_url=url(request, f"{ASSETS_URL}/redoc.standalone.js"),
            redoc_favicon_url=url(request, f"{ASSETS_URL}/favicon.png"),
            with_google_fonts=False,
        )

    app.add_api_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_api_route(OAUTH2_REDIRECT_URL, oauth2_redirect, include_in_schema=False)
    app.add_api_route(REDOC_URL, redoc, include_in_schema=False)


def restore_example_nulls(spec: dict[str, Any]) -> dict[str, Any]:
    """FastAPI writes the OpenAPI without any null, also inside examples: an example answer
    then lacks its null fields, though the API always sends them. Put back each required
    field the example left out whose schema allows null."""
    components = spec.get("components", {}).get("schemas", {})

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref", "")
        return resolve(components[ref.rsplit("/", 1)[1]]) if ref else schema

    def nullable(schema: dict[str, Any]) -> bool:
        return any(branch.get("type") == "null" for branch in schema.get("anyOf", []))

    def fill(value: Any, schema: dict[str, Any]) -> None:
        schema = resolve(schema)
        for branch in schema.get("anyOf", []):
            fill(value, branch)
        if isinstance(value, list) and "items" in schema:
            for item in value:
                fill(item, schema["items"])
        if isinstance(value, dict) and "properties" in schema:
            for name, field in schema["properties"].items():
                if name in value:
                    fill(value[name], field)
                elif name in schema.get("required", []) and nullable(resolve(field)):
                    value[name] = None

    for item in spec.get("paths", {}).values():
        for operation in item.values():
            for answer in operation.get("responses", {}).values():
                for media in answer.get("content", {}).values():
                    if "example" in media and "schema" in media:
                        fill(media["example"], media["schema"])
    return spec
