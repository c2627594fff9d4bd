"""The policy engine: who may run routines and skills, use capabilities and deliver to channels.

Policy documents (`kind: Policy`) hold allow/deny rules over principal, action and channel globs.
Evaluation is deny-overrides: any matching deny wins over every matching allow, regardless of the
order or the document the rules sit in, so adding an allow can never re-open something a deny
closed. With Policy documents present, a request no rule allows is denied (closed by default);
with none at all, the baseline applies (see docs/policy.md). A quarantined skill is refused before
any rule is consulted: no policy can make tampered code runnable.

Every decision names the rule that made it, because that string ends up on the run record and is
what an operator reads when asking "why was this denied?".

Actions: `routine.run`, `skill.execute:<skill-id>`, `skill.capability:<skill-id>:<capability>`
(capabilities as in the manifest: `fs:<path>`, `fs-rw:<path>`, `http:<host>`, `env:<NAME>`), and
`channel.deliver:<channel-name>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from palyra_ops.skills.store import InstalledSkill

ACTION_ROUTINE_RUN = "routine.run"
ACTION_SKILL_EXECUTE = "skill.execute"
ACTION_SKILL_CAPABILITY = "skill.capability"
ACTION_CHANNEL_DELIVER = "channel.deliver"
KNOWN_ACTION_PREFIXES = (
    ACTION_ROUTINE_RUN,
    ACTION_SKILL_EXECUTE + ":",
    ACTION_SKILL_CAPABILITY + ":",
    ACTION_CHANNEL_DELIVER + ":",
)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str  # e.g. "policy sre rule 2", "baseline: owner runs own routine", "quarantine"
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "rule": self.rule, "reason": self.reason}


def skill_execute_action(skill_id: str) -> str:
    return f"{ACTION_SKILL_EXECUTE}:{skill_id}"


def skill_capability_action(skill_id: str, capability: str) -> str:
    return f"{ACTION_SKILL_CAPABILITY}:{skill_id}:{capability}"


def channel_deliver_action(channel: str) -> str:
    return f"{ACTION_CHANNEL_DELIVER}:{channel}"


def _matches(value: str, patterns: list[Any]) -> bool:
    return any(isinstance(p, str) and fnmatchcase(value, p) for p in patterns)


def _rules(policies: list[dict]) -> list[tuple[str, int, dict]]:
    """(policy name, 1-based rule number, rule) in a deterministic order: by policy name, then position."""
    out: list[tuple[str, int, dict]] = []
    for doc in sorted(policies, key=lambda d: str(d.get("name", ""))):
        spec = doc.get("spec") or {}
        for i, rule in enumerate(spec.get("rules") or [], start=1):
            if isinstance(rule, dict):
                out.append((str(doc.get("name", "?")), i, rule))
    return out


def _quarantine_check(action: str, skill: InstalledSkill | None) -> Decision | None:
    if skill is not None and skill.quarantined and action.startswith(ACTION_SKILL_EXECUTE + ":"):
        return Decision(False, "quarantine", f"skill {skill.id!r} is quarantined: {skill.quarantine_reason}")
    return None


def evaluate(
    policies: list[dict],
    *,
    principal: str,
    action: str,
    channel: str | None = None,
    owner: str | None = None,
    skill: InstalledSkill | None = None,
) -> Decision:
    """Decide one request. `policies` are Policy documents in canonical form ({"name", "spec"}).

    `principal` is whom the run is evaluated for (the routine's owner); `owner` is the owner of the
    routine being acted on (the baseline lets owners run their own routines); `channel` is the
    routine's origin channel; `skill` is the installed skill for skill actions.
    """
    q = _quarantine_check(action, skill)
    if q is not None:
        return q
    if not policies:
        return _baseline(principal=principal, action=action, owner=owner, skill=skill)
    chan = channel or ""
    allow: tuple[str, int] | None = None
    for name, number, rule in _rules(policies):
        if not _matches(principal, rule.get("principals") or []):
            continue
        if not _matches(action, rule.get("actions") or []):
            continue
        if not _matches(chan, rule.get("channels") or ["*"]):
            continue
        if rule.get("effect") == "deny":
            return Decision(False, f"policy {name} rule {number}", f"{action} denied for {principal} by policy {name} rule {number}")
        if rule.get("effect") == "allow" and allow is None:
            allow = (name, number)
    if allow is not None:
        name, number = allow
        return Decision(True, f"policy {name} rule {number}", f"{action} allowed for {principal} by policy {name} rule {number}")
    return Decision(False, "default: no matching rule", f"no policy rule allows {action} for {principal}")


def _baseline(*, principal: str, action: str, owner: str | None, skill: InstalledSkill | None) -> Decision:
    if action == ACTION_ROUTINE_RUN:
        if owner is None or owner == principal:
            return Decision(True, "baseline: owner runs own routine", f"{principal} owns the routine")
        return Decision(False, "baseline: only the owner runs a routine", f"{principal} is not the owner ({owner})")
    if action.startswith(ACTION_SKILL_EXECUTE + ":"):
        skill_id = action.split(":", 1)[1]
        if skill is None:
            return Decision(False, "baseline: skill not installed", f"skill {skill_id!r} is not installed")
        if skill.capabilities:
            return Decision(
                False,
                "baseline: skill needs capabilities",
                f"skill {skill_id!r} declares capabilities ({', '.join(skill.capabilities)}); only a Policy can grant them",
            )
        return Decision(True, "baseline: skill without extra capabilities", f"skill {skill_id!r} needs no capabilities")
    if action.startswith(ACTION_SKILL_CAPABILITY + ":"):
        return Decision(False, "baseline: capabilities need a policy", f"no Policy grants {action}")
    if action.startswith(ACTION_CHANNEL_DELIVER + ":"):
        return Decision(True, "baseline: deliver to any channel", f"{principal} may deliver to any channel")
    return Decision(False, "baseline: unknown action", f"{action} is not an action the baseline allows")


@dataclass(frozen=True)
class SkillAuthorization:
    """The gateway's one-call answer for a skill run: may it run, and with which capabilities."""

    decision: Decision
    granted: set[str] = field(default_factory=set)
    capability_decisions: dict[str, Decision] = field(default_factory=dict)


def authorize_skill(
    policies: list[dict],
    *,
    principal: str,
    skill_id: str,
    skill: InstalledSkill | None,
    channel: str | None = None,
    owner: str | None = None,
) -> SkillAuthorization:
    """`skill.execute:<id>` plus one `skill.capability:<id>:<cap>` per declared capability.

    The run is denied as a whole when any declared capability is denied (a skill gets all it
    declared or nothing), and the decision then names the rule that denied the capability.
    Under the baseline, `skill.execute` is itself denied for skills declaring capabilities.
    """
    d = evaluate(policies, principal=principal, action=skill_execute_action(skill_id), channel=channel, owner=owner, skill=skill)
    if not d.allowed or skill is None:
        return SkillAuthorization(d)
    granted: set[str] = set()
    decisions: dict[str, Decision] = {}
    denied: tuple[str, Decision] | None = None
    for cap in skill.capabilities:
        cd = evaluate(policies, principal=principal, action=skill_capability_action(skill_id, cap), channel=channel, owner=owner, skill=skill)
        decisions[cap] = cd
        if cd.allowed:
            granted.add(cap)
        elif denied is None:
            denied = (cap, cd)
    if denied is not None:
        cap, cd = denied
        return SkillAuthorization(
            Decision(False, cd.rule, f"capability {cap!r} of skill {skill_id!r} denied: {cd.reason}"), granted, decisions
        )
    return SkillAuthorization(d, granted, decisions)


def lint_policy(spec: dict) -> list[str]:
    """Warnings for rules that can never match a real action (typos such as `routine.runs`)."""
    warnings: list[str] = []
    for i, rule in enumerate(spec.get("rules") or [], start=1):
        for pattern in (rule or {}).get("actions") or []:
            if not isinstance(pattern, str):
                continue
            if pattern == "*" or any(ch in pattern for ch in "*?["):
                literal = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
                if any(p.startswith(literal) or literal.startswith(p) for p in KNOWN_ACTION_PREFIXES):
                    continue
            elif pattern == ACTION_ROUTINE_RUN or any(pattern.startswith(p) and len(pattern) > len(p) for p in KNOWN_ACTION_PREFIXES[1:]):
                continue
            warnings.append(
                f"rule {i}: action {pattern!r} matches no known action "
                "(routine.run, skill.execute:<id>, skill.capability:<id>:<cap>, channel.deliver:<name>)"
            )
    return warnings
