"""What is wrong with one routine document, in the user's words (SPEC §2, docs/format.md).

JSON Schema errors are translated here (raw oneOf/if-then messages never reach the user), the checks
JSON Schema cannot express (schedules, policies, time zones, secrets in headers, where a channel may
deliver) run here, and so do the reference checks (channels and skills a routine names). A finding
is `(json path, anchor, message)`; `file` turns it into a positioned Diagnostic, `check_document`
into the `(path, message)` pairs the console API reports, so a routine is judged the same whether it
arrives as a file or through the API.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastjsonschema

from palyra_ops.durations import DURATION_PATTERN, duration_problem
from palyra_ops.schedule import check_schedule, check_timezone
from palyra_ops.schedule.policies import check_policies
from palyra_ops.schema_files import load_schema
from palyra_ops.schema_files import schema_path as _schema_files_path
from palyra_ops.source.yaml_strict import describe
from palyra_ops.targets import static_problems

if TYPE_CHECKING:  # jsonschema itself is imported only to explain an invalid document (~35 ms a process)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

#: (path, anchor, message). anchor: "key" the key of the last path step (unknown field), "value" its
#: value, "node" the mapping that should hold the last step (missing field), "self" the node at path,
#: "doc" the document start
Finding = tuple[tuple[Any, ...], str, str]


def schema() -> dict:
    """The routine schema (`schemas/routine.schema.json`), loaded once."""
    return load_schema()


def schema_path() -> Path:
    return _schema_files_path()


def _draft07() -> dict[str, Any]:
    draft07 = copy.deepcopy(schema())
    draft07["$schema"] = "http://json-schema.org/draft-07/schema#"
    draft07.pop("$id", None)
    return draft07


@lru_cache(maxsize=1)
def _general_validator() -> Callable[[Any], Any]:
    """fastjsonschema compiled from a draft-07 copy of the schema (it only uses draft-07 keywords)."""
    return fastjsonschema.compile(_draft07(), use_default=False, use_formats=False)  # type: ignore[no-any-return]


_WHEN = ("cron", "every", "at")


@lru_cache(maxsize=1)
def _scheduled_routine_validator() -> Callable[[Any], Any]:
    """The schema as it reads for a Routine whose trigger is `kind: schedule` with exactly one of
    cron/every/at (`_is_scheduled_routine`): the `if kind is X then ...` branches of the other kinds
    and trigger kinds are vacuous for it, and the schedule's `oneOf` holds, so they are left out.

    fastjsonschema evaluates each failed `if` and each failed `oneOf` branch by raising and catching
    an exception: seven per routine, most of the cost of saying yes to one (0.42 -> 0.17 s for
    20,000 routines). The verdict is the same by construction; anything else takes the full schema.
    """
    d = _draft07()
    d["allOf"] = [b["then"] for b in d["allOf"] if b["if"]["properties"]["kind"].get("const") == "Routine"]
    trigger = d["$defs"]["routineSpec"]["properties"]["trigger"]
    trigger["allOf"] = [b["then"] for b in trigger["allOf"] if b["if"]["properties"]["kind"].get("const") == "schedule"]
    trigger["properties"]["schedule"].pop("oneOf")
    assert len(d["allOf"]) == 1 and len(trigger["allOf"]) == 1, "schema branches changed: update this view"
    return fastjsonschema.compile(d, use_default=False, use_formats=False)  # type: ignore[no-any-return]


def _is_scheduled_routine(doc: Any) -> bool:
    if not isinstance(doc, dict) or doc.get("kind") != "Routine":
        return False
    spec = doc.get("spec")
    trigger = spec.get("trigger") if isinstance(spec, dict) else None
    when = trigger.get("schedule") if isinstance(trigger, dict) and trigger.get("kind") == "schedule" else None
    return isinstance(when, dict) and sum(k in when for k in _WHEN) == 1


def fast_validator() -> Callable[[Any], Any]:
    """Raises `JsonSchemaValueException` for a document the schema refuses (yes/no only: the words
    come from jsonschema, `schema_findings`)."""
    return _fast_validate


def _fast_validate(doc: Any) -> Any:
    if _is_scheduled_routine(doc):
        return _scheduled_routine_validator()(doc)
    return _general_validator()(doc)


@lru_cache(maxsize=1)
def _detailed_validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema())


# ---------------------------------------------------------------------------------------------------
# words

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


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
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


# ---------------------------------------------------------------------------------------------------
# schema errors → findings


def _deref(root: dict, ref: str) -> Any:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _schema_node(err: ValidationError) -> tuple[Any, Any, list[Any]] | None:
    """The schema node `err`'s schema path ends at, the innermost `if` on the way and the path after
    its `then`; None where the path does not lead through the schema."""
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
            return None
    return node, if_schema, tail


def _condition(err: ValidationError, doc: dict) -> tuple[str, Any]:
    """For an error raised inside an `if/then`: the condition in words (`spec.trigger.kind is 'hook'`)
    and the schema node the error's schema path ends at."""
    found = _schema_node(err)
    if found is None:
        return "", None
    node, if_schema, tail = found
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
            return f"{format_path([*obj_path, key])} is {describe(obj[key])}", node
    return "", node


def _unknown_fields(err: ValidationError, doc: dict, path: tuple[Any, ...]) -> list[Finding] | None:
    inst = err.instance
    if err.validator_value is not False or not isinstance(inst, dict):
        return None
    known = list(err.schema.get("properties", {}))
    hint = f"; expected one of the known fields: {', '.join(known)}"
    return [((*path, key), "key", f"unknown field{did_you_mean(key, known)}{hint}") for key in inst if key not in known]


def _missing_fields(err: ValidationError, doc: dict, path: tuple[Any, ...]) -> list[Finding] | None:
    if not isinstance(err.instance, dict):
        return None
    cond, _ = _condition(err, doc)
    suffix = f" (required when {cond})" if cond else ""
    return [((*path, r), "node", f"missing required field{suffix}") for r in err.validator_value if r not in err.instance]


def _not_allowed(err: ValidationError, doc: dict, path: tuple[Any, ...]) -> list[Finding]:
    """A `false` subschema under then.properties: jsonschema reports it at the *parent* object with
    the value as instance, so find which key of the parent holds that value."""
    cond, props = _condition(err, doc)
    parent: Any = doc
    for part in path:
        parent = parent[part]
    keys = [k for k, v in parent.items() if v is err.instance] if isinstance(parent, dict) and isinstance(props, dict) else []
    keys = [k for k in keys if props.get(k) is False] or keys
    msg = f"not allowed when {cond}" if cond else "not allowed here"
    return [((*path, k), "key", msg) for k in keys[:1]] or [(path, "value", msg)]


def _alternatives(err: ValidationError, doc: dict, path: tuple[Any, ...]) -> list[Finding]:
    """oneOf/anyOf: "exactly one of a, b" for required-only branches, else the {env: NAME} branch."""
    kind, inst, value = err.validator, err.instance, err.validator_value
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
    return [(path, "value", f"expected a string or {{env: NAME}}, got {describe(inst)}")]


def _type_message(inst: Any, value: Any) -> str:
    want = " or ".join(_TYPE_NAMES.get(t, t) for t in ([value] if isinstance(value, str) else value))
    return f"expected {want}, got {describe(inst)}"


#: validators whose finding depends on where in the document and schema the error sits; None means
#: "not this case after all" and the error is worded like any other
_STRUCTURAL: dict[str | None, Callable[[ValidationError, dict, tuple[Any, ...]], list[Finding] | None]] = {
    "additionalProperties": _unknown_fields,
    "required": _missing_fields,
    None: _not_allowed,
}
#: validators whose finding is a message about the value: (instance, the validator's value) → words
_VALUE_MESSAGES: dict[str, Callable[[Any, Any], str]] = {
    "enum": lambda inst, value: f"{describe(inst)} is not one of {', '.join(map(str, value))}{did_you_mean(inst, value)}",
    "const": lambda inst, value: f"expected {value!r}, got {describe(inst)}",
    "type": _type_message,
    "pattern": lambda inst, value: f"{describe(inst)} is not {_PATTERN_NAMES.get(value, f'matching {value}')}",
    "minimum": lambda inst, value: f"{describe(inst)} is less than the minimum of {value}",
    "maximum": lambda inst, value: f"{describe(inst)} is greater than the maximum of {value}",
    "minLength": lambda inst, value: "must not be empty",
    "minItems": lambda inst, value: f"must have at least {value} item{'s' if value != 1 else ''}",
}


def _translate(err: ValidationError, doc: dict) -> list[Finding]:
    """One jsonschema error → clear findings. Raw oneOf/if-then messages never reach the user."""
    path = tuple(err.absolute_path)
    structural = _STRUCTURAL.get(err.validator)  # type: ignore[arg-type]
    found = structural(err, doc, path) if structural is not None else None
    if found is not None:
        return found
    if "propertyNames" in err.absolute_schema_path:
        return [((*path, err.instance), "key", f"{err.instance!r} is not a valid header name")]
    if err.validator in ("oneOf", "anyOf"):
        return _alternatives(err, doc, path)
    words = _VALUE_MESSAGES.get(err.validator)  # type: ignore[arg-type]
    return [(path, "value", words(err.instance, err.validator_value) if words is not None else err.message)]


def schema_findings(doc: dict) -> list[Finding]:
    """Every schema error of `doc` in words, each (path, message) once."""
    findings: list[Finding] = []
    seen: set[tuple[Any, ...]] = set()
    for err in _detailed_validator().iter_errors(doc):
        for f in _translate(err, doc):
            key = (f[0], f[2])
            if key not in seen:
                seen.add(key)
                findings.append(f)
    return findings


# ---------------------------------------------------------------------------------------------------
# checks beyond JSON Schema, one spec section at a time: (path below the section, anchor, message)

_Section = list[tuple[tuple[Any, ...], str, str]]
_SECRET_HEADER = re.compile(r"^(authorization|proxy-authorization|cookie)$|token|secret|password|api[-_]?key|signature", re.I)


@lru_cache(maxsize=4096)
def _check_schedule(items: tuple[tuple[str, Any], ...]) -> list[tuple[str, str]]:
    return check_schedule(dict(items))


@lru_cache(maxsize=1024)
def _check_timezone(name: str) -> str | None:
    return check_timezone(name)


def _trigger(trigger: dict) -> _Section:
    sched = trigger.get("schedule")
    if not isinstance(sched, dict):
        return []
    return [
        (("schedule", key) if key else ("schedule",), "value" if key else "node", message)
        for key, message in _check_schedule(tuple(sorted(sched.items())))
    ]


def _policies(policies: dict) -> _Section:
    return [(sub, "value", message) for sub, message in check_policies(policies)]


def _quiet_hours(quiet: dict) -> _Section:
    out: _Section = []
    tz = quiet.get("timezone")
    message = _check_timezone(tz) if isinstance(tz, str) else None
    if message:
        out.append((("timezone",), "value", message))
    if quiet.get("start") == quiet.get("end"):
        out.append((("end",), "value", "must differ from start (the window would be empty)"))
    return out


def _delivery(delivery: dict) -> _Section:
    return [
        ((channel_key,), "node", f"missing required field (required when spec.delivery.{mode_key} is 'specific_channel')")
        for mode_key, channel_key in (("mode", "channel"), ("failure_mode", "failure_channel"))
        if delivery.get(mode_key) == "specific_channel" and channel_key not in delivery
    ]


def _channel_timeout(timeout: str) -> _Section:
    message = duration_problem("channel.timeout", timeout)
    return [((), "value", message)] if message else []


def _headers(headers: dict) -> _Section:
    secret = "looks like a secret: write it as {env: NAME} and set NAME in the daemon's environment"
    return [((name,), "value", secret) for name, val in headers.items() if isinstance(val, str) and _SECRET_HEADER.search(name)]


#: kind → (spec key, the type its value must have for the check to apply, the check), in report order
_SECTIONS: dict[Any, tuple[tuple[str, type, Callable[[Any], _Section]], ...]] = {
    "Routine": (("trigger", dict, _trigger), ("policies", dict, _policies),
                ("quiet_hours", dict, _quiet_hours), ("delivery", dict, _delivery)),
    "Channel": (("timeout", str, _channel_timeout), ("headers", dict, _headers)),
}


def _previous_names(doc: dict, schema_paths: list[tuple[Any, ...]]) -> list[Finding]:
    """`metadata.previous_names` (a rename, docs/plan-operator.md): Routine only, never its own name.
    Collisions with other documents' names are a cross-file check (source/directory.py)."""
    meta = doc.get("metadata")
    names = meta.get("previous_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or any(p[:2] == ("metadata", "previous_names") for p in schema_paths):
        return []
    if doc.get("kind") != "Routine":
        return [(("metadata", "previous_names"), "key", f"only a Routine can be renamed with previous_names, "
                                                         f"not a {doc.get('kind')}")]
    own = meta.get("name")
    return [(("metadata", "previous_names", i), "value", f"{own!r} is this routine's own name, not a previous one")
            for i, n in enumerate(names) if n == own]


def semantic_findings(doc: dict, schema_paths: list[tuple[Any, ...]]) -> list[Finding]:
    """Checks beyond JSON Schema; a subtree that already failed the schema is not checked again."""

    def clean(key: str) -> bool:
        return not any(p[:2] == ("spec", key) for p in schema_paths)

    out: list[Finding] = _previous_names(doc, schema_paths)
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return out
    kind = doc.get("kind")
    for key, wanted, check in _SECTIONS.get(kind, ()):
        value = spec.get(key)
        if isinstance(value, wanted) and clean(key):
            out.extend((("spec", key, *sub), anchor, message) for sub, anchor, message in check(value))
    if kind == "Channel":  # where a channel may deliver (docs/security.md)
        out.extend((("spec", *sub), "value", message) for sub, message in static_problems(spec) if clean(sub[0]))
    return out


# ---------------------------------------------------------------------------------------------------
# references: what a routine names must exist


@dataclass(frozen=True)
class SkillsUnchecked:
    """`known_skills` when the installed skills cannot be known (no skills index): every skill
    reference becomes a warning saying so, instead of an error or a silent pass (docs/format.md)."""

    reason: str  # e.g. "no skills index under /var/lib/palyra"


def reference_findings(
    spec: Any, channels: Collection[str], skills: Collection[str] | SkillsUnchecked | None, where: str
) -> tuple[list[Finding], list[Finding]]:
    """(errors, warnings) for the channels and the skill a routine spec names.

    `channels`: the Channel names there are; `where` says where they were looked for ("in the
    directory", "in the journal"). `skills`: the installed skill ids; `SkillsUnchecked` makes a
    reference a warning, None leaves skills alone (library callers that opt out).
    """
    errors: list[Finding] = []
    warnings: list[Finding] = []
    if not isinstance(spec, dict):
        return errors, warnings
    delivery = spec.get("delivery")
    for key in ("channel", "failure_channel") if isinstance(delivery, dict) else ():
        ref = delivery.get(key)  # type: ignore[union-attr]
        if isinstance(ref, str) and ref not in channels:
            errors.append((("spec", "delivery", key), "value", f"no Channel named {ref!r} {where}{did_you_mean(ref, channels)}"))
    skill = spec.get("skill")
    sid = skill.get("id") if isinstance(skill, dict) else None
    if not isinstance(sid, str) or skills is None:
        return errors, warnings
    if isinstance(skills, SkillsUnchecked):
        warnings.append((("spec", "skill", "id"), "value", f"skill {sid!r} not checked: {skills.reason}"))
    elif sid not in skills:
        msg = f"skill {sid!r} is not installed{did_you_mean(sid, skills)} (palyra-ops skills list)"
        errors.append((("spec", "skill", "id"), "value", msg))
    return errors, warnings


_NO_REFERENCES: dict[str, Any] = {}


def reference_stub(doc: Any) -> Any:
    """All of a loaded document that the cross-file checks read: its spec's channel and skill
    references (`reference_findings`) and its `metadata.previous_names`. A directory loaded for plan keeps this instead of each body (plan takes the bodies
    file by file, as canonical JSON), and the cross-file checks give the same findings from it."""
    if not isinstance(doc, dict):
        return doc
    spec = doc.get("spec")
    meta = doc.get("metadata")
    previous = meta.get("previous_names") if isinstance(meta, dict) else None
    if not isinstance(spec, dict):
        return {"metadata": {"previous_names": previous}} if previous else _NO_REFERENCES
    kept: dict[str, Any] = {}
    delivery = spec.get("delivery")
    if isinstance(delivery, dict):
        refs = {k: delivery[k] for k in ("channel", "failure_channel") if k in delivery}
        if refs:
            kept["delivery"] = refs
    skill = spec.get("skill")
    if isinstance(skill, dict) and "id" in skill:
        kept["skill"] = {"id": skill["id"]}
    stub: dict[str, Any] = {"spec": kept} if kept else {}
    if previous:  # the cross-file rename check reads them too
        stub["metadata"] = {"previous_names": previous}
    return stub or _NO_REFERENCES


# ---------------------------------------------------------------------------------------------------
# one document, no file


def document_findings(doc: Any) -> list[Finding]:
    """Schema and semantic findings of one loaded document (the part that needs no other document).

    fastjsonschema says yes to a valid document an order of magnitude faster than jsonschema, which
    only runs (for its detailed errors) where fastjsonschema said no.
    """
    if not isinstance(doc, dict):
        return [((), "doc", f"a document must be a mapping with apiVersion, kind, metadata and spec; got {describe(doc)}")]
    findings: list[Finding] = []
    try:
        fast_validator()(doc)
    except fastjsonschema.JsonSchemaValueException:
        findings = schema_findings(doc)
    return findings + semantic_findings(doc, [f[0] for f in findings])


def check_document(
    doc: Any,
    *,
    channels: Collection[str] | None = None,
    skills: Collection[str] | None = None,
    where: str = "in the directory",
) -> list[tuple[str, str]]:
    """(field path, message) for every problem of one document, without positions.

    The same wording `palyra-ops validate` uses, for documents that arrive without a file (the
    console API's upsert). With `channels` (and `skills`) a Routine's references are checked too,
    once the rest of its spec is valid (a reference inside a broken spec would only add noise).
    Duplicate names are the caller's: one document cannot know them.
    """
    findings = document_findings(doc)
    if channels is not None and isinstance(doc, dict) and doc.get("kind") == "Routine":
        if not any(path[:1] == ("spec",) for path, _, _ in findings):
            findings += reference_findings(doc.get("spec"), channels, skills, where)[0]
    return [(format_path(path), message) for path, _anchor, message in findings]
