"""Referenced skills: one rule for validate, plan, apply, status and the daemon (SPEC §2, issue 9 point 14).

With a skills index under the state root, a reference to a skill it does not list is an error
everywhere; with no index at all the check cannot run, and every command — and the daemon's
watcher — says so in a warning and accepts the document (palyra_ops/skillrefs.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from gitops_helpers import routine_yaml, write
from skills.kit import build, new_key

from palyra_ops.cli import main
from palyra_ops.skills.store import SkillStore

SKILL_SPEC = "skill:\n  id: upper\n  input: {since: 24h}\n"


def test_skill_reference_must_be_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("PALYRA_STATE_ROOT", str(state))
    d = tmp_path / "r"
    f = write(d, "a.yaml", routine_yaml("digest", extra_spec=SKILL_SPEC))
    line = next(i for i, t in enumerate(f.read_text().splitlines(), 1) if "id: upper" in t)
    journal = str(state / "j.sqlite3")
    unchecked = (f"{d}/a.yaml:{line}:9: spec.skill.id: skill 'upper' not checked: no skills index under {state} "
                 "(install it with `palyra-ops skills install PKG`)")

    # no skills index in this state root (a routines repo's own CI): accepted, and said so everywhere
    assert main(["validate", str(d)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{unchecked.split(': spec')[0]}: warning: spec{unchecked.split(': spec', 1)[1]}",
        "Valid: 1 file, 1 document (1 routine, 0 channels, 0 policies). 1 warning."]
    assert main(["plan", "--dir", str(d), "--journal", journal]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"warning: {unchecked}\n" and "Plan: 1 to add" in captured.out
    assert main(["status", "--dir", str(d), "--journal", journal]) == 0
    assert f"  warning: {unchecked}" in capsys.readouterr().out.splitlines()
    assert not state.exists()  # read-only commands created nothing

    key, pub = new_key()
    store = SkillStore(state)
    store.trust.add("acme", pub)
    store.install(build("echo", tmp_path / "pkg", key=key))
    assert main(["validate", str(d)]) == 1
    out = capsys.readouterr().out
    assert f"{d}/a.yaml:{line}:9: spec.skill.id: skill 'upper' is not installed (palyra-ops skills list)" in out
    assert main(["plan", "--dir", str(d), "--journal", journal]) == 1
    assert "skill 'upper' is not installed" in capsys.readouterr().err
    assert main(["apply", "--dir", str(d), "--journal", journal, "--auto-approve"]) == 1
    assert "skill 'upper' is not installed" in capsys.readouterr().err
    assert main(["status", "--dir", str(d), "--journal", journal, "--detailed-exitcode"]) == 1

    store.install(build("upper", tmp_path / "pkg", key=key))
    assert main(["validate", str(d)]) == 0
    assert "warning" not in capsys.readouterr().out
    assert main(["plan", "--dir", str(d), "--journal", journal]) == 0
    captured = capsys.readouterr()
    assert "Plan: 1 to add" in captured.out and captured.err == ""


def _validate(state: Path, d: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PALYRA_STATE_ROOT": str(state), "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "palyra_ops", "validate", str(d)], env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_daemon_applies_the_same_rule_as_the_cli(daemon_factory, tmp_path: Path) -> None:
    """The watcher used to treat "no index" as "no skills" (files Invalid that validate accepted) and
    froze the installed set at start-up (a skill installed later stayed "not installed")."""
    d = daemon_factory(extra_args=["--watch", "--rescan-interval", "1s"])
    state, c = d.paths.state_root, d.client()
    d.write("a.yaml", routine_yaml("digest", extra_spec=SKILL_SPEC))

    def file_state() -> str | None:
        files = c.get("/console/v1/system/status").json()["watcher"].get("files", {})
        return files.get("a.yaml", {}).get("state")

    # 1. no index: the CLI warns and accepts; so does the daemon, which applies the routine
    assert _validate(state, d.paths.dir).returncode == 0
    d.wait_for(lambda: c.get("/console/v1/routines/digest").status_code == 200, timeout=30, what="applied")
    assert file_state() == "Synced"
    d.wait_for(lambda: "skill 'upper' not checked: no skills index under" in d.log(), timeout=30, what="warning logged")
    # its run is refused, with the reason on the record
    r = c.post("/console/v1/routines/dispatch", json={"routine_id": "digest"})
    assert r.status_code == 202, r.text
    run = d.wait_for(lambda: next((x for x in d.runs("digest") if x["status"] == "denied"), None), timeout=30, what="denied run")
    assert run["policy_rule"] == "baseline: skill not installed"

    # 2. an index without that skill: an error for the CLI and for the daemon alike
    key, pub = new_key()
    store = SkillStore(state)
    store.trust.add("acme", pub)
    store.install(build("echo", tmp_path / "pkg", key=key))
    assert _validate(state, d.paths.dir).returncode == 1
    d.wait_for(lambda: file_state() == "Invalid", timeout=30, what="the daemon marks the file invalid")

    # 3. installed while the daemon runs: accepted by both, without a restart
    store.install(build("upper", tmp_path / "pkg", key=key))
    assert _validate(state, d.paths.dir).returncode == 0
    d.wait_for(lambda: file_state() == "Synced", timeout=30, what="the daemon accepts the installed skill")
