"""Typed desired-state objects, their canonical form and content hash.

The canonical body of an object is its document minus `apiVersion`/`kind`/`metadata.name`, with every
schema default filled in and keys sorted. Two documents that mean the same thing (one spelling out
`enabled: true`, one relying on the default) therefore hash the same, and plan shows no change.
Defaults are read from the JSON Schema so the schema stays the single source of truth.

Durations stay as written in the canonical body (a plan shows what the user wrote); the typed views
(`Routine`, `Channel`) carry them parsed to milliseconds for the scheduler and gateway.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from palyra_ops.durations import parse_duration_ms
from palyra_ops.schema_files import load_schema

KINDS = ("Routine", "Channel", "Policy")
_SPEC_DEFS = {"Routine": "routineSpec", "Channel": "channelSpec", "Policy": "policySpec"}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _resolve(schema, schema["$defs"][ref.split("/")[-1]])
    return node


def _fill(schema: dict[str, Any], node_schema: dict[str, Any], value: Any) -> Any:
    node_schema = _resolve(schema, node_schema)
    if not isinstance(value, dict):
        return value
    props = node_schema.get("properties") or {}
    for key, sub in props.items():
        sub_r = _resolve(schema, sub)
        if key not in value and "default" in sub_r:
            value[key] = copy.deepcopy(sub_r["default"])
        if key in value and isinstance(value[key], dict):
            value[key] = _fill(schema, sub_r, value[key])
    return value


def apply_defaults(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `spec` with every schema default filled in."""
    schema = load_schema()
    node = schema.get("$defs", {}).get(_SPEC_DEFS[kind], {})
    return _fill(schema, node, copy.deepcopy(spec))


@dataclass(frozen=True)
class Resource:
    """One desired-state object (Routine, Channel or Policy) in canonical form."""

    kind: str
    name: str
    body: dict[str, Any]  # {"metadata": {...}, "spec": {...}} canonical
    source_file: str | None = None

    @cached_property
    def hash(self) -> str:
        return content_hash(self.body)

    @property
    def spec(self) -> dict[str, Any]:
        return self.body["spec"]

    @classmethod
    def from_document(cls, doc: dict[str, Any], source_file: str | None = None) -> Resource:
        """Build from a validated YAML document (apiVersion/kind/metadata/spec)."""
        kind = doc["kind"]
        metadata = {k: v for k, v in (doc.get("metadata") or {}).items() if k != "name"}
        body = {"metadata": metadata, "spec": apply_defaults(kind, doc.get("spec") or {})}
        return cls(kind=kind, name=doc["metadata"]["name"], body=body, source_file=source_file)

    @classmethod
    def from_spec(cls, kind: str, name: str, spec: dict[str, Any], metadata: dict[str, Any] | None = None) -> Resource:
        """Build from an API payload (SPEC §6 upsert: the YAML `spec` plus a name)."""
        body = {"metadata": dict(metadata or {}), "spec": apply_defaults(kind, spec)}
        return cls(kind=kind, name=name, body=body)


# -- typed views used by the scheduler and gateway --------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    backoff_ms: int = 10_000


@dataclass(frozen=True)
class Policies:
    concurrency: str = "forbid"
    misfire: str = "fire_once"
    misfire_grace_ms: int = 30_000
    max_catch_up: int = 3
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    jitter_ms: int = 0
    cooldown_ms: int = 0
    timeout_ms: int = 600_000
    dst: dict[str, str] = field(default_factory=lambda: {"gap": "shift", "fold": "first"})


@dataclass(frozen=True)
class Delivery:
    mode: str = "logs_only"
    channel: str | None = None
    failure_mode: str | None = None
    failure_channel: str | None = None
    silent_policy: str = "noisy"


@dataclass(frozen=True)
class Routine:
    name: str
    enabled: bool
    owner: str
    channel: str
    prompt: str | None
    skill: dict[str, Any] | None
    trigger: dict[str, Any]
    policies: Policies
    quiet_hours: dict[str, Any] | None
    approval: str
    delivery: Delivery
    labels: dict[str, str]
    description: str | None

    @property
    def trigger_kind(self) -> str:
        return self.trigger["kind"]

    @property
    def schedule(self) -> dict[str, Any] | None:
        return self.trigger.get("schedule") if self.trigger_kind == "schedule" else None

    @classmethod
    def from_resource(cls, res: Resource | Any) -> Routine:
        """From a `Resource` or a journal `StoredResource` (anything with .name and .body)."""
        spec = apply_defaults("Routine", res.body["spec"])
        p = spec.get("policies", {})
        retry = p.get("retry", {})
        policies = Policies(
            concurrency=p.get("concurrency", "forbid"),
            misfire=p.get("misfire", "fire_once"),
            misfire_grace_ms=parse_duration_ms(p.get("misfire_grace", "30s")),
            max_catch_up=int(p.get("max_catch_up", 3)),
            retry=RetryPolicy(int(retry.get("max_attempts", 1)), parse_duration_ms(retry.get("backoff", "10s"))),
            jitter_ms=parse_duration_ms(p.get("jitter", "0s")),
            cooldown_ms=parse_duration_ms(p.get("cooldown", "0s")),
            timeout_ms=parse_duration_ms(p.get("timeout", "10m")),
            dst={"gap": "shift", "fold": "first", **p.get("dst", {})},
        )
        d = spec.get("delivery", {})
        delivery = Delivery(
            mode=d.get("mode", "logs_only"),
            channel=d.get("channel"),
            failure_mode=d.get("failure_mode"),
            failure_channel=d.get("failure_channel"),
            silent_policy=d.get("silent_policy", "noisy"),
        )
        meta = res.body.get("metadata", {})
        return cls(
            name=res.name,
            enabled=bool(spec.get("enabled", True)),
            owner=spec.get("owner", "system:daemon"),
            channel=spec.get("channel", "system:cron"),
            prompt=spec.get("prompt"),
            skill=spec.get("skill"),
            trigger=spec["trigger"],
            policies=policies,
            quiet_hours=spec.get("quiet_hours"),
            approval=spec.get("approval", "none"),
            delivery=delivery,
            labels=dict(meta.get("labels") or {}),
            description=meta.get("description"),
        )


@dataclass(frozen=True)
class Channel:
    name: str
    type: str
    spec: dict[str, Any]

    @classmethod
    def from_resource(cls, res: Resource | Any) -> Channel:
        spec = apply_defaults("Channel", res.body["spec"])
        return cls(name=res.name, type=spec["type"], spec=spec)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaf values, for field-level diffs (`spec.policies.retry.max_attempts`).

    Lists are leaves: a changed list shows as a whole, which reads better than index paths.
    """
    out: dict[str, Any] = {}
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = obj
    return out
