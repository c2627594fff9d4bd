"""The desired-state model: canonical form with schema defaults, content hash, typed views, flatten."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from palyra_ops.model import (
    Channel,
    Delivery,
    Policies,
    Resource,
    RetryPolicy,
    Routine,
    apply_defaults,
    canonical_json,
    content_hash,
    flatten,
    json_hash,
)
from palyra_ops.source import check_document


def routine_doc(name: str = "daily", **spec: Any) -> dict[str, Any]:
    body = {"prompt": "Summarize", "trigger": {"kind": "schedule", "schedule": {"cron": "0 9 * * *"}}, **spec}
    return {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": name}, "spec": body}


# the defaults of schemas/routine.schema.json, written out by hand
ROUTINE_DEFAULTS = {
    "enabled": True,
    "owner": "system:daemon",
    "channel": "system:cron",
    "approval": "none",
    "policies": {
        "concurrency": "forbid",
        "misfire": "fire_once",
        "misfire_grace": "30s",
        "max_catch_up": 3,
        "retry": {"max_attempts": 1, "backoff": "10s"},
        "jitter": "0s",
        "cooldown": "0s",
        "timeout": "10m",
        "dst": {"gap": "shift", "fold": "first"},
    },
    "delivery": {"mode": "logs_only", "silent_policy": "noisy"},
}


# -- canonical form ----------------------------------------------------------------------------------


def test_the_canonical_body_has_every_schema_default_and_no_identity() -> None:
    res = Resource.from_document(routine_doc(), source_file="sre.yaml")
    assert (res.kind, res.name, res.source_file) == ("Routine", "daily", "sre.yaml")
    assert res.body == {
        "metadata": {},
        "spec": {"prompt": "Summarize",
                 "trigger": {"kind": "schedule", "schedule": {"cron": "0 9 * * *", "timezone": "utc"}},
                 **ROUTINE_DEFAULTS},
    }


def test_defaults_fill_only_what_is_missing_and_leave_the_input_alone() -> None:
    spec = {"prompt": "x", "trigger": {"kind": "manual"}, "policies": {"retry": {"max_attempts": 5}, "dst": {"gap": "skip"}}}
    before = canonical_json(spec)
    filled = apply_defaults("Routine", spec)
    assert canonical_json(spec) == before
    assert filled["policies"]["retry"] == {"max_attempts": 5, "backoff": "10s"}
    assert filled["policies"]["dst"] == {"gap": "skip", "fold": "first"}
    assert filled["policies"]["concurrency"] == "forbid"
    assert apply_defaults("Channel", {"type": "log", "level": "debug"}) == {
        "type": "log", "level": "debug", "timeout": "10s", "retries": 2}
    assert apply_defaults("Policy", {"rules": []}) == {"rules": []}


def test_default_containers_are_not_shared_between_resources() -> None:
    a = Resource.from_document(routine_doc("a"))
    b = Resource.from_document(routine_doc("b"))
    a.body["spec"]["policies"]["dst"]["gap"] = "skip"
    a.body["spec"]["delivery"]["mode"] = "announce"
    assert b.body["spec"]["policies"]["dst"] == {"gap": "shift", "fold": "first"}
    assert b.body["spec"]["delivery"]["mode"] == "logs_only"
    assert apply_defaults("Routine", {})["policies"]["dst"] == {"gap": "shift", "fold": "first"}
    # a container default with nothing below it (skill.input: {}) is a fresh copy each time
    x = Resource.from_document(routine_doc("x", skill={"id": "digest"}))
    y = Resource.from_document(routine_doc("y", skill={"id": "digest"}))
    x.body["spec"]["skill"]["input"]["k"] = 1
    assert y.body["spec"]["skill"] == {"id": "digest", "input": {}}


def test_canonical_json_is_sorted_compact_and_unescaped() -> None:
    assert canonical_json({"b": [1, {"d": None, "c": True}], "a": "žluť"}) == '{"a":"žluť","b":[1,{"c":true,"d":null}]}'


# -- content hash ------------------------------------------------------------------------------------


def test_the_same_meaning_hashes_the_same() -> None:
    implicit = Resource.from_document(routine_doc())
    explicit = Resource.from_document(routine_doc(**ROUTINE_DEFAULTS))
    reordered_doc = routine_doc()
    reordered_doc["spec"] = dict(reversed(list({**reordered_doc["spec"], **ROUTINE_DEFAULTS}.items())))
    reordered = Resource.from_document(reordered_doc)
    assert implicit.hash == explicit.hash == reordered.hash
    assert implicit.canonical == explicit.canonical
    # the name is the identity, not content: a renamed copy has the same hash
    assert Resource.from_document(routine_doc("other")).hash == implicit.hash


def test_the_hash_is_the_sha256_of_the_canonical_json() -> None:
    res = Resource.from_document(routine_doc())
    expected = hashlib.sha256(canonical_json(res.body).encode("utf-8")).hexdigest()
    assert res.hash == expected == content_hash(res.body) == json_hash(res.canonical)
    assert len(res.hash) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"spec": {"prompt": "Summarize!"}},
        {"spec": {"enabled": False}},
        {"spec": {"policies": {"misfire_grace": "31s"}}},
        {"metadata": {"description": "now described"}},
        {"metadata": {"labels": {"team": "sre"}}},
    ],
)
def test_any_change_of_content_changes_the_hash(change: dict[str, Any]) -> None:
    base = routine_doc()
    changed = routine_doc()
    changed["spec"].update(change.get("spec", {}))
    changed["metadata"].update(change.get("metadata", {}))
    assert Resource.from_document(changed).hash != Resource.from_document(base).hash


def test_a_resource_from_its_canonical_json_or_lazily_is_the_same_resource() -> None:
    res = Resource.from_document(routine_doc())
    stored = Resource("Routine", "daily", canonical=res.canonical, hash=res.hash)
    assert stored.body == res.body and stored.hash == res.hash
    calls: list[int] = []
    lazy = Resource.lazy("Routine", "daily", res.hash, "sre.yaml", lambda: calls.append(1) or res.body)
    assert lazy.hash == res.hash and calls == []  # diffing by hash never builds the body
    assert lazy.body == res.body and lazy.canonical == res.canonical and calls == [1]
    assert lazy.body is lazy.body and calls == [1]
    with pytest.raises(ValueError, match="needs a body or its canonical JSON"):
        Resource("Routine", "x")


def test_from_spec_builds_the_same_canonical_form_as_a_file() -> None:
    doc = routine_doc()
    doc["metadata"]["labels"] = {"team": "sre"}
    from_file = Resource.from_document(doc)
    from_api = Resource.from_spec("Routine", "daily", routine_doc()["spec"], {"labels": {"team": "sre"}})
    assert from_api.name == "daily" and from_api.hash == from_file.hash


# -- typed views -------------------------------------------------------------------------------------


def test_routine_from_resource_parses_durations_and_fills_every_field() -> None:
    doc = routine_doc(
        owner="user:alice",
        approval="before_first_run",
        quiet_hours={"start": "22:00", "end": "07:00"},
        skill={"id": "digest", "input": {"k": 1}},
        policies={"concurrency": "replace", "misfire": "catch_up", "misfire_grace": "2m", "max_catch_up": 7,
                  "retry": {"max_attempts": 3, "backoff": "1m30s"}, "jitter": "500ms", "cooldown": "1h",
                  "timeout": "45s", "dst": {"fold": "both"}},
        delivery={"mode": "specific_channel", "channel": "ops", "failure_mode": "specific_channel",
                  "failure_channel": "pager", "silent_policy": "failure_only"},
    )
    doc["metadata"].update(description="Morning digest", labels={"team": "sre"})
    assert check_document(doc) == []  # a document validate accepts
    r = Routine.from_resource(Resource.from_document(doc))
    assert r.policies == Policies(
        concurrency="replace", misfire="catch_up", misfire_grace_ms=120_000, max_catch_up=7,
        retry=RetryPolicy(max_attempts=3, backoff_ms=90_000), jitter_ms=500, cooldown_ms=3_600_000,
        timeout_ms=45_000, dst={"gap": "shift", "fold": "both"},
    )
    assert r.delivery == Delivery(mode="specific_channel", channel="ops", failure_mode="specific_channel",
                                  failure_channel="pager", silent_policy="failure_only")
    assert (r.name, r.enabled, r.owner, r.channel, r.approval) == ("daily", True, "user:alice", "system:cron", "before_first_run")
    assert (r.prompt, r.skill, r.quiet_hours) == ("Summarize", {"id": "digest", "input": {"k": 1}},
                                                  {"start": "22:00", "end": "07:00", "timezone": "utc", "action": "skip"})
    assert (r.labels, r.description) == ({"team": "sre"}, "Morning digest")
    assert r.trigger_kind == "schedule" and r.schedule == {"cron": "0 9 * * *", "timezone": "utc"}


def test_routine_defaults_and_a_body_stored_before_fields_existed() -> None:
    r = Routine.from_resource(Resource.from_document(routine_doc(trigger={"kind": "manual"})))
    assert r.policies == Policies() and r.delivery == Delivery()
    assert r.policies.misfire_grace_ms == 30_000 and r.policies.timeout_ms == 600_000
    assert r.policies.retry == RetryPolicy(1, 10_000)
    assert r.trigger_kind == "manual" and r.schedule is None
    # a journal body written before the schema gained policies/delivery/owner reads the same
    old = Resource("Routine", "old", {"spec": {"prompt": "x", "trigger": {"kind": "manual"}}})
    o = Routine.from_resource(old)
    assert (o.policies, o.delivery, o.owner, o.enabled, o.labels, o.description) == (
        Policies(), Delivery(), "system:daemon", True, {}, None)


def test_channel_from_resource_fills_defaults_even_for_an_old_body() -> None:
    c = Channel.from_resource(Resource("Channel", "ops", {"spec": {"type": "webhook", "url": "https://h.example/x"}}))
    assert (c.name, c.type) == ("ops", "webhook")
    assert c.spec["timeout"] == "10s" and c.spec["retries"] == 2 and c.spec["url"] == "https://h.example/x"


# -- flatten -----------------------------------------------------------------------------------------


def test_flatten_gives_dotted_paths_to_leaves_with_lists_whole() -> None:
    assert flatten({"spec": {"policies": {"retry": {"max_attempts": 3}}, "labels": {}, "tags": [1, {"a": 2}]},
                    "n": None}) == {
        "spec.policies.retry.max_attempts": 3,
        "spec.labels": {},
        "spec.tags": [1, {"a": 2}],
        "n": None,
    }
    assert flatten({"a": {"b": 1}}, "body") == {"body.a.b": 1}
    assert flatten(5, "x") == {"x": 5}
