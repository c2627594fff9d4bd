"""Templates and the HTML answers of the console.

One Jinja environment with autoescape on for everything (routine names, descriptions, prompts and
run outputs are operator- or agent-written text) and `StrictUndefined`, so a template that names a
missing value fails its test instead of rendering an empty cell. Errors keep the server's one status
table (`server.errors.http_status`); only the body is HTML here, because a person reads it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from palyra_ops.errors import PalyraError
from palyra_ops.server.errors import http_status
from palyra_ops.server.ui.session import CSRF_FIELD, Session

UI_PREFIX = "/ui"
Handler = Callable[[Request], Awaitable[Response]]


def _short_time(value: str | None) -> str:
    """`2026-03-01T09:00:00+01:00` → `2026-03-01 09:00:00 +01:00` (easier to scan in a table)."""
    if not value:
        return "-"
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return value
    offset = dt.strftime("%z")
    offset = "UTC" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    return dt.strftime("%Y-%m-%d %H:%M:%S") + f" {offset}"


def _utc(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return _short_time(datetime.fromisoformat(value).astimezone(UTC).isoformat())
    except ValueError:
        return value


def _query(params: dict[str, Any], **changes: Any) -> str:
    merged = {k: v for k, v in {**params, **changes}.items() if v not in (None, "")}
    return "?" + urlencode(merged) if merged else ""


ENV = Environment(
    loader=PackageLoader("palyra_ops.server.ui", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["t"] = _short_time
ENV.filters["utc"] = _utc
ENV.globals["query"] = _query
ENV.globals["prefix"] = UI_PREFIX


def html(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """A page (or a fragment) with the session's CSRF token and its pending flash message."""
    state = request.scope.get("state", {})
    session: Session | None = state.get("ui_session")
    flash: list[tuple[str, str]] = []
    if session is not None and not template.startswith("_"):  # a fragment (`_x.html`) leaves them for the page
        flash, session.flash = session.flash, []
    body = ENV.get_template(template).render(
        csrf=session.csrf if session else "",
        csrf_field=CSRF_FIELD,
        signed_in=session is not None,
        flash=flash,
        path=request.url.path,
        **values,
    )
    return HTMLResponse(body, status_code=status_code)


def error_page(request: Request, exc: PalyraError) -> HTMLResponse:
    """A domain error as a page: the status of the server's error table, the error's own message."""
    status = http_status(exc)
    return html(request, "error.html", status_code=status, status=status, code=exc.code, message=exc.message)


def page(handler: Handler) -> Handler:
    """A console handler whose domain errors are shown as a page (with the table's status)."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except PalyraError as exc:
            return error_page(request, exc)

    return wrapped


def safe_next(path: str) -> str:
    """Where to go after sign-in: only a console path of this daemon (no open redirect)."""
    ok = path.startswith(UI_PREFIX + "/") and not path.startswith("//") and "\\" not in path
    return path if ok else UI_PREFIX + "/"


def redirect(path: str, **params: Any) -> Response:
    """303 See Other: after a POST the browser GETs the page (no re-post on reload)."""
    return RedirectResponse(UI_PREFIX + path + _query(params), status_code=303)
