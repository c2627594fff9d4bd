"""The one place where a failure becomes an HTTP status and a JSON error body (SPEC §6).

Domain errors (`palyra_ops.errors`) are named by meaning and carry a `code`; `STATUS` maps each class
to its status, the most specific class winning, so a new error needs one line here and no route
changes. Everything that answers with an error — route handlers, the auth and body-limit middleware,
the gateway fast path, Starlette's own 404/405 — renders through `error_response`, so every error
body has the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from palyra_ops.errors import (
    BackendFailed,
    BadSignature,
    Conflict,
    DaemonAlreadyRunning,
    InvalidInput,
    JournalError,
    JournalUnsupported,
    NotAuthenticated,
    NotFound,
    PalyraError,
    PayloadTooLarge,
    PermissionDenied,
    StalePlan,
    Unavailable,
    ValidationFailed,
)
from palyra_ops.server.responses import JSONResponse

log = logging.getLogger("palyra_ops.server")

#: domain error class → HTTP status; a class not listed takes its nearest listed base class's
STATUS: dict[type, int] = {
    PalyraError: 400,
    InvalidInput: 400,
    NotAuthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    StalePlan: 409,
    DaemonAlreadyRunning: 409,
    PayloadTooLarge: 413,
    ValidationFailed: 422,
    BackendFailed: 502,
    Unavailable: 503,
    JournalError: 503,  # busy, full, read-only: the same request can succeed later
    JournalUnsupported: 400,
}

#: what each error status means across the API (the OpenAPI document's shared error responses)
MEANING: dict[int, str] = {
    400: "Bad request (malformed or too deeply nested JSON, bad parameter or cursor).",
    401: "Missing or wrong bearer token (or webhook signature).",
    403: "Forbidden (e.g. a system:daemon message without the internal credential).",
    404: "Not found.",
    409: "Conflict (e.g. an approval that was already decided).",
    413: "Request body larger than the daemon's max_body_bytes (1 MiB by default); refused before it is read.",
    422: "Validation failed; `details` lists every finding.",
    502: "The agent backend failed.",
    503: "Unavailable (the gateway or the memory service is not running, a webhook secret is not set).",
}

#: codes for the statuses Starlette itself raises (no route, wrong method, ...)
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid", 503: "unavailable"}

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="palyra"'}


def class_status(cls: type[PalyraError]) -> int:
    """The table entry of the class's most specific listed ancestor (PalyraError is always listed)."""
    return next(STATUS[base] for base in cls.__mro__ if base in STATUS)


def http_status(exc: PalyraError) -> int:
    """The status of a domain error: its class's (the domain never names one)."""
    return class_status(type(exc))


def statuses(*errors: type[PalyraError]) -> set[int]:
    """The statuses a route that may raise these errors can answer with (for its OpenAPI operation)."""
    return {class_status(cls) for cls in errors}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(exc: PalyraError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The SPEC §6 error body; a validation failure carries every finding under `details`."""
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationFailed):
        extra["details"] = [
            {"path": d.path, "message": d.message,
             **({"file": d.file, "line": d.line, "column": d.column} if d.line else {})}
            for d in exc.diagnostics
        ]
    status = http_status(exc)
    if status == 401 and not isinstance(exc, BadSignature):
        headers = {**CHALLENGE, **(headers or {})}
    return JSONResponse(error_body(exc.code, exc.message, **extra), status_code=status, headers=headers)


async def palyra_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PalyraError)
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route, wrong method) in the same body shape."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        message = f"no route {request.url.path}"
    elif status == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers or {})
    if status == 405:  # Starlette names only the first route on the path; GET and POST may be two routes
        headers["Allow"] = ", ".join(request.app.state.allowed_methods(request.url.path))
    return JSONResponse(error_body(_HTTP_CODES.get(status, "error"), message), status_code=status,
                        headers=headers or None)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal", f"internal error: {type(exc).__name__}"), status_code=500)


HANDLERS = {PalyraError: palyra_error, HTTPException: http_error, Exception: internal_error}
