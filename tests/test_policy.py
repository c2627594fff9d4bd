"""The policy engine: baseline, deny-overrides, globs, channels, quarantine and capability grants."""

from __future__ import annotations

from pathlib import Path

import pytest

from palyra_ops.policy import Decision, authorize_skill, evaluate, lint_policy
from palyra_ops.skills.manifest import parse_manifest
from palyra_ops.skills.store import STATUS_QUARANTINED, InstalledSkill


def skill(skill_id: str = "digest", caps: str = "", status: str = "active") -> InstalledSkill:
    text = f"id: {skill_id}\nversion: 1.0.0\npublisher: acme\nentry: m.wasm\n{caps}".encode()
    m = parse_manifest(text)
    return InstalledSkill(
        id=skill_id, version="1.0.0", publisher="acme", public_key="k", module_sha256="0" * 64,
        payload_sha256="1" * 64, capabilities=tuple(m.capabilities.names()), manifest=m, path=Path("/x"),
        installed_at_ms=0, status=status, quarantine_reason="tampered" if status == STATUS_QUARANTINED else None,
    )


def policy(name: str, *rules: dict) -> dict:
    return {"name": name, "spec": {"rules": list(rules)}}


SRE = policy(
    "sre",
    {"effect": "allow", "principals": ["user:alice", "team:sre:*"], "actions": ["routine.run", "skill.execute:incident-*"]},
    {"effect": "allow", "principals": ["*"], "actions": ["channel.deliver:sre-*"], "channels": ["cli:*"]},
)


# --- baseline ------------------------------------------------------------------------------------


def test_baseline_owner_runs_own_routine() -> None:
    assert evaluate([], principal="user:alice", action="routine.run", owner="user:alice") == Decision(
        True, "baseline: owner runs own routine", "user:alice owns the routine"
    )
    assert evaluate([], principal="user:bob", action="routine.run", owner="user:alice") == Decision(
        False, "baseline: only the owner runs a routine", "user:bob is not the owner (user:alice)"
    )


def test_baseline_skills_and_channels() -> None:
    d = evaluate([], principal="user:alice", action="skill.execute:digest", skill=skill())
    assert (d.allowed, d.rule) == (True, "baseline: skill without extra capabilities")
    d = evaluate([], principal="user:alice", action="skill.execute:digest", skill=skill(caps="capabilities: {env: [TOKEN]}\n"))
    assert (d.allowed, d.rule) == (False, "baseline: skill needs capabilities")
    assert d.reason == "skill 'digest' declares capabilities (env:TOKEN); only a Policy can grant them"
    d = evaluate([], principal="user:alice", action="skill.execute:digest", skill=None)
    assert (d.allowed, d.reason) == (False, "skill 'digest' is not installed")
    d = evaluate([], principal="user:alice", action="skill.capability:digest:env:TOKEN")
    assert (d.allowed, d.rule) == (False, "baseline: capabilities need a policy")
    d = evaluate([], principal="user:alice", action="channel.deliver:anything")
    assert (d.allowed, d.rule) == (True, "baseline: deliver to any channel")


def test_quarantined_skill_is_denied_whatever_the_policy() -> None:
    allow_all = policy("open", {"effect": "allow", "principals": ["*"], "actions": ["*"]})
    for policies in ([], [allow_all]):
        d = evaluate(policies, principal="user:alice", action="skill.execute:digest", skill=skill(status=STATUS_QUARANTINED))
        assert d == Decision(False, "quarantine", "skill 'digest' is quarantined: tampered")


# --- documents -----------------------------------------------------------------------------------


def test_allow_rule_names_itself() -> None:
    d = evaluate([SRE], principal="team:sre:oncall", action="skill.execute:incident-digest")
    assert d == Decision(True, "policy sre rule 1", "skill.execute:incident-digest allowed for team:sre:oncall by policy sre rule 1")


def test_no_matching_rule_is_denied_when_policies_exist() -> None:
    d = evaluate([SRE], principal="user:mallory", action="routine.run", owner="user:mallory")
    assert d == Decision(False, "default: no matching rule", "no policy rule allows routine.run for user:mallory")


def test_deny_beats_allow_in_any_order_and_document() -> None:
    deny = policy("aaa-lockdown", {"effect": "deny", "principals": ["user:alice"], "actions": ["routine.run"]})
    for policies in ([SRE, deny], [deny, SRE]):
        d = evaluate(policies, principal="user:alice", action="routine.run")
        assert d == Decision(False, "policy aaa-lockdown rule 1", "routine.run denied for user:alice by policy aaa-lockdown rule 1")
    same_doc = policy(
        "mixed",
        {"effect": "allow", "principals": ["*"], "actions": ["*"]},
        {"effect": "deny", "principals": ["user:*"], "actions": ["skill.*"]},
    )
    assert evaluate([same_doc], principal="user:x", action="skill.execute:a").rule == "policy mixed rule 2"
    assert evaluate([same_doc], principal="user:x", action="routine.run").rule == "policy mixed rule 1"


@pytest.mark.parametrize(
    ("channel", "allowed"),
    [("cli:alice", True), ("system:cron", False), (None, False)],
)
def test_channel_globs(channel: str | None, allowed: bool) -> None:
    d = evaluate([SRE], principal="user:bob", action="channel.deliver:sre-reports", channel=channel)
    assert d.allowed is allowed


def test_rule_without_channels_matches_any_channel_and_none() -> None:
    p = policy("p", {"effect": "allow", "principals": ["user:a"], "actions": ["routine.run"]})
    assert evaluate([p], principal="user:a", action="routine.run").allowed
    assert evaluate([p], principal="user:a", action="routine.run", channel="x").allowed


# --- skill authorization -------------------------------------------------------------------------


def test_authorize_skill_grants_capabilities_by_rule() -> None:
    s = skill("incident-digest", "capabilities: {env: [TOKEN], http: [api.example.com]}\n")
    grants = policy(
        "caps",
        {"effect": "allow", "principals": ["team:sre:*"], "actions": ["skill.capability:incident-digest:*"]},
        {"effect": "deny", "principals": ["*"], "actions": ["skill.capability:*:http:*"]},
    )
    a = authorize_skill([SRE, grants], principal="team:sre:bot", skill_id="incident-digest", skill=s)
    assert a.decision == Decision(
        False, "policy caps rule 2",
        "capability 'http:api.example.com' of skill 'incident-digest' denied: "
        "skill.capability:incident-digest:http:api.example.com denied for team:sre:bot by policy caps rule 2",
    )
    assert a.granted == {"env:TOKEN"}
    ok = authorize_skill([SRE, policy("caps", grants["spec"]["rules"][0])], principal="team:sre:bot", skill_id="incident-digest", skill=s)
    assert ok.decision.allowed and ok.decision.rule == "policy sre rule 1"
    assert ok.granted == {"env:TOKEN", "http:api.example.com"}


def test_authorize_skill_baseline() -> None:
    a = authorize_skill([], principal="user:a", skill_id="digest", skill=skill())
    assert a.decision.allowed and a.granted == set()
    a = authorize_skill([], principal="user:a", skill_id="digest", skill=skill(caps="capabilities: {env: [T]}\n"))
    assert not a.decision.allowed and a.decision.rule == "baseline: skill needs capabilities"


def test_lint_flags_unknown_actions() -> None:
    spec = {"rules": [{"effect": "allow", "principals": ["*"], "actions": ["routine.run", "routine.runs", "skill.execute:*", "skill.execute:", "*", "channel.deliver:x"]}]}
    assert lint_policy(spec) == [
        "rule 1: action 'routine.runs' matches no known action (routine.run, skill.execute:<id>, skill.capability:<id>:<cap>, channel.deliver:<name>)",
        "rule 1: action 'skill.execute:' matches no known action (routine.run, skill.execute:<id>, skill.capability:<id>:<cap>, channel.deliver:<name>)",
    ]
