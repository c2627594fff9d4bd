"""Running skills in the wasmtime sandbox, the compile cache, and the re-audit/quarantine cycle."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from skills.kit import build, publisher, skill_store  # noqa: F401 - fixtures

from palyra_ops.clock import FakeClock
from palyra_ops.errors import PalyraError
from palyra_ops.skills.audit import ReAuditor, parse_reaudit_interval
from palyra_ops.skills.sandbox import SkillRunner
from palyra_ops.skills.store import SkillStore

INPUT = {"prompt": "Summarize", "trigger": {"kind": "schedule"}, "input": {"since": "24h"}}
HERE = Path(__file__).parent / "skills"


@pytest.fixture
def runner(tmp_path: Path, skill_store: SkillStore) -> Iterator[SkillRunner]:  # noqa: F811
    r = SkillRunner(skill_store, tmp_path / "cache")
    yield r
    r.close()


def install(store: SkillStore, tmp_path: Path, key, name: str, manifest: str | None = None):
    return store.install(build(name, tmp_path / "src", key=key, manifest=manifest))


def test_well_behaved_skill_turns_json_into_json(tmp_path, skill_store, publisher, runner) -> None:  # noqa: F811
    install(skill_store, tmp_path, publisher[0], "echo")
    r = runner.run("echo", INPUT, granted=set())
    assert (r.ok, r.reason, r.denied, r.exit_code) == (True, None, False, 0)
    assert r.output == {"echo": INPUT}
    assert 0 < r.fuel_used < 1000
    assert r.cache == "compiled"
    again = runner.run("echo", INPUT, granted=set())
    assert (again.ok, again.cache, again.fuel_used) == (True, "memory", r.fuel_used)


def test_text_output(tmp_path, skill_store, publisher, runner) -> None:  # noqa: F811
    install(skill_store, tmp_path, publisher[0], "upper")
    r = runner.run("upper", ["not", "an object"], granted=set())  # type: ignore[arg-type]
    assert (r.ok, r.output) == (True, '["NOT","AN OBJECT"]')
    r = runner.run("upper", {"prompt": "hello"}, granted=set())
    assert (r.ok, r.output) == (True, {"PROMPT": "HELLO"})


def test_infinite_loop_is_stopped_by_fuel(tmp_path, skill_store, publisher, runner) -> None:  # noqa: F811
    install(skill_store, tmp_path, publisher[0], "loop")
    r = runner.run("spin", {}, granted=set())
    assert (r.ok, r.reason, r.fuel_used, r.denied) == (False, "fuel exhausted (limit 1000000)", 1_000_000, False)


def test_infinite_loop_is_stopped_by_wall_clock_deadline(tmp_path, skill_store, publisher, runner) -> None:  # noqa: F811
    manifest = "id: spin\nversion: 1.0.0\npublisher: acme\nentry: loop.wasm\nquotas: {fuel: 100000000000, memory: 64KiB, wall_time: 200ms}\n"
    install(skill_store, tmp_path, publisher[0], "loop", manifest)
    r = runner.run("spin", {}, granted=set())
    assert (r.ok, r.reason) == (False, "wall-clock deadline exceeded (200ms)")
    assert 200 <= r.duration_ms < 2000
    assert r.fuel_used < 100_000_000_000


def test_memory_grow_past_cap_fails(tmp_path, skill_store, publisher, runner) -> None:  # noqa: F811
    install(skill_store, tmp_path, publisher[0], "grow")
    r = runner.run("grower", {}, granted=set())
    assert r.ok is False
    assert r.reason == (
        "trap: wasm `unreachable` instruction executed (linear memory at its cap of 1MiB: memory.grow past "
        "the cap fails); stderr: memory.grow failed"
    )


def test_declared_capability_denied_by_policy(tmp_path, skill_store, publisher, runner, monkeypatch) -> None:  # noqa: F811
    install(skill_store, tmp_path, publisher[0], "envecho")
    r = runner.run("env-echo", INPUT, granted=set())
    assert (r.ok, r.denied, r.fuel_used) == (False, True, 0)
    assert r.reason == "capability 'env:PALYRA_TEST_TOKEN' of skill 'env-echo' is not granted by policy"
    monkeypatch.setenv("PALYRA_TEST_TOKEN", "s3cret")
    r = runner.run("env-echo", INPUT, granted={"env:PALYRA_TEST_TOKEN"})
    assert (r.ok, r.output) == (True, {"echo": INPUT})


def test_quarantined_skill_is_denied(tmp_path, skill_store, publisher, runner) -> None:  # noqa: F811
    install(skill_store, tmp_path, publisher[0], "echo")
    skill_store.quarantine("echo", "operator hold")
    r = runner.run("echo", INPUT, granted=set())
    assert (r.ok, r.denied, r.reason) == (False, True, "skill 'echo' is quarantined: operator hold")
    skill_store.release("echo")
    assert runner.run("echo", INPUT, granted=set()).ok


def test_unknown_skill_and_bad_input(skill_store, runner) -> None:  # noqa: F811
    r = runner.run("nope", {}, granted=set())
    assert (r.ok, r.denied, r.reason) == (False, True, "skill 'nope' is not installed")


def _tamper(skill) -> None:
    path = skill.module_path
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # flip a bit in the last (data/code) byte
    path.write_bytes(bytes(data))


def test_reaudit_quarantines_tampered_module_and_emits_event(tmp_path, skill_store, publisher) -> None:  # noqa: F811
    clock = FakeClock(1_800_000_000_000)
    store = SkillStore(tmp_path / "state", clock=clock)
    store.install(build("echo", tmp_path / "src", key=publisher[0]))
    store.install(build("upper", tmp_path / "src", key=publisher[0]))
    events: list[tuple[str, dict]] = []
    auditor = ReAuditor(store, interval_ms=parse_reaudit_interval("6h"), clock=clock, emit=lambda e, p: events.append((e, p)))
    assert auditor.next_due_ms() == 1_800_000_000_000 + 6 * 3_600_000
    assert auditor.tick() is None
    _tamper(store.get("echo"))
    clock.advance(6 * 3_600_000)
    results = auditor.tick()
    assert results is not None
    by_id = {r.skill_id: r for r in results}
    assert by_id["upper"].ok and not by_id["upper"].newly_quarantined
    assert by_id["echo"].ok is False and by_id["echo"].newly_quarantined
    assert by_id["echo"].reason.startswith("file 'echo.wasm' was modified: sha256 ")
    skill = store.get("echo")
    assert skill.quarantined and skill.quarantine_reason.startswith("re-audit failed: file 'echo.wasm' was modified")
    assert [e for e, _ in events] == ["skill.quarantined"]
    assert events[0][1]["skill_id"] == "echo"
    # a second audit reports the failure again but does not re-emit
    assert auditor.run_now()[0].newly_quarantined is False and len(events) == 1
    runner = SkillRunner(store, tmp_path / "cache")
    try:
        r = runner.run("echo", INPUT, granted=set())
        assert r.denied and r.reason.startswith("skill 'echo' is quarantined: re-audit failed: file 'echo.wasm' was modified")
    finally:
        runner.close()
    with pytest.raises(PalyraError) as exc:
        store.release("echo")
    assert exc.value.message.startswith("cannot release skill 'echo': file 'echo.wasm' was modified")
    assert parse_reaudit_interval("0") == 0 and ReAuditor(store, interval_ms=0).next_due_ms() is None


def test_reaudit_quarantines_when_publisher_key_is_revoked(tmp_path, skill_store, publisher) -> None:  # noqa: F811
    skill_store.install(build("echo", tmp_path / "src", key=publisher[0]))
    skill_store.trust.remove("acme")
    (result,) = skill_store.audit()
    assert (result.ok, result.newly_quarantined) == (False, True)
    assert result.reason == "unknown publisher 'acme': not in the trust store"


def test_runner_refuses_module_tampered_after_it_was_cached(tmp_path, skill_store, publisher, runner) -> None:  # noqa: F811
    quarantined: list[str] = []
    runner.on_quarantine = lambda sid, why: quarantined.append(sid)
    skill = install(skill_store, tmp_path, publisher[0], "echo")
    assert runner.run("echo", INPUT, granted=set()).ok
    _tamper(skill)
    r = runner.run("echo", INPUT, granted=set())
    assert (r.ok, r.denied) == (False, True)
    assert r.reason == "skill 'echo' is quarantined: module 'echo.wasm' no longer matches the sha256 pinned at install"
    assert quarantined == ["echo"] and skill_store.get("echo").quarantined


CHILD = """
import sys, json
sys.path.insert(0, {tests!r})
from pathlib import Path
from palyra_ops.skills.store import SkillStore
from palyra_ops.skills.sandbox import SkillRunner
r = SkillRunner(SkillStore(Path({state!r})), Path({cache!r}))
res = r.run("echo", {{"prompt": "x"}}, granted=set())
print(json.dumps([res.ok, res.cache]))
r.close()
"""


def test_compile_cache_survives_restart(tmp_path, skill_store, publisher) -> None:  # noqa: F811
    install(skill_store, tmp_path, publisher[0], "echo")
    code = CHILD.format(tests=str(Path(__file__).parent), state=str(tmp_path / "state"), cache=str(tmp_path / "cache"))
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() for _ in range(2)]
    assert outs == ['[true, "compiled"]', '[true, "disk"]']
    (cached,) = list((tmp_path / "cache").glob("*.cwasm"))
    assert cached.name.startswith(skill_store.get("echo").module_sha256 + "-")
    assert oct(cached.stat().st_mode & 0o777) == "0o600"


def test_corrupt_cache_entry_is_recompiled(tmp_path, skill_store, publisher) -> None:  # noqa: F811
    install(skill_store, tmp_path, publisher[0], "echo")
    r = SkillRunner(skill_store, tmp_path / "cache")
    assert r.run("echo", INPUT, granted=set()).cache == "compiled"
    r.close()
    (cached,) = list((tmp_path / "cache").glob("*.cwasm"))
    cached.write_bytes(b"garbage")
    r = SkillRunner(skill_store, tmp_path / "cache")
    try:
        res = r.run("echo", INPUT, granted=set())
        assert (res.ok, res.cache) == (True, "compiled")
    finally:
        r.close()


def test_cache_dir_must_be_private(tmp_path, skill_store) -> None:  # noqa: F811
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    os.chmod(cache, 0o777)
    with pytest.raises(PalyraError) as exc:
        SkillRunner(skill_store, cache)
    assert exc.value.message == f"compile cache {cache} must be owned by this user and not group/world-writable"


@pytest.fixture
def http_server() -> Iterator[int]:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            body = b"hello from " + self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _fetch_skill(store, tmp_path, key, port: int, url: str):
    import json

    req = json.dumps({"method": "GET", "url": url})
    subst = {"REQUEST_LEN": str(len(req)), "REQUEST": req.replace("\\", "\\\\").replace('"', '\\"'), "PORT": str(port)}
    return store.install(build("fetch", tmp_path / "src", key=key, subst=subst))


def test_http_capability_reaches_declared_host_only(tmp_path, skill_store, publisher, runner, http_server) -> None:  # noqa: F811
    port = http_server
    skill = _fetch_skill(skill_store, tmp_path, publisher[0], port, f"http://127.0.0.1:{port}/status")
    assert skill.capabilities == (f"http:127.0.0.1:{port}",)
    r = runner.run("fetcher", INPUT, granted=set())
    assert r.denied and r.reason == f"capability 'http:127.0.0.1:{port}' of skill 'fetcher' is not granted by policy"
    r = runner.run("fetcher", INPUT, granted={f"http:127.0.0.1:{port}"})
    assert r.ok and r.output["status"] == 200 and r.output["body"] == "hello from /status"


def test_http_to_undeclared_host_is_refused_by_the_host(tmp_path, skill_store, publisher, runner, http_server) -> None:  # noqa: F811
    port = http_server
    _fetch_skill(skill_store, tmp_path, publisher[0], port, f"http://localhost:{port}/x")
    r = runner.run("fetcher", INPUT, granted={f"http:127.0.0.1:{port}"})
    assert r.ok and r.output == {"status": 0, "error": "host 'localhost' is not among the skill's declared http hosts"}


def test_http_import_without_declaration_is_refused(tmp_path, skill_store, publisher) -> None:  # noqa: F811
    text = (HERE / "fetch" / "skill.yaml").read_text().split("capabilities:")[0] + "quotas: {memory: 1MiB}\n"
    with pytest.raises(PalyraError) as exc:
        skill_store.install(build("fetch", tmp_path / "src", key=publisher[0], manifest=text, subst={"REQUEST_LEN": "2", "REQUEST": "{}"}))
    assert exc.value.message == "module 'fetch.wasm' imports palyra_http.fetch but the manifest declares no http capability"


def test_policy_denied_capability_is_denied_at_run_time(tmp_path, skill_store, publisher, runner) -> None:  # noqa: F811
    from palyra_ops.policy import authorize_skill

    skill = install(skill_store, tmp_path, publisher[0], "envecho")
    policies = [{"name": "ops", "spec": {"rules": [
        {"effect": "allow", "principals": ["user:alice"], "actions": ["skill.execute:env-echo", "skill.capability:env-echo:*"]},
        {"effect": "deny", "principals": ["*"], "actions": ["skill.capability:*:env:*"]},
    ]}}]
    auth = authorize_skill(policies, principal="user:alice", skill_id="env-echo", skill=skill)
    assert (auth.decision.allowed, auth.decision.rule, auth.granted) == (False, "policy ops rule 2", set())
    r = runner.run("env-echo", INPUT, granted=auth.granted)
    assert (r.ok, r.denied, r.reason) == (False, True, "capability 'env:PALYRA_TEST_TOKEN' of skill 'env-echo' is not granted by policy")
