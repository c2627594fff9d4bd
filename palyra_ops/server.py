"""The daemon's HTTP surface: auth, error bodies, and the runtime routes (gateway, events, metrics).

The console routes proper live in `palyra_ops.console_api` and are mounted here when present; this
module owns what every route shares. Auth is a plain ASGI middleware (not Starlette's
`BaseHTTPMiddleware`, which costs a task and a body copy per request — noticeable on the loopback
dispatch path that carries every scheduled run).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from palyra_ops.context import DaemonContext
from palyra_ops.errors import PalyraError

log = logging.getLogger("palyra_ops.server")

#: routes reachable without a token (SPEC §6: only the health check)
PUBLIC_PATHS = frozenset({"/healthz"})

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
        if who is None:
            msg = "missing bearer token" if auth is None else "invalid bearer token"
            resp = error_response(401, msg, "unauthorized")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="palyra"'
            await resp(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["auth"] = who
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
        try:
            try:
                body = json.loads(raw) if raw else None
            except (ValueError, UnicodeDecodeError) as exc:
                raise PalyraError(f"request body is not valid JSON: {exc}", code="bad_request", status=400) from None
            if not isinstance(body, dict):
                raise PalyraError("request body must be a JSON object", code="bad_request", status=400)
            status, result = await self.ctx.gateway.handle_message(
                body, internal=state.get("auth") == "internal", received_at_ms=state.get("received_at_ms"))
            payload = json.dumps(result, separators=(",", ":")).encode()
        except PalyraError as exc:
            status = exc.status
            payload = json.dumps({"error": {"code": exc.code, "message": exc.message}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


async def read_json(request: Request, *, required: bool = True) -> Any:
    raw = await request.body()
    if not raw:
        if required:
            raise PalyraError("request body must be a JSON object", code="bad_request", status=400)
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PalyraError(f"request body is not valid JSON: {exc}", code="bad_request", status=400) from None


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
    return JSONResponse(result, status_code=status)


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """HMAC-SHA256 of the raw body, hex, optionally prefixed `sha256=` (GitHub's convention)."""
    if not header:
        return False
    presented = header.strip()
    if presented.lower().startswith("sha256="):
        presented = presented[7:]
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, presented.lower())


SIGNATURE_HEADERS = ("x-palyra-signature", "x-hub-signature-256")
EVENT_HEADERS = ("x-palyra-event", "x-github-event")
DELIVERY_HEADERS = ("x-palyra-delivery", "x-github-delivery")


def _first_header(request: Request, names: tuple[str, ...]) -> str | None:
    for n in names:
        v = request.headers.get(n)
        if v:
            return v
    return None


async def webhook(request: Request) -> Response:
    ctx: DaemonContext = request.app.state.ctx
    integration = request.path_params["integration"]
    raw = await request.body()
    conf = (getattr(ctx.config, "integrations", None) or {}).get(integration)
    if conf is not None and conf.secret is not None:
        secret = conf.secret.resolve(f"integration {integration}")
        if not verify_signature(secret, raw, _first_header(request, SIGNATURE_HEADERS)):
            ctx.gateway.metrics.gate("webhook_signature", "rejected")
            return error_response(401, f"webhook {integration}: missing or bad HMAC-SHA256 signature", "bad_signature")
    try:
        payload = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        raise PalyraError(f"webhook {integration}: body is not valid JSON", code="bad_request", status=400) from None
    event = _first_header(request, EVENT_HEADERS) or (payload.get("event") if isinstance(payload, dict) else None)
    dedupe = _first_header(request, DELIVERY_HEADERS)
    runs = await ctx.gateway.trigger_webhook(integration, event, payload, dedupe_key=dedupe)
    return JSONResponse({"integration": integration, "event": event, "runs": runs}, status_code=202)


async def hook_event(request: Request) -> Response:
    ctx: DaemonContext = request.app.state.ctx
    event = request.path_params["event"]
    payload = await read_json(request, required=False)
    dedupe = request.headers.get("x-palyra-dedupe-key")
    if isinstance(payload, dict) and "dedupe_key" in payload and dedupe is None:
        dedupe = payload.pop("dedupe_key")
        payload = payload.get("payload", payload)
    runs = await ctx.gateway.emit_event(event, payload, kinds=("hook",), dedupe_key=dedupe)
    return JSONResponse({"event": event, "runs": runs}, status_code=202)


# -- errors -----------------------------------------------------------------------------------------


async def _palyra_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PalyraError)
    extra: dict[str, Any] = {}
    diags = getattr(exc, "diagnostics", None)
    if diags:
        extra["details"] = [d.to_json() for d in diags]
    return error_response(exc.status, exc.message, exc.code, **extra)


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
    return resp


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
    app.state.ctx = ctx
    app.add_middleware(GatewayFastPath, ctx=ctx)
    app.add_middleware(TokenAuth, ctx=ctx)  # added last = outermost: auth runs first
    return app
