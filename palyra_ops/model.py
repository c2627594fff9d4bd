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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from palyra_ops.durations import parse_duration_ms
from palyra_ops.enums import Concurrency, DeliveryMode, Misfire, SilentPolicy
from palyra_ops.schema_files import load_schema

KINDS = ("Routine", "Channel", "Policy")
_SPEC_DEFS = {"Routine": "routineSpec", "Channel": "channelSpec", "Policy": "policySpec"}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def json_hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _resolve(schema, schema["$defs"][ref.split("/")[-1]])
    return node


#: compiled default tree: {key: (default or _NO_DEFAULT, subtree or None)}
_Tree = dict[str, tuple[Any, "dict | None"]]
_NO_DEFAULT = object()


def _compile(schema: dict[str, Any], node: dict[str, Any], depth: int = 0) -> _Tree | None:
    node = _resolve(schema, node)
    props = node.get("properties")
    if not props or depth > 8:
        return None
    tree: _Tree = {}
    for key, sub in props.items():
        sub_r = _resolve(schema, sub)
        default = sub_r.get("default", _NO_DEFAULT)
        subtree = _compile(schema, sub_r, depth + 1)
        if default is not _NO_DEFAULT or subtree:
            tree[key] = (default, subtree)
    return tree or None


@cache
def _default_tree(kind: str) -> _Tree | None:
    schema = load_schema()
    return _compile(schema, schema.get("$defs", {}).get(_SPEC_DEFS[kind], {}))


def _merge(tree: _Tree, value: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `value` with defaults filled in; only dicts on the default paths are copied."""
    out = dict(value)
    for key, (default, subtree) in tree.items():
        if key not in out:
            if default is _NO_DEFAULT:
                continue
            if isinstance(default, (dict, list)):  # a fresh copy; most are empty (`policies: {}`)
                out[key] = copy.deepcopy(default) if default else type(default)()
            else:
                out[key] = default
        if subtree and isinstance(out[key], dict):
            out[key] = _merge(subtree, out[key])
    return out


def apply_defaults(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` with every schema default filled in (the input is not modified)."""
    tree = _default_tree(kind)
    return _merge(tree, spec) if tree else dict(spec)


class Resource:
    """One desired-state object (Routine, Channel or Policy) in canonical form.

    The canonical JSON and its hash are what plan compares; the decoded body is only built when
    someone looks at it, so diffing 10,000 unchanged objects costs string compares, not decodes.
    """

    __slots__ = ("kind", "name", "source_file", "_body", "_canonical", "_hash", "_make_body", "_compact", "_core")

    def __init__(
        self,
        kind: str,
        name: str,
        body: dict[str, Any] | None = None,
        source_file: str | None = None,
        *,
        canonical: str | None = None,
        hash: str | None = None,
    ) -> None:
        if body is None and canonical is None:
            raise ValueError("Resource needs a body or its canonical JSON")
        self._make_body: Callable[[], dict[str, Any]] | None = None
        self._compact = False
        self._core: dict[str, Any] | None = None
        self.kind = kind
        self.name = name
        self.source_file = source_file
        self._body = body
        self._canonical = canonical
        self._hash = hash

    def __repr__(self) -> str:
        return f"Resource({self.kind}/{self.name}, {self.source_file})"

    @classmethod
    def lazy(cls, kind: str, name: str, hash: str, source_file: str | None,
             make_body: Callable[[], dict[str, Any]]) -> Resource:
        """A resource known by its hash, whose body is built only when someone looks at it."""
        r = cls(kind, name, None, source_file, canonical="", hash=hash)
        r._canonical = None
        r._make_body = make_body
        return r

    @classmethod
    def compacted(cls, kind: str, name: str, source_file: str | None, canonical: str, hash: str,
                  core: dict[str, Any] | None) -> Resource:
        """What `compact()` leaves of a resource, rebuilt from its parts (a parallel load's child
        canonicalised it: `Resource.from_document(...).compact()` there, the same value here)."""
        r = cls(kind, name, None, source_file, canonical=canonical, hash=hash)
        r._core = core
        r._compact = True
        return r

    def compact(self) -> Resource:
        """Keep only the canonical JSON and its hash; `body` is then decoded afresh each time it is
        read and never kept. A plan holds every desired object until it is applied: 100,000 routines
        are ~90 MB of canonical JSON, but ~400 MB as decoded dicts."""
        self._hash = self.hash  # computes the canonical JSON too
        if self.kind == "Routine" and self._body is not None:
            self._core = routine_core(self._body)
        self._body = self._make_body = None
        self._compact = True
        return self

    @property
    def core(self) -> dict[str, Any]:
        """What scheduling reads of the body (`routine_core`): kept by a compact routine, so plan,
        its forecast and apply's job rows do not decode 100,000 bodies (~12 µs each) once apiece;
        for anything else the body itself (a superset of the same shape)."""
        return self._core if self._core is not None else self.body

    @property
    def kept_core(self) -> dict[str, Any] | None:
        """The core a compact routine kept (`core`), or None: then only the body has it."""
        return self._core

    @property
    def body(self) -> dict[str, Any]:
        if self._compact:
            return json.loads(self._canonical)  # type: ignore[arg-type]
        if self._body is None:
            if self._make_body is not None:
                self._body = self._make_body()
                self._make_body = None
            else:
                self._body = json.loads(self._canonical)  # type: ignore[arg-type]
        return self._body

    @property
    def canonical(self) -> str:
        if self._canonical is None:
            self._canonical = canonical_json(self.body)
        return self._canonical

    @property
    def hash(self) -> str:
        if self._hash is None:
            self._hash = hashlib.sha256(self.canonical.encode()).hexdigest()
        return self._hash

    @property
    def spec(self) -> dict[str, Any]:
        return self.body["spec"]

    def previous_names(self) -> list[str]:
        """A routine's `metadata.previous_names`, newest first (a rename). Looks at the canonical
        JSON first when there is one: plan must not decode 100,000 bodies to find the few renames."""
        if self.kind != "Routine" or (self._canonical is not None and '"previous_names"' not in self._canonical):
            return []
        names = self.body.get("metadata", {}).get("previous_names") or []
        return [n for n in names if isinstance(n, str)]

    @classmethod
    def from_document(cls, doc: dict[str, Any], source_file: str | None = None) -> Resource:
        """Build from a validated YAML document (apiVersion/kind/metadata/spec)."""
        kind = doc["kind"]
        metadata = {k: v for k, v in (doc.get("metadata") or {}).items() if k != "name"}
        body = {"metadata": metadata, "spec": apply_defaults(kind, doc.get("spec") or {})}
        return cls(kind, doc["metadata"]["name"], body, source_file)

    @classmethod
    def from_spec(cls, kind: str, name: str, spec: dict[str, Any], metadata: dict[str, Any] | None = None) -> Resource:
        """Build from an API payload (SPEC §6 upsert: the YAML `spec` plus a name)."""
        body = {"metadata": dict(metadata or {}), "spec": apply_defaults(kind, spec)}
        return cls(kind, name, body)


#: the spec fields scheduling reads (plan's next fires and forecast, apply's job row); of `policies`,
#: only these
_CORE_SPEC = ("trigger", "enabled", "approval", "quiet_hours")
_CORE_POLICIES = ("dst", "jitter")
_CORES: dict[str, dict[str, Any]] = {}
_CORES_MAX = 4096


def routine_core(body: dict[str, Any]) -> dict[str, Any]:
    """The part of a routine body scheduling reads, in the body's own shape (`{"spec": {"trigger":
    ..., "policies": {"dst": ...}, ...}}`, a key only where the body has it, so every `.get` default
    reads the same). Equal cores are one shared value (a directory has a few dozen schedules):
    read-only, never changed in place."""
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return body
    core_spec = {k: spec[k] for k in _CORE_SPEC if k in spec}
    policies = spec.get("policies")
    if isinstance(policies, dict):
        core_spec["policies"] = {k: policies[k] for k in _CORE_POLICIES if k in policies}
    elif "policies" in spec:
        core_spec["policies"] = policies
    core = {"spec": core_spec}
    key = repr(core)  # equal reprs are equal JSON values of the same types (1, 1.0 and True differ)
    shared = _CORES.get(key)
    if shared is None:
        shared = core
        if len(_CORES) < _CORES_MAX:
            _CORES[key] = core
    return shared


# -- typed views used by the scheduler and gateway --------------------------------------------------


def _ms(text: str) -> int:
    """`parse_duration_ms` of a canonical body's duration: a few distinct spellings across a whole
    directory (`30s`, `10m`), parsed once each rather than seven times per routine per apply."""
    try:
        return _ms_cached(text)
    except TypeError:  # not hashable, so not a duration either: the parser says why
        return parse_duration_ms(text)


_ms_cached = lru_cache(maxsize=1024)(parse_duration_ms)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    backoff_ms: int = 10_000


@dataclass(frozen=True)
class Policies:
    concurrency: Concurrency = Concurrency.FORBID
    misfire: Misfire = Misfire.FIRE_ONCE
    misfire_grace_ms: int = 30_000
    max_catch_up: int = 3
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    jitter_ms: int = 0
    cooldown_ms: int = 0
    timeout_ms: int = 600_000
    #: pause the routine after this many consecutive failed runs (None: never)
    pause_after_failures: int | None = None
    dst: dict[str, str] = field(default_factory=lambda: {"gap": "shift", "fold": "first"})


@dataclass(frozen=True)
class Delivery:
    mode: DeliveryMode = DeliveryMode.LOGS_ONLY
    channel: str | None = None
    failure_mode: str | None = None
    failure_channel: str | None = None
    silent_policy: SilentPolicy = SilentPolicy.NOISY


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
    #: names it had before (`metadata.previous_names`): apply renames the journal's routine to this one
    previous_names: tuple[str, ...] = ()

    @property
    def trigger_kind(self) -> str:
        return self.trigger["kind"]

    @property
    def schedule(self) -> dict[str, Any] | None:
        return self.trigger.get("schedule") if self.trigger_kind == "schedule" else None

    @classmethod
    def from_resource(cls, res: Resource | Any) -> Routine:
        """From a `Resource` or a journal `StoredResource` (anything with .name and .body).

        Bodies are canonical (defaults filled) when written, so no second default pass here — this
        runs once per dispatched run. Every field still falls back to its default below, so a body
        stored before a schema gained a field reads the same.
        """
        body = res.body  # once: a compact Resource decodes it on every read
        spec = body["spec"]
        p = spec.get("policies", {})
        retry = p.get("retry", {})
        policies = Policies(
            concurrency=Concurrency(p.get("concurrency", Concurrency.FORBID)),
            misfire=Misfire(p.get("misfire", Misfire.FIRE_ONCE)),
            misfire_grace_ms=_ms(p.get("misfire_grace", "30s")),
            max_catch_up=int(p.get("max_catch_up", 3)),
            retry=RetryPolicy(int(retry.get("max_attempts", 1)), _ms(retry.get("backoff", "10s"))),
            jitter_ms=_ms(p.get("jitter", "0s")),
            cooldown_ms=_ms(p.get("cooldown", "0s")),
            timeout_ms=_ms(p.get("timeout", "10m")),
            pause_after_failures=p.get("pause_after_failures"),
            dst={"gap": "shift", "fold": "first", **p.get("dst", {})},
        )
        d = spec.get("delivery", {})
        delivery = Delivery(
            mode=DeliveryMode(d.get("mode", DeliveryMode.LOGS_ONLY)),
            channel=d.get("channel"),
            failure_mode=d.get("failure_mode"),
            failure_channel=d.get("failure_channel"),
            silent_policy=SilentPolicy(d.get("silent_policy", SilentPolicy.NOISY)),
        )
        meta = body.get("metadata", {})
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
            previous_names=tuple(meta.get("previous_names") or ()),
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
        _flatten_into(obj, prefix, out)
    else:
        out[prefix] = obj
    return out


def _flatten_into(obj: dict[str, Any], path: str, out: dict[str, Any]) -> None:
    # one call per mapping, not per leaf: a plan of 100,000 creates flattens 2.4 million leaves
    for k, v in obj.items():
        p = f"{path}.{k}" if path else str(k)
        if isinstance(v, dict) and v:
            _flatten_into(v, p, out)
        else:
            out[p] = v
