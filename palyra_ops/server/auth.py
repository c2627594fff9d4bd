"""Who is calling: the bearer-token check every route but the public ones sits behind (SPEC §6).

A plain ASGI middleware (not Starlette's `BaseHTTPMiddleware`, which costs a task and a body copy
per request — noticeable on the loopback dispatch path that carries every scheduled run). It is the
only token check: routes are reachable only through `create_app`, which puts it outermost.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from palyra_ops.context import DaemonContext
from palyra_ops.errors import NotAuthenticated
from palyra_ops.server.errors import error_response

#: routes reachable without a token (SPEC §6: only the health check)
PUBLIC_PATHS = frozenset({"/healthz"})
#: routes whose handler authenticates (signed webhooks); TokenAuth only notes whether a token matched
SELF_AUTH_PREFIX = "/webhooks/"
#: the web console (`server/ui`): a browser sends no bearer token, so its own gate checks a session
#: cookie (and CSRF) in front of every page instead (SPEC §6: "the web console's login page")
SESSION_AUTH_PREFIX = "/ui"


def session_authenticated(path: str) -> bool:
    return path == SESSION_AUTH_PREFIX or path.startswith(SESSION_AUTH_PREFIX + "/")

INTERNAL = "internal"
CONSOLE = "console"


def presented_credential(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None


def who_is(auth: str | None, ctx: DaemonContext) -> str | None:
    """`internal` (the daemon's own per-process credential, which makes a `system:daemon` message
    believable), `console` (the token file in the state root), or None."""
    if auth is None or auth[:7].lower() != "bearer ":
        return None
    presented = auth[7:].strip().encode()
    if ctx.internal_token and hmac.compare_digest(presented, ctx.internal_token.encode()):
        return INTERNAL
    if ctx.token and hmac.compare_digest(presented, ctx.token.encode()):
        return CONSOLE
    return None


class TokenAuth:
    """Refuses a request without a valid token before anything reads its body.

    `scope["state"]["auth"]` tells handlers which credential matched; a webhook passes unauthenticated
    with `auth_error` noted, because an integration with a secret is authenticated by its signature,
    which its handler checks.
    """

    def __init__(self, app: ASGIApp, ctx: DaemonContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or session_authenticated(scope["path"]):
            await self.app(scope, receive, send)
            return
        auth = presented_credential(scope)
        who = who_is(auth, self.ctx)
        message = "missing bearer token" if auth is None else "invalid bearer token"
        if who is None and not scope["path"].startswith(SELF_AUTH_PREFIX):
            await error_response(NotAuthenticated(message))(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["auth"] = who
        if who is None:
            state["auth_error"] = message
        state["received_at_ms"] = self.ctx.clock.now_ms()  # gateway receipt, before body parsing
        await self.app(scope, receive, send)
