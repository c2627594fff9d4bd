"""The daemon's HTTP surface: auth, error bodies, and the runtime routes (gateway, events, metrics).

The console routes proper live in `palyra_ops.console_api` and are mounted here when present; this
module owns what every route shares. Auth is a plain ASGI middleware (not Starlette's
`BaseHTTPMiddleware`, which costs a task and a body copy per request — noticeable on the loopback
dispatch path that carries every scheduled run).

Middleware order, outermost first: TokenAuth → BodyLimit (`palyra_ops.httpbody`) → GatewayFastPath
→ the router. A request without a valid token is refused before its body is read; webhooks pass
TokenAuth unauthenticated because an integration with a secret is authenticated by its signature
(SPEC §6), which the handler checks — after BodyLimit, so an oversized unsigned body is a 413
without being read. Every run a response shows is rendered by `views.run_view`.
"""

from __future__ import annotations

import hmac
import importlib
import json
import logging
import os
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from palyra_ops import views, webhooks
from palyra_ops.context import DaemonContext
from palyra_ops.errors import BadRequest, NotFound, PalyraError, Unauthorized
from palyra_ops.httpbody import (
    DEFAULT_MAX_BODY_BYTES,
    INTERNAL_DEPTH_MARGIN,
    MAX_JSON_DEPTH,
    BodyLimit,
    parse_json,
)

log = logging.getLogger("palyra_ops.server")

#: routes reachable without a token (SPEC §6: only the health check)
PUBLIC_PATHS = frozenset({"/healthz"})
#: routes whose handler authenticates (signed webhooks); TokenAuth only notes whether a token matched
SELF_AUTH_PREFIX = "/webhooks/"

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid",
                 500: "internal", 503: "unavailable"}


def error_response(status: int, message: str, code: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"code": code or _STATUS_CODES.get(status, "error"), "message": message}
    body.update(extra)
    return JSONResponse({"error": body}, status_code=status)


class TokenAuth:
    """Bearer-token check for every route but the public ones.

    Two credentials are accepted: the console token (the file in the state root) and the daemon's
    internal credential, a per-process secret that never leaves memory and is what makes a
    `system:daemon` message believable. `scope["state"]["auth"]` tells handlers which one matched.
    """

    def __init__(self, app: ASGIApp, ctx: DaemonContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        auth = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value.decode("latin-1")
                break
        who = None
        if auth is not None and auth[:7].lower() == "bearer ":
            presented = auth[7:].strip().encode()
            if self.ctx.internal_token and hmac.compare_digest(presented, self.ctx.internal_token.encode()):
                who = "internal"
            elif self.ctx.token and hmac.compare_digest(presented, self.ctx.token.encode()):
                who = "console"
        msg = "missing bearer token" if auth is None else "invalid bearer token"
        if who is None and not scope["path"].startswith(SELF_AUTH_PREFIX):
            resp = error_response(401, msg, "unauthorized")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="palyra"'
            await resp(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["auth"] = who
        if who is None:
            state["auth_error"] = msg
        state["received_at_ms"] = self.ctx.clock.now_ms()  # gateway receipt, before body parsing
        await self.app(scope, receive, send)


class GatewayFastPath:
    """`POST /gateway/v1/messages` as plain ASGI, ahead of the router.

    Every scheduled run is one of these calls; skipping Starlette's routing, Request and Response
    objects is a measurable share of a loopback round trip. Behaviour (auth by the middleware in
    front, JSON errors, status codes) is the same as the routed handler, which stays registered for
    the route list, OpenAPI and other methods (405).
    """

    PATH = "/gateway/v1/messages"

    def __init__(self, app: ASGIApp, ctx: DaemonContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        raw = b"".join(chunks)
        state = scope.get("state", {})
        internal = state.get("auth") == "internal"
        try:
            body = parse_json(raw, max_depth=MAX_JSON_DEPTH + (INTERNAL_DEPTH_MARGIN if internal else 0)) if raw else None
            if not isinstance(body, dict):
                raise PalyraError("request body must be a JSON object", code="bad_request", status=400)
            status, result = await self.ctx.gateway.handle_message(
                body, internal=internal, received_at_ms=state.get("received_at_ms"))
            payload = json.dumps(message_result(status, result), separators=(",", ":")).encode()
        except PalyraError as exc:
            status = exc.status
            payload = json.dumps({"error": {"code": exc.code, "message": exc.message}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def message_result(status: int, result: dict[str, Any]) -> dict[str, Any]:
    """A routine message's answer (202) is the run; a user message's (200) is the output."""
    return views.run_view(result) if status == 202 else result


async def read_json(request: Request, *, required: bool = True) -> Any:
    raw = await request.body()
    if not raw:
        if required:
            raise PalyraError("request body must be a JSON object", code="bad_request", status=400)
        return {}
    return parse_json(raw)


# -- handlers ---------------------------------------------------------------------------------------


def health_problems(ctx: DaemonContext) -> list[dict[str, Any]]:
    """What keeps the daemon from doing its job right now, worst first; empty when healthy.

    The journal's own verdict (its last writes failed: full, read-only, unavailable), else what its
    file system says (full or mounted read-only, before a write even fails), then the scheduler's
    current trouble and run records still waiting to be written. Each clears by itself once the
    cause is gone (the scheduler probes the journal while a fault stands).
    """
    from palyra_ops.clock import rfc3339
    from palyra_ops.journal import filesystem_problem

    out: list[dict[str, Any]] = []
    journal = ctx.journal
    fault = getattr(journal, "fault", None)
    if fault is None:
        fault = filesystem_problem(journal.path)
        since = None
    else:
        since = rfc3339(journal.fault_since_ms())
    if fault is not None:
        out.append({"component": "journal", "code": fault.code, "message": fault.message, "since": since})
    sched = ctx.scheduler
    if sched is not None and getattr(sched, "fault", None):
        out.append({"component": "scheduler", "code": "scheduler_paused",
                    "message": f"scheduler paused, retrying every {sched.backoff_s:g} s: {sched.fault}",
                    "since": rfc3339(sched.fault_since_ms)})
    held = ctx.gateway.unwritten_count() if ctx.gateway is not None else 0
    if held:
        out.append({"component": "gateway", "code": "runs_unrecorded",
                    "message": f"{held} run record(s) wait for the journal to be writable", "since": None})
    return out


async def healthz(request: Request) -> Response:
    """200 `{"status": "ok"}`, or 503 naming what is wrong (SPEC §6: errors say what and why)."""
    ctx: DaemonContext = request.app.state.ctx
    problems = health_problems(ctx)
    if not problems:
        return JSONResponse({"status": "ok"})
    first = problems[0]
    return JSONResponse({"status": "unavailable", "error": {"code": first["code"], "message": first["message"]},
                         "problems": problems}, status_code=503)


async def metrics(request: Request) -> Response:
    ctx: DaemonContext = request.app.state.ctx
    text = ctx.gateway.metrics.render(ctx) if ctx.gateway is not None else ""
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


async def gateway_messages(request: Request) -> Response:
    ctx: DaemonContext = request.app.state.ctx
    body = await read_json(request)
    if not isinstance(body, dict):
        raise PalyraError("request body must be a JSON object", code="bad_request", status=400)
    state = request.scope.get("state", {})
    internal = state.get("auth") == "internal"
    status, result = await ctx.gateway.handle_message(body, internal=internal, received_at_ms=state.get("received_at_ms"))
    return JSONResponse(message_result(status, result), status_code=status)


EVENT_HEADERS = ("x-palyra-event", "x-github-event")
DELIVERY_HEADERS = ("x-palyra-delivery", "x-github-delivery")


def _first_header(request: Request, names: tuple[str, ...]) -> str | None:
    for n in names:
        v = request.headers.get(n)
        if v:
            return v
    return None


def _integration_secret(ctx: DaemonContext, integration: str) -> str | None:
    conf = (getattr(ctx.config, "integrations", None) or {}).get(integration)
    if conf is None or conf.secret is None:
        return None
    value = os.environ.get(conf.secret.env)
    if not value:  # an empty key would make every signature forgeable: refuse rather than accept
        log.error("webhook %s: secret variable %s is not set; refusing its webhooks", integration, conf.secret.env)
        raise PalyraError(f"webhook {integration}: its secret is not available to the daemon "
                          f"(environment variable {conf.secret.env})", code="unavailable", status=503)
    return value


def _event_of(request: Request, payload: Any) -> str | None:
    """The event name: a header, else `event` or (Standard Webhooks' convention) `type` in the body."""
    event = _first_header(request, EVENT_HEADERS)
    if event is None and isinstance(payload, dict):
        for key in ("event", "type"):
            if isinstance(payload.get(key), str):
                return payload[key]
    return event


async def webhook(request: Request) -> Response:
    """`POST /webhooks/{integration}` (SPEC §5, §6).

    An integration with a secret is authenticated by its signature alone (GitHub style or Standard
    Webhooks, `palyra_ops.webhooks`); one without needs the bearer token. The body limit has been
    applied by then. A Standard Webhooks id seen before is answered 200 `duplicate: true` and runs
    nothing; the id (or X-GitHub-Delivery) is also every run's dedupe key, which holds across restarts.
    """
    ctx: DaemonContext = request.app.state.ctx
    integration = request.path_params["integration"]
    raw = await request.body()
    secret = _integration_secret(ctx, integration)
    dedupe = _first_header(request, DELIVERY_HEADERS)
    message_id = None
    if secret is not None:
        verdict = webhooks.verify(secret, raw, request.headers, now_ms=ctx.clock.now_ms())
        if not verdict.ok:
            ctx.gateway.metrics.gate("webhook_signature", "rejected")
            return error_response(401, f"webhook {integration}: {verdict.reason}", "bad_signature")
        message_id = verdict.message_id
    elif request.scope.get("state", {}).get("auth") is None:  # no secret: the bearer token is the credential
        raise Unauthorized(request.scope.get("state", {}).get("auth_error", "missing bearer token"))
    elif integration not in (getattr(ctx.config, "integrations", None) or {}) \
            and integration not in ctx.gateway.webhook_integrations():
        raise NotFound(f"no webhook integration {integration!r}: configure it under integrations in the daemon "
                       "config, or add a routine with trigger.webhook.integration")
    payload = parse_json(raw, f"webhook {integration}: body") if raw else {}
    event = _event_of(request, payload)
    if message_id is not None:  # Standard Webhooks: a repeated id is the sender's retry, or a replay
        dedupe = message_id
        replays: webhooks.ReplayCache = request.app.state.webhook_ids
        if not replays.first_sighting(integration, message_id, ctx.clock.now_ms()):
            ctx.gateway.metrics.gate("webhook_signature", "duplicate")
            return JSONResponse({"integration": integration, "event": event, "duplicate": True, "runs": []})
    runs = await ctx.gateway.trigger_webhook(integration, event, payload, dedupe_key=dedupe)
    return JSONResponse({"integration": integration, "event": event, "duplicate": False,
                         "runs": [views.run_view(r) for r in runs]}, status_code=202)


async def hook_event(request: Request) -> Response:
    ctx: DaemonContext = request.app.state.ctx
    event = request.path_params["event"]
    payload = await read_json(request, required=False)
    dedupe = request.headers.get("x-palyra-dedupe-key")
    if isinstance(payload, dict) and "dedupe_key" in payload and dedupe is None:
        dedupe = payload.pop("dedupe_key")
        payload = payload.get("payload", payload)
        if dedupe is not None and not isinstance(dedupe, str):
            raise BadRequest("dedupe_key: must be a string")
    runs = await ctx.gateway.emit_event(event, payload, kinds=("hook",), dedupe_key=dedupe)
    return JSONResponse({"event": event, "runs": [views.run_view(r) for r in runs]}, status_code=202)


# -- errors -----------------------------------------------------------------------------------------


async def _palyra_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PalyraError)
    extra: dict[str, Any] = {}
    diags = getattr(exc, "diagnostics", None)
    if diags:
        extra["details"] = [d.to_json() for d in diags]
    resp = error_response(exc.status, exc.message, exc.code, **extra)
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="palyra"'
    return resp


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        msg = f"no route {request.url.path}"
    elif status == 405:
        msg = f"method {request.method} not allowed on {request.url.path}"
    else:
        msg = str(exc.detail)
    resp = error_response(status, msg)
    if exc.headers:
        resp.headers.update(exc.headers)
    if status == 405:  # Starlette names only the first route on the path; GET and POST may be two routes
        resp.headers["Allow"] = ", ".join(_allowed_methods(request))
    return resp


def _allowed_methods(request: Request) -> list[str]:
    """The methods of the resource at this path: a literal route (`/routines/dispatch`) is that
    resource, even where a templated one (`/routines/{routine_id}`) would also match the text."""
    path = request.url.path
    matching = [r for r in request.app.routes if isinstance(r, Route) and r.methods and r.path_regex.match(path)]
    literal = [r for r in matching if r.path == path]
    return sorted({m for r in (literal or matching) for m in r.methods or ()})


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__}")


def runtime_routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/gateway/v1/messages", gateway_messages, methods=["POST"]),
        Route("/webhooks/{integration}", webhook, methods=["POST"]),
        Route("/console/v1/events/{event}", hook_event, methods=["POST"]),
    ]


def console_routes(ctx: DaemonContext) -> list[BaseRoute]:
    """F's console routes, when that module has landed (areas merge independently)."""
    try:
        module = importlib.import_module("palyra_ops.console_api")
    except ModuleNotFoundError as exc:
        if exc.name == "palyra_ops.console_api":
            return []
        raise
    return list(module.routes(ctx))


def create_app(ctx: DaemonContext) -> Starlette:
    app = Starlette(
        routes=[*runtime_routes(), *console_routes(ctx)],
        exception_handlers={PalyraError: _palyra_error, HTTPException: _http_error, Exception: _internal_error},
    )
    # no 307 from `/x/` to `/x`: a client must not have its POST replayed to another route, and a
    # path parameter left empty is a 404, not the listing next door
    app.router.redirect_slashes = False
    app.state.ctx = ctx
    app.state.webhook_ids = webhooks.ReplayCache()
    app.add_middleware(GatewayFastPath, ctx=ctx)
    app.add_middleware(BodyLimit, max_bytes=getattr(ctx.config, "max_body_bytes", DEFAULT_MAX_BODY_BYTES))
    app.add_middleware(TokenAuth, ctx=ctx)  # added last = outermost: auth runs first
    return app
