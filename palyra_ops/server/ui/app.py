"""The console's mount at `/ui`: security headers → session gate → the pages' router.

`TokenAuth` (server/auth.py) lets `/ui` through without a bearer token because a browser cannot send
one; the gate below is the console's credential check instead: no session, no page (a redirect to
sign-in), and no POST without its session's CSRF token (a 403 that reaches no handler, so nothing
changes). Both checks sit in front of the whole router rather than in each handler, so a page added
later cannot forget them. The mount is not a route table the OpenAPI document walks into (its app is
this middleware, not a router): the console is HTML for people, not part of the API.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, quote

from starlette._utils import get_route_path
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Mount, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from palyra_ops.errors import InvalidInput, NotFound, PalyraError, PayloadTooLarge, PermissionDenied
from palyra_ops.server.ui import login, pages, pages_ops
from palyra_ops.server.ui.listing import RoutineIndex
from palyra_ops.server.ui.render import UI_PREFIX, error_page, page, safe_next
from palyra_ops.server.ui.session import CSRF_FIELD, LOGIN_COOKIE, SESSION_COOKIE, Session, SessionStore

STATIC = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
#: a console form is a few short fields; anything bigger is not one of ours
MAX_FORM_BYTES = 64 * 1024

#: no inline script or style anywhere, nothing from another origin, never framed (SPEC §13)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class SecurityHeaders:
    """The headers every console answer carries; pages are never cached (they show live state and a
    CSRF token), the packaged assets may be for an hour. `Server-Timing` says how long the console
    took to answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        static = get_route_path(scope).startswith("/static/")
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                # the page's server time (gate + handler + template), for the browser's devtools and bench_ui
                headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers["Cache-Control"] = "private, max-age=3600" if static else "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _same_origin(request: Request) -> bool:
    """A browser names the page a POST comes from; one from another origin is refused even with a
    token (belt and braces: SameSite=Strict already keeps the cookie off cross-site requests)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (first value of each); the body limit middleware is in front.

    Any other body (JSON, multipart, text/plain — what a cross-site form can send) reads as no
    fields, so it fails the CSRF check like a form without its token: one answer, 403."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PayloadTooLarge(f"form larger than {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"unreadable form: {exc}") from None
    return {k: v[0] for k, v in fields.items()}


class SessionGate:
    """No session → sign-in; a POST → its form read once, its CSRF token checked before any handler."""

    def __init__(self, app: ASGIApp, store: SessionStore, index: RoutineIndex) -> None:
        self.app = app
        self.store = store
        self.index = index

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = get_route_path(scope)
        if path == "":
            await RedirectResponse(UI_PREFIX + "/", status_code=307)(scope, receive, send)
            return
        request = Request(scope, receive)
        state = scope.setdefault("state", {})
        ctx = scope["app"].state.ctx
        state["ui_store"] = self.store
        state["ui_index"] = self.index
        session = self.store.get(request.cookies.get(SESSION_COOKIE), ctx.clock.now_ms())
        state["ui_session"] = session
        try:
            if path.startswith("/static/") or path == "/login":
                if request.method == "POST":
                    state["ui_form"] = await self._checked_form(request, None)
            elif session is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                await RedirectResponse(f"{UI_PREFIX}/login?next={quote(safe_next(target), safe='')}",
                                       status_code=303)(scope, receive, send)
                return
            elif request.method == "POST":
                state["ui_form"] = await self._checked_form(request, session)
        except PalyraError as exc:
            await error_page(request, exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _checked_form(self, request: Request, session: Session | None) -> dict[str, str]:
        form = await read_form(request)
        presented = form.get(CSRF_FIELD)
        if session is None:  # the sign-in form: its signed nonce
            ok = self.store.login_csrf_ok(request.cookies.get(LOGIN_COOKIE), presented)
        else:
            ok = self.store.csrf_ok(session, presented)
        if not ok or not _same_origin(request):
            raise PermissionDenied("the form's CSRF token is missing or wrong: nothing was changed "
                                   "(reload the page and try again)")
        return form


class ConsoleMount(Mount):
    """`/ui/...`, and `/ui` itself (which the gate redirects to `/ui/`): Starlette's Mount matches
    only below its path, and the app turns off slash redirects for the API's sake."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and get_route_path(scope) == self.path:
            root = scope.get("root_path", "")
            return Match.FULL, {"path_params": {}, "app_root_path": scope.get("app_root_path", root),
                                "root_path": root + self.path, "endpoint": self.app}
        return super().matches(scope)


def _assets() -> dict[str, tuple[bytes, str]]:
    return {p.name: (p.read_bytes(), MEDIA_TYPES[p.suffix]) for p in STATIC.iterdir() if p.suffix in MEDIA_TYPES}


ASSETS = _assets()


@page
async def static_asset(request: Request) -> Response:
    """The packaged script and style sheet, from memory: two small files, named (no path from the
    request reaches the file system), and a plain response — Starlette's FileResponse stops
    streaming at the first `http.disconnect`, which the body limit's replayed `receive` reports
    straight away."""
    found = ASSETS.get(request.path_params["name"])
    if found is None:
        raise NotFound(f"no asset {request.path_params['name']!r}")
    return Response(found[0], media_type=found[1])


def page_routes() -> list[Route]:
    return [*login.ROUTES, *pages.ROUTES, *pages_ops.ROUTES, Route("/static/{name}", static_asset, methods=["GET"])]


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    await error_page(request, NotFound(f"no page {request.url.path}"))(scope, receive, send)


def console_mount() -> ConsoleMount:
    """The whole console as one route of the server's table (a fresh session store per app)."""
    router = Router(routes=page_routes(), redirect_slashes=False, default=not_found)
    return ConsoleMount(UI_PREFIX, app=SecurityHeaders(SessionGate(router, SessionStore(), RoutineIndex())))
