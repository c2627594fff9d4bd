"""validate/plan check that referenced skills are installed under the state root (SPEC §2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitops_helpers import routine_yaml, write
from skills.kit import build, new_key

from palyra_ops.cli import main
from palyra_ops.skills.store import SkillStore


def test_skill_reference_must_be_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("PALYRA_STATE_ROOT", str(state))
    d = tmp_path / "r"
    f = write(d, "a.yaml", routine_yaml("digest", extra_spec="skill:\n  id: upper\n  input: {since: 24h}\n"))
    line = next(i for i, t in enumerate(f.read_text().splitlines(), 1) if "id: upper" in t)

    # no skills index in this state root (a routines repo's own CI): the check is skipped
    assert main(["validate", str(d)]) == 0
    capsys.readouterr()

    key, pub = new_key()
    store = SkillStore(state)
    store.trust.add("acme", pub)
    store.install(build("echo", tmp_path / "pkg", key=key))
    assert main(["validate", str(d)]) == 1
    out = capsys.readouterr().out
    assert f"{d}/a.yaml:{line}:9: spec.skill.id: skill 'upper' is not installed (palyra-ops skills list)" in out
    assert main(["plan", "--dir", str(d), "--journal", str(state / "j.sqlite3")]) == 1
    assert "skill 'upper' is not installed" in capsys.readouterr().err

    store.install(build("upper", tmp_path / "pkg", key=key))
    assert main(["validate", str(d)]) == 0
    assert main(["plan", "--dir", str(d), "--journal", str(state / "j.sqlite3")]) == 0
    assert "Plan: 1 to add" in capsys.readouterr().out
