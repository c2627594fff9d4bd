"""The OpenAPI 3.1 document of the daemon's HTTP API (SPEC §6: "an OpenAPI document describes all of it").

It is generated, not hand-written, so it cannot disagree with the code: request bodies of the upsert
route embed the routine JSON Schema's `$defs` (the same schema that validates routine files), and
the console paths come from `console_api.ROUTE_TABLE`. `docs/openapi.json` is the checked-in copy
(a test keeps it equal to this output and checks that every app route is described); regenerate with
`python -m palyra_ops.openapi --write`.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from palyra_ops import __version__ as _pkg_version
from palyra_ops.schema_files import load_schema

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"

_TS = {"type": ["string", "null"], "format": "date-time", "description": "RFC 3339 with offset; null when not applicable."}
_RUN_STATUSES = ["accepted", "running", "succeeded", "failed", "skipped", "throttled", "denied", "cancelled",
                 "awaiting_approval"]
_TRIGGER_KINDS = ["schedule", "hook", "webhook", "system_event", "manual"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _rewrite_refs(node: Any) -> Any:
    """`#/$defs/X` of the routine schema → `#/components/schemas/X` once embedded here."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/"):
                out[k] = "#/components/schemas/" + v[len("#/$defs/"):]
            else:
                out[k] = _rewrite_refs(v)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _component_schemas() -> dict[str, Any]:
    routine_defs = _rewrite_refs(copy.deepcopy(load_schema().get("$defs", {})))
    page = {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "next_cursor": {"type": ["string", "null"], "description": "Opaque; pass as `cursor` for the next page. Null on the last page."},
        },
    }
    own: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "description": "Machine-readable: bad_request, unauthorized, not_found, invalid, conflict, duplicate, unavailable, ..."},
                        "message": {"type": "string", "description": "Human-readable, fit to show as-is."},
                        "details": {
                            "type": "array",
                            "description": "Validation failures (code `invalid`): every finding, not just the first.",
                            "items": {
                                "type": "object",
                                "required": ["path", "message"],
                                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                            },
                        },
                    },
                }
            },
        },
        "Run": {
            "type": "object",
            "description": "One attempt of a routine (SPEC §6).",
            "required": ["run_id", "routine_id", "scheduled_at", "started_at", "finished_at", "attempt", "status", "reason"],
            "properties": {
                "run_id": {"type": "string", "description": "ULID; sorts by creation time."},
                "routine_id": {"type": "string"},
                "scheduled_at": {**_TS, "description": "Nominal scheduled instant; null for manual and event runs."},
                "started_at": _TS,
                "finished_at": _TS,
                "attempt": {"type": "integer", "minimum": 1},
                "status": {"type": "string", "enum": _RUN_STATUSES},
                "reason": {"type": ["string", "null"], "description": "Why it was skipped, throttled, denied, failed or cancelled; null otherwise."},
                "trigger_kind": {"type": "string", "enum": _TRIGGER_KINDS},
                "trigger_payload": {"description": "Event payload or dispatch payload, as given."},
                "dedupe_key": {"type": ["string", "null"]},
                "first_run_id": {"type": ["string", "null"], "description": "Run id of attempt 1 (retries)."},
                "policy_rule": {"type": ["string", "null"], "description": "The policy rule that decided."},
                "delivery_status": {"type": ["string", "null"]},
                "delivery_error": {"type": ["string", "null"]},
                "skipped_count": {"type": "integer", "description": "Missed occurrences this run stands for (misfire)."},
                "skipped_times": {"type": "array", "items": {"type": "string", "format": "date-time"}},
                "created_at": _TS,
                "output": {"type": ["string", "null"]},
            },
        },
        "LastRunSummary": {
            "type": "object",
            "properties": {"run_id": {"type": "string"}, "status": {"type": ["string", "null"]},
                           "started_at": _TS, "finished_at": _TS},
        },
        "Routine": {
            "type": "object",
            "required": ["id", "name", "trigger_kind", "enabled", "state", "next_run_at", "managed", "drift"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "description": {"type": ["string", "null"]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "trigger_kind": {"type": "string", "enum": _TRIGGER_KINDS},
                "schedule": {"type": ["object", "null"], "description": "trigger.schedule for schedule routines."},
                "owner": {"type": "string"},
                "channel": {"type": "string"},
                "enabled": {"type": "boolean", "description": "As written in the spec."},
                "effective_enabled": {"type": "boolean", "description": "Spec enabled and approval granted."},
                "approval_state": {"type": "string", "enum": ["none", "pending", "approved", "denied"]},
                "state": {"type": "string", "enum": ["Pending", "Due", "Running", "Disabled", "Finalized"]},
                "active_runs": {"type": "integer"},
                "next_run_at": _TS,
                "next_run_at_local": {**_TS, "description": "next_run_at in the schedule's time zone."},
                "last_run": {"anyOf": [_ref("Run"), _ref("LastRunSummary"), {"type": "null"}],
                             "description": "The full run on the detail route; the job row's summary in listings."},
                "managed": {"type": "boolean", "description": "Created by apply (git); false for API/cron add routines."},
                "drift": {"type": "boolean", "description": "Managed and changed outside git since the last apply."},
                "source_file": {"type": ["string", "null"]},
                "hash": {"type": "string"},
                "created_at": _TS,
                "updated_at": _TS,
            },
        },
        "RoutineDetail": {
            "allOf": [
                _ref("Routine"),
                {
                    "type": "object",
                    "properties": {
                        "spec": {**_ref("routineSpec"), "description": "The canonical spec (defaults filled in)."},
                        "metadata": {"type": "object"},
                        "created": {"type": "boolean", "description": "Upsert responses only: true when the routine was new."},
                    },
                },
            ]
        },
        "RoutinePage": {**page, "properties": {**page["properties"], "items": {"type": "array", "items": _ref("Routine")}}},
        "RunPage": {**page, "properties": {**page["properties"], "items": {"type": "array", "items": _ref("Run")}}},
        "UpsertRequest": {
            "type": "object",
            "required": ["name", "spec"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"},
                "description": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "spec": _ref("routineSpec"),
            },
        },
        "DispatchRequest": {
            "type": "object",
            "required": ["routine_id"],
            "additionalProperties": False,
            "properties": {
                "routine_id": {"type": "string", "minLength": 1},
                "trigger_kind": {"type": "string", "enum": _TRIGGER_KINDS, "default": "manual"},
                "trigger_payload": {"description": "Any JSON; passed to the run as trigger context."},
                "dedupe_key": {"type": ["string", "null"], "description": "A later dispatch with the same key is recorded as a skipped run (reason `duplicate: ...`)."},
            },
        },
        "SchedulePreviewRequest": {
            "type": "object",
            "anyOf": [{"required": ["schedule"]}, {"required": ["expr"]}],
            "properties": {
                "schedule": {"type": "object", "description": "A routine's trigger.schedule: one of cron, every, at, plus timezone.",
                             "properties": {"cron": {"type": "string"}, "every": {"type": "string"}, "at": {"type": "string"},
                                            "timezone": {"type": "string"}},
                             "oneOf": [{"required": ["cron"]}, {"required": ["every"]}, {"required": ["at"]}]},
                "expr": {"type": "string", "minLength": 1, "description": "Alternative to schedule: cron expression, every:DURATION or at:RFC3339."},
                "timezone": {"type": "string", "default": "utc"},
                "count": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
                "from": {"type": "string", "format": "date-time", "description": "Default: now."},
                "dst": {"type": "object", "properties": {"gap": {"enum": ["shift", "skip"]}, "fold": {"enum": ["first", "last", "both"]}}},
            },
        },
        "SchedulePreview": {
            "type": "object",
            "required": ["fire_times", "notes"],
            "properties": {
                "fire_times": {"type": "array", "items": {"type": "string", "format": "date-time"}},
                "notes": {"type": "array", "items": {"type": "string"}, "description": "DST gaps, repeated hours, quiet hours."},
            },
        },
        "CronStatus": {
            "type": "object",
            "required": ["now", "items"],
            "properties": {
                "now": {"type": "string", "format": "date-time"},
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "routine_id": {"type": "string"},
                            "schedule": {"type": ["string", "null"]},
                            "timezone": {"type": "string"},
                            "enabled": {"type": "boolean"},
                            "state": {"type": "string", "enum": ["Pending", "Due", "Running", "Disabled", "Finalized"]},
                            "next_run_at": _TS,
                            "next_run_at_local": _TS,
                            "last_status": {"type": ["string", "null"]},
                            "last_run_id": {"type": ["string", "null"]},
                            "last_started_at": _TS,
                            "managed": {"type": "boolean"},
                            "drift": {"type": "boolean"},
                        },
                    },
                },
            },
        },
        "Approval": {
            "type": "object",
            "required": ["approval_id", "routine_id", "kind", "state"],
            "properties": {
                "approval_id": {"type": "string"},
                "routine_id": {"type": "string"},
                "kind": {"type": "string", "enum": ["before_enable", "before_first_run"]},
                "run_id": {"type": ["string", "null"]},
                "state": {"type": "string", "enum": ["pending", "approved", "denied", "cancelled"]},
                "created_at": _TS,
                "decided_at": _TS,
                "decided_by": {"type": ["string", "null"]},
            },
        },
        "SystemStatus": {
            "type": "object",
            "properties": {
                "now": {"type": "string", "format": "date-time"},
                "daemon": {"type": "object"},
                "scheduler": {"type": ["object", "null"], "description": "Last tick, due backlog, running count, next due."},
                "watcher": {"type": "object"},
                "tasks": {
                    "type": "object",
                    "description": "Maintenance task health by name (journal.checkpoint, memory.maintain, memory.backfill, skills.audit).",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "interval_ms": {"type": "integer"},
                            "enabled": {"type": "boolean"},
                            "last_run_at": _TS,
                            "duration_ms": {"type": ["number", "null"]},
                            "outcome": {"type": ["string", "null"], "enum": ["ok", "failed", None]},
                            "detail": {"description": "What the last run returned or why it failed."},
                            "runs": {"type": "integer"},
                            "next_run_at": _TS,
                        },
                    },
                },
                "journal": {"type": "object", "description": "Path, lineage, serial, runs by status."},
                "last_apply": {"type": ["object", "null"]},
            },
        },
        "MemoryItem": {
            "type": "object",
            "description": "A memory item (SPEC §9): a kept run output or a text added through the API or CLI.",
            "required": ["id", "routine_id", "run_id", "source", "text", "created_at", "expires_at", "bytes", "embedding"],
            "properties": {
                "id": {"type": "string", "description": "ULID."},
                "routine_id": {"type": ["string", "null"], "description": "The routine whose run produced it, if any."},
                "run_id": {"type": ["string", "null"], "description": "The run that produced it, if any."},
                "source": {"type": "string", "enum": ["delivery:local_only", "delivery:audit_only", "api", "cli"]},
                "text": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
                "expires_at": {**_TS, "description": "TTL deadline; null when the item has none."},
                "bytes": {"type": "integer", "description": "UTF-8 size of the text."},
                "embedding": {
                    "type": ["object", "null"],
                    "description": "Null until the backfill task has embedded it (until then it is not searchable).",
                    "properties": {"model": {"type": "string"}, "dim": {"type": "integer"}, "version": {"type": "string"},
                                   "embedded_at_ms": {"type": "integer"}},
                },
            },
        },
        "MemoryItemPage": {**page, "properties": {**page["properties"], "items": {"type": "array", "items": _ref("MemoryItem")}}},
        "MemoryAddRequest": {
            "type": "object",
            "required": ["text"],
            "additionalProperties": False,
            "properties": {
                "text": {"type": "string", "minLength": 1, "description": "At most 1 MiB of UTF-8."},
                "routine_id": {"type": ["string", "null"]},
                "run_id": {"type": ["string", "null"]},
                "ttl": {"type": ["string", "null"], "pattern": "^([0-9]+(ms|s|m|h|d))+$",
                        "description": "Duration like 7d; the item is deleted by maintenance after it."},
            },
        },
        "MemorySearchResult": {
            "type": "object",
            "required": ["query", "model", "method", "pending", "notes", "results"],
            "properties": {
                "query": {"type": "string"},
                "model": {"type": "object", "description": "The embedder's model key (model, dim, version)."},
                "method": {"type": "string", "enum": ["hnsw", "exact"]},
                "pending": {"type": "integer", "description": "Items not embedded with this model yet (not searchable until backfill)."},
                "took_ms": {"type": "number"},
                "notes": {"type": "array", "items": {"type": "string"}},
                "results": {
                    "type": "array",
                    "description": "Nearest first.",
                    "items": {"allOf": [_ref("MemoryItem"), {"type": "object", "required": ["score"], "properties": {
                        "score": {"type": "number", "description": "Cosine similarity to the query."}}}]},
                },
            },
        },
        "EventRuns": {
            "type": "object",
            "required": ["event", "runs"],
            "properties": {"event": {"type": ["string", "null"]}, "integration": {"type": "string"},
                           "duplicate": {"type": "boolean", "description": "Webhooks: true when a Standard Webhooks id "
                                                                           "was seen before (nothing ran)."},
                           "runs": {"type": "array", "items": _ref("Run"), "description": "One per matching routine."}},
        },
        "Message": {
            "type": "object",
            "required": ["principal", "text"],
            "properties": {
                "principal": {"type": "string", "minLength": 1, "description": "Who speaks, e.g. user:alice."},
                "text": {"type": "string", "minLength": 1},
                "channel": {"type": "string", "default": "api"},
                "context": {"description": "Any JSON passed to the backend."},
            },
        },
        "MessageResult": {
            "type": "object",
            "required": ["message_id", "principal", "channel", "output"],
            "properties": {
                "message_id": {"type": "string"},
                "principal": {"type": "string"},
                "channel": {"type": "string"},
                "output": {"type": ["string", "null"]},
                "received_at_ms": {"type": ["integer", "null"]},
            },
        },
    }
    overlap = set(own) & set(routine_defs)
    assert not overlap, f"component name clash with routine schema $defs: {overlap}"
    return {**routine_defs, **own}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


def _param(name: str, where: str, description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "description": description, "schema": schema}


_ROUTINE_ID = _param("routine_id", "path", "The routine's name (metadata.name).", {"type": "string", "minLength": 1})
_APPROVAL_ID = _param("approval_id", "path", "The approval's id.", {"type": "string", "minLength": 1})
_LIMIT = _param("limit", "query", "Page size (default 50, at most 500).", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50})
_CURSOR = _param("cursor", "query", "`next_cursor` of the previous page.", {"type": "string"})
_MEMORY_ROUTINE = _param("routine", "query", "Only items from this routine.", {"type": "string", "minLength": 1})
_MEMORY_SINCE = _param("since", "query", "Only items created at or after this: RFC 3339, or a duration ago like 24h.", {"type": "string"})
_MEMORY_UNTIL = _param("until", "query", "Only items created before this: RFC 3339, or a duration ago.", {"type": "string"})


def _operations() -> dict[tuple[str, str], dict[str, Any]]:
    """Every operation keyed by (method, path)."""
    p = "/console/v1"
    return {
        ("get", f"{p}/routines"): {
            "summary": "List routines",
            "description": "Sorted by name. Filters combine with AND.",
            "parameters": [
                _param("trigger_kind", "query", "Only this trigger kind.", {"type": "string", "enum": _TRIGGER_KINDS}),
                _param("enabled", "query", "Only effectively enabled (true) or disabled (false) routines.", {"type": "boolean"}),
                _param("channel", "query", "Only routines whose origin channel, delivery channel or failure channel is this.", {"type": "string"}),
                _LIMIT, _CURSOR,
            ],
            "responses": {"200": _json(_ref("RoutinePage"), "One page of routines."), **_errors(400, 401)},
        },
        ("get", f"{p}/routines/{{routine_id}}"): {
            "summary": "One routine: definition, state, next run, last run, source file, managed/drift",
            "parameters": [_ROUTINE_ID],
            "responses": {"200": _json(_ref("RoutineDetail"), "The routine."), **_errors(401, 404)},
        },
        ("post", f"{p}/routines/upsert"): {
            "summary": "Create or update a routine",
            "description": "Validated like a routine file (JSON Schema + semantic checks). A new routine is unmanaged; "
                           "a managed one shows as drift until the next apply restores the git version. The next run "
                           "is recomputed from now; an upsert never fires a run by itself.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("UpsertRequest")}}},
            "responses": {
                "200": _json(_ref("RoutineDetail"), "Updated."),
                "201": _json(_ref("RoutineDetail"), "Created."),
                **_errors(400, 401, 422),
            },
        },
        ("post", f"{p}/routines/dispatch"): {
            "summary": "Run a routine now",
            "description": "The run passes the same gates as a scheduled one; the response is the run as accepted "
                           "(or as stopped by a gate, with its reason).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("DispatchRequest")}}},
            "responses": {"202": _json(_ref("Run"), "The run record."), **_errors(400, 401, 404, 409, 503)},
        },
        ("post", f"{p}/routines/schedule-preview"): {
            "summary": "Next fire times of a schedule, with DST notes",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SchedulePreviewRequest")}}},
            "responses": {"200": _json(_ref("SchedulePreview"), "Fire times in the schedule's zone."), **_errors(400, 401, 422)},
        },
        ("post", f"{p}/routines/{{routine_id}}/enabled"): {
            "summary": "Enable or disable a routine",
            "parameters": [_ROUTINE_ID],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["enabled"], "additionalProperties": False,
                "properties": {"enabled": {"type": "boolean"}}}}}},
            "responses": {"200": _json(_ref("RoutineDetail"), "The routine after the change."), **_errors(400, 401, 404)},
        },
        ("post", f"{p}/routines/{{routine_id}}/delete"): {
            "summary": "Delete a routine",
            "description": "A managed routine comes back at the next apply while it is still in the directory.",
            "parameters": [_ROUTINE_ID],
            "responses": {"200": _json({"type": "object", "properties": {"deleted": {"type": "string"}, "managed": {"type": "boolean"}}}, "Deleted."),
                          **_errors(401, 404)},
        },
        ("get", f"{p}/routines/{{routine_id}}/runs"): {
            "summary": "A routine's runs, newest first",
            "parameters": [_ROUTINE_ID, _param("status", "query", "Only runs with this status.", {"type": "string", "enum": _RUN_STATUSES}),
                           _LIMIT, _CURSOR],
            "responses": {"200": _json(_ref("RunPage"), "One page of runs."), **_errors(400, 401, 404)},
        },
        ("get", f"{p}/cron/status"): {
            "summary": "Every schedule routine: state (Pending/Due/Running/Disabled/Finalized), next run local and UTC, last status",
            "responses": {"200": _json(_ref("CronStatus"), "Scheduled routines by name."), **_errors(401)},
        },
        ("get", f"{p}/approvals"): {
            "summary": "Approvals",
            "parameters": [_param("state", "query", "pending (default), approved, denied, cancelled or all.",
                                  {"type": "string", "enum": ["pending", "approved", "denied", "cancelled", "all"], "default": "pending"})],
            "responses": {"200": _json({"type": "object", "properties": {"items": {"type": "array", "items": _ref("Approval")}}}, "Oldest first."),
                          **_errors(400, 401)},
        },
        ("post", f"{p}/approvals/{{approval_id}}/approve"): {
            "summary": "Approve: enables a before_enable routine, releases a before_first_run run",
            "parameters": [_APPROVAL_ID],
            "responses": {"200": _json(_ref("Approval"), "The decided approval."), **_errors(401, 404, 409, 503)},
        },
        ("post", f"{p}/approvals/{{approval_id}}/deny"): {
            "summary": "Deny: the routine stays disabled, or the waiting run is recorded denied",
            "parameters": [_APPROVAL_ID],
            "responses": {"200": _json(_ref("Approval"), "The decided approval."), **_errors(401, 404, 409, 503)},
        },
        ("get", f"{p}/memory/search"): {
            "summary": "Nearest memory items to a text (SPEC §9)",
            "description": "Cosine similarity of embeddings from the daemon's embedder. Items not embedded yet (the "
                           "backfill task runs every 10 minutes) are not found; `pending` counts them. Filters are exact.",
            "parameters": [
                _param("q", "query", "The text to search for.", {"type": "string", "minLength": 1}, required=True),
                _param("k", "query", "How many results (default 10).", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}),
                _MEMORY_ROUTINE, _MEMORY_SINCE, _MEMORY_UNTIL,
            ],
            "responses": {"200": _json(_ref("MemorySearchResult"), "Nearest items first."), **_errors(400, 401, 503)},
        },
        ("get", f"{p}/memory/items"): {
            "summary": "Memory items, newest first",
            "parameters": [_MEMORY_ROUTINE, _MEMORY_SINCE, _MEMORY_UNTIL, _LIMIT, _CURSOR],
            "responses": {"200": _json(_ref("MemoryItemPage"), "One page of items."), **_errors(400, 401, 503)},
        },
        ("post", f"{p}/memory/items"): {
            "summary": "Add a memory item",
            "description": "Stored now with source `api`; searchable after the next backfill embeds it.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("MemoryAddRequest")}}},
            "responses": {"201": _json(_ref("MemoryItem"), "The stored item."), **_errors(400, 401, 503)},
        },
        ("get", f"{p}/system/status"): {
            "summary": "Scheduler health, last tick, maintenance tasks, watcher state, journal identity, last apply",
            "responses": {"200": _json(_ref("SystemStatus"), "Daemon status."), **_errors(401)},
        },
        ("get", f"{p}/openapi.json"): {
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1 document.", "content": {"application/json": {}}}, **_errors(401)},
        },
        ("post", f"{p}/events/{{event}}"): {
            "summary": "Emit a hook event: runs every `hook` routine whose trigger.event matches",
            "parameters": [_param("event", "path", "Event name.", {"type": "string", "minLength": 1}),
                           _param("X-Palyra-Dedupe-Key", "header", "Drops repeats of the same key.", {"type": "string"})],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"description": "Event payload (any JSON)."}}}},
            "responses": {"202": _json(_ref("EventRuns"), "Runs started."), **_errors(400, 401, 413)},
        },
        ("post", "/gateway/v1/messages"): {
            "summary": "The gateway pipeline entry (gates → policy → execution → delivery)",
            "description": "A user message (200) runs the agent backend on `text`. Routine runs (202, the run after "
                           "the gates) are accepted only from system:daemon with the daemon's internal credential: "
                           "the scheduler's loopback calls.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Message")}}},
            "responses": {"200": _json(_ref("MessageResult"), "The backend's answer."),
                          "202": _json(_ref("Run"), "The routine run as the gates left it."),
                          **_errors(400, 401, 403, 404, 409, 413, 502)},
        },
        ("post", "/webhooks/{integration}"): {
            "summary": "Webhook trigger: runs matching `webhook` routines",
            "description": "An integration with a secret (daemon config `integrations.NAME.secret`) is authenticated by "
                           "its signature alone, no bearer token: GitHub style (`X-Hub-Signature-256: sha256=<hex "
                           "HMAC-SHA256 of the body>`, also as `X-Palyra-Signature`) or Standard Webhooks "
                           "(`webhook-id`, `webhook-timestamp` within 5 minutes, `webhook-signature: v1,<base64>`; a "
                           "repeated id is answered 200 with `duplicate: true` and runs nothing). An integration "
                           "without a secret needs the bearer token; an integration neither configured nor used by a "
                           "routine is 404.",
            "security": [{"bearer": []}, {}],
            "parameters": [_param("integration", "path", "Integration name (trigger.webhook.integration).", {"type": "string", "minLength": 1}),
                           _param("X-Palyra-Event", "header", "Event name (or X-GitHub-Event, or `event`/`type` in the body).", {"type": "string"}),
                           _param("X-Palyra-Delivery", "header", "Delivery id used as dedupe key (or X-GitHub-Delivery).", {"type": "string"}),
                           _param("X-Hub-Signature-256", "header", "GitHub style signature: sha256=<hex>.", {"type": "string"}),
                           _param("webhook-id", "header", "Standard Webhooks message id (also the dedupe key).", {"type": "string"}),
                           _param("webhook-timestamp", "header", "Standard Webhooks: Unix seconds.", {"type": "string"}),
                           _param("webhook-signature", "header", "Standard Webhooks: space-separated v1,<base64>.", {"type": "string"})],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"description": "Payload (any JSON)."}}}},
            "responses": {"200": _json(_ref("EventRuns"), "A repeated Standard Webhooks id: dropped, nothing ran."),
                          "202": _json(_ref("EventRuns"), "Runs started."), **_errors(400, 401, 404, 413, 503)},
        },
        ("get", "/healthz"): {
            "summary": "Liveness (no token needed)",
            "security": [],
            "responses": {
                "200": _json({"type": "object", "properties": {"status": {"const": "ok"}}}, "Alive and working."),
                "503": _json({
                    "type": "object",
                    "required": ["status", "error", "problems"],
                    "properties": {
                        "status": {"const": "unavailable"},
                        "error": {"type": "object", "required": ["code", "message"],
                                  "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
                        "problems": {"type": "array", "items": {
                            "type": "object",
                            "required": ["component", "code", "message"],
                            "properties": {
                                "component": {"enum": ["journal", "scheduler", "gateway"]},
                                "code": {"type": "string", "description": "e.g. journal_full, journal_readonly, "
                                                                          "journal_unavailable, scheduler_paused"},
                                "message": {"type": "string"},
                                "since": {"type": ["string", "null"], "format": "date-time"},
                            },
                        }},
                    },
                }, "Running but not working: the journal cannot be written (full, read-only, unavailable) or the "
                   "scheduler is paused; `error` is the first problem. Clears by itself once the cause is gone."),
            },
        },
        ("get", "/metrics"): {
            "summary": "Prometheus text format: runs by status, dispatch lag, due backlog, gate outcomes",
            "responses": {"200": {"description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401)},
        },
    }


def build_openapi() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in _operations().items():
        op = dict(op)
        if "requestBody" in op:  # the body limit and the JSON parser apply to every one of them
            op["responses"] = {**op["responses"], **_errors(400, 413)}
            op["responses"] = dict(sorted(op["responses"].items()))
        op.setdefault("operationId", _operation_id(method, path))
        paths.setdefault(path, {})[method] = op
    responses = {
        f"E{code}": _json(_ref("Error"), text)
        for code, text in {
            400: "Bad request (malformed or too deeply nested JSON, bad parameter or cursor).",
            401: "Missing or wrong bearer token (or webhook signature).",
            403: "Forbidden (e.g. a system:daemon message without the internal credential).",
            404: "Not found.",
            409: "Conflict (e.g. an approval that was already decided).",
            413: "Request body larger than the daemon's max_body_bytes (1 MiB by default); refused before it is read.",
            422: "Validation failed; `details` lists every finding.",
            502: "The agent backend failed.",
            503: "Unavailable (the gateway or the memory service is not running, a webhook secret is not set).",
        }.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "palyra-ops daemon API",
            "version": _pkg_version,
            "description": "Console API and gateway of the palyra-ops daemon. Every route but /healthz needs "
                           "`Authorization: Bearer <token>` (`palyra-ops token` prints it). Errors are "
                           '`{"error": {"code", "message"}}`. Times are RFC 3339 with offset.',
        },
        "servers": [{"url": "http://127.0.0.1:7142", "description": "Default listen address (loopback)."}],
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "The token in <state root>/token."}},
            "responses": responses,
            "schemas": _component_schemas(),
        },
    }


def _operation_id(method: str, path: str) -> str:
    parts = [s.strip("{}").replace("-", "_").replace(".", "_") for s in path.split("/") if s and s not in ("console", "v1")]
    return "_".join([method, *parts])


def render() -> str:
    """The exact text of docs/openapi.json (stable key order, trailing newline)."""
    return json.dumps(build_openapi(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--write"]:
        DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
        DOC_PATH.write_text(render(), encoding="utf-8")
        print(f"wrote {DOC_PATH}")
        return 0
    if args:
        print("usage: python -m palyra_ops.openapi [--write]", file=sys.stderr)
        return 2
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
