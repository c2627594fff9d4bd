"""The daemon's Starlette app: the route table and the middleware order.

Middleware, outermost first: TokenAuth (`auth`) → BodyLimit (`body`) → GatewayFastPath → the router.
A request without a valid token is refused before its body is read; webhooks pass TokenAuth
unauthenticated because an integration with a secret is authenticated by its signature (SPEC §6),
which the handler checks — after BodyLimit, so an oversized unsigned body is a 413 without being
read. Errors of every layer render through `errors.error_response`.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Router, compile_path

from palyra_ops import webhooks
from palyra_ops.context import DaemonContext
from palyra_ops.server.auth import TokenAuth
from palyra_ops.server.body import DEFAULT_MAX_BODY_BYTES, BodyLimit
from palyra_ops.server.errors import HANDLERS
from palyra_ops.server.operation import walk
from palyra_ops.server.routes import (
    approvals,
    events,
    gateway,
    health,
    memory,
    operator,
    routines,
    schedule,
    system,
)
from palyra_ops.server.ui import console_mount

CONSOLE_PREFIX = "/console/v1"


def console_routes() -> list[BaseRoute]:
    """`/console/v1/...`, literal paths before the templated ones that would also match their text."""
    return [*routines.ROUTES, *schedule.ROUTES, *routines.ROUTINE_ROUTES, *operator.ROUTES, *approvals.ROUTES, *memory.ROUTES,
            *system.ROUTES, *events.CONSOLE_ROUTES]


def routes() -> list[BaseRoute]:
    """The whole route table (what the app serves and the OpenAPI document describes)."""
    # no 307 from `/x/` to `/x` (in the mount either): a client must not have its POST replayed to
    # another route, and a path parameter left empty is a 404, not the listing next door
    console = Router(routes=console_routes(), redirect_slashes=False)
    return [*health.ROUTES, *gateway.ROUTES, *events.ROUTES, Mount(CONSOLE_PREFIX, app=console), console_mount()]


def allowed_methods(table: list[BaseRoute]) -> Callable[[str], list[str]]:
    """The methods of the resource at a path, for a 405's `Allow`: a literal route
    (`/routines/dispatch`) is that resource, even where a templated one (`/routines/{routine_id}`)
    would also match the text."""
    known = [(compile_path(path)[0], path, route.methods or set()) for path, route in walk(table)]

    def allowed(path: str) -> list[str]:
        matching = [(p, methods) for regex, p, methods in known if methods and regex.match(path)]
        chosen = [m for p, m in matching if p == path] or [m for _, m in matching]
        return sorted(set().union(*chosen))

    return allowed


def create_app(ctx: DaemonContext) -> Starlette:
    table = routes()
    app = Starlette(routes=table, exception_handlers=dict(HANDLERS))
    app.router.redirect_slashes = False
    app.state.ctx = ctx
    app.state.webhook_ids = webhooks.ReplayCache()
    app.state.allowed_methods = allowed_methods(table)
    app.add_middleware(gateway.GatewayFastPath, ctx=ctx)
    app.add_middleware(BodyLimit, max_bytes=getattr(ctx.config, "max_body_bytes", DEFAULT_MAX_BODY_BYTES))
    app.add_middleware(TokenAuth, ctx=ctx)  # added last = outermost: auth runs first
    return app
