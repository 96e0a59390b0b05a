"""The dashboard's pages and actions under /ui: thin, server-rendered.

Pages read through the status API's query functions (app/api/queries.py) and this
package's `reads`; actions go through app/processing/commands.py, as the API and the
CLI do. Every route but the sign-in form and the stylesheet depends on the session
cookie, which is checked before any body is read; every POST carries a CSRF token.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from app.api import queries
from app.api.auth import token_matches
from app.api.errors import ApiError, command_status
from app.api.queries import tag_clauses
from app.api.status import Session
from app.codat.datatypes import BILL_PAY_DATA_TYPES
from app.codat.push import PushOperationStatus
from app.dashboard import reads
from app.dashboard.auth import (
    PREFIX,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    BadForm,
    DashboardSession,
    SignInRequired,
    check_csrf,
    new_session_cookie,
    read_form,
    require_session,
    safe_next,
)
from app.dashboard.charts import Series, bar_chart
from app.models import EventStatus, utcnow
from app.processing import commands
from app.processing.commands import CommandError, EventFilter

ASSETS = Path(__file__).parent / "assets"
PAGE_SIZE = 50
# No script, no frame, no other origin: the pages need none.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NAV = [
    ("overview", PREFIX, "Overview"),
    ("events", f"{PREFIX}/events", "Events"),
    ("companies", f"{PREFIX}/companies", "Companies"),
    ("writes", f"{PREFIX}/writes", "Writes"),
]
FAILED_WRITES = (PushOperationStatus.FAILED, PushOperationStatus.TIMED_OUT)

templates = Environment(
    loader=PackageLoader("app.dashboard", "templates"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _is_link(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


templates.filters["when"] = _when
templates.filters["age"] = _age
templates.tests["link"] = _is_link

router = APIRouter(prefix=PREFIX, include_in_schema=False)
Signed = Annotated[DashboardSession, Depends(require_session)]


def page(
    request: Request, name: str, *, status_code: int = 200, active: str = "", **context: Any
) -> HTMLResponse:
    signed_in: DashboardSession | None = getattr(request.state, "dashboard_session", None)
    html = templates.get_template(name).render(
        nav=NAV,
        active=active,
        csrf=signed_in.csrf if signed_in else "",
        signed_in=signed_in is not None,
        prefix=PREFIX,
        **context,
    )
    return HTMLResponse(html, status_code, headers=SECURITY_HEADERS)


def _redirect(path: str, **query: str | int) -> RedirectResponse:
    """A relative Location: no client-chosen host can end up in it."""
    target = path + (f"?{urlencode(query)}" if query else "")
    return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)


def _cookie_options(request: Request) -> dict[str, Any]:
    return {
        "path": PREFIX,
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
    }


async def _checked_form(request: Request, signed: Signed) -> dict[str, str]:
    """The posted form, after the session was checked and before any command runs."""
    form = await read_form(request)
    check_csrf(signed.csrf, form.get("csrf"))
    return form


CheckedForm = Annotated[dict[str, str], Depends(_checked_form)]


# -- signing in and out ---------------------------------------------------------------------


def sign_in_page(
    request: Request, *, status_code: int, next_path: str, message: str = "", notice: str = ""
) -> Response:
    """The form, with a fresh double-submit token in a short-lived cookie."""
    token = secrets.token_urlsafe(24)
    response = page(
        request,
        "sign_in.html",
        status_code=status_code,
        sign_in_csrf=token,
        next_path=next_path,
        message=message,
        notice=notice,
        no_tokens=not request.app.state.api_tokens,
    )
    response.set_cookie(SIGN_IN_COOKIE, token, max_age=3600, **_cookie_options(request))
    return response


@router.get("/sign-in")
async def sign_in_form(request: Request, next: str | None = None) -> Response:
    signed_out = request.query_params.get("signed_out") == "1"
    return sign_in_page(
        request,
        status_code=200,
        next_path=safe_next(next),
        notice="You have signed out." if signed_out else "",
    )


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await read_form(request)
    check_csrf(request.cookies.get(SIGN_IN_COOKIE), form.get("csrf"))
    next_path = safe_next(form.get("next"))
    token = form.get("token", "").strip()
    if not token_matches(token or None, request.app.state.api_tokens):
        return sign_in_page(
            request,
            status_code=401,
            next_path=next_path,
            message="That is not one of the status API tokens (STATUS_API_TOKENS).",
        )
    minutes = request.app.state.settings.dashboard_session_minutes
    cookie = new_session_cookie(token.encode(), utcnow(), timedelta(minutes=minutes))
    response = _redirect(next_path)
    response.set_cookie(SESSION_COOKIE, cookie, max_age=minutes * 60, **_cookie_options(request))
    response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, form: CheckedForm) -> Response:
    response = _redirect(f"{PREFIX}/sign-in", signed_out=1)
    response.delete_cookie(SESSION_COOKIE, **_cookie_options(request))
    return response


@router.get("/assets/dashboard.css")
async def stylesheet() -> Response:
    """Public: the sign-in page needs it, and it holds nothing but styles."""
    return Response(
        (ASSETS / "dashboard.css").read_bytes(),
        media_type="text/css",
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


# -- overview -------------------------------------------------------------------------------


@router.get("")
async def overview(request: Request, db: Session, signed: Signed) -> Response:
    settings = request.app.state.settings
    now = utcnow()
    hours = await reads.events_by_hour(db, now)
    labels = [hour.start.strftime("%H:00") for hour in hours]
    chart = bar_chart(
        "Events received per hour over the last 24 hours, by outcome",
        labels,
        [
            Series("received", "s-received", [h.received for h in hours]),
            Series("processed", "s-processed", [h.processed for h in hours]),
            Series("dead", "s-dead", [h.dead for h in hours]),
        ],
    )
    states = await reads.company_state_counts(
        db, settings.bill_pay_variant, now - settings.freshness_max_age
    )
    return page(
        request,
        "overview.html",
        active="overview",
        chart=chart,
        hours=hours,
        queues=await queries.queue_depths(db, now),
        rate_limit=await queries.get_rate_limit(db, now),
        missed=await reads.missed_webhooks(db),
        states=states,
        state_names=reads.COMPANY_STATES,
        overview_states=("ready", "incomplete", "needs_reauth", "stale"),
        resumed=request.query_params.get("resumed"),
    )


@router.post("/rate-limit/resume")
async def resume_rate_limit(request: Request, db: Session, form: CheckedForm) -> Response:
    """Lift a pause by hand, as `POST /api/v1/rate-limit/resume` and `codat-webhooks
    resume` do (logged and announced by the command)."""
    resumed = await commands.resume_rate_limit(
        db, utcnow(), endpoints=request.app.state.settings.notify_endpoints
    )
    return _redirect(PREFIX, resumed="lifted" if resumed.lifted else "none")


# -- events ---------------------------------------------------------------------------------


def _blank_to_none(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _parse_time(value: str | None, what: str, problems: list[str]) -> datetime | None:
    """`datetime-local` inputs (`2026-11-30T09:00`) or ISO 8601; no offset means UTC."""
    text = _blank_to_none(value)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
        return commands.as_utc(moment)
    except (ValueError, CommandError):
        problems.append(f"{what}: not a date and time ({text[:40]})")
        return None


def event_filter_from(values: dict[str, str | None]) -> tuple[EventFilter, list[str]]:
    """The events page's filters, and what was wrong with them (a wrong one is dropped)."""
    problems: list[str] = []
    status = _blank_to_none(values.get("status"))
    if status is not None and status not in set(EventStatus):
        problems.append(f"status: not one of {', '.join(EventStatus)}")
        status = None
    return (
        EventFilter(
            event_type=_blank_to_none(values.get("event_type")),
            status=status,
            company_id=_blank_to_none(values.get("company_id")),
            received_after=_parse_time(values.get("received_after"), "received after", problems),
            received_before=_parse_time(values.get("received_before"), "received before", problems),
            delivery_id=_blank_to_none(values.get("delivery_id")),
        ),
        problems,
    )


FILTER_FIELDS = (
    "event_type",
    "status",
    "company_id",
    "received_after",
    "received_before",
    "delivery_id",
)


def _query_values(request: Request) -> dict[str, str | None]:
    return {name: request.query_params.get(name) for name in FILTER_FIELDS}


@router.get("/events")
async def events(request: Request, db: Session, signed: Signed) -> Response:
    values = _query_values(request)
    filters, problems = event_filter_from(values)
    cursor = _blank_to_none(request.query_params.get("cursor"))
    try:
        found = await queries.list_events(db, filters, limit=PAGE_SIZE, cursor=cursor)
    except (ApiError, CommandError) as exc:
        return _error(request, exc, active="events")
    kept = {k: v for k, v in values.items() if v}
    return page(
        request,
        "events.html",
        active="events",
        events=found.items,
        values=values,
        problems=problems,
        statuses=list(EventStatus),
        next_link=(
            f"{PREFIX}/events?{urlencode({**kept, 'cursor': found.next_cursor})}"
            if found.next_cursor
            else None
        ),
        replay_link=f"{PREFIX}/events/replay?{urlencode(kept)}" if kept else None,
        queued=_int(request.query_params.get("queued")),
    )


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() and len(text) < 10 else None


@router.get("/events/{event_id:int}")
async def event_detail(request: Request, db: Session, signed: Signed, event_id: int) -> Response:
    try:
        event = await queries.get_event(db, event_id)
    except (ApiError, CommandError) as exc:
        return _error(request, exc, active="events")
    return page(
        request,
        "event.html",
        active="events",
        event=event,
        payload=json.dumps(event.payload, indent=2, sort_keys=True, ensure_ascii=False)
        if event.raw_body is None
        else None,
        replayable=event.status not in commands.NOT_REPLAYABLE,
        replayed=request.query_params.get("replayed") == "1",
    )


@router.post("/events/{event_id:int}/replay")
async def replay_event(request: Request, db: Session, form: CheckedForm, event_id: int) -> Response:
    try:
        await commands.replay_event(db, event_id, utcnow())
    except CommandError as exc:
        await db.rollback()
        return _error(request, exc, active="events")
    return _redirect(f"{PREFIX}/events/{event_id}", replayed=1)


@router.get("/events/replay")
async def replay_preview(request: Request, db: Session, signed: Signed) -> Response:
    """The dry run: how many events the filters would queue again, and a button to do it."""
    values = _query_values(request)
    filters, problems = event_filter_from(values)
    count = None
    error = None
    if not problems:
        try:
            count = await commands.count_replayable(db, filters)
        except CommandError as exc:
            error = exc.message
    return page(
        request,
        "replay.html",
        active="events",
        values=values,
        problems=problems,
        error=error,
        count=count,
        fields=FILTER_FIELDS,
    )


@router.post("/events/replay")
async def replay_events(request: Request, db: Session, form: CheckedForm) -> Response:
    filters, problems = event_filter_from(dict(form))
    if problems:
        return _error(request, commands.InvalidRequest("; ".join(problems)), active="events")
    try:
        queued = await commands.replay_events(db, filters, utcnow())
    except CommandError as exc:
        await db.rollback()
        return _error(request, exc, active="events")
    kept = {name: form[name] for name in FILTER_FIELDS if form.get(name)}
    return _redirect(f"{PREFIX}/events", **kept, queued=queued)


# -- companies ------------------------------------------------------------------------------


@router.get("/companies")
async def companies(request: Request, db: Session, signed: Signed) -> Response:
    settings = request.app.state.settings
    state = _blank_to_none(request.query_params.get("state"))
    tag = _blank_to_none(request.query_params.get("tag"))
    problems = []
    try:
        tag_clauses([tag] if tag else [])
    except ApiError as exc:
        problems.append(f"tag: {exc.message}")
        tag = None
    if state is not None and state not in reads.COMPANY_STATES:
        problems.append(f"state: not one of {', '.join(reads.COMPANY_STATES)}")
        state = None
    try:
        grid = await reads.company_grid(
            db,
            BILL_PAY_DATA_TYPES[settings.bill_pay_variant],
            state=state,
            tags=[tag] if tag else [],
            limit=PAGE_SIZE,
            cursor=_blank_to_none(request.query_params.get("cursor")),
            variant=settings.bill_pay_variant,
            now=utcnow(),
            max_age=settings.freshness_max_age,
        )
    except (ApiError, CommandError) as exc:
        return _error(request, exc, active="companies")
    kept = {"state": state, "tag": tag} if tag else {"state": state}
    kept = {name: value for name, value in kept.items() if value}
    return page(
        request,
        "companies.html",
        active="companies",
        grid=grid,
        state=state,
        tag=tag or "",
        problems=problems,
        state_names=reads.COMPANY_STATES,
        next_link=(
            f"{PREFIX}/companies?{urlencode({**kept, 'cursor': grid.next_cursor})}"
            if grid.next_cursor
            else None
        ),
    )


@router.get("/companies/{company_id}")
async def company_detail(
    request: Request, db: Session, signed: Signed, company_id: str
) -> Response:
    settings = request.app.state.settings
    now = utcnow()
    try:
        company = await queries.get_company(
            db, company_id, now=now, max_age=settings.freshness_max_age
        )
        writes = await queries.list_writes(db, limit=PAGE_SIZE, cursor=None, company_id=company_id)
    except (ApiError, CommandError) as exc:
        return _error(request, exc, active="companies")
    states = {state.data_type: state for state in company.data_types}
    return page(
        request,
        "company.html",
        active="companies",
        company=company,
        data_types=sorted(set(BILL_PAY_DATA_TYPES[settings.bill_pay_variant]) | set(states)),
        states=states,
        freshness={
            name: reads.freshness_of(state.last_read_status, state.overdue)
            for name, state in states.items()
        },
        writes=writes.items,
        notice=request.query_params.get("queued"),
    )


@router.post("/companies/{company_id}/refresh")
async def refresh_company(
    request: Request, db: Session, form: CheckedForm, company_id: str
) -> Response:
    try:
        await commands.refresh_company(
            db,
            company_id,
            None,
            variant=request.app.state.settings.bill_pay_variant,
            now=utcnow(),
        )
    except CommandError as exc:
        await db.rollback()
        return _error(request, exc, active="companies")
    return _redirect(f"{PREFIX}/companies/{quote(company_id, safe='')}", queued="refresh")


@router.post("/companies/{company_id}/reconcile")
async def reconcile_company(
    request: Request, db: Session, form: CheckedForm, company_id: str
) -> Response:
    try:
        await commands.reconcile_company(db, company_id, utcnow())
    except CommandError as exc:
        await db.rollback()
        return _error(request, exc, active="companies")
    return _redirect(f"{PREFIX}/companies/{quote(company_id, safe='')}", queued="reconcile")


# -- writes ---------------------------------------------------------------------------------


@router.get("/writes")
async def writes(request: Request, db: Session, signed: Signed) -> Response:
    """Failures first (the newest of each failing status), then every write, newest first."""
    cursor = _blank_to_none(request.query_params.get("cursor"))
    try:
        failures = []
        if cursor is None:
            for status in FAILED_WRITES:
                failed = await queries.list_writes(db, limit=PAGE_SIZE, cursor=None, status=status)
                failures.extend(failed.items)
            failures.sort(key=lambda write: write.updated_at, reverse=True)
        everything = await queries.list_writes(db, limit=PAGE_SIZE, cursor=cursor)
    except (ApiError, CommandError) as exc:
        return _error(request, exc, active="writes")
    return page(
        request,
        "writes.html",
        active="writes",
        failures=failures[:PAGE_SIZE],
        writes=everything.items,
        next_link=(
            f"{PREFIX}/writes?{urlencode({'cursor': everything.next_cursor})}"
            if everything.next_cursor
            else None
        ),
    )


# -- errors ---------------------------------------------------------------------------------


def _error(
    request: Request, exc: ApiError | CommandError | BadForm, *, active: str = ""
) -> Response:
    status_code = command_status(exc) if isinstance(exc, CommandError) else exc.status_code
    return page(request, "error.html", status_code=status_code, active=active, message=exc.message)


def install(app: FastAPI) -> None:
    """The pages, and the answers to a missing session and a refused form."""
    app.include_router(router)

    async def _sign_in_required(request: Request, exc: Exception) -> Response:
        target = request.url.path
        if request.method == "GET" and request.url.query:
            target += f"?{request.url.query}"
        return sign_in_page(request, status_code=401, next_path=safe_next(target))

    async def _bad_form(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadForm)
        response = _error(request, exc)
        if exc.status_code == 413:
            response.headers["Connection"] = "close"
        return response

    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(BadForm, _bad_form)
