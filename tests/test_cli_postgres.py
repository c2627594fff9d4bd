"""plan / apply / status on a PostgreSQL journal, through the real CLI (SPEC §4, §11).

`--journal postgresql://…` (or $PALYRA_JOURNAL) puts the same journal in PostgreSQL: every command
works as on SQLite — apply in one transaction, a saved plan's stale check, status in sync — and no
file or directory is created for the URL (side files go under the state root).
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from gitops_helpers import routine_yaml, write
from test_cli_journal_errors import run_cli, snapshot_tree

from palyra_ops.journal import open_journal


def _tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]


def test_plan_apply_status_on_a_postgresql_journal(tmp_path: Path, pg_url: str) -> None:
    d = tmp_path / "routines.d"
    write(d, "a.yaml", routine_yaml("a", every="1h"))
    write(d, "b.yaml", routine_yaml("b"))
    env = {"PALYRA_JOURNAL": pg_url}

    plan = run_cli(["plan", "--dir", str(d), "--detailed-exitcode"], tmp_path, env=env)
    assert plan.returncode == 2, plan.stderr
    assert "routine \"a\"" in plan.stdout or "a" in plan.stdout
    status0 = run_cli(["status", "--dir", str(d), "--url", "http://127.0.0.1:9"], tmp_path, env=env)
    assert status0.returncode == 0, status0.stderr
    assert _tables(pg_url) == [], "plan and status are read-only: no tables in a database nobody applied to"
    applied = run_cli(["apply", "--dir", str(d), "--auto-approve", "--journal", pg_url], tmp_path)
    assert applied.returncode == 0, applied.stderr
    with open_journal(pg_url) as j:
        assert [r.name for r in j.list_resources("Routine")] == ["a", "b"] and j.serial() == 1
        job = j.get_job("a")
        assert job is not None and job["trigger_kind"] == "schedule" and job["next_run_at_unix_ms"] is not None
        last = j.last_apply()
        assert last is not None and (last["serial"], last["added"]) == (1, 2)

    again = run_cli(["plan", "--dir", str(d), "--detailed-exitcode"], tmp_path, env=env)
    assert again.returncode == 0, (again.stdout, again.stderr)

    status = run_cli(["status", "--dir", str(d), "--url", "http://127.0.0.1:9", "--output", "json"], tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["journal"] == pg_url and report["serial"] == 1
    assert {r["routine_id"] for r in report["next_runs"]} == {"a", "b"}

    # a saved plan is checked against the journal's serial: stale once another apply got there first
    write(d, "c.yaml", routine_yaml("c"))
    saved = tmp_path / "c.plan"
    out = run_cli(["plan", "--dir", str(d), "--out", str(saved)], tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    write(d, "d.yaml", routine_yaml("d"))
    assert run_cli(["apply", "--dir", str(d), "--auto-approve"], tmp_path, env=env).returncode == 0
    stale = run_cli(["apply", str(saved), "--auto-approve"], tmp_path, env=env)
    assert stale.returncode == 1 and "Traceback" not in stale.stderr and "stale" in stale.stderr.lower(), stale.stderr
    with open_journal(pg_url) as j:
        assert [r.name for r in j.list_resources("Routine")] == ["a", "b", "c", "d"] and j.serial() == 2

    assert not any("postgres" in p and ":" in p for p in snapshot_tree(tmp_path)), "no directory named after the URL"


def test_apply_directory_plans_against_the_postgresql_journal_itself(tmp_path: Path, pg_url: str,
                                                                      monkeypatch) -> None:
    """The watcher's path (`apply_directory`): the plan is made against the same PostgreSQL journal,
    so a second apply sees what the first wrote — a removed file deletes, an unchanged one is kept."""
    from palyra_ops.reconcile import apply_directory

    monkeypatch.setenv("PALYRA_STATE_ROOT", str(tmp_path / "state"))
    d = tmp_path / "routines.d"
    write(d, "a.yaml", routine_yaml("a"))
    write(d, "b.yaml", routine_yaml("b"))
    with open_journal(pg_url) as j:
        plan, _ = apply_directory(j, d, origin="test")
        assert sorted(c.name for c in plan.changes if c.action == "create") == ["a", "b"]
        (d / "b.yaml").unlink()
        plan, _ = apply_directory(j, d, origin="test")
        assert [(c.action, c.name) for c in plan.changes if c.action.is_change] == [("delete", "b")]
        assert [r.name for r in j.list_resources("Routine")] == ["a"] and j.serial() == 2


def test_explain_on_an_empty_postgresql_database_creates_nothing(tmp_path: Path, pg_url: str) -> None:
    """explain is read only, like status: a database nobody applied to is "does not exist", not
    migrated into a journal by asking; the password never reaches the message."""
    done = run_cli(["explain", "a", "--journal", pg_url], tmp_path)
    assert done.returncode == 1 and done.stderr.endswith("does not exist (nothing has been applied there)\n")
    assert done.stderr.startswith("palyra-ops: journal postgresql://") and "Traceback" not in done.stderr
    password = psycopg.conninfo.conninfo_to_dict(pg_url).get("password")
    assert not password or password not in done.stderr
    assert _tables(pg_url) == []
