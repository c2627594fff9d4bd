"""Request bodies: a size cap for every route, and the one JSON reader for what clients send.

SPEC §6: bodies are limited (1 MiB by default, configurable) and refused with 413 before they are
read in full; malformed or too deeply nested JSON is a 400, never a 500. Both live here so every
route — the Starlette routes, the gateway fast path and the webhooks (before their signature check) —
gets the same rules from one place.

The cap is an ASGI middleware rather than a check in each handler: a handler that calls
`request.body()` has already buffered whatever the client sent. A declared `Content-Length` over the
cap is refused before a byte of the body is read; a chunked body is read only up to the cap.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from palyra_ops.errors import InvalidInput, PalyraError, PayloadTooLarge
from palyra_ops.server.errors import error_response

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB
#: the smallest cap a config may set: below this even an ordinary routine upsert would not fit
MIN_MAX_BODY_BYTES = 1024
#: nesting depth of client JSON. Real payloads (GitHub webhooks, routine specs) stay under ~10; the cap
#: keeps every later step (schema validation, json.dumps into the journal, rendering) far from
#: Python's recursion limit, which a deeper document would otherwise hit as a 500.
MAX_JSON_DEPTH = 64
#: the daemon's own loopback messages wrap a client payload (trigger.payload.body …) and re-encode it
#: with ASCII escapes (up to 6 bytes per character), so they get proportionally more room
INTERNAL_DEPTH_MARGIN = 8
INTERNAL_SIZE_FACTOR = 8

NOT_AN_OBJECT = "request body must be a JSON object"


def too_large_message(limit: int) -> str:
    return f"request body is larger than the limit of {limit} bytes (max_body_bytes in the daemon config)"


class BodyLimit:
    """Caps the request body of every HTTP request at `max_bytes`.

    Sits behind the token check (an unauthenticated request is refused before its body is touched)
    and in front of everything that reads a body. Requests carrying the daemon's internal credential
    (its own loopback dispatches, which wrap an already-limited client body) get
    `INTERNAL_SIZE_FACTOR` times the room.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        if scope.get("state", {}).get("auth") == "internal":
            limit *= INTERNAL_SIZE_FACTOR
        try:
            declared = declared_length(scope)
            if declared is not None and declared > limit:
                raise PayloadTooLarge(too_large_message(self.max_bytes))
            # a declared length frames the body (no more than that can arrive); else read up to the cap
            body = receive if declared is not None else await _buffered(receive, limit, self.max_bytes)
        except PalyraError as exc:  # the connection closes: the rest of the body is never read
            await error_response(exc, {"connection": "close"})(scope, receive, send)
            return
        await self.app(scope, body, send)


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length; two that disagree, or one that is not a number, is a 400."""
    declared: int | None = None
    for name, value in scope["headers"]:
        if name != b"content-length":
            continue
        try:
            n = int(value)
        except ValueError:
            n = -1
        if n < 0 or (declared is not None and declared != n):
            raise InvalidInput("invalid Content-Length header")
        declared = n
    return declared


async def _buffered(receive: Receive, limit: int, configured: int) -> Receive:
    """Read a body of unknown length (chunked, or none) up to `limit`, then replay it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return _replay(message)
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise PayloadTooLarge(too_large_message(configured))
        chunks.append(body)
        if not message.get("more_body", False):
            return _replay({"type": "http.request", "body": b"".join(chunks), "more_body": False})


def _replay(first: Message) -> Receive:
    """A `receive` that hands over the buffered message once, then reports the disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return {"type": "http.disconnect"}

    return receive


# -- JSON ------------------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    # NaN/Infinity are not JSON (RFC 8259); accepted, they would be written back out as invalid JSON
    raise ValueError(f"{name} is not valid JSON")


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests containers deeper than `limit` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def parse_json(raw: bytes | str, what: str = "request body", *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Client JSON, or a 400 that says what is wrong with it — never a 500."""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidInput(f"{what} is nested too deeply (at most {max_depth} levels)") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} is not valid JSON: not UTF-8") from None
    except ValueError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None
    if json_depth_exceeds(value, max_depth):
        raise InvalidInput(f"{what} is nested too deeply (at most {max_depth} levels)")
    return value


def json_object(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """A body that must be a JSON object; an empty one is refused with the same message."""
    data = parse_json(raw, max_depth=max_depth) if raw.strip() else None
    if not isinstance(data, dict):
        raise InvalidInput(NOT_AN_OBJECT)
    return data


def json_value(raw: bytes, what: str = "request body") -> Any:
    """A body of any JSON (an event or webhook payload); an empty one is `{}`."""
    return parse_json(raw, what) if raw else {}


async def read_object(request: Request) -> dict[str, Any]:
    return json_object(await request.body())


async def read_value(request: Request) -> Any:
    return json_value(await request.body())
