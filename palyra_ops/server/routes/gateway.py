"""`POST /gateway/v1/messages`: the pipeline entry of the scheduler's loopback calls and of users.

The route is served by `GatewayFastPath` ahead of the router; the routed handler stays registered
for the route table, OpenAPI and other methods (405), and behaves the same.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from palyra_ops import views
from palyra_ops.context import DaemonContext
from palyra_ops.errors import BackendFailed, Conflict, InvalidInput, NotFound, PalyraError, PermissionDenied
from palyra_ops.server.auth import INTERNAL
from palyra_ops.server.body import INTERNAL_DEPTH_MARGIN, MAX_JSON_DEPTH, json_object
from palyra_ops.server.errors import error_response, http_status
from palyra_ops.server.operation import ApiRoute, Operation, Reply, ref
from palyra_ops.server.responses import JSONResponse
from palyra_ops.server.routes.common import ctx_of

PATH = "/gateway/v1/messages"


def message_result(status: int, result: dict[str, Any]) -> dict[str, Any]:
    """A routine message's answer (202) is the run; a user message's (200) is the output."""
    return views.run_view(result) if status == 202 else result


#: most messages one batch body may carry (the scheduler sends at most one claimed batch, 64)
MAX_BATCH = 256


async def _batch(ctx: DaemonContext, body: dict[str, Any], received_at_ms: int | None) -> dict[str, Any]:
    """The daemon's own batch body `{"messages": [...]}`: many claimed runs in one loopback call (issue
    14). Each message goes through the same `handle_message` as a single call, in order, and gets its
    own answer (`status` + the run, or `status` + the error body a single call would have got), so
    a refused run does not fail the others. Only the internal credential may send one."""
    msgs = body["messages"]
    if not isinstance(msgs, list) or not msgs or len(msgs) > MAX_BATCH or not all(isinstance(m, dict) for m in msgs):
        raise InvalidInput(f"messages: expected a list of 1 to {MAX_BATCH} message objects")
    results: list[dict[str, Any]] = []
    seen = ctx.gateway.arrivals(msgs)  # the claimed runs' journal rows in one read
    for m in msgs:
        try:
            status, result = await ctx.gateway.handle_message(m, internal=True, received_at_ms=received_at_ms,
                                                              seen=seen.get(str(m.get("run_id"))))
        except PalyraError as exc:
            results.append({"status": http_status(exc), "error": {"code": exc.code, "message": exc.message}})
            continue
        results.append({"status": status, "result": message_result(status, result)})
    return {"results": results}


async def _handle(ctx: DaemonContext, state: dict[str, Any], raw: bytes,
                  traceparent: str | None = None) -> tuple[int, dict[str, Any]]:
    internal = state.get("auth") == INTERNAL
    # the daemon's own messages wrap a client payload one level deeper than the client sent it (and
    # a batch two more: the list and its message)
    body = json_object(raw, max_depth=MAX_JSON_DEPTH + (INTERNAL_DEPTH_MARGIN + 2 if internal else 0))
    if internal and "messages" in body and "principal" not in body:
        return 200, await _batch(ctx, body, state.get("received_at_ms"))
    if traceparent and "traceparent" not in body:  # W3C trace context: the header is the standard way
        body["traceparent"] = traceparent
    status, result = await ctx.gateway.handle_message(body, internal=internal,
                                                      received_at_ms=state.get("received_at_ms"))
    return status, message_result(status, result)


async def gateway_messages(request: Request) -> Response:
    status, result = await _handle(ctx_of(request), request.scope.get("state", {}), await request.body(),
                                   request.headers.get("traceparent"))
    return JSONResponse(result, status_code=status)


def _traceparent(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"traceparent":
            return value.decode("latin-1")
    return None


class GatewayFastPath:
    """`POST /gateway/v1/messages` as plain ASGI, ahead of the router.

    Every scheduled run is one of these calls; skipping Starlette's routing, Request and Response
    objects is a measurable share of a loopback round trip. Auth (by the middleware in front), the
    body reader and the error rendering are the ones every route uses.
    """

    def __init__(self, app: ASGIApp, ctx: DaemonContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        try:
            status, result = await _handle(self.ctx, scope.get("state", {}), b"".join(chunks), _traceparent(scope))
        except PalyraError as exc:
            await error_response(exc)(scope, receive, send)
            return
        payload = json.dumps(result, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


ROUTES = [
    ApiRoute(PATH, gateway_messages, method="POST", operation=Operation(
        summary="The gateway pipeline entry (gates → policy → execution → delivery)",
        description="A user message (200) runs the agent backend on `text`. Routine runs (202, the run after "
                    "the gates) are accepted only from system:daemon with the daemon's internal credential: "
                    "the scheduler's loopback calls. With that credential the body may also be a batch "
                    "(`{\"messages\": [...]}`, up to 256): claimed runs due at one instant in one call, each "
                    "handled as a single call would be, answered 200 with one result per message, in order.",
        body={"anyOf": [ref("Message"), ref("MessageBatch")]},
        replies={200: Reply("The backend's answer; for a batch body, one result per message.",
                            {"anyOf": [ref("MessageResult"), ref("MessageBatchResult")]}),
                 202: Reply("The routine run as the gates left it.", ref("Run"))},
        raises=(InvalidInput, PermissionDenied, NotFound, Conflict, BackendFailed),
    )),
]
