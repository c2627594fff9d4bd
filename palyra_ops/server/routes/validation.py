"""Upsert validation: a routine sent to the API is judged exactly as `palyra-ops validate` judges a file.

This block moved here unchanged from `console_api.py`; it is one unit on purpose (the source
package's `check_document` is to replace the copy of the file checks in it).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from palyra_ops.context import DaemonContext
from palyra_ops.errors import Diagnostic, ValidationFailed
from palyra_ops.model import Resource
from palyra_ops.schema_files import load_schema

UPSERT_FIELDS = ("name", "spec", "description", "labels")


# -- upsert validation -------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _validator(definition: str) -> Draft202012Validator:
    """A validator for one `$defs` entry of the routine schema, so the API and files agree exactly."""
    schema = load_schema()
    return Draft202012Validator({"$defs": schema.get("$defs", {}), "$ref": f"#/$defs/{definition}"})


def _dotted(prefix: str, path: Any) -> str:
    parts = [prefix, *(str(p) for p in path)]
    return ".".join(p for p in parts if p)


def _schema_problems(spec: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in _validator("routineSpec").iter_errors(spec):
        chosen: ValidationError = err
        if err.context:  # oneOf/anyOf: the closest branch says what was actually wrong
            chosen = best_match(err.context) or err
        out.append((_dotted("spec", chosen.absolute_path), chosen.message))
    return out


def _fallback_document_problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Schema and schedule checks with plain jsonschema messages, for when `source` lacks its helpers."""
    from palyra_ops import schedule as sched

    out = [(_dotted("metadata", e.absolute_path), e.message) for e in _validator("metadata").iter_errors(doc["metadata"])]
    spec = doc["spec"]
    spec_problems = _schema_problems(spec)
    out.extend(spec_problems)
    if spec_problems:
        return out
    trigger = spec.get("trigger") or {}
    if trigger.get("kind") == "schedule" and isinstance(trigger.get("schedule"), dict):
        for key, message in sched.check_schedule(trigger["schedule"]):
            out.append((f"spec.trigger.schedule.{key}" if key else "spec.trigger.schedule", message))
    quiet = spec.get("quiet_hours")
    if isinstance(quiet, dict) and quiet.get("timezone"):
        message = sched.check_timezone(quiet["timezone"])
        if message:
            out.append(("spec.quiet_hours.timezone", message))
    return out


def document_problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Every schema and per-document semantic problem, worded exactly as `palyra-ops validate` words it.

    Reuses the source loader's checks so a routine is judged the same whether it arrives as a file or
    through the API; falls back to plain jsonschema messages if those helpers are not available.
    """
    try:
        from palyra_ops.source import _schema_findings, _semantic_findings, format_path
    except ImportError:
        return _fallback_document_problems(doc)
    findings = _schema_findings(doc)
    findings += _semantic_findings(doc, [f[0] for f in findings])
    return [(format_path(path), message) for path, _anchor, message in findings]


def _reference_problems(spec: dict[str, Any], ctx: DaemonContext) -> list[tuple[str, str]]:
    """Cross-object checks (a directory's cross-file checks): referenced channels and skills exist."""
    out: list[tuple[str, str]] = []
    delivery = spec.get("delivery") or {}
    for channel_key in ("channel", "failure_channel"):
        name = delivery.get(channel_key)
        if isinstance(name, str) and ctx.journal.get_resource("Channel", name) is None:
            out.append((f"spec.delivery.{channel_key}", f"no Channel named {name!r} in the journal"))
    skill = spec.get("skill")
    store = ctx.extras.get("skill_store") or ctx.extras.get("skills")
    if isinstance(skill, dict) and isinstance(skill.get("id"), str) and store is not None and hasattr(store, "ids"):
        if skill["id"] not in store.ids():
            out.append(("spec.skill.id", f"no installed skill {skill['id']!r}"))
    return out


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
    doc_problems = [(_api_path(p), m) for p, m in document_problems(doc)]
    if not isinstance(spec, dict):
        doc_problems = [(p, m) for p, m in doc_problems if not p.startswith("spec")]
    problems.extend(doc_problems)
    if isinstance(spec, dict) and not any(p.startswith("spec") for p, _ in doc_problems):
        problems.extend(_reference_problems(spec, ctx))
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
