"""The console API of SPEC §6: routines, runs, schedule preview, cron status, approvals, memory (§9),
system status.

Handlers are thin on purpose: parse the request, call the library (`reconcile`, `schedule`, the
gateway and scheduler on the `DaemonContext`), render with `views`. Anything that decides what the
journal should contain lives in those libraries, so the CLI, apply and the API cannot disagree.

Every handler is wrapped by `_endpoint`, which checks the bearer token itself (defence in depth: the
server's middleware does too, but these routes must never be reachable unauthenticated even when
mounted in a bare Starlette app, as the unit tests do) and turns `PalyraError` into the SPEC error body
`{"error": {"code", "message"}}` with the error's status.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from palyra_ops import views
from palyra_ops.clock import InstantRangeError, parse_rfc3339, rfc3339
from palyra_ops.context import DaemonContext
from palyra_ops.durations import DurationRangeError, parse_duration_ms
from palyra_ops.errors import BadRequest, Diagnostic, NotFound, PalyraError, Unauthorized, ValidationFailed
from palyra_ops.httpbody import parse_json
from palyra_ops.model import Resource
from palyra_ops.numbers import parse_int
from palyra_ops.source import check_document

PREFIX = "/console/v1"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_PREVIEW_COUNT = 100
TRIGGER_KINDS = ("schedule", "hook", "webhook", "system_event", "manual")
APPROVAL_STATES = ("pending", "approved", "denied", "cancelled")
UPSERT_FIELDS = ("name", "spec", "description", "labels")
MEMORY_ADD_FIELDS = ("text", "routine_id", "run_id", "ttl")
MAX_MEMORY_K = 1000
MAX_MEMORY_TTL_MS = 100 * 365 * 86_400_000  # a century: beyond it an expiry is not an instant we can show
RUN_STATUSES = ("accepted", "running", "succeeded", "failed", "skipped", "throttled", "denied", "cancelled",
                "awaiting_approval")

Handler = Callable[[Request], Awaitable[Response]]


class JSONResponse(Response):
    """JSON that tolerates non-JSON values from status providers (rendered with `str`)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def error_response(exc: PalyraError) -> JSONResponse:
    """The SPEC §6 error body; validation failures carry every finding under `details`."""
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if isinstance(exc, ValidationFailed):
        error["details"] = [
            {"path": d.path, "message": d.message, **({"file": d.file, "line": d.line, "column": d.column} if d.line else {})}
            for d in exc.diagnostics
        ]
    headers = {"WWW-Authenticate": 'Bearer realm="palyra"'} if exc.status == 401 else None
    return JSONResponse({"error": error}, status_code=exc.status, headers=headers)


def check_token(request: Request, *tokens: str) -> None:
    """Accepts the console token or the daemon's internal credential, as the server middleware does."""
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        raise Unauthorized("missing bearer token")
    presented = given.strip().encode()
    if scheme.lower() != "bearer" or not any(
        t and hmac.compare_digest(presented, t.encode()) for t in tokens
    ):
        raise Unauthorized("invalid bearer token")


# -- request parsing ---------------------------------------------------------------------------------


async def json_body(request: Request, *, required: bool = True) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise BadRequest("request body must be a JSON object")
        return {}
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def query_limit(request: Request) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    try:
        return parse_int(text, 1, MAX_LIMIT, "limit")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def query_bool(request: Request, name: str) -> bool | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise BadRequest(f"{name}: {text!r} is not a boolean (true or false)")


_SPACED_OFFSET = re.compile(r"([0-9]) ([0-9][0-9]:?[0-9][0-9])$(?!\n)", re.ASCII)


def query_instant(request: Request, name: str, now_ms: int) -> int | None:
    """An RFC 3339 instant, or a duration meaning that long ago (`since=24h`), as the CLI accepts.

    An unencoded `+02:00` offset arrives as ` 02:00` (a `+` in a query string is a space); it is
    read back as the offset it was meant to be rather than refused.
    """
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        return now_ms - parse_duration_ms(text)
    except DurationRangeError as exc:
        raise BadRequest(f"{name}: {exc}") from None
    except ValueError:
        pass
    try:
        return parse_rfc3339(_SPACED_OFFSET.sub(r"\1+\2", text))
    except InstantRangeError as exc:
        raise BadRequest(f"{name}: {exc}") from None
    except ValueError:
        raise BadRequest(f"{name}: {text!r} is neither an RFC 3339 instant with offset nor a duration like 24h") from None


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
    raise BadRequest("cursor: not a cursor returned by this listing")


# -- upsert validation -------------------------------------------------------------------------------


def document_problems(doc: dict[str, Any], ctx: DaemonContext) -> list[tuple[str, str]]:
    """Every problem of the upserted document, worded as `palyra-ops validate` words it (the same
    `source.check_document`), its channel and skill references checked against the journal and the
    installed skills instead of a directory."""
    store = ctx.extras.get("skill_store") or ctx.extras.get("skills")
    skills = store.ids() if store is not None and hasattr(store, "ids") else None
    channels = {r.name for r in ctx.journal.list_resources("Channel")}
    return check_document(doc, channels=channels, skills=skills, where="in the journal")


_METADATA_PATHS = {"metadata.name": "name", "metadata.description": "description", "metadata.labels": "labels"}


def _api_path(path: str) -> str:
    """`metadata.labels.team` → `labels.team`: the upsert body has no metadata level."""
    for prefix, short in _METADATA_PATHS.items():
        if path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "["):
            return short + path[len(prefix):]
    return path


def routine_from_payload(payload: dict[str, Any], ctx: DaemonContext) -> Resource:
    """Validate an upsert body and build the canonical Resource; raises ValidationFailed with all errors."""
    problems: list[tuple[str, str]] = []
    for key in payload:
        if key not in UPSERT_FIELDS:
            problems.append((key, f"unknown field (expected one of: {', '.join(UPSERT_FIELDS)})"))
    name = payload.get("name")
    spec = payload.get("spec")
    if not isinstance(spec, dict):
        problems.append(("spec", "missing required field: an object of the same shape as a routine file's spec"))
    metadata = {k: payload[k] for k in ("name", "description", "labels") if k in payload}
    doc = {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": metadata, "spec": spec if isinstance(spec, dict) else {}}
    doc_problems = [(_api_path(p), m) for p, m in document_problems(doc, ctx)]
    if not isinstance(spec, dict):
        doc_problems = [(p, m) for p, m in doc_problems if not p.startswith("spec")]
    problems.extend(doc_problems)
    if problems:
        raise ValidationFailed(
            [Diagnostic(file="request", line=0, column=0, path=p, message=m) for p, m in problems]
        )
    assert isinstance(spec, dict) and isinstance(name, str)
    extra: dict[str, Any] = {}
    if isinstance(payload.get("description"), str):
        extra["description"] = payload["description"]
    if payload.get("labels"):
        extra["labels"] = payload["labels"]
    return Resource.from_spec("Routine", name, spec, extra)


def _reconcile() -> Any:
    try:
        from palyra_ops import reconcile
    except ImportError:  # pragma: no cover - only while the lead's module is landing
        raise PalyraError("routine changes are not available in this build", code="not_implemented", status=501) from None
    return reconcile


# -- the API -----------------------------------------------------------------------------------------


class ConsoleApi:
    """Route handlers bound to one daemon context."""

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx

    # helpers

    def _routine(self, routine_id: str) -> Any:
        res = self.ctx.journal.get_resource("Routine", routine_id)
        if res is None:
            raise NotFound(f"no routine {routine_id!r}")
        return res

    def _active_counts(self) -> Counter[str]:
        return Counter(r["routine_id"] for r in self.ctx.journal.active_runs())

    def _wake(self) -> None:
        scheduler = self.ctx.scheduler
        if scheduler is not None and hasattr(scheduler, "wake"):
            scheduler.wake()

    def _gateway(self) -> Any:
        if self.ctx.gateway is None:
            raise PalyraError("the gateway is not running", code="unavailable", status=503)
        return self.ctx.gateway

    def _routine_detail(self, routine_id: str) -> dict[str, Any]:
        res = self._routine(routine_id)
        journal = self.ctx.journal
        job = journal.get_job(routine_id)
        last = journal.get_run(job["last_run_id"]) if job and job.get("last_run_id") else None
        if last is None:
            recent = journal.list_runs(routine_id, limit=1)
            last = recent[0] if recent else None
        return views.routine_view(
            res,
            job,
            now_ms=self.ctx.clock.now_ms(),
            active_runs=len(journal.active_runs(routine_id)),
            last_run=last,
            detail=True,
        )

    # routines

    async def list_routines(self, request: Request) -> Response:
        limit = query_limit(request)
        after = decode_cursor(request.query_params.get("cursor"), "routines")
        trigger_kind = request.query_params.get("trigger_kind")
        if trigger_kind is not None and trigger_kind not in TRIGGER_KINDS:
            raise BadRequest(f"trigger_kind: {trigger_kind!r} is not one of {', '.join(TRIGGER_KINDS)}")
        enabled = query_bool(request, "enabled")
        channel = request.query_params.get("channel")
        journal = self.ctx.journal
        jobs = {j["routine_id"]: j for j in journal.list_jobs()}
        active = self._active_counts()
        now = self.ctx.clock.now_ms()
        items: list[dict[str, Any]] = []
        next_cursor = None
        for res in journal.list_resources("Routine"):  # sorted by name: the paging key
            if after is not None and res.name <= after:
                continue
            view = views.routine_view(res, jobs.get(res.name), now_ms=now, active_runs=active[res.name])
            if trigger_kind is not None and view["trigger_kind"] != trigger_kind:
                continue
            if enabled is not None and view["effective_enabled"] != enabled:
                continue
            if channel is not None:
                delivery = res.body.get("spec", {}).get("delivery") or {}
                if channel not in (view["channel"], delivery.get("channel"), delivery.get("failure_channel")):
                    continue
            if len(items) == limit:
                next_cursor = encode_cursor("routines", items[-1]["name"])
                break
            items.append(view)
        return JSONResponse({"items": items, "next_cursor": next_cursor})

    async def get_routine(self, request: Request) -> Response:
        return JSONResponse(self._routine_detail(request.path_params["routine_id"]))

    async def upsert_routine(self, request: Request) -> Response:
        payload = await json_body(request)
        resource = routine_from_payload(payload, self.ctx)
        _, created = _reconcile().upsert_resource(self.ctx.journal, resource, origin="api")
        self._wake()
        view = self._routine_detail(resource.name)
        view["created"] = created
        return JSONResponse(view, status_code=201 if created else 200)

    async def dispatch_routine(self, request: Request) -> Response:
        payload = await json_body(request)
        routine_id = payload.get("routine_id")
        if not isinstance(routine_id, str) or not routine_id:
            raise BadRequest("routine_id: required (the routine's name)")
        trigger_kind = payload.get("trigger_kind", "manual")
        if trigger_kind not in TRIGGER_KINDS:
            raise BadRequest(f"trigger_kind: {trigger_kind!r} is not one of {', '.join(TRIGGER_KINDS)}")
        dedupe_key = payload.get("dedupe_key")
        if dedupe_key is not None and not isinstance(dedupe_key, str):
            raise BadRequest("dedupe_key: must be a string")
        unknown = set(payload) - {"routine_id", "trigger_kind", "trigger_payload", "dedupe_key"}
        if unknown:
            raise BadRequest(f"unknown field {sorted(unknown)[0]!r} (expected routine_id, trigger_kind, trigger_payload, dedupe_key)")
        self._routine(routine_id)
        run = await self._gateway().dispatch(
            routine_id,
            trigger_kind=trigger_kind,
            trigger_payload=payload.get("trigger_payload"),
            dedupe_key=dedupe_key,
        )
        if not run:
            raise PalyraError(f"a run of {routine_id!r} with dedupe key {dedupe_key!r} already exists", code="duplicate", status=409)
        return JSONResponse(views.run_view(run), status_code=202)

    async def set_enabled(self, request: Request) -> Response:
        routine_id = request.path_params["routine_id"]
        payload = await json_body(request)
        enabled = payload.get("enabled")
        if not isinstance(enabled, bool) or set(payload) != {"enabled"}:
            raise BadRequest('body must be {"enabled": true} or {"enabled": false}')
        self._routine(routine_id)
        _reconcile().set_enabled(self.ctx.journal, routine_id, enabled)
        self._wake()
        return JSONResponse(self._routine_detail(routine_id))

    async def delete_routine(self, request: Request) -> Response:
        routine_id = request.path_params["routine_id"]
        res = self._routine(routine_id)
        _reconcile().delete_resource(self.ctx.journal, "Routine", routine_id)
        self._wake()
        return JSONResponse({"deleted": routine_id, "managed": res.managed})

    async def list_runs(self, request: Request) -> Response:
        routine_id = request.path_params["routine_id"]
        limit = query_limit(request)
        before = decode_cursor(request.query_params.get("cursor"), "runs")
        status = request.query_params.get("status")
        if status is not None and status not in RUN_STATUSES:
            raise BadRequest(f"status: {status!r} is not one of {', '.join(RUN_STATUSES)}")
        journal = self.ctx.journal
        rows = journal.list_runs(routine_id, status=status, limit=limit + 1, before_run_id=before)
        if not rows and before is None and journal.get_resource("Routine", routine_id) is None:
            raise NotFound(f"no routine {routine_id!r}")
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor("runs", rows[-1]["run_id"]) if more else None
        return JSONResponse({"items": [views.run_view(r) for r in rows], "next_cursor": next_cursor})

    async def schedule_preview(self, request: Request) -> Response:
        from palyra_ops.schedule import preview

        payload = await json_body(request)
        expr, timezone = _preview_expr(payload)
        count = payload.get("count", 5)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PREVIEW_COUNT:
            raise BadRequest(f"count: must be an integer between 1 and {MAX_PREVIEW_COUNT}")
        from_text = payload.get("from")
        if from_text is None:
            from_ms = self.ctx.clock.now_ms()
        else:
            try:
                from_ms = parse_rfc3339(str(from_text))
            except ValueError as exc:
                raise BadRequest(f"from: {exc}") from None
        dst = payload.get("dst")
        if dst is not None and not isinstance(dst, dict):
            raise BadRequest("dst: must be an object like {\"gap\": \"shift\", \"fold\": \"first\"}")
        try:
            result = preview(expr, timezone, from_ms=from_ms, count=count, dst=dst)
        except (PalyraError, ValueError) as exc:
            field = "expr" if "expr" in payload else "schedule"
            message = exc.message if isinstance(exc, PalyraError) else str(exc)
            raise ValidationFailed([Diagnostic(file="request", line=0, column=0, path=field, message=message)]) from None
        return JSONResponse(result)

    async def cron_status(self, request: Request) -> Response:
        journal = self.ctx.journal
        jobs = {j["routine_id"]: j for j in journal.list_jobs()}
        active = self._active_counts()
        now = self.ctx.clock.now_ms()
        items = [
            views.cron_status_view(res, jobs.get(res.name), now_ms=now, active_runs=active[res.name])
            for res in journal.list_resources("Routine")
            if (res.body.get("spec", {}).get("trigger") or {}).get("kind") == "schedule"
        ]
        return JSONResponse({"now": rfc3339(now), "items": items})

    # approvals

    async def list_approvals(self, request: Request) -> Response:
        state = request.query_params.get("state", "pending")
        if state != "all" and state not in APPROVAL_STATES:
            raise BadRequest(f"state: {state!r} is not one of {', '.join((*APPROVAL_STATES, 'all'))}")
        rows = self.ctx.journal.list_approvals(None if state == "all" else state)
        return JSONResponse({"items": [views.approval_view(r) for r in rows]})

    async def _decide(self, request: Request, approve: bool) -> Response:
        approval_id = request.path_params["approval_id"]
        if self.ctx.journal.get_approval(approval_id) is None:
            raise NotFound(f"no approval {approval_id!r}")
        await self._gateway().decide_approval(approval_id, approve, by="console")
        self._wake()
        row = self.ctx.journal.get_approval(approval_id) or {}
        return JSONResponse(views.approval_view(row))

    async def approve(self, request: Request) -> Response:
        return await self._decide(request, True)

    async def deny(self, request: Request) -> Response:
        return await self._decide(request, False)

    # memory (SPEC §9)

    def _memory(self) -> Any:
        memory = self.ctx.extras.get("memory")
        if memory is None:
            raise PalyraError("the memory service is not running in this daemon", code="unavailable", status=503)
        return memory

    def _memory_window(self, request: Request) -> dict[str, Any]:
        routine = request.query_params.get("routine")
        if routine is not None and not routine:
            raise BadRequest("routine: must not be empty")
        now = self.ctx.clock.now_ms()
        return {
            "routine_id": routine,
            "since_ms": query_instant(request, "since", now),
            "until_ms": query_instant(request, "until", now),
        }

    async def memory_search(self, request: Request) -> Response:
        query = request.query_params.get("q")
        if query is None or not query.strip():
            raise BadRequest("q: required (the text to search for)")
        text = request.query_params.get("k", "10")
        try:
            k = parse_int(text, 1, MAX_MEMORY_K, "k")
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        window = self._memory_window(request)
        result = await self._memory().asearch(query, k=k, **window)
        return JSONResponse(result.to_json())

    async def memory_list(self, request: Request) -> Response:
        limit = query_limit(request)
        cursor = decode_cursor(request.query_params.get("cursor"), "memory")
        window = self._memory_window(request)
        page = await asyncio.to_thread(self._memory().list, limit=limit, cursor=cursor, **window)
        body = page.to_json()
        body["next_cursor"] = encode_cursor("memory", page.next_cursor) if page.next_cursor else None
        return JSONResponse(body)

    async def memory_add(self, request: Request) -> Response:
        payload = await json_body(request)
        unknown = sorted(set(payload) - set(MEMORY_ADD_FIELDS))
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r} (expected {', '.join(MEMORY_ADD_FIELDS)})")
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("text: required, a non-empty string")
        for key in ("routine_id", "run_id", "ttl"):
            if payload.get(key) is not None and not isinstance(payload[key], str):
                raise BadRequest(f"{key}: must be a string")
        ttl_ms = None
        if payload.get("ttl") is not None:
            try:
                ttl_ms = parse_duration_ms(payload["ttl"])
            except ValueError as exc:
                raise BadRequest(f"ttl: {exc}") from None
            if not 0 < ttl_ms <= MAX_MEMORY_TTL_MS:
                raise BadRequest(f"ttl: must be longer than 0s and at most 36500d, got {payload['ttl']!r}")
        item = await self._memory().aadd_item(text, routine_id=payload.get("routine_id"),
                                              run_id=payload.get("run_id"), source="api", ttl_ms=ttl_ms)
        return JSONResponse(item.to_json(), status_code=201)

    # system

    async def system_status(self, request: Request) -> Response:
        ctx = self.ctx
        journal = ctx.journal
        now = ctx.clock.now_ms()
        scheduler = ctx.scheduler.status() if ctx.scheduler is not None else None
        watcher = ctx.watcher.status() if ctx.watcher is not None else None
        return JSONResponse(
            {
                "now": rfc3339(now),
                "daemon": {
                    "started_at": rfc3339(ctx.started_at_ms or None),
                    "uptime_seconds": (now - ctx.started_at_ms) / 1000 if ctx.started_at_ms else None,
                    "base_url": ctx.base_url or None,
                },
                "scheduler": scheduler,
                "watcher": watcher if watcher is not None else {"enabled": False},
                "tasks": ctx.extras.get("tasks", {}),
                "journal": {
                    "path": str(journal.path),
                    "lineage": journal.lineage(),
                    "serial": journal.serial(),
                    "runs_by_status": journal.count_runs_by_status(),
                    "active_runs": len(journal.active_runs()),
                    "pending_approvals": len(journal.list_approvals("pending")),
                },
                "last_apply": views.apply_log_view(journal.last_apply()),
            }
        )

    async def openapi(self, request: Request) -> Response:
        from palyra_ops.openapi import build_openapi

        return JSONResponse(build_openapi())


def _preview_expr(payload: dict[str, Any]) -> tuple[str, str]:
    """Accept either the routine-file shape (`schedule: {cron|every|at, timezone}`) or the CLI's
    (`expr` + `timezone`), so a console can preview exactly what it is about to upsert."""
    if "schedule" in payload:
        schedule = payload["schedule"]
        if not isinstance(schedule, dict):
            raise BadRequest("schedule: must be an object with one of cron, every, at")
        keys = [k for k in ("cron", "every", "at") if k in schedule]
        if len(keys) != 1:
            raise BadRequest("schedule: exactly one of cron, every, at is required")
        key = keys[0]
        value = schedule[key]
        if not isinstance(value, str):
            raise BadRequest(f"schedule.{key}: must be a string")
        expr = value if key == "cron" else f"{key}:{value}"
        timezone = schedule.get("timezone", payload.get("timezone", "utc"))
    elif "expr" in payload:
        expr = payload["expr"]
        if not isinstance(expr, str):
            raise BadRequest("expr: must be a string (cron expression, every:DURATION or at:RFC3339)")
        timezone = payload.get("timezone", "utc")
    else:
        raise BadRequest("either schedule or expr is required")
    if not isinstance(timezone, str):
        raise BadRequest("timezone: must be a string")
    return expr, timezone


def _endpoint(ctx: DaemonContext, handler: Handler) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            check_token(request, ctx.token, ctx.internal_token)
            return await handler(request)
        except PalyraError as exc:
            return error_response(exc)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


#: (method, path, handler name) of every console route this module serves; `openapi` describes them
ROUTE_TABLE: list[tuple[str, str, str]] = [
    ("GET", f"{PREFIX}/routines", "list_routines"),
    ("POST", f"{PREFIX}/routines/upsert", "upsert_routine"),
    ("POST", f"{PREFIX}/routines/dispatch", "dispatch_routine"),
    ("POST", f"{PREFIX}/routines/schedule-preview", "schedule_preview"),
    ("GET", f"{PREFIX}/routines/{{routine_id}}", "get_routine"),
    ("POST", f"{PREFIX}/routines/{{routine_id}}/enabled", "set_enabled"),
    ("POST", f"{PREFIX}/routines/{{routine_id}}/delete", "delete_routine"),
    ("GET", f"{PREFIX}/routines/{{routine_id}}/runs", "list_runs"),
    ("GET", f"{PREFIX}/cron/status", "cron_status"),
    ("GET", f"{PREFIX}/approvals", "list_approvals"),
    ("POST", f"{PREFIX}/approvals/{{approval_id}}/approve", "approve"),
    ("POST", f"{PREFIX}/approvals/{{approval_id}}/deny", "deny"),
    ("GET", f"{PREFIX}/memory/search", "memory_search"),
    ("GET", f"{PREFIX}/memory/items", "memory_list"),
    ("POST", f"{PREFIX}/memory/items", "memory_add"),
    ("GET", f"{PREFIX}/system/status", "system_status"),
    ("GET", f"{PREFIX}/openapi.json", "openapi"),
]


def routes(ctx: DaemonContext) -> list[Route]:
    """Every `/console/v1/...` route of SPEC §6 except `/console/v1/events/{event}` (the server's)."""
    api = ConsoleApi(ctx)
    return [
        Route(path, _endpoint(ctx, getattr(api, name)), methods=[method], name=f"console.{name}")
        for method, path, name in ROUTE_TABLE
    ]
