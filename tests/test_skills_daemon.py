"""WASM skills inside the running daemon (SPEC §8 and the policy step of §5), end to end.

Each test starts the real daemon (`daemon_factory`), builds signed packages from the WAT sources in
tests/skills, trusts the test publisher and installs into the daemon's state root — what `palyra-ops
skills install` does next to a running daemon: the daemon reads the installed-skills index before
every run, so nothing needs a restart — then applies routines and reads the run records back.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import wasmtime

from palyra_ops.skills.store import SkillStore
from tests.conftest import DaemonHandle
from tests.skills.kit import build, new_key

MANUAL = {"kind": "manual"}
FINAL = {"succeeded", "failed", "denied", "skipped", "throttled", "cancelled"}
SLOW_SPIN = ("id: spin-slow\nversion: 1.0.0\npublisher: acme\nentry: loop.wasm\n"
             "quotas: {fuel: 100000000000, memory: 64KiB, wall_time: 200ms}\n")


def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "palyra/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def skill_routine(name: str, skill: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("prompt", f"run {name}")
    spec.setdefault("trigger", MANUAL)
    return doc("Routine", name, {"skill": {"id": skill, "input": {"since": "24h"}}, **spec})


def install(d: DaemonHandle, *names: str | tuple[str, str]) -> SkillStore:
    """Trust a fresh publisher key in the daemon's state root and install the named test skills
    (a name, or (name, manifest text) for a variant of a test skill)."""
    key, pub = new_key()
    store = SkillStore(d.paths.state_root)
    store.trust.add("acme", pub)
    for i, item in enumerate(names):
        name, manifest = item if isinstance(item, tuple) else (item, None)
        store.install(build(name, d.paths.cwd / "pkgs" / str(i), key=key, manifest=manifest))
    return store


def dispatch(d: DaemonHandle, routine_id: str) -> str:
    r = d.client().post("/console/v1/routines/dispatch", json={"routine_id": routine_id})
    assert r.status_code == 202, r.text
    return r.json()["run_id"]


def final_runs(d: DaemonHandle, routine_id: str, n: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The routine's first n run records once all of them are final (oldest first)."""
    def ready() -> list[dict[str, Any]] | None:
        runs = [r for r in d.runs(routine_id) if r["status"] in FINAL]
        return runs if len(runs) >= n else None

    return d.wait_for(ready, timeout=timeout, what=f"{n} final run(s) of {routine_id}")


def tamper(store: SkillStore, skill_id: str) -> None:
    """Replace the installed entry module with other valid WebAssembly (the files are 0444)."""
    skill = store.get(skill_id)
    assert skill is not None
    path = skill.module_path
    os.chmod(path, 0o644)
    path.write_bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start")))'))


def test_skills_run_deliver_and_misbehaviour_ends_as_run_records(daemon_factory) -> None:
    d = daemon_factory()
    store = install(d, "echo", "loop", ("loop", SLOW_SPIN), "grow", "envecho", "upper")
    out = d.paths.state_root / "deliveries" / "out" / "skills.jsonl"
    d.write("skills.yaml", [
        doc("Channel", "reports", {"type": "file", "path": "out/skills.jsonl"}),
        skill_routine("digest", "echo", delivery={"mode": "specific_channel", "channel": "reports"}),
        skill_routine("fuel", "spin", policies={"retry": {"max_attempts": 2, "backoff": "100ms"}}),
        skill_routine("deadline", "spin-slow"),
        skill_routine("grow", "grower"),
        skill_routine("needs-env", "env-echo", policies={"retry": {"max_attempts": 3, "backoff": "100ms"}}),
        skill_routine("missing", "nope"),
        skill_routine("shout", "upper"),
        doc("Routine", "on-quarantine", {"prompt": "quarantined", "trigger": {"kind": "system_event",
                                                                               "event": "skill.quarantined"}}),
    ])
    d.apply()

    # a well-behaved skill: JSON in, JSON out, delivered to the channel
    first = dispatch(d, "digest")
    run = final_runs(d, "digest")[0]
    assert (run["run_id"], run["status"], run["reason"]) == (first, "succeeded", None)
    assert run["delivery_status"] == "delivered"
    assert run["policy_rule"] == "baseline: owner runs own routine; baseline: skill without extra capabilities"
    skill_input = {"prompt": "run digest", "trigger": {"kind": "manual", "scheduled_at": None, "payload": None},
                   "input": {"since": "24h"}}
    assert json.loads(run["output"]) == {"echo": skill_input}
    line = json.loads(out.read_text().splitlines()[0])
    assert line["run_id"] == first and json.loads(line["output"]) == {"echo": skill_input}

    for rid in ("fuel", "deadline", "grow", "needs-env", "missing"):
        dispatch(d, rid)
    # fuel: failed with the runner's reason, and retried (a failure, unlike a denial)
    fuel = final_runs(d, "fuel", 2)
    assert [(r["attempt"], r["status"], r["reason"]) for r in fuel] == [
        (1, "failed", "skill 'spin': fuel exhausted (limit 1000000)"),
        (2, "failed", "skill 'spin': fuel exhausted (limit 1000000)")]
    deadline = final_runs(d, "deadline")[0]
    assert (deadline["status"], deadline["reason"]) == ("failed", "skill 'spin-slow': wall-clock deadline exceeded (200ms)")
    assert 200 <= deadline["finished_at_ms"] - deadline["started_at_ms"] < 2000
    grow = final_runs(d, "grow")[0]
    assert (grow["status"], grow["reason"]) == ("failed", (
        "skill 'grower': trap: wasm `unreachable` instruction executed (linear memory at its cap of 1MiB: "
        "memory.grow past the cap fails); stderr: memory.grow failed"))
    # a declared capability the policy (here the baseline) does not grant: denied, not retried
    env = final_runs(d, "needs-env")
    assert [(r["attempt"], r["status"], r["policy_rule"]) for r in env] == [
        (1, "denied", "baseline: skill needs capabilities")]
    assert env[0]["reason"] == ("policy: skill 'env-echo' declares capabilities (env:PALYRA_TEST_TOKEN); "
                                "only a Policy can grant them")
    missing = final_runs(d, "missing")[0]
    assert (missing["status"], missing["reason"], missing["policy_rule"]) == (
        "denied", "policy: skill 'nope' is not installed", "baseline: skill not installed")

    # the daemon kept serving: health, and the good skill still runs
    assert httpx.get(d.base_url + "/healthz").status_code == 200
    dispatch(d, "digest")
    assert [r["status"] for r in final_runs(d, "digest", 2)] == ["succeeded", "succeeded"]
    text = d.client().get("/metrics").text
    assert 'palyra_gate_outcomes_total{gate="skill",outcome="denied"} 2' in text
    assert 'palyra_runs_total{status="denied"} 2' in text

    # a module changed after install is caught by the runner before it runs: quarantined on the spot,
    # the run denied (not retried), and skill.quarantined reaches the system_event routine
    dispatch(d, "shout")
    assert final_runs(d, "shout")[0]["status"] == "succeeded"
    tamper(store, "upper")
    dispatch(d, "shout")
    bad = final_runs(d, "shout", 2)[1]
    assert (bad["status"], bad["policy_rule"]) == ("denied", "quarantine")
    assert bad["reason"] == "skill 'upper' is quarantined: module 'bin/upper.wasm' no longer matches the sha256 pinned at install"
    ev = final_runs(d, "on-quarantine")[0]
    assert ev["status"] == "succeeded" and ev["trigger_kind"] == "system_event"
    payload = json.loads(ev["trigger_payload"]) if isinstance(ev["trigger_payload"], str) else ev["trigger_payload"]
    assert payload["event"] == "skill.quarantined"
    assert payload["data"] == {"skill_id": "upper", "reason": "module 'bin/upper.wasm' no longer matches the sha256 "
                               "pinned at install", "version": "0.3.1", "publisher": "acme",
                               "sha256": store.get("upper").module_sha256}

    # the compile cache survives a restart: the same files, not rewritten, and the skill runs
    cache = Path(d.paths.state_root) / "skills" / "cache"
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.cwasm")}
    assert len(before) >= 4
    # and the re-audit schedule comes from the index, not from process start: a skill last audited
    # 7 h ago (interval 6 h) is audited as the restarted daemon starts
    d.stop()
    tamper(store, "grower")
    index = Path(d.paths.state_root) / "skills" / "index.json"
    data = json.loads(index.read_text())
    for rec in data["skills"].values():
        rec["last_audit_at_ms"] -= 7 * 3_600_000
    index.write_text(json.dumps(data))
    d.restart()
    ev2 = final_runs(d, "on-quarantine", 2)[1]
    assert ev2["status"] == "succeeded" and '"skill_id":"grower"' in ev2["output"]
    dispatch(d, "digest")
    assert final_runs(d, "digest", 3)[2]["status"] == "succeeded"
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.cwasm")} == before


def test_reaudit_quarantines_a_tampered_skill_and_its_runs_are_denied(daemon_factory) -> None:
    d = daemon_factory(config={"skills": {"audit_interval": "300ms"}})
    store = install(d, "echo")
    d.write("q.yaml", [
        skill_routine("digest", "echo", policies={"retry": {"max_attempts": 3, "backoff": "100ms"}}),
        doc("Routine", "on-quarantine", {"prompt": "quarantined", "trigger": {"kind": "system_event",
                                                                               "event": "skill.quarantined"}}),
    ])
    d.apply()
    dispatch(d, "digest")
    assert final_runs(d, "digest")[0]["status"] == "succeeded"
    tamper(store, "echo")
    ev = final_runs(d, "on-quarantine", timeout=5)[0]
    skill = store.get("echo")
    assert skill is not None and skill.quarantined
    assert skill.quarantine_reason.startswith("re-audit failed: file 'echo.wasm' was modified")
    assert ev["status"] == "succeeded"
    assert json.loads(ev["output"].split("payload=", 1)[1].rstrip("]"))["data"]["reason"] == skill.quarantine_reason
    dispatch(d, "digest")
    runs = final_runs(d, "digest", 2)
    assert [(r["attempt"], r["status"], r["policy_rule"]) for r in runs] == [
        (1, "succeeded", "baseline: owner runs own routine; baseline: skill without extra capabilities"),
        (1, "denied", "quarantine")]
    assert runs[1]["reason"] == f"skill 'echo' is quarantined: {skill.quarantine_reason}"
    status = d.client().get("/console/v1/system/status").json()
    assert "skills.audit" in json.dumps(status)
    # exactly one event per quarantine, however many audits ran since
    assert len(d.runs("on-quarantine")) == 1


def test_policy_deny_beats_allow_and_denials_name_their_rule(daemon_factory) -> None:
    d = daemon_factory()
    install(d, "echo", "upper", "envecho")
    retry3 = {"retry": {"max_attempts": 3, "backoff": "100ms"}}
    d.write("p.yaml", [
        doc("Policy", "base", {"rules": [
            {"effect": "allow", "principals": ["user:alice"],
             "actions": ["routine.run", "skill.execute:*", "channel.deliver:*"]},
            {"effect": "allow", "principals": ["user:carol"], "actions": ["*"]},
        ]}),
        doc("Policy", "zz-deny", {"rules": [  # sorts after "base": deny wins whatever the order
            {"effect": "deny", "principals": ["user:*"], "actions": ["skill.execute:upper"]},
            {"effect": "deny", "principals": ["user:carol"], "actions": ["routine.run"]},
        ]}),
        skill_routine("a-echo", "echo", owner="user:alice"),
        skill_routine("a-upper", "upper", owner="user:alice", policies=retry3),
        skill_routine("a-env", "env-echo", owner="user:alice", policies=retry3),
        doc("Routine", "b-run", {"prompt": "p", "owner": "user:bob", "trigger": MANUAL, "policies": retry3}),
        doc("Routine", "c-run", {"prompt": "p", "owner": "user:carol", "trigger": MANUAL}),
    ])
    d.apply()
    for rid in ("a-echo", "a-upper", "a-env", "b-run", "c-run"):
        dispatch(d, rid)
    ok = final_runs(d, "a-echo")[0]
    assert (ok["status"], ok["policy_rule"]) == ("succeeded", "policy base rule 1")
    expected = {
        "a-upper": ("denied", "policy zz-deny rule 1",
                    "policy: skill.execute:upper denied for user:alice by policy zz-deny rule 1"),
        "a-env": ("denied", "default: no matching rule",
                  "policy: capability 'env:PALYRA_TEST_TOKEN' of skill 'env-echo' denied: no policy rule allows "
                  "skill.capability:env-echo:env:PALYRA_TEST_TOKEN for user:alice"),
        "b-run": ("denied", "default: no matching rule", "policy: no policy rule allows routine.run for user:bob"),
        "c-run": ("denied", "policy zz-deny rule 2",
                  "policy: routine.run denied for user:carol by policy zz-deny rule 2"),
    }
    for rid, want in expected.items():
        runs = final_runs(d, rid)
        got = [(r["status"], r["policy_rule"], r["reason"]) for r in runs]
        assert got == [want], rid
        assert runs[0]["attempt"] == 1
    # denied runs are never retried: still one record each after the retry backoff would have passed
    time.sleep(0.4)
    assert {rid: len(d.runs(rid)) for rid in expected} == dict.fromkeys(expected, 1)


def test_skills_audit_interval_config() -> None:
    from palyra_ops.config import build_config
    from palyra_ops.errors import PalyraError

    assert build_config({}).skills.audit_interval_ms == 6 * 3_600_000
    assert build_config({"skills": {"audit_interval": "300ms"}}).skills.audit_interval_ms == 300
    assert build_config({"skills": {"audit_interval": 0}}).skills.audit_interval_ms == 0  # disabled
    assert build_config({"skills": {"audit_interval": "1h"}}, skills_audit_interval="2s").skills.audit_interval_ms == 2000
    bad = [
        ({"skills": {"audit_interval": "soon"}}, {},
         "config: skills.audit_interval: invalid duration 'soon': expected e.g. 500ms, 30s, 5m, 2h, 1d or 1h30m"),
        ({"skills": {"audit": "1h"}}, {}, "config: skills.audit: unknown key; expected audit_interval"),
        ({"skills": ["1h"]}, {}, "config: skills: expected a mapping (with audit_interval), got a list"),
        ({}, {"skills_audit_interval": "x"},
         "--skills-audit-interval: invalid duration 'x': expected e.g. 500ms, 30s, 5m, 2h, 1d or 1h30m"),
    ]
    for data, flags, message in bad:
        try:
            build_config(data, **flags)
        except PalyraError as exc:
            assert str(exc) == message
        else:
            raise AssertionError(f"accepted {data} {flags}")
