"""Loading and validating a routine directory (SPEC §2).

A routine directory is untrusted input that ends up driving a scheduler, so this module is strict
and total: every file is read with hard limits, parsed with a YAML dialect reduced to the core
schema, validated against `schemas/routine.schema.json` plus semantic and cross-file checks, and
every problem becomes a positioned `Diagnostic` instead of an exception. Callers (validate, plan,
apply, the directory watcher) decide what to do with a set that is not `ok`.

Speed matters because plan re-reads the whole directory every time: the happy path is libyaml's C
parser, a cached scalar resolver, a small hand-rolled constructor and a fastjsonschema validator
compiled once per process. The expensive machinery (jsonschema's detailed errors, re-parsing a file
to find line:column of a finding) only runs for documents that actually have a problem. Per-file
results can be cached on disk keyed by content, schema and package version, so re-validating a
directory after one edit parses one file.
"""

from __future__ import annotations

import copy
import difflib
import gc
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastjsonschema
import yaml
from fastjsonschema import JsonSchemaValueException
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import BaseResolver

from palyra_ops import __version__, fsmodes
from palyra_ops.durations import DURATION_PATTERN, duration_problem, show
from palyra_ops.errors import Diagnostic, PalyraError
from palyra_ops.schema_files import load_schema
from palyra_ops.schema_files import schema_path as _schema_files_path

try:  # libyaml is a hard requirement for speed, but a missing C extension must not crash imports
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - the venv always has libyaml
    from yaml.composer import Composer
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class CParser(Reader, Scanner, Parser, Composer):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)


#: files larger than this are refused unread: routine files are small, and a cap bounds memory/time
MAX_FILE_BYTES = 1 << 20
#: a document whose node graph expands (through aliases) to more nodes than this is an alias bomb
MAX_EXPANDED_NODES = 100_000
#: bump when the cached per-file payload changes shape or meaning
CACHE_FORMAT = 1

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_CORE_TAGS = "str, int, float, bool, null, seq, map"

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution). Unlike PyYAML's YAML 1.1
# resolver there are no timestamps (an unquoted `at:` stays the string the user wrote), no yes/no/on/off
# booleans (`on:` is a key, not True), no sexagesimal ints and no merge keys. .inf/.nan stay strings
# because run inputs and plans are JSON, which cannot carry them.
_BOOL_VALUES = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULL_VALUES = frozenset({"", "~", "null", "Null", "NULL"})
_INT_RE = re.compile(r"[-+]?[0-9]+|0o[0-7]{1,22}|0x[0-9a-fA-F]{1,16}")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_FLOAT_RE = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
#: a plain scalar starting with anything else is a string: the common case costs one set lookup
_NON_STR_FIRST = frozenset("-+.0123456789~nNtTfF")
_RESOLVE_CACHE: dict[str, str] = {}
_RESOLVE_CACHE_MAX = 8192


def _classify_plain(value: str) -> str:
    if value in _NULL_VALUES:
        return _NULL
    if value in _BOOL_VALUES:
        return _BOOL
    if _INT_RE.fullmatch(value):
        return _INT
    if _FLOAT_RE.fullmatch(value):
        return _FLOAT
    return _STR


class CoreResolver(BaseResolver):
    """Resolves untagged scalars by the YAML 1.2 core schema, memoising repeated plain values."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:  # type: ignore[override]
        if kind is ScalarNode:
            if not implicit[0] or (value and value[0] not in _NON_STR_FIRST):
                return _STR
            tag = _RESOLVE_CACHE.get(value)
            if tag is None:
                tag = _classify_plain(value)
                if len(_RESOLVE_CACHE) < _RESOLVE_CACHE_MAX:
                    _RESOLVE_CACHE[value] = tag
            return tag
        return _MAP if kind is MappingNode else _SEQ


class _Refused(Exception):
    """A document the strict constructor will not build; carries the node to position the error."""

    def __init__(self, node: Node, message: str, *, at_document: bool = False) -> None:
        super().__init__(message)
        self.node = node
        self.message = message
        self.at_document = at_document


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:") :] if tag.startswith("tag:yaml.org,2002:") else tag


class StrictConstructor(SafeConstructor):
    """Builds plain JSON values from composed nodes, refusing anything outside the core schema.

    SafeConstructor's generic machinery (state generators, per-node memo, merge flattening) exists to
    support recursive structures and YAML 1.1 extras we refuse anyway; one direct recursive pass is
    both stricter and several times faster. Aliases are expanded (the alias-bomb check bounds that),
    so the result is a tree with no shared mutable parts.
    """

    def construct_document(self, node: Node) -> Any:  # type: ignore[override]
        try:
            return self._build(node)
        except RecursionError:
            raise _Refused(node, "document is nested too deeply", at_document=True) from None

    def _build(self, node: Node) -> Any:
        tag = node.tag
        cls = node.__class__
        if cls is MappingNode:
            if tag != _MAP:
                raise _Refused(node, f"tag {_short_tag(tag)!r} is not allowed on a mapping (YAML core schema only: {_CORE_TAGS})")
            out: dict[str, Any] = {}
            build = self._build
            for key_node, value_node in node.value:
                if key_node.tag is _STR:
                    key = key_node.value
                    if key == "<<" and not key_node.style:  # plain style: '' from libyaml, None from PyYAML
                        raise _Refused(key_node, "merge keys (<<) are not supported; write the fields out")
                else:
                    key = build(key_node)
                    if not isinstance(key, str):
                        raise _Refused(key_node, f"mapping key {_show(key)} must be a string (quote it)")
                if key in out:
                    first = next(k for k, _ in node.value if k.value == key and k is not key_node)
                    raise _Refused(
                        key_node,
                        f"duplicate key {key!r} (first defined at line {first.start_mark.line + 1}, column {first.start_mark.column + 1})",
                    )
                out[key] = value_node.value if value_node.tag is _STR else build(value_node)
            return out
        if cls is SequenceNode:
            if tag != _SEQ:
                raise _Refused(node, f"tag {_short_tag(tag)!r} is not allowed on a sequence (YAML core schema only: {_CORE_TAGS})")
            build = self._build
            return [item.value if item.tag is _STR else build(item) for item in node.value]
        value = node.value
        if tag == _STR:
            return value
        if tag == _INT:
            if not _INT_RE.fullmatch(value):
                raise _Refused(node, f"{value!r} is not an integer")
            # routine data is JSON and SQLite: 64-bit integers, and never int() on thousands of digits
            number = int(value, 0) if value[:2] in ("0o", "0x") else int(value) if len(value) <= 20 else None
            if number is None or not _INT64_MIN <= number <= _INT64_MAX:
                raise _Refused(node, f"{show(value)} is out of range for an integer ({_INT64_MIN} to {_INT64_MAX})")
            return number
        if tag == _FLOAT:
            number = float(value) if _FLOAT_RE.fullmatch(value) else math.inf
            if not math.isfinite(number):
                raise _Refused(node, f"{show(value)} is not a finite number")
            return number
        if tag == _BOOL:
            if value not in _BOOL_VALUES:
                raise _Refused(node, f"{value!r} is not a boolean (true or false)")
            return _BOOL_VALUES[value]
        if tag == _NULL:
            if value not in _NULL_VALUES:
                raise _Refused(node, f"{value!r} is not null")
            return None
        raise _Refused(node, f"tag {_short_tag(tag)!r} is not allowed (YAML core schema only: {_CORE_TAGS})")


class StrictLoader(CParser, StrictConstructor, CoreResolver):  # type: ignore[misc, valid-type]
    """libyaml's C parser and composer + the strict constructor + the core-schema resolver."""

    def __init__(self, stream: str) -> None:
        CParser.__init__(self, stream)
        StrictConstructor.__init__(self)
        CoreResolver.__init__(self)


def _expanded_size(root: Node, limit: int) -> None:
    """Refuse a document whose aliases expand past `limit` nodes, or that contains itself.

    Counted on the composed graph with memoisation, so a billion-laughs document costs time linear
    in its *written* size to reject.
    """
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        known = memo.get(key)
        if known is not None:
            return known
        if key in active:
            raise _Refused(node, "recursive alias: the node contains itself")
        total = 1
        if isinstance(node, (MappingNode, SequenceNode)):
            active.add(key)
            if isinstance(node, MappingNode):
                for k, v in node.value:
                    total += size(k) + size(v)
                    if total > limit:
                        break
            else:
                for item in node.value:
                    total += size(item)
                    if total > limit:
                        break
            active.discard(key)
        if total > limit:
            raise _Refused(
                root, f"document expands to more than {limit} nodes through aliases (alias bomb?)", at_document=True
            )
        memo[key] = total
        return total

    try:
        size(root)
    except RecursionError:
        raise _Refused(root, "document is nested too deeply", at_document=True) from None


# ---------------------------------------------------------------------------------------------------
# public data


@dataclass(frozen=True)
class Document:
    file: str  # path relative to the routine dir, POSIX ("team/sre.yaml") — identity of the file
    display: str  # path as shown to the user, e.g. "routines.d/team/sre.yaml"
    index: int  # 0-based document index within the file
    line: int  # 1-based position of the document start
    column: int
    kind: str
    name: str
    body: dict  # the whole document as loaded (apiVersion/kind/metadata/spec), plain JSON types


@dataclass(frozen=True)
class FileReport:
    file: str
    display: str
    sha256: str
    ok: bool
    diagnostics: list[Diagnostic]
    names: list[tuple[str, str]]  # (kind, name) the file defines (best effort even when invalid)


@dataclass(frozen=True)
class SkillsUnchecked:
    """`known_skills` when the installed skills cannot be known (no skills index): every skill
    reference becomes a warning saying so, instead of an error or a silent pass (docs/format.md)."""

    reason: str  # e.g. "no skills index under /var/lib/palyra"


@dataclass
class SourceSet:
    root: Path
    documents: list[Document] = field(default_factory=list)  # only from files with no errors
    files: dict[str, FileReport] = field(default_factory=dict)  # every discovered file
    diagnostics: list[Diagnostic] = field(default_factory=list)  # all of them, sorted
    #: checks that could not run (e.g. skill references without a skills index); never make it invalid
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.diagnostics


def schema() -> dict:
    """The routine schema (`schemas/routine.schema.json`), loaded once."""
    return load_schema()


def schema_path() -> Path:
    return _schema_files_path()


@lru_cache(maxsize=1)
def _schema_hash() -> str:
    return hashlib.sha256(schema_path().read_bytes()).hexdigest()


@lru_cache(maxsize=1)
def _code_hash() -> str:
    """The validation code itself is part of the cache key: a fixed check must not be masked by a
    cached verdict while the package version stays the same."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for p in [Path(__file__).resolve(), here / "targets.py", *sorted((here / "schedule").glob("*.py"))]:
        h.update(p.read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=1)
def _fast_validator() -> Any:
    """fastjsonschema compiled from a draft-07 copy of the schema (it only uses draft-07 keywords)."""
    draft07 = copy.deepcopy(schema())
    draft07["$schema"] = "http://json-schema.org/draft-07/schema#"
    draft07.pop("$id", None)
    return fastjsonschema.compile(draft07, use_default=False, use_formats=False)


@lru_cache(maxsize=1)
def _detailed_validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema())


# ---------------------------------------------------------------------------------------------------
# findings inside one file: (json path, how to locate it, message) until a node graph positions them

#: (path, anchor, message). anchor: "key" the key of the last path step (unknown field), "value" its
#: value, "node" the mapping that should hold the last step (missing field), "self" the node at path,
#: "doc" the document start
_Finding = tuple[tuple[Any, ...], str, str]

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "null": "null",
}
_PATTERN_NAMES = {
    DURATION_PATTERN: "a duration like 500ms, 30s, 5m, 2h, 1d or 1h30m",
    r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$(?!\n)": "a valid name (lowercase letters, digits, '.', '_' or '-', "
    "1-63 characters, starting and ending with a letter or digit)",
    r"^([01][0-9]|2[0-3]):[0-5][0-9]$(?!\n)": "a time of day HH:MM (00:00 to 23:59)",
    r"^[a-z]+:[!-~]+$(?!\n)": "a principal like user:alice",
    r"^[A-Za-z_][A-Za-z0-9_]*$(?!\n)": "an environment variable name (letters, digits, '_', not starting with a digit)",
    r"^https?://[!-~]+$(?!\n)": "an http:// or https:// URL",
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$(?!\n)":
    "an RFC 3339 time with an offset, e.g. 2026-12-24T18:00:00+01:00",
}


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _did_you_mean(word: Any, choices: Iterable[str]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def format_path(path: Iterable[Any]) -> str:
    """`("spec", "rules", 0, "effect")` → `spec.rules[0].effect`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _condition(err: Any, doc: dict) -> tuple[str, Any]:
    """For an error raised inside an `if/then`: the condition in words (`spec.trigger.kind is 'hook'`)
    and the schema node the error's schema path ends at."""
    node: Any = schema()
    root = node
    if_schema = None
    tail: list[Any] = []
    parts = list(err.absolute_schema_path)
    for i, part in enumerate(parts):
        # jsonschema leaves `$ref` out of schema paths: step through a reference implicitly
        while isinstance(node, dict) and part not in node and "$ref" in node:
            node = _deref(root, node["$ref"])
        if part == "then" and isinstance(node, dict):
            if_schema = node.get("if")
            tail = parts[i + 1 :]
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return "", None
    # the condition speaks about the object the `then` applies to: only when the error sits right
    # there (a `required`) or one property below it (a `false` property)
    if not isinstance(if_schema, dict) or tail[:1] not in (["required"], ["properties"]) or len(tail) > 2:
        return "", node
    obj_path = list(err.absolute_path)
    if tail[:1] == ["properties"] and err.validator is not None:
        obj_path = obj_path[:-1]
    obj: Any = doc
    for part in obj_path:
        obj = obj[part]
    for key in if_schema.get("properties", {}):
        if isinstance(obj, dict) and key in obj:
            return f"{format_path([*obj_path, key])} is {_show(obj[key])}", node
    return "", node


def _deref(root: dict, ref: str) -> Any:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _translate(err: Any, doc: dict) -> list[_Finding]:
    """One jsonschema error → clear findings. Raw oneOf/if-then messages never reach the user."""
    path = tuple(err.absolute_path)
    kind = err.validator
    inst = err.instance
    value = err.validator_value
    if kind == "additionalProperties" and value is False and isinstance(inst, dict):
        known = list(err.schema.get("properties", {}))
        out = []
        for key in inst:
            if key not in known:
                msg = f"unknown field{_did_you_mean(key, known)}; expected one of the known fields: {', '.join(known)}"
                out.append(((*path, key), "key", msg))
        return out
    if kind == "required" and isinstance(inst, dict):
        cond, _ = _condition(err, doc)
        suffix = f" (required when {cond})" if cond else ""
        return [((*path, r), "node", f"missing required field{suffix}") for r in value if r not in inst]
    if kind is None:
        # a `false` subschema under then.properties: jsonschema reports it at the *parent* object
        # with the value as instance, so find which key of the parent holds that value
        cond, props = _condition(err, doc)
        parent: Any = doc
        for part in path:
            parent = parent[part]
        keys = [k for k, v in parent.items() if v is inst] if isinstance(parent, dict) and isinstance(props, dict) else []
        keys = [k for k in keys if props.get(k) is False] or keys
        msg = f"not allowed when {cond}" if cond else "not allowed here"
        return [((*path, k), "key", msg) for k in keys[:1]] or [(path, "value", msg)]
    if "propertyNames" in err.absolute_schema_path:
        return [((*path, inst), "key", f"{inst!r} is not a valid header name")]
    if kind == "enum":
        return [(path, "value", f"{_show(inst)} is not one of {', '.join(map(str, value))}{_did_you_mean(inst, value)}")]
    if kind == "const":
        return [(path, "value", f"expected {value!r}, got {_show(inst)}")]
    if kind == "type":
        want = " or ".join(_TYPE_NAMES.get(t, t) for t in ([value] if isinstance(value, str) else value))
        return [(path, "value", f"expected {want}, got {_show(inst)}")]
    if kind == "pattern":
        return [(path, "value", f"{_show(inst)} is not {_PATTERN_NAMES.get(value, f'matching {value}')}")]
    if kind == "minimum":
        return [(path, "value", f"{_show(inst)} is less than the minimum of {value}")]
    if kind == "maximum":
        return [(path, "value", f"{_show(inst)} is greater than the maximum of {value}")]
    if kind == "minLength":
        return [(path, "value", "must not be empty")]
    if kind == "minItems":
        return [(path, "value", f"must have at least {value} item{'s' if value != 1 else ''}")]
    if kind in ("oneOf", "anyOf"):
        names = [b["required"][0] for b in value if isinstance(b, dict) and list(b) == ["required"]]
        if len(names) == len(value) and isinstance(inst, dict):
            present = [n for n in names if n in inst]
            if kind == "anyOf":
                return [(path, "self", f"at least one of {', '.join(names)} is required")]
            if not present:
                return [(path, "self", f"exactly one of {', '.join(names)} is required")]
            msg = f"exactly one of {', '.join(names)} is allowed, found {', '.join(present)}"
            return [((*path, present[1]), "key", msg)]
        if isinstance(inst, dict):  # the {env: NAME} branch is the one the user meant
            branch = next((i for i, b in enumerate(value) if isinstance(b, dict) and "$ref" in b), None)
            sub = [e for e in err.context if branch is not None and e.relative_schema_path[0] == branch]
            if sub:
                return [f for e in sub for f in _translate(e, doc)]
        return [(path, "value", f"expected a string or {{env: NAME}}, got {_show(inst)}")]
    return [(path, "value", err.message)]


def _schema_findings(doc: dict) -> list[_Finding]:
    findings: list[_Finding] = []
    seen: set[tuple[Any, ...]] = set()
    for err in _detailed_validator().iter_errors(doc):
        for f in _translate(err, doc):
            key = (f[0], f[2])
            if key not in seen:
                seen.add(key)
                findings.append(f)
    return findings


_SECRET_HEADER = re.compile(r"^(authorization|proxy-authorization|cookie)$|token|secret|password|api[-_]?key|signature", re.I)


def _semantic_findings(doc: dict, schema_paths: list[tuple[Any, ...]]) -> list[_Finding]:
    """Checks beyond JSON Schema; a subtree that already failed the schema is not checked again."""

    def clean(*prefix: str) -> bool:
        return not any(p[: len(prefix)] == prefix for p in schema_paths)

    out: list[_Finding] = []
    kind = doc.get("kind")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return out
    if kind == "Routine":
        trigger = spec.get("trigger")
        if isinstance(trigger, dict) and isinstance(trigger.get("schedule"), dict) and clean("spec", "trigger"):
            sched = trigger["schedule"]
            for key, message in _check_schedule(tuple(sorted(sched.items()))):
                p = ("spec", "trigger", "schedule", key) if key else ("spec", "trigger", "schedule")
                out.append((p, "value" if key else "node", message))
        policies = spec.get("policies")
        if isinstance(policies, dict) and clean("spec", "policies"):
            for sub, message in _check_policies(policies):
                out.append((("spec", "policies", *sub), "value", message))
        quiet = spec.get("quiet_hours")
        if isinstance(quiet, dict) and clean("spec", "quiet_hours"):
            tz = quiet.get("timezone")
            if isinstance(tz, str):
                msg = _check_timezone(tz)
                if msg:
                    out.append((("spec", "quiet_hours", "timezone"), "value", msg))
            if quiet.get("start") == quiet.get("end"):
                out.append((("spec", "quiet_hours", "end"), "value", "must differ from start (the window would be empty)"))
        delivery = spec.get("delivery")
        if isinstance(delivery, dict) and clean("spec", "delivery"):
            for mode_key, channel_key in (("mode", "channel"), ("failure_mode", "failure_channel")):
                if delivery.get(mode_key) == "specific_channel" and channel_key not in delivery:
                    out.append(
                        (
                            ("spec", "delivery", channel_key),
                            "node",
                            f"missing required field (required when spec.delivery.{mode_key} is 'specific_channel')",
                        )
                    )
    elif kind == "Channel":
        if isinstance(spec.get("timeout"), str) and clean("spec", "timeout"):
            message = duration_problem("channel.timeout", spec["timeout"])
            if message:
                out.append((("spec", "timeout"), "value", message))
        headers = spec.get("headers")
        if isinstance(headers, dict) and clean("spec", "headers"):
            for name, val in headers.items():
                if isinstance(val, str) and _SECRET_HEADER.search(name):
                    out.append(
                        (
                            ("spec", "headers", name),
                            "value",
                            "looks like a secret: write it as {env: NAME} and set NAME in the daemon's environment",
                        )
                    )
        from palyra_ops.targets import static_problems  # where a channel may deliver (docs/security.md)

        for sub, message in static_problems(spec):
            if clean("spec", sub[0]):
                out.append((("spec", *sub), "value", message))
    return out


@lru_cache(maxsize=4096)
def _check_schedule(items: tuple[tuple[str, Any], ...]) -> list[tuple[str, str]]:
    try:
        from palyra_ops.schedule import check_schedule
    except ImportError:
        return []
    return check_schedule(dict(items))


def _check_policies(policies: dict) -> list[tuple[tuple[str, ...], str]]:
    try:
        from palyra_ops.schedule.policies import check_policies
    except ImportError:
        return []
    return check_policies(policies)


@lru_cache(maxsize=1024)
def _check_timezone(name: str) -> str | None:
    try:
        from palyra_ops.schedule import check_timezone
    except ImportError:
        return None
    return check_timezone(name)


# ---------------------------------------------------------------------------------------------------
# one file


@dataclass
class _Doc:
    index: int
    line: int
    column: int
    kind: str | None
    name: str | None
    body: Any


@dataclass
class _FileResult:
    docs: list[_Doc]
    #: (line, column, path, message, code, source_line); line 0 = the whole file
    diags: list[tuple[int, int, str, str, str, str]]

    def to_json(self) -> str:
        return json.dumps(
            {
                "docs": [[d.index, d.line, d.column, d.kind, d.name, d.body] for d in self.docs],
                "diags": self.diags,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> _FileResult:
        raw = json.loads(text)
        return cls(docs=[_Doc(*d) for d in raw["docs"]], diags=[tuple(x) for x in raw["diags"]])  # type: ignore[misc]


def _identity(body: Any) -> tuple[str | None, str | None]:
    if not isinstance(body, dict):
        return None, None
    kind = body.get("kind")
    meta = body.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return (kind if isinstance(kind, str) else None), (name if isinstance(name, str) else None)


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return line, column


def _walk(node: Node, path: Iterable[Any]) -> tuple[Node | None, Node]:
    """Follow a JSON path through a node graph: (key node of the last step, node reached)."""
    key_node = None
    for part in path:
        if isinstance(node, MappingNode):
            for k, v in node.value:
                if isinstance(k, ScalarNode) and k.value == part:
                    key_node, node = k, v
                    break
            else:
                break
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            key_node, node = None, node.value[part]
        else:
            break
    return key_node, node


def _position(root: Node, path: tuple[Any, ...], anchor: str) -> tuple[int, int]:
    if anchor == "doc":
        mark = root.start_mark
    elif anchor == "self":
        mark = _walk(root, path)[1].start_mark
    elif anchor == "node":
        # a missing field is reported at the mapping that should hold it
        _, node = _walk(root, path[:-1])
        mark = node.start_mark
    else:
        key_node, node = _walk(root, path)
        mark = key_node.start_mark if anchor == "key" and key_node is not None else node.start_mark
    return mark.line + 1, mark.column + 1


class _Lines:
    """Source lines of a file, split only when a finding needs one."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._lines: list[str] | None = None

    def get(self, line: int) -> str:
        if self._lines is None:
            self._lines = self.text.splitlines()
        return self._lines[line - 1] if 0 < line <= len(self._lines) else ""


def _check_file(data: bytes) -> _FileResult:
    """Everything that can be said about one file on its own (cached by content)."""
    diags: list[tuple[int, int, str, str, str, str]] = []
    docs: list[_Doc] = []
    if len(data) > MAX_FILE_BYTES:
        diags.append((0, 0, "", f"file is larger than {MAX_FILE_BYTES} bytes (1 MiB); refusing to read it", "too_large", ""))
        return _FileResult(docs, diags)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        diags.append((1, 1, "", "UTF-16 text; routine files must be UTF-8", "encoding", ""))
        return _FileResult(docs, diags)
    nul = data.find(b"\0")
    if nul >= 0:
        line, col = _byte_position(data, nul)
        msg = "binary file (NUL byte); routine files must be UTF-8 YAML text"
        diags.append((line, col, "", msg, "binary", ""))
        return _FileResult(docs, diags)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _byte_position(data, exc.start)
        msg = f"invalid UTF-8 (byte 0x{data[exc.start]:02x}); routine files must be UTF-8"
        diags.append((line, col, "", msg, "encoding", ""))
        return _FileResult(docs, diags)
    lines = _Lines(text)
    fast_validate = _fast_validator()
    loader = StrictLoader(text)
    may_alias = "&" in text
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            this = index
            index += 1
            try:
                if may_alias:
                    _expanded_size(node, MAX_EXPANDED_NODES)
                body = loader.construct_document(node)
            except _Refused as exc:
                mark = node.start_mark if exc.at_document else exc.node.start_mark
                path = "" if exc.at_document else _path_to(node, exc.node)
                diags.append((mark.line + 1, mark.column + 1, path, exc.message, "yaml", lines.get(mark.line + 1)))
                docs.append(_Doc(this, node.start_mark.line + 1, node.start_mark.column + 1, None, None, None))
                continue
            if body is None:  # an empty document (a stray `---`): nothing to define
                continue
            kind, name = _identity(body)
            docs.append(_Doc(this, node.start_mark.line + 1, node.start_mark.column + 1, kind, name, body))
            findings: list[_Finding]
            if not isinstance(body, dict):
                findings = [((), "doc", f"a document must be a mapping with apiVersion, kind, metadata and spec; got {_show(body)}")]
            else:
                findings = []
                try:
                    fast_validate(body)
                except JsonSchemaValueException:  # fast says no: ask jsonschema for the details
                    findings = _schema_findings(body)
                findings += _semantic_findings(body, [f[0] for f in findings])
            for path_t, anchor, message in findings:
                line, col = _position(node, path_t, anchor)
                diags.append((line, col, format_path(path_t), message, "invalid", lines.get(line)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = exc.problem or "invalid YAML"
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            problem = f"{problem} ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        diags.append((line, col, "", f"YAML syntax error: {problem}", "yaml", lines.get(line)))
    except yaml.YAMLError as exc:
        diags.append((0, 0, "", f"YAML error: {exc}", "yaml", ""))
    finally:
        loader.dispose()
    return _FileResult(docs, diags)


def _path_to(root: Node, target: Node) -> str:
    """JSON path of `target` inside `root` (only called to describe a refused node)."""

    def search(node: Node, path: list[Any], depth: int) -> list[Any] | None:
        if node is target:
            return path
        if depth > 200:
            return None
        if isinstance(node, MappingNode):
            for k, v in node.value:
                label = k.value if isinstance(k, ScalarNode) else "?"
                if k is target:
                    return path
                found = search(v, [*path, label], depth + 1)
                if found is not None:
                    return found
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                found = search(item, [*path, i], depth + 1)
                if found is not None:
                    return found
        return None

    found = search(root, [], 0)
    return format_path(found) if found else ""


def _nodes(text: str) -> list[Node | None]:
    """Composed root node of every document of a valid file (to position cross-file findings)."""
    loader = StrictLoader(text)
    try:
        out: list[Node | None] = []
        while loader.check_node():
            out.append(loader.get_node())
        return out
    finally:
        loader.dispose()


# ---------------------------------------------------------------------------------------------------
# the directory

_YAML_SUFFIXES = (".yaml", ".yml")


def _discover(root: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """(relative POSIX path, path) of every routine file, and (relative path, problem) of refused ones.

    Hidden entries are skipped (editors' swap files, `.git`). A symlink is followed only when its
    target stays inside the directory; one that leaves it is refused, since validating and applying
    files from elsewhere would make the git history lie about what runs.
    """
    root_real = os.path.realpath(root)
    files: list[tuple[str, Path]] = []
    refused: list[tuple[str, str]] = []
    visited = {root_real}
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            refused.append((prefix.rstrip("/") or ".", f"cannot read directory: {exc.strerror}"))
            continue
        subdirs: list[tuple[Path, str]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            is_yaml = entry.name.endswith(_YAML_SUFFIXES)
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                inside = target == root_real or target.startswith(root_real + os.sep)
                if not os.path.exists(target):
                    if is_yaml:
                        refused.append((rel, f"broken symlink (points to {os.readlink(entry.path)})"))
                    continue
                is_dir = os.path.isdir(target)
                if not inside:
                    if is_dir or is_yaml:
                        link = os.readlink(entry.path)
                        refused.append((rel, f"symlink leaves the routine directory (points to {link}); refusing to follow it"))
                    continue
                if is_dir:
                    if target not in visited:
                        visited.add(target)
                        subdirs.append((Path(entry.path), rel + "/"))
                elif is_yaml:
                    files.append((rel, Path(entry.path)))
            elif entry.is_dir(follow_symlinks=False):
                real = os.path.realpath(entry.path)
                if real not in visited:
                    visited.add(real)
                    subdirs.append((Path(entry.path), rel + "/"))
            elif is_yaml and entry.is_file(follow_symlinks=False):
                files.append((rel, Path(entry.path)))
        stack.extend(reversed(subdirs))
    files.sort()
    return files, refused


def _read(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(MAX_FILE_BYTES + 1)


class _Cache:
    """Per-file results on disk, keyed by (content sha256, schema hash, package version, code hash).

    JSON rather than pickle/marshal: the cache directory is just a directory, and loading it must not
    be a way to run code. A damaged entry is a miss, a failed write is ignored. A cached result is
    what `apply` applies, so it is only read from directories and files nobody else could have
    written (`fsmodes.cache_dir`, `fsmodes.trusted_fd`); an untrusted cache is ignored and rebuilt.
    Read-only commands (`readonly`) use a trusted cache but never create or write one (SPEC §4).
    """

    def __init__(self, directory: Path, *, readonly: bool = False) -> None:
        self.dir = directory / f"source-v{CACHE_FORMAT}"
        self.salt = f"{CACHE_FORMAT}:{__version__}:{_schema_hash()}:{_code_hash()}:"
        self.readonly = readonly
        self.usable = fsmodes.cache_dir(directory.parent.parent, self.dir, create=not readonly)
        self._trusted_dirs: dict[Path, bool] = {}

    def _path(self, sha: str) -> Path:
        key = hashlib.sha256((self.salt + sha).encode()).hexdigest()
        return self.dir / key[:2] / f"{key}.json"

    def _dir_ok(self, d: Path) -> bool:
        ok = self._trusted_dirs.get(d)
        if ok is None:
            ok = self._trusted_dirs[d] = fsmodes.cache_dir(self.dir, d, create=not self.readonly)
        return ok

    def get(self, sha: str) -> _FileResult | None:
        if not self.usable:
            return None
        path = self._path(sha)
        try:
            if not self._dir_ok(path.parent):
                return None
            with open(path, encoding="utf-8") as fh:
                if not fsmodes.trusted_fd(fh.fileno()):
                    return None  # put() replaces it with a private file
                return _FileResult.from_json(fh.read())
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, sha: str, result: _FileResult) -> None:
        if self.readonly or not self.usable:
            return
        path = self._path(sha)
        try:
            if self._dir_ok(path.parent):
                fsmodes.write_private(path, result.to_json())
        except OSError:
            pass


def load_directory(
    root: Path,
    *,
    display_root: str | None = None,
    cache_dir: Path | None = None,
    known_skills: set[str] | SkillsUnchecked | None = None,
    cache_readonly: bool = False,
) -> SourceSet:
    """Discover, parse and validate every routine file under `root`.

    Never raises for bad content: every problem becomes a Diagnostic. Raises PalyraError only when
    `root` exists but is not a readable directory. A missing or empty directory is an empty set; the
    callers decide whether that is acceptable (plan has --allow-empty).
    """
    # Loading builds hundreds of thousands of small acyclic containers; the cyclic GC would rescan
    # them over and over (a third of the warm path). Nothing here creates cycles, so pause it.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_directory(Path(root), display_root, cache_dir, known_skills, cache_readonly)
    finally:
        if gc_was_enabled:
            gc.enable()


def _load_directory(root: Path, display_root: str | None, cache_dir: Path | None,
                    known_skills: set[str] | SkillsUnchecked | None, cache_readonly: bool = False) -> SourceSet:
    shown = str(root) if display_root is None else display_root
    result = SourceSet(root=root)
    if not root.exists() and not root.is_symlink():
        return result
    if not root.is_dir():
        raise PalyraError(f"{shown} is not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise PalyraError(f"cannot read routine directory {shown}")

    def display(rel: str) -> str:
        return str(Path(shown) / rel)

    found, refused = _discover(root)
    cache = _Cache(cache_dir, readonly=cache_readonly) if cache_dir is not None else None
    per_file: dict[str, tuple[str, bytes, _FileResult]] = {}
    file_diags: dict[str, list[Diagnostic]] = {}
    for rel, problem in refused:
        file_diags.setdefault(rel, []).append(Diagnostic(display(rel), 0, 0, "", problem, code="refused"))
    for rel, path in found:
        try:
            data = _read(path)
        except OSError as exc:
            file_diags.setdefault(rel, []).append(Diagnostic(display(rel), 0, 0, "", f"cannot read file: {exc.strerror}", code="refused"))
            continue
        sha = hashlib.sha256(data).hexdigest()
        checked = cache.get(sha) if cache is not None else None
        if checked is None:
            checked = _check_file(data)
            if cache is not None:
                cache.put(sha, checked)
        per_file[rel] = (sha, data, checked)
        shown_rel = display(rel)
        file_diags.setdefault(rel, []).extend(
            Diagnostic(shown_rel, line, col, path_s, msg, source_line=src, code=code)
            for line, col, path_s, msg, code, src in checked.diags
        )

    _cross_file(per_file, file_diags, display, known_skills, result.warnings)

    for rel in sorted(set(per_file) | set(file_diags)):
        diags = sorted(file_diags.get(rel, []))
        sha, _, checked = per_file.get(rel, ("", b"", _FileResult([], [])))
        names = [(d.kind, d.name) for d in checked.docs if d.kind and d.name]
        report = FileReport(rel, display(rel), sha, not diags, diags, names)
        result.files[rel] = report
        result.diagnostics.extend(diags)
        if report.ok:
            shown_rel = display(rel)
            result.documents.extend(
                Document(rel, shown_rel, d.index, d.line, d.column, d.kind, d.name, d.body)  # type: ignore[arg-type]
                for d in checked.docs
            )
    result.diagnostics.sort()
    result.warnings.sort()
    return result


def _cross_file(
    per_file: dict[str, tuple[str, bytes, _FileResult]],
    file_diags: dict[str, list[Diagnostic]],
    display: Any,
    known_skills: set[str] | SkillsUnchecked | None,
    warnings: list[Diagnostic] | None = None,
) -> None:
    """Checks that need the whole directory: unique names, channel and skill references.

    Skill references: checked against `known_skills` (a set), reported as "not checked" warnings
    when it is `SkillsUnchecked`, not looked at when it is None (library callers that opt out).
    """
    nodes_memo: dict[str, list[Node | None]] = {}

    def locate(rel: str, index: int, path: tuple[Any, ...]) -> tuple[int, int, str]:
        if rel not in nodes_memo:
            try:
                nodes_memo[rel] = _nodes(per_file[rel][1].decode("utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError):
                nodes_memo[rel] = []
        nodes = nodes_memo[rel]
        node = nodes[index] if index < len(nodes) else None
        if node is None:
            return 0, 0, ""
        line, col = _position(node, path, "value")
        return line, col, _Lines(per_file[rel][1].decode("utf-8", errors="replace")).get(line)

    def report(rel: str, doc: _Doc, path: tuple[Any, ...], message: str, code: str) -> None:
        line, col, src = locate(rel, doc.index, path)
        if not line:
            line, col = doc.line, doc.column
        file_diags.setdefault(rel, []).append(Diagnostic(display(rel), line, col, format_path(path), message, src, code))

    first: dict[tuple[str, str], tuple[str, _Doc]] = {}
    for rel in sorted(per_file):
        for doc in per_file[rel][2].docs:
            if doc.kind is None or doc.name is None:
                continue
            key = (doc.kind, doc.name)
            if key in first:
                other_rel, other = first[key]
                line, col, _ = locate(other_rel, other.index, ("metadata", "name"))
                where = f"{display(other_rel)}:{line or other.line}:{col or other.column}"
                report(rel, doc, ("metadata", "name"), f"duplicate {doc.kind} name {doc.name!r} (first defined at {where})", "duplicate")
            else:
                first[key] = (rel, doc)
    channels = sorted(name for kind, name in first if kind == "Channel")
    for rel in sorted(per_file):
        for doc in per_file[rel][2].docs:
            if doc.kind != "Routine" or not isinstance(doc.body, dict):
                continue
            spec = doc.body.get("spec")
            if not isinstance(spec, dict):
                continue
            delivery = spec.get("delivery")
            if isinstance(delivery, dict):
                for key in ("channel", "failure_channel"):
                    ref = delivery.get(key)
                    if isinstance(ref, str) and ref not in channels:
                        msg = f"no Channel named {ref!r} in the directory{_did_you_mean(ref, channels)}"
                        report(rel, doc, ("spec", "delivery", key), msg, "reference")
            skill = spec.get("skill")
            sid = skill.get("id") if isinstance(skill, dict) else None
            if isinstance(sid, str) and isinstance(known_skills, SkillsUnchecked):
                if warnings is not None:
                    line, col, src = locate(rel, doc.index, ("spec", "skill", "id"))
                    warnings.append(Diagnostic(display(rel), line or doc.line, col or doc.column, "spec.skill.id",
                                               f"skill {sid!r} not checked: {known_skills.reason}", src, "unchecked"))
            elif isinstance(sid, str) and known_skills is not None and sid not in known_skills:
                msg = f"skill {sid!r} is not installed{_did_you_mean(sid, known_skills)} (palyra-ops skills list)"
                report(rel, doc, ("spec", "skill", "id"), msg, "reference")


def iter_documents(source: SourceSet, kind: str | None = None) -> Iterator[Document]:
    """Documents of the set, optionally of one kind, in file then document order."""
    return (d for d in source.documents if kind is None or d.kind == kind)


def check_document(doc: dict) -> list[tuple[str, str]]:
    """(field path, message) for every schema and per-document semantic problem of one document.

    The same wording `palyra-ops validate` uses, without positions: for documents that arrive without
    a file (the console API's upsert). Cross-file checks (names, references) are the caller's.
    """
    findings = _schema_findings(doc) if isinstance(doc, dict) else [((), "doc", "a document must be a mapping")]
    findings += _semantic_findings(doc, [f[0] for f in findings]) if isinstance(doc, dict) else []
    return [(format_path(path), message) for path, _anchor, message in findings]
