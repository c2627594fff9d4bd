"""The OpenAPI document: checked-in copy equals the generated one, and it describes every app route."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from palyra_ops import openapi
from palyra_ops.clock import SystemClock
from palyra_ops.context import DaemonContext
from palyra_ops.journal import open_journal
from palyra_ops.openapi import DOC_PATH, build_openapi, described_routes, render
from palyra_ops.server.operation import walk


def test_checked_in_document_is_current() -> None:
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/openapi.json is stale: regenerate it with `python -m palyra_ops.openapi --write`"
    )


def _described() -> set[tuple[str, str]]:
    doc = build_openapi()
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


def test_every_console_route_is_described() -> None:
    console = {(m, p) for m, p, _ in described_routes() if p.startswith("/console/v1/")}
    assert console and console <= _described()


def test_every_app_route_is_described(tmp_path: Path) -> None:
    server = pytest.importorskip("palyra_ops.server")
    journal = open_journal(tmp_path / "j.sqlite3")
    try:
        ctx = DaemonContext(journal=journal, clock=SystemClock(), config=None, token="t", internal_token="i")
        app = server.create_app(ctx)
        served = {
            (method, path)
            for path, route in walk(app.routes)  # into the console's Mount
            for method in (route.methods or set()) - {"HEAD"}
        }
    finally:
        journal.close()
    assert served, "the app has no routes"
    missing = served - _described()
    assert not missing, f"routes missing from the OpenAPI document: {sorted(missing)}"
    extra = _described() - served
    assert not extra, f"documented routes the app does not serve: {sorted(extra)}"


def test_document_is_valid_openapi_31() -> None:
    doc = build_openapi()
    assert doc["openapi"] == "3.1.0"
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    text = json.dumps(doc)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        assert ref.startswith("#/components/"), ref
        node = doc
        for step in ref[2:].split("/"):
            node = node[step]
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)


def test_upsert_body_embeds_the_routine_schema() -> None:
    doc = build_openapi()
    spec = doc["components"]["schemas"]["UpsertRequest"]["properties"]["spec"]
    assert spec == {"$ref": "#/components/schemas/routineSpec"}
    from palyra_ops.schema_files import load_schema

    assert set(load_schema()["$defs"]) <= set(doc["components"]["schemas"])


def test_main_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert openapi.main([]) == 0
    assert capsys.readouterr().out == render()
    assert openapi.main(["--bogus"]) == 2


def test_api_schema_files_ship_in_the_wheel_and_are_json_schemas() -> None:
    import tomllib

    cfg = tomllib.loads((DOC_PATH.parent.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "api/*.json" in cfg["package-data"]["palyra_ops._schemas"]
    from palyra_ops.schema_files import SCHEMA_DIR

    files = sorted((SCHEMA_DIR / "api").glob("*.json"))
    assert files
    components = build_openapi()["components"]["schemas"]
    for path in files:
        schema = json.loads(path.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        assert path.stem in components


def test_the_enums_the_handlers_check_are_the_ones_the_schemas_publish() -> None:
    from palyra_ops.server.routes.approvals import APPROVAL_STATES
    from palyra_ops.server.routes.common import RUN_STATUSES, RUN_TRIGGERS, TRIGGER_KINDS

    schemas = build_openapi()["components"]["schemas"]
    run = schemas["Run"]["properties"]
    assert run["status"]["enum"] == list(RUN_STATUSES)
    assert run["trigger_kind"]["enum"] == list(RUN_TRIGGERS)
    assert schemas["DispatchRequest"]["properties"]["trigger_kind"]["enum"] == list(TRIGGER_KINDS)
    assert schemas["Approval"]["properties"]["state"]["enum"] == list(APPROVAL_STATES)
