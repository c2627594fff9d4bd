"""Memory (SPEC §9): search by meaning, list, add and delete items of the daemon's memory service."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from palyra_ops.context import DaemonContext
from palyra_ops.durations import parse_duration_ms
from palyra_ops.errors import InvalidInput, NotFound, Unavailable
from palyra_ops.server.body import read_object
from palyra_ops.server.operation import ApiRoute, Operation, Param, Reply, ref
from palyra_ops.server.params import (
    CURSOR,
    LIMIT,
    encode_cursor,
    path_param,
    query_cursor,
    query_instant,
    query_int,
    query_limit,
)
from palyra_ops.server.responses import JSONResponse
from palyra_ops.server.routes.common import ctx_of

if TYPE_CHECKING:
    from palyra_ops.memory.service import MemoryService

MEMORY_ADD_FIELDS = ("text", "routine_id", "run_id", "ttl")
DEFAULT_MEMORY_K = 10
MAX_MEMORY_K = 1000
MAX_MEMORY_TTL_MS = 100 * 365 * 86_400_000  # a century: beyond it an expiry is not an instant we can show

ROUTINE = Param("routine", "query", "Only items from this routine.", {"type": "string", "minLength": 1})
SINCE = Param("since", "query", "Only items created at or after this: RFC 3339, or a duration ago like 24h.",
              {"type": "string"})
UNTIL = Param("until", "query", "Only items created before this: RFC 3339, or a duration ago.", {"type": "string"})


def memory_of(ctx: DaemonContext) -> MemoryService:
    memory = ctx.memory
    if memory is None:
        raise Unavailable("the memory service is not running in this daemon")
    return memory


def _window(request: Request) -> dict[str, Any]:
    routine = request.query_params.get("routine")
    if routine is not None and not routine:
        raise InvalidInput("routine: must not be empty")
    now = ctx_of(request).clock.now_ms()
    return {
        "routine_id": routine,
        "since_ms": query_instant(request, "since", now),
        "until_ms": query_instant(request, "until", now),
    }


async def memory_search(request: Request) -> Response:
    query = request.query_params.get("q")
    if query is None or not query.strip():
        raise InvalidInput("q: required (the text to search for)")
    k = query_int(request, "k", DEFAULT_MEMORY_K, 1, MAX_MEMORY_K)
    window = _window(request)
    result = await memory_of(ctx_of(request)).asearch(query, k=k, **window)
    return JSONResponse(result.to_json())


async def memory_list(request: Request) -> Response:
    limit = query_limit(request)
    cursor = query_cursor(request, "memory")
    window = _window(request)
    page = await asyncio.to_thread(memory_of(ctx_of(request)).list, limit=limit, cursor=cursor, **window)
    body = page.to_json()
    body["next_cursor"] = encode_cursor("memory", page.next_cursor) if page.next_cursor else None
    return JSONResponse(body)


def _ttl_ms(ttl: str | None) -> int | None:
    """How long an added item lives: a duration up to a century; None keeps it until retention drops it."""
    try:
        ttl_ms = None if ttl is None else parse_duration_ms(ttl)
    except ValueError as exc:
        raise InvalidInput(f"ttl: {exc}") from None
    if ttl_ms is not None and not 0 < ttl_ms <= MAX_MEMORY_TTL_MS:
        raise InvalidInput(f"ttl: must be longer than 0s and at most 36500d, got {ttl!r}")
    return ttl_ms


async def memory_add(request: Request) -> Response:
    payload = await read_object(request)
    unknown = sorted(set(payload) - set(MEMORY_ADD_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r} (expected {', '.join(MEMORY_ADD_FIELDS)})")
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("text: required, a non-empty string")
    for key in ("routine_id", "run_id", "ttl"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            raise InvalidInput(f"{key}: must be a string")
    for key in ("routine_id", "run_id"):
        if payload.get(key) == "":  # an empty name is no name: it would also make `/routines//…` paths
            raise InvalidInput(f"{key}: must not be empty (omit it, or send null, for none)")
    ttl_ms = _ttl_ms(payload.get("ttl"))
    item = await memory_of(ctx_of(request)).aadd_item(text, routine_id=payload.get("routine_id"),
                                                      run_id=payload.get("run_id"), source="api", ttl_ms=ttl_ms)
    return JSONResponse(item.to_json(), status_code=201)


ITEM_ID = path_param("item_id", "The memory item's id.")


async def memory_delete(request: Request) -> Response:
    """Journal and index together; on a PostgreSQL journal every peer's index drops it too (its
    follower reads the delete from the journal's change feed)."""
    item_id = request.path_params["item_id"]
    deleted = await asyncio.to_thread(memory_of(ctx_of(request)).delete, [item_id])
    if not deleted:
        raise NotFound(f"memory item {item_id} not found")
    return JSONResponse({"id": item_id, "deleted": True})


ROUTES = [
    ApiRoute("/memory/search", memory_search, method="GET", operation=Operation(
        summary="Nearest memory items to a text (SPEC §9)",
        description="Cosine similarity of embeddings from the daemon's embedder. Items not embedded yet (the "
                    "backfill task runs every 10 minutes) are not found; `pending` counts them. Filters are exact.",
        params=(
            Param("q", "query", "The text to search for.", {"type": "string", "minLength": 1}, required=True),
            Param("k", "query", f"How many results (default {DEFAULT_MEMORY_K}).",
                  {"type": "integer", "minimum": 1, "maximum": MAX_MEMORY_K, "default": DEFAULT_MEMORY_K}),
            ROUTINE, SINCE, UNTIL,
        ),
        replies={200: Reply("Nearest items first.", ref("MemorySearchResult"))},
        raises=(InvalidInput, Unavailable),
    )),
    ApiRoute("/memory/items", memory_list, method="GET", operation=Operation(
        summary="Memory items, newest first",
        params=(ROUTINE, SINCE, UNTIL, LIMIT, CURSOR),
        replies={200: Reply("One page of items.", ref("MemoryItemPage"))},
        raises=(InvalidInput, Unavailable),
    )),
    ApiRoute("/memory/items", memory_add, method="POST", operation=Operation(
        summary="Add a memory item",
        description="Stored now with source `api`; searchable after the next backfill embeds it.",
        body=ref("MemoryAddRequest"),
        replies={201: Reply("The stored item.", ref("MemoryItem"))},
        raises=(InvalidInput, Unavailable),
    )),
    ApiRoute("/memory/items/{item_id}", memory_delete, method="DELETE", operation=Operation(
        summary="Delete a memory item",
        description="From the journal and the daemon's index at once (every daemon's, on a PostgreSQL journal).",
        params=(ITEM_ID,),
        replies={200: Reply("The item was deleted.", {
            "type": "object", "required": ["id", "deleted"],
            "properties": {"id": {"type": "string"}, "deleted": {"type": "boolean", "const": True}}})},
        raises=(NotFound, Unavailable),
    )),
]
