"""The schema is the single source of truth: well-formed, documented, and obeyed by both validators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from corpus_cases import iter_cases
from jsonschema import Draft202012Validator

from palyra_ops.durations import DURATION_PATTERN
from palyra_ops.source import MAX_EXPANDED_NODES, StrictLoader, load_directory, schema, schema_path
from palyra_ops.source.findings import fast_validator as _fast_validator
from palyra_ops.source.yaml_strict import check_expanded_size as _expanded_size

ROOT = Path(__file__).resolve().parent.parent
#: examples/ci and examples/deploy hold a workflow and a unit, not routines (test_examples.py covers them)
NOT_ROUTINE_SETS = {"ci", "deploy"}
SAMPLE_DIRS = [ROOT / "routines.d", *sorted(p / "routines.d" for p in (ROOT / "examples").iterdir()
                                            if p.is_dir() and p.name not in NOT_ROUTINE_SETS)]


def test_schema_is_valid_draft_2020_12_with_an_id() -> None:
    s = json.loads(schema_path().read_text())
    Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"].endswith("routine.schema.json")
    assert schema() == s


def _walk_properties(node: Any, path: str, out: list[tuple[str, dict]]) -> None:
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict):
                out.append((f"{path}.{name}", sub))
        for key, sub in node.items():
            if key != "if":
                _walk_properties(sub, f"{path}/{key}", out)
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            _walk_properties(sub, f"{path}[{i}]", out)


def test_every_field_has_a_description_and_objects_reject_unknown_fields() -> None:
    s = schema()
    fields: list[tuple[str, dict]] = []
    _walk_properties(s, "", fields)
    assert len(fields) > 60
    for path, sub in fields:
        if "$ref" in sub:
            sub = s["$defs"][sub["$ref"].split("/")[-1]]
        if sub.keys() <= {"$ref"} or set(sub) == {"properties"}:
            continue
        assert sub.get("description"), f"{path} has no description"
        if sub.get("type") == "object" and "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{path} accepts unknown fields"


def test_defaults_are_the_documented_canonical_ones() -> None:
    d = schema()["$defs"]
    r = d["routineSpec"]["properties"]
    p = r["policies"]["properties"]
    assert (r["enabled"]["default"], r["owner"]["default"], r["channel"]["default"], r["approval"]["default"]) == (
        True, "system:daemon", "system:cron", "none",
    )
    assert r["policies"]["default"] == {} and r["delivery"]["default"] == {} and "default" not in r["quiet_hours"]
    assert {k: v.get("default") for k, v in p.items()} == {
        "concurrency": "forbid", "misfire": "fire_once", "misfire_grace": "30s", "max_catch_up": 3, "retry": {},
        "jitter": "0s", "cooldown": "0s", "timeout": "10m", "dst": {},
        "pause_after_failures": None,  # no default: an unset value must not change every routine's hash
    }
    assert p["retry"]["properties"]["max_attempts"]["default"] == 1
    assert p["retry"]["properties"]["backoff"]["default"] == "10s"
    assert p["dst"]["properties"]["gap"]["default"] == "shift" and p["dst"]["properties"]["fold"]["default"] == "first"
    assert r["delivery"]["properties"]["mode"]["default"] == "logs_only"
    assert r["delivery"]["properties"]["silent_policy"]["default"] == "noisy"
    assert r["trigger"]["properties"]["schedule"]["properties"]["timezone"]["default"] == "utc"
    c = d["channelSpec"]["properties"]
    assert (c["timeout"]["default"], c["retries"]["default"], c["level"]["default"]) == ("10s", 2, "info")
    assert d["policySpec"]["properties"]["rules"]["items"]["properties"]["channels"]["default"] == ["*"]


def test_duration_pattern_is_shared_with_the_parser() -> None:
    text = schema_path().read_text()
    assert json.dumps(DURATION_PATTERN) in text
    assert schema()["$defs"]["routineSpec"]["properties"]["policies"]["properties"]["jitter"]["pattern"] == DURATION_PATTERN


@pytest.mark.parametrize("directory", SAMPLE_DIRS, ids=[p.relative_to(ROOT).as_posix() for p in SAMPLE_DIRS])
def test_samples_and_examples_validate_and_carry_the_modeline(directory: Path) -> None:
    source = load_directory(directory)
    assert source.ok, [d.format() for d in source.diagnostics]
    assert source.documents
    for f in source.files.values():
        text = (directory / f.file).read_text()
        rel = Path("..") if directory == ROOT / "routines.d" else Path("..") / ".." / ".."
        assert text.startswith(f"# yaml-language-server: $schema={rel.as_posix()}/schemas/routine.schema.json\n")
        assert (directory / rel / "schemas" / "routine.schema.json").resolve() == schema_path().resolve()


def test_routines_d_is_offline_and_needs_no_skills() -> None:
    source = load_directory(ROOT / "routines.d", known_skills=set())
    assert source.ok
    kinds = {(d.kind, d.body["spec"].get("trigger", {}).get("kind")) for d in source.documents}
    assert ("Routine", "manual") in kinds and ("Routine", "schedule") in kinds
    heartbeat = next(d for d in source.documents if d.name == "heartbeat")
    assert heartbeat.body["spec"]["trigger"]["schedule"] == {"every": "30s"}
    channel = next(d for d in source.documents if d.name == heartbeat.body["spec"]["delivery"]["channel"])
    assert channel.body["spec"] == {"type": "file", "path": "heartbeat.jsonl"}
    assert any("timezone" in d.body["spec"].get("trigger", {}).get("schedule", {}) for d in source.documents if d.kind == "Routine")
    assert not any("skill" in d.body["spec"] for d in source.documents if d.kind == "Routine")


def _all_documents() -> list[object]:
    docs: list[object] = []
    dirs = [*SAMPLE_DIRS, *(c[1] for c in iter_cases() if c[0] != "oversized")]
    for d in dirs:
        for f in sorted(d.rglob("*.y*ml")):
            try:
                loader = StrictLoader(f.read_text(encoding="utf-8"))
                while loader.check_node():
                    node = loader.get_node()
                    _expanded_size(node, MAX_EXPANDED_NODES)
                    docs.append(loader.construct_document(node))
            except Exception:  # noqa: BLE001 - hostile files are not schema material
                continue
    return [d for d in docs if isinstance(d, dict)]


def test_fast_and_detailed_validators_agree() -> None:
    """The happy path trusts fastjsonschema; it must accept exactly what jsonschema accepts."""
    fast = _fast_validator()
    detailed = Draft202012Validator(schema())
    docs = _all_documents()
    assert len(docs) > 40
    for doc in docs:
        try:
            fast(doc)
            fast_ok = True
        except Exception:  # noqa: BLE001
            fast_ok = False
        assert fast_ok == detailed.is_valid(doc), doc


def _variants(doc: dict[str, Any]) -> list[Any]:
    """A valid scheduled routine bent around the fast path's short cut (`_is_scheduled_routine`):
    other kinds and trigger kinds, none or several of cron/every/at, keys the other branches forbid."""
    import copy

    def bent(change: Any) -> Any:
        d = copy.deepcopy(doc)
        change(d)
        return d

    sched = lambda d: d["spec"]["trigger"]["schedule"]  # noqa: E731
    trig = lambda d: d["spec"]["trigger"]  # noqa: E731
    out = [doc]
    out += [bent(lambda d, k=k: d.__setitem__("kind", k)) for k in ("Channel", "Policy", "routine", None, 1)]
    out += [bent(lambda d, k=k: trig(d).__setitem__("kind", k)) for k in ("webhook", "hook", "system_event", "manual", "x")]
    out += [bent(lambda d: sched(d).update(every="5m")), bent(lambda d: sched(d).update(at="2026-12-24T18:00:00Z")),
            bent(lambda d: sched(d).update(every="5m", at="2026-12-24T18:00:00Z")),
            bent(lambda d: sched(d).clear()), bent(lambda d: sched(d).update(cron=5)),
            bent(lambda d: trig(d).update(webhook={"integration": "gh"})), bent(lambda d: trig(d).update(event="x")),
            bent(lambda d: trig(d).update(schedule=["cron"])), bent(lambda d: trig(d).pop("schedule")),
            bent(lambda d: d["spec"].update(trigger="schedule")), bent(lambda d: d.update(spec=[])),
            bent(lambda d: d["spec"].pop("prompt", None)), bent(lambda d: d["spec"].update(url="http://x"))]
    return out


def test_the_fast_path_for_scheduled_routines_agrees_with_the_full_schema() -> None:
    """fast_validator takes a pruned schema for a Routine with a schedule trigger (one of cron/every/
    at): every bend of that shape must still get jsonschema's verdict."""
    from palyra_ops.source.findings import _general_validator, _is_scheduled_routine

    fast, general = _fast_validator(), _general_validator()
    detailed = Draft202012Validator(schema())
    scheduled = [d for d in _all_documents() if _is_scheduled_routine(d) and detailed.is_valid(d)]
    assert len(scheduled) >= 5
    checked = 0
    for base in scheduled:
        for doc in _variants(base):
            verdicts = []
            for validate in (fast, general):
                try:
                    validate(doc)
                    verdicts.append(True)
                except Exception:  # noqa: BLE001
                    verdicts.append(False)
            assert verdicts == [detailed.is_valid(doc)] * 2, doc
            checked += 1
    assert checked > 100
