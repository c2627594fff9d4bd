"""Query parameters and cursors, each parsed once and declared once (the parser's bounds are the
OpenAPI parameter's bounds)."""

from __future__ import annotations

import base64
import binascii
import json

from starlette.requests import Request

from palyra_ops.errors import InvalidInput
from palyra_ops.numbers import parse_int, parse_when
from palyra_ops.server.operation import Param

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

LIMIT = Param("limit", "query", f"Page size (default {DEFAULT_LIMIT}, at most {MAX_LIMIT}).",
              {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT})
CURSOR = Param("cursor", "query", "`next_cursor` of the previous page.", {"type": "string"})


def path_param(name: str, description: str) -> Param:
    return Param(name, "path", description, {"type": "string", "minLength": 1})


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        return parse_int(text, lo, hi, name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def query_limit(request: Request) -> int:
    return query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name)
    if value is not None and value not in choices:
        raise InvalidInput(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


def query_bool(request: Request, name: str) -> bool | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise InvalidInput(f"{name}: {text!r} is not a boolean (true or false)")


def query_instant(request: Request, name: str, now_ms: int) -> int | None:
    """An RFC 3339 instant, or a duration meaning that long ago (`since=24h`), as the CLI accepts."""
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        return parse_when(text, now_ms, name, from_query=True)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def encode_cursor(kind: str, position: str) -> str:
    """Cursors are opaque to clients so the paging key can change without breaking them."""
    raw = json.dumps({"k": kind, "p": position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str | None, kind: str) -> str | None:
    if text is None or text == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
        if isinstance(data, dict) and data.get("k") == kind and isinstance(data.get("p"), str):
            return data["p"]
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        pass
    raise InvalidInput("cursor: not a cursor returned by this listing")


def query_cursor(request: Request, kind: str) -> str | None:
    return decode_cursor(request.query_params.get("cursor"), kind)
