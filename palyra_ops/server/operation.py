"""What a route declares about itself, next to its handler: the source of the OpenAPI document.

Modelled on Starlette's `schemas.py` (the schema is read off the routes, so it cannot describe a
route that does not exist or miss one that does), but typed: each `ApiRoute` carries an `Operation`
instead of YAML in a docstring. Error responses are declared as the domain errors a handler may
raise; the server's error table turns them into statuses. Named body schemas are JSON Schema files
in `schemas/api/` (`ref("Run")`), so a new endpoint is one `ApiRoute` in its area's module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from palyra_ops.errors import PalyraError

#: a JSON Schema (2020-12) as loaded from JSON
Schema = Mapping[str, Any]
Handler = Callable[[Request], Awaitable[Response]]


def ref(name: str) -> dict[str, str]:
    """A named schema: `schemas/api/<name>.json`, or a `$defs` entry of the routine schema."""
    return {"$ref": f"#/components/schemas/{name}"}


class Auth(StrEnum):
    TOKEN = "token"  # the bearer token (the default: every route but the public ones)
    PUBLIC = "public"  # no credential (/healthz)
    TOKEN_OR_SIGNATURE = "token_or_signature"  # webhooks: a signature, or the token without a secret


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["path", "query", "header"]
    description: str
    schema: Schema
    required: bool = False


@dataclass(frozen=True)
class Reply:
    """One success response (errors come from `Operation.raises`)."""

    description: str
    schema: Schema | None = None  # None: the media type without a schema
    media_type: str = "application/json"


@dataclass(frozen=True)
class Operation:
    summary: str
    replies: Mapping[int, Reply]
    description: str | None = None
    params: tuple[Param, ...] = ()
    body: Schema | None = None  # the JSON request body's schema; None when the route reads none
    body_required: bool = True
    #: the domain errors the handler raises on purpose; 401 (unless public) and, with a body, 400 and
    #: 413 are implied
    raises: tuple[type[PalyraError], ...] = ()
    auth: Auth = Auth.TOKEN


class ApiRoute(Route):
    """A Starlette route for one method, with its operation."""

    def __init__(self, path: str, endpoint: Handler, *, method: str, operation: Operation) -> None:
        super().__init__(path, endpoint, methods=[method], name=endpoint.__name__)
        self.method = method
        self.operation = operation


def walk(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, Route]]:
    """Every plain route with its full path, looking into mounts (the console is one)."""
    for route in routes:
        if isinstance(route, Mount):
            yield from walk(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            yield prefix + route.path, route


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[tuple[str, ApiRoute]]:
    for path, route in walk(routes):
        if isinstance(route, ApiRoute):
            yield path, route
