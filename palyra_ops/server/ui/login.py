"""Sign-in with the API token, and sign-out (SPEC §13).

The token is the same one the CLI and API use (`palyra-ops token` prints it); the console adds no
user database. A wrong token answers 401 with the form again and records nothing.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from palyra_ops.server.routes.common import ctx_of
from palyra_ops.server.ui.render import UI_PREFIX, html, page, redirect, safe_next
from palyra_ops.server.ui.session import LOGIN_COOKIE, LOGIN_NONCE_S, SESSION_COOKIE, SessionStore


def _store(request: Request) -> SessionStore:
    store: SessionStore = request.scope["state"]["ui_store"]
    return store


def _next_of(request: Request, value: str | None) -> str:
    return safe_next(value or UI_PREFIX + "/")


def _cookie_flags(request: Request) -> dict[str, object]:
    """HttpOnly, SameSite=Strict, only under /ui; Secure when the console is reached over TLS (a
    loopback http:// console could not set a Secure cookie at all)."""
    return {"httponly": True, "samesite": "strict", "path": UI_PREFIX, "secure": request.url.scheme == "https"}


def _form(request: Request, *, status_code: int = 200, error: str | None = None) -> Response:
    store = _store(request)
    nonce = request.cookies.get(LOGIN_COOKIE) or store.login_nonce()
    nxt = _next_of(request, request.query_params.get("next") or request.scope["state"].get("ui_form", {}).get("next"))
    response = html(request, "login.html", status_code=status_code, login_csrf=store.login_csrf(nonce), next=nxt,
                    error=error)
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_NONCE_S, **_cookie_flags(request))  # type: ignore[arg-type]
    return response


@page
async def login_page(request: Request) -> Response:
    if request.scope["state"].get("ui_session") is not None:
        return redirect(_next_of(request, request.query_params.get("next"))[len(UI_PREFIX):])
    return _form(request)


@page
async def sign_in(request: Request) -> Response:
    ctx = ctx_of(request)
    form: dict[str, str] = request.scope["state"]["ui_form"]
    store = _store(request)
    if not store.token_is_valid(ctx, form.get("token", "")):
        return _form(request, status_code=401, error="That is not this daemon's API token (palyra-ops token prints it).")
    old = request.cookies.get(SESSION_COOKIE)
    store.end(old)  # a fresh id on every sign-in: a planted cookie never becomes a session
    sid, _ = store.create(ctx.clock.now_ms())
    response = redirect(_next_of(request, form.get("next"))[len(UI_PREFIX):])
    response.set_cookie(SESSION_COOKIE, sid, **_cookie_flags(request))  # type: ignore[arg-type]
    response.delete_cookie(LOGIN_COOKIE, path=UI_PREFIX, httponly=True, samesite="strict")
    return response


@page
async def sign_out(request: Request) -> Response:
    _store(request).end(request.cookies.get(SESSION_COOKIE))
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path=UI_PREFIX, httponly=True, samesite="strict")
    return response


ROUTES = [
    Route("/login", login_page, methods=["GET"]),
    Route("/login", sign_in, methods=["POST"]),
    Route("/logout", sign_out, methods=["POST"]),
]
