"""Errors as JSON with a message, the same shape on every route."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.processing.commands import CommandError, Conflict, InvalidRequest, NotFound

# The one place where the commands' refusals become HTTP statuses.
COMMAND_STATUS: dict[type[CommandError], int] = {
    InvalidRequest: 400,
    NotFound: 404,
    Conflict: 409,
}


class ErrorBody(BaseModel):
    """Every error of the API, whatever its status."""

    error: str = Field(
        description="What was wrong, in words", examples=["no company 0498e921-9b53-4396"]
    )


class ApiError(Exception):
    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


def command_status(exc: CommandError) -> int:
    """The HTTP status of a command's refusal (an unlisted kind is the client's fault)."""
    return next((code for kind, code in COMMAND_STATUS.items() if isinstance(exc, kind)), 400)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, exc.status_code, headers=exc.headers)

    @app.exception_handler(CommandError)
    async def _refused(request: Request, exc: CommandError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, command_status(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return JSONResponse({"error": f"invalid request: {problems}"}, 422)
