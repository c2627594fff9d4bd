"""Upsert validation: a routine sent to the API is judged exactly as `palyra-ops validate` judges a file
(the same `source.check_document`), with paths relative to the upsert body."""

from __future__ import annotations

from typing import Any

from palyra_ops.context import DaemonContext
from palyra_ops.errors import Diagnostic, ValidationFailed
from palyra_ops.model import Resource
from palyra_ops.source import check_document

UPSERT_FIELDS = ("name", "spec", "description", "labels")


# -- upsert validation -------------------------------------------------------------------------------


def document_problems(doc: dict[str, Any], ctx: DaemonContext) -> list[tuple[str, str]]:
    """Every problem of the upserted document, worded as `palyra-ops validate` words it (the same
    `source.check_document`), its channel and skill references checked against the journal and the
    installed skills instead of a directory."""
    store = ctx.skill_store
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
