"""Runs started from outside: signed webhooks (SPEC §5, §6) and hook events from the console."""

from __future__ import annotations

import logging
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from palyra_ops import views, webhooks
from palyra_ops.context import DaemonContext
from palyra_ops.errors import BadSignature, InvalidInput, NotAuthenticated, NotFound, Unavailable
from palyra_ops.server.body import json_value, read_value
from palyra_ops.server.operation import ApiRoute, Auth, Operation, Param, Reply, ref
from palyra_ops.server.responses import JSONResponse
from palyra_ops.server.routes.common import ctx_of

log = logging.getLogger("palyra_ops.server")

EVENT_HEADERS = ("x-palyra-event", "x-github-event")
DELIVERY_HEADERS = ("x-palyra-delivery", "x-github-delivery")


def _first_header(request: Request, names: tuple[str, ...]) -> str | None:
    for n in names:
        v = request.headers.get(n)
        if v:
            return v
    return None


def _integrations(ctx: DaemonContext) -> dict[str, Any]:
    return getattr(ctx.config, "integrations", None) or {}


def _integration_secret(ctx: DaemonContext, integration: str) -> str | None:
    conf = _integrations(ctx).get(integration)
    if conf is None or conf.secret is None:
        return None
    value = os.environ.get(conf.secret.env)
    if not value:  # an empty key would make every signature forgeable: refuse rather than accept
        log.error("webhook %s: secret variable %s is not set; refusing its webhooks", integration, conf.secret.env)
        raise Unavailable(f"webhook {integration}: its secret is not available to the daemon "
                          f"(environment variable {conf.secret.env})")
    return value


def _event_of(request: Request, payload: Any) -> str | None:
    """The event name: a header, else `event` or (Standard Webhooks' convention) `type` in the body."""
    event = _first_header(request, EVENT_HEADERS)
    if event is None and isinstance(payload, dict):
        for key in ("event", "type"):
            if isinstance(payload.get(key), str):
                return payload[key]
    return event


def _authenticate(request: Request, ctx: DaemonContext, integration: str, raw: bytes) -> str | None:
    """The Standard Webhooks message id of a verified signed request (None for other schemes).

    An integration with a secret is authenticated by its signature alone; one without needs the
    bearer token, and must exist (configured, or used by a routine).
    """
    secret = _integration_secret(ctx, integration)
    if secret is not None:
        verdict = webhooks.verify(secret, raw, request.headers, now_ms=ctx.clock.now_ms())
        if not verdict.ok:
            ctx.gateway.metrics.gate("webhook_signature", "rejected")
            raise BadSignature(f"webhook {integration}: {verdict.reason}")
        return verdict.message_id
    state = request.scope.get("state", {})
    if state.get("auth") is None:  # no secret: the bearer token is the credential
        raise NotAuthenticated(state.get("auth_error", "missing bearer token"))
    if integration not in _integrations(ctx) and integration not in ctx.gateway.webhook_integrations():
        raise NotFound(f"no webhook integration {integration!r}: configure it under integrations in the daemon "
                       "config, or add a routine with trigger.webhook.integration")
    return None


async def webhook(request: Request) -> Response:
    """`POST /webhooks/{integration}`. The body limit has been applied by then. A Standard Webhooks
    id seen before is answered 200 `duplicate: true` and runs nothing; the id (or X-GitHub-Delivery)
    is also every run's dedupe key, which holds across restarts."""
    ctx = ctx_of(request)
    integration = request.path_params["integration"]
    raw = await request.body()
    message_id = _authenticate(request, ctx, integration, raw)
    dedupe = _first_header(request, DELIVERY_HEADERS)
    payload = json_value(raw, f"webhook {integration}: body")
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
    ctx = ctx_of(request)
    event = request.path_params["event"]
    payload = await read_value(request)
    dedupe = request.headers.get("x-palyra-dedupe-key")
    if isinstance(payload, dict) and "dedupe_key" in payload and dedupe is None:
        dedupe = payload.pop("dedupe_key")
        payload = payload.get("payload", payload)
        if dedupe is not None and not isinstance(dedupe, str):
            raise InvalidInput("dedupe_key: must be a string")
    runs = await ctx.gateway.emit_event(event, payload, kinds=("hook",), dedupe_key=dedupe)
    return JSONResponse({"event": event, "runs": [views.run_view(r) for r in runs]}, status_code=202)


def _header(name: str, description: str) -> Param:
    return Param(name, "header", description, {"type": "string"})


_ANY_JSON = {"description": "Payload (any JSON)."}

ROUTES = [
    ApiRoute("/webhooks/{integration}", webhook, method="POST", operation=Operation(
        summary="Webhook trigger: runs matching `webhook` routines",
        description="An integration with a secret (daemon config `integrations.NAME.secret`) is authenticated by "
                    "its signature alone, no bearer token: GitHub style (`X-Hub-Signature-256: sha256=<hex "
                    "HMAC-SHA256 of the body>`, also as `X-Palyra-Signature`) or Standard Webhooks "
                    "(`webhook-id`, `webhook-timestamp` within 5 minutes, `webhook-signature: v1,<base64>`; a "
                    "repeated id is answered 200 with `duplicate: true` and runs nothing). An integration "
                    "without a secret needs the bearer token; an integration neither configured nor used by a "
                    "routine is 404.",
        auth=Auth.TOKEN_OR_SIGNATURE,
        params=(
            Param("integration", "path", "Integration name (trigger.webhook.integration).",
                  {"type": "string", "minLength": 1}),
            _header("X-Palyra-Event", "Event name (or X-GitHub-Event, or `event`/`type` in the body)."),
            _header("X-Palyra-Delivery", "Delivery id used as dedupe key (or X-GitHub-Delivery)."),
            _header("X-Hub-Signature-256", "GitHub style signature: sha256=<hex>."),
            _header("webhook-id", "Standard Webhooks message id (also the dedupe key)."),
            _header("webhook-timestamp", "Standard Webhooks: Unix seconds."),
            _header("webhook-signature", "Standard Webhooks: space-separated v1,<base64>."),
        ),
        body=_ANY_JSON, body_required=False,
        replies={200: Reply("A repeated Standard Webhooks id: dropped, nothing ran.", ref("EventRuns")),
                 202: Reply("Runs started.", ref("EventRuns"))},
        raises=(InvalidInput, NotAuthenticated, NotFound, Unavailable),
    )),
]

#: under the console mount
CONSOLE_ROUTES = [
    ApiRoute("/events/{event}", hook_event, method="POST", operation=Operation(
        summary="Emit a hook event: runs every `hook` routine whose trigger.event matches",
        params=(Param("event", "path", "Event name.", {"type": "string", "minLength": 1}),
                _header("X-Palyra-Dedupe-Key", "Drops repeats of the same key.")),
        body={"description": "Event payload (any JSON)."}, body_required=False,
        replies={202: Reply("Runs started.", ref("EventRuns"))},
        raises=(InvalidInput,),
    )),
]
