"""The OpenAPI 3.1 document of the daemon's HTTP API (SPEC §6: "an OpenAPI document describes all of it").

Generated, so it cannot disagree with the code: the paths are read off the app's route table (each
`ApiRoute` carries its `Operation`, `palyra_ops.server.operation`), error responses come from the
server's error table, and the component schemas are the JSON Schema files in `schemas/api/` plus the
routine schema's `$defs` (the same schema that validates routine files). `docs/openapi.json` is the
checked-in copy (a test keeps it equal to this output); regenerate with
`python -m palyra_ops.openapi --write`.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from palyra_ops import __version__ as _pkg_version
from palyra_ops.schema_files import SCHEMA_DIR, load_schema
from palyra_ops.server import routes
from palyra_ops.server.errors import MEANING, statuses
from palyra_ops.server.operation import ApiRoute, Auth, Operation, Param, Reply, api_routes

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
API_SCHEMAS = "api"
ROUTINE_SCHEMA = "routine.schema.json"
_COMPONENTS = "#/components/schemas/"
#: a route that is not public answers 401; one that reads a body, 400 (bad JSON) and 413 (too large)
_AUTH_ERRORS = (401,)
_BODY_ERRORS = (400, 413)
#: a path whose parameter the route's pattern does not take (a newline, say) matches no route: 404
_PATH_ERRORS = (404,)


def _component_ref(ref: str) -> str:
    """A reference of the schema files (`Run.json`, `../routine.schema.json#/$defs/X`, `#/$defs/X`)
    as a reference into this document's components."""
    for prefix in ("#/$defs/", f"../{ROUTINE_SCHEMA}#/$defs/"):
        if ref.startswith(prefix):
            return _COMPONENTS + ref[len(prefix):]
    if ref.endswith(".json") and "/" not in ref:
        return _COMPONENTS + ref.removesuffix(".json")
    raise ValueError(f"schema reference {ref!r} points outside schemas/api/ and the routine schema's $defs")


def _embedded(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _component_ref(v) if k == "$ref" and isinstance(v, str) else _embedded(v)
                for k, v in node.items() if k != "$schema"}
    if isinstance(node, list):
        return [_embedded(v) for v in node]
    return node


def component_schemas() -> dict[str, Any]:
    schemas = _embedded(copy.deepcopy(load_schema(ROUTINE_SCHEMA).get("$defs", {})))
    for path in sorted((SCHEMA_DIR / API_SCHEMAS).glob("*.json")):
        name = path.stem
        assert name not in schemas, f"schemas/api/{path.name} clashes with the routine schema's $defs/{name}"
        schemas[name] = _embedded(load_schema(f"{API_SCHEMAS}/{path.name}"))
    return schemas


def _param(p: Param) -> dict[str, Any]:
    return {"name": p.name, "in": p.where, "required": p.required or p.where == "path", "description": p.description,
            "schema": dict(p.schema)}


def _reply(r: Reply) -> dict[str, Any]:
    return {"description": r.description,
            "content": {r.media_type: {"schema": dict(r.schema)} if r.schema is not None else {}}}


def _operation_id(method: str, path: str) -> str:
    parts = [s.strip("{}").replace("-", "_").replace(".", "_") for s in path.split("/") if s and s not in ("console", "v1")]
    return "_".join([method, *parts])


def operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary}
    if op.description:
        out["description"] = op.description
    if op.auth is Auth.PUBLIC:
        out["security"] = []
    elif op.auth is Auth.TOKEN_OR_SIGNATURE:
        out["security"] = [{"bearer": []}, {}]
    if op.params:
        out["parameters"] = [_param(p) for p in op.params]
    errors = statuses(*op.raises)
    if op.auth is not Auth.PUBLIC:
        errors.update(_AUTH_ERRORS)
    if any(p.where == "path" for p in op.params):
        errors.update(_PATH_ERRORS)
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": {"application/json": {"schema": dict(op.body)}}}
        errors.update(_BODY_ERRORS)
    responses = {str(s): {"$ref": f"#/components/responses/E{s}"} for s in errors if s not in op.replies}
    responses.update({str(s): _reply(r) for s, r in op.replies.items()})
    out["responses"] = dict(sorted(responses.items()))
    out["operationId"] = _operation_id(method, path)
    return out


def build_openapi() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, route in api_routes(routes()):
        method = route.method.lower()
        paths.setdefault(path, {})[method] = operation(method, path, route.operation)
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
            "responses": {f"E{status}": _reply(Reply(text, {"$ref": _COMPONENTS + "Error"}))
                          for status, text in sorted(MEANING.items())},
            "schemas": component_schemas(),
        },
    }


def described_routes() -> list[tuple[str, str, ApiRoute]]:
    """(method, path, route) of every route the document describes."""
    return [(route.method, path, route) for path, route in api_routes(routes())]


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
