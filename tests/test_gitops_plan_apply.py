"""plan → apply → plan, field-level diffs, pruning, ownership, drift, stale plans (issue: GitOps core)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from gitops_helpers import channel_yaml, routine_yaml, write

from palyra_ops.cli import main
from palyra_ops.clock import FakeClock, to_ms
from palyra_ops.errors import PalyraError, StalePlan, ValidationFailed
from palyra_ops.journal import open_journal, read_snapshot
from palyra_ops.model import Resource
from palyra_ops.plan import Plan
from palyra_ops.reconcile import apply_plan, plan_directory, upsert_resource

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "routines.d"
    d.mkdir()
    write(d, "sre.yaml", routine_yaml("daily-report"), routine_yaml("hourly-check", cron="0 * * * *"), channel_yaml("reports"))
    write(d, "team/personal.yaml", routine_yaml("morning", cron="30 7 * * 1-5", timezone="Europe/Prague"))
    return d, tmp_path / "state" / "journal.sqlite3"


def cli(*args: str) -> int:
    return main(list(args))


def test_plan_apply_plan_converges(tree, capsys) -> None:
    d, j = tree
    assert cli("plan", "--dir", str(d), "--journal", str(j), "--detailed-exitcode") == 2
    out = capsys.readouterr().out
    assert "Plan: 4 to add, 0 to change, 0 to delete." in out
    assert '+ routine "daily-report"' in out
    assert not j.exists(), "plan must not create the journal"

    assert cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve") == 0
    assert "Apply complete! Resources: 4 added, 0 changed, 0 deleted." in capsys.readouterr().out

    assert cli("plan", "--dir", str(d), "--journal", str(j), "--detailed-exitcode") == 0
    assert "No changes. The journal matches the directory." in capsys.readouterr().out

    # a second apply of the same tree is a no-op: no serial bump, no apply-log entry
    with open_journal(j) as jr:
        serial, log = jr.serial(), len(jr.apply_log())
    assert cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve") == 0
    with open_journal(j) as jr:
        assert (jr.serial(), len(jr.apply_log())) == (serial, log)


def test_editing_one_field_shows_exactly_that_field(tree, capsys) -> None:
    d, j = tree
    cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve")
    capsys.readouterr()
    write(d, "sre.yaml", routine_yaml("daily-report", extra_spec="policies:\n  concurrency: replace\n"),
          routine_yaml("hourly-check", cron="0 * * * *"), channel_yaml("reports"))
    assert cli("plan", "--dir", str(d), "--journal", str(j), "--output", "json", "--detailed-exitcode") == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["format_version"] == 1
    assert doc["summary"] == {"add": 0, "change": 1, "delete": 0, "unchanged": 3, "unmanaged": 0}
    (chg,) = [c for c in doc["changes"] if c["action"] != "no-op"]
    assert (chg["kind"], chg["name"], chg["action"]) == ("Routine", "daily-report", "update")
    assert chg["fields"] == [{"path": "spec.policies.concurrency", "before": "forbid", "after": "replace"}]
    assert chg["reason"] == "changed in sre.yaml"
    assert chg["before"]["spec"]["policies"]["concurrency"] == "forbid"
    assert chg["after"]["spec"]["policies"]["concurrency"] == "replace"
    assert chg["schedule"] is None  # the schedule itself did not change

    cli("plan", "--dir", str(d), "--journal", str(j))
    text = capsys.readouterr().out
    assert '~ spec.policies.concurrency: "forbid" → "replace"' in text
    assert "unchanged fields hidden" in text
    assert "Plan: 0 to add, 1 to change, 0 to delete." in text


def test_deleting_a_file_prunes_only_its_managed_routines(tree, capsys) -> None:
    d, j = tree
    cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve")
    (d / "team" / "personal.yaml").unlink()
    assert cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve") == 0
    out = capsys.readouterr().out
    assert '- routine "morning"' in out
    assert "Plan: 0 to add, 0 to change, 1 to delete." in out
    snap = read_snapshot(j)
    assert sorted(n for (k, n) in snap.resources if k == "Routine") == ["daily-report", "hourly-check"]
    assert "morning" not in snap.jobs


def test_unmanaged_routine_survives_apply_and_prune_flag(tree, capsys) -> None:
    d, j = tree
    cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve")
    with open_journal(j) as jr:
        res = Resource.from_spec("Routine", "adhoc", {"prompt": "x", "trigger": {"kind": "manual"}})
        stored, created = upsert_resource(jr, res)
        assert created and not stored.managed
    capsys.readouterr()
    assert cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve") == 0
    out = capsys.readouterr().out
    assert '? routine "adhoc"' in out and "left alone" in out
    assert ("Routine", "adhoc") in read_snapshot(j).resources

    assert cli("plan", "--dir", str(d), "--journal", str(j), "--prune-unmanaged") == 0
    assert "Plan: 0 to add, 0 to change, 1 to delete." in capsys.readouterr().out


def test_drift_is_shown_and_apply_restores_git_version(tree, capsys) -> None:
    d, j = tree
    cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve")
    with open_journal(j) as jr:
        res = Resource.from_spec("Routine", "daily-report", {
            "prompt": "changed by hand", "trigger": {"kind": "schedule", "schedule": {"cron": "0 9 * * *"}}})
        stored, created = upsert_resource(jr, res)
        assert not created and stored.managed and stored.drifted
    capsys.readouterr()
    cli("plan", "--dir", str(d), "--journal", str(j), "--output", "json")
    (chg,) = [c for c in json.loads(capsys.readouterr().out)["changes"] if c["action"] == "update"]
    assert chg["drift"] is True
    assert chg["reason"].startswith("drift: changed outside git")
    assert chg["fields"] == [{"path": "spec.prompt", "before": "changed by hand", "after": "say hello"}]
    cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve")
    with open_journal(j) as jr:
        back = jr.get_resource("Routine", "daily-report")
        assert back is not None and back.body["spec"]["prompt"] == "say hello" and not back.drifted


def test_stale_saved_plan_is_refused(tree, capsys, tmp_path) -> None:
    d, j = tree
    planfile = tmp_path / "p.json"
    # made against a journal that does not exist yet; someone else applies first
    assert cli("plan", "--dir", str(d), "--journal", str(j), "--out", str(planfile)) == 0
    assert cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve") == 0
    capsys.readouterr()
    assert cli("apply", str(planfile), "--auto-approve") == 1
    err = capsys.readouterr().err
    assert "stale plan: the journal changed since the plan was made (serial 0 → 1); run plan again" in err

    # a fresh saved plan applies; applying it twice is stale the second time
    write(d, "extra.yaml", routine_yaml("extra"))
    assert cli("plan", "--dir", str(d), "--journal", str(j), "--out", str(planfile)) == 0
    assert cli("apply", str(planfile), "--auto-approve") == 0
    capsys.readouterr()
    assert cli("apply", str(planfile), "--auto-approve") == 1
    assert "stale plan" in capsys.readouterr().err

    # a plan made against another journal (other lineage) is refused too
    other = tmp_path / "other.sqlite3"
    cli("apply", "--dir", str(d), "--journal", str(other), "--auto-approve")
    write(d, "extra2.yaml", routine_yaml("extra2"))
    cli("plan", "--dir", str(d), "--journal", str(other), "--out", str(planfile))
    capsys.readouterr()
    assert cli("apply", str(planfile), "--journal", str(j), "--auto-approve") == 1
    assert "stale plan: it was made against a different journal" in capsys.readouterr().err


def test_plan_file_roundtrip_and_bad_plan_file(tree, tmp_path, capsys) -> None:
    d, j = tree
    planfile = tmp_path / "p.json"
    cli("plan", "--dir", str(d), "--journal", str(j), "--out", str(planfile))
    plan = Plan.load(planfile)
    assert Plan.from_json(plan.to_json()).to_json() == plan.to_json()
    planfile.write_text("{not json")
    capsys.readouterr()
    assert cli("apply", str(planfile), "--auto-approve") == 1
    assert capsys.readouterr().err.startswith("palyra-ops: cannot read plan file")
    planfile.write_text(json.dumps({"format_version": 99}))
    assert cli("apply", str(planfile), "--auto-approve") == 1
    assert "unsupported plan file format_version 99" in capsys.readouterr().err


def test_empty_directory_guard(tree, capsys) -> None:
    d, j = tree
    cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve")
    for p in sorted(d.rglob("*.yaml")):
        p.unlink()
    capsys.readouterr()
    assert cli("plan", "--dir", str(d), "--journal", str(j)) == 1
    err = capsys.readouterr().err
    assert "refusing to delete all 4 managed object(s): the directory" in err and "is empty" in err
    assert cli("plan", "--dir", str(d / "nope"), "--journal", str(j)) == 1
    assert capsys.readouterr().err == f"palyra-ops: routine directory {d / 'nope'} does not exist (pass --dir DIR)\n"
    assert cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve", "--allow-empty") == 0
    assert read_snapshot(j).resources == {}


def test_apply_without_terminal_needs_auto_approve(tree) -> None:
    d, j = tree
    r = subprocess.run(
        [str(Path(".venv/bin/palyra-ops").resolve()), "apply", "--dir", str(d), "--journal", str(j)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "palyra-ops: apply needs confirmation: run it on a terminal or pass --auto-approve"
    )
    assert "Traceback" not in r.stderr
    assert not j.exists() or read_snapshot(j).resources == {}


def test_next_run_recomputed_only_for_changed_schedules(tree) -> None:
    d, j = tree
    clock = FakeClock(T0)
    with open_journal(j, clock=clock) as jr:
        plan, _ = plan_directory(d, j, clock=clock)
        apply_plan(jr, plan, directory=d)
        assert jr.get_job("daily-report")["next_run_at_unix_ms"] == to_ms(datetime(2026, 11, 28, 9, 0, tzinfo=UTC))
        assert jr.get_job("hourly-check")["next_run_at_unix_ms"] == to_ms(datetime(2026, 11, 27, 13, 0, tzinfo=UTC))
        assert jr.get_job("morning")["next_run_at_unix_ms"] == to_ms(datetime(2026, 11, 30, 6, 30, tzinfo=UTC))

        # two days later: edit daily-report's prompt (schedule untouched) and hourly-check's cron
        clock.set(datetime(2026, 11, 29, 10, 17, tzinfo=UTC))
        write(d, "sre.yaml", routine_yaml("daily-report", prompt="other"),
              routine_yaml("hourly-check", cron="15 * * * *"), channel_yaml("reports"))
        plan, _ = plan_directory(d, j, clock=clock)
        apply_plan(jr, plan, directory=d)
        # unchanged schedule keeps its (now past-due) next run for the scheduler's misfire policy
        assert jr.get_job("daily-report")["next_run_at_unix_ms"] == to_ms(datetime(2026, 11, 28, 9, 0, tzinfo=UTC))
        # changed schedule: from the apply time, never replaying earlier times
        assert jr.get_job("hourly-check")["next_run_at_unix_ms"] == to_ms(datetime(2026, 11, 29, 10, 15, tzinfo=UTC)) + 3_600_000


def test_moved_file_keeps_routine_and_next_run(tree, capsys) -> None:
    d, j = tree
    clock = FakeClock(T0)
    with open_journal(j, clock=clock) as jr:
        apply_plan(jr, plan_directory(d, j, clock=clock)[0], directory=d)
        before = jr.get_job("morning")
        (d / "team" / "personal.yaml").rename(d / "personal.yaml")
        clock.advance(3_600_000)
        plan, _ = plan_directory(d, j, clock=clock)
        (chg,) = [c for c in plan.changes if c.is_change]
        assert (chg.action, chg.reason) == ("update", "moved from team/personal.yaml to personal.yaml")
        assert chg.fields == []
        apply_plan(jr, plan, directory=d)
        assert jr.get_job("morning")["next_run_at_unix_ms"] == before["next_run_at_unix_ms"]
        assert jr.get_resource("Routine", "morning").source_file == "personal.yaml"


def test_schedule_preview_in_plan_with_dst_warning(tmp_path, capsys) -> None:
    d = tmp_path / "r"
    write(d, "a.yaml", routine_yaml("night", cron="30 2 * * *", timezone="Europe/Prague"))
    clock = FakeClock(datetime(2027, 3, 20, 12, 0, tzinfo=UTC))
    plan, _ = plan_directory(d, tmp_path / "j.sqlite3", clock=clock)
    (chg,) = plan.changes
    assert chg.schedule is not None
    assert chg.schedule.after == ["2027-03-21T02:30:00+01:00", "2027-03-22T02:30:00+01:00", "2027-03-23T02:30:00+01:00"]
    assert any("2027-03-28" in n for n in chg.schedule.notes), chg.schedule.notes


def test_apply_log_records_git_commit_and_dirty_flag(tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    d = repo / "routines.d"
    write(d, "a.yaml", routine_yaml("a"))
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    j = tmp_path / "j.sqlite3"
    assert cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve") == 0
    with open_journal(j) as jr:
        last = jr.last_apply()
        assert (last["git_commit"], last["git_dirty"], last["added"]) == (head, 0, 1)
    write(d, "b.yaml", routine_yaml("b"))  # uncommitted
    assert cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve") == 0
    with open_journal(j) as jr:
        last = jr.last_apply()
        assert (last["git_commit"], last["git_dirty"], last["added"]) == (head, 1, 1)
    capsys.readouterr()
    assert cli("status", "--dir", str(d), "--journal", str(j)) == 0
    out = capsys.readouterr().out
    assert out.startswith("State: Synced")
    assert f"from {head[:12]} (dirty)" in out


def test_status_out_of_sync_and_invalid(tree, capsys) -> None:
    d, j = tree
    cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve")
    write(d, "new.yaml", routine_yaml("newbie"))
    capsys.readouterr()
    cli("status", "--dir", str(d), "--journal", str(j), "--output", "json")
    rep = json.loads(capsys.readouterr().out)
    assert rep["state"] == "OutOfSync"
    assert rep["out_of_sync"] == [{"kind": "Routine", "name": "newbie", "action": "create", "reason": "new in new.yaml", "file": "new.yaml"}]
    (d / "new.yaml").write_text("apiVersion: palyra/v1\nkind: Routine\nmetadata: {name: x\n")
    cli("status", "--dir", str(d), "--journal", str(j), "--output", "json")
    rep = json.loads(capsys.readouterr().out)
    assert rep["state"] == "Invalid"
    assert [f["file"] for f in rep["invalid_files"]] == [str(d / "new.yaml")]


def test_invalid_directory_plans_nothing(tree) -> None:
    d, j = tree
    (d / "bad.yaml").write_text("apiVersion: palyra/v1\nkind: Routine\nmetadata: {name: Bad_Name}\nspec: {}\n")
    with pytest.raises(ValidationFailed):
        plan_directory(d, j)
    assert not j.exists()


def test_apply_is_atomic_on_conflicting_writes(tree) -> None:
    d, j = tree
    clock = FakeClock(T0)
    with open_journal(j, clock=clock) as jr:
        plan, _ = plan_directory(d, j, clock=clock)
        upsert_resource(jr, Resource.from_spec("Routine", "sneaky", {"prompt": "x", "trigger": {"kind": "manual"}}))
        with pytest.raises(StalePlan):
            apply_plan(jr, plan, directory=d)
        assert sorted(n for (_, n) in jr.snapshot().resources) == ["sneaky"]
    assert isinstance(StalePlan("x"), PalyraError)


def test_cached_hashes_still_show_drift_fields_and_apply_bodies(tree, capsys) -> None:
    """A second plan reads object hashes from the cache; bodies are built on demand for changes."""
    d, j = tree
    cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve")
    with open_journal(j) as jr:
        upsert_resource(jr, Resource.from_spec("Routine", "hourly-check", {
            "prompt": "hand edit", "trigger": {"kind": "schedule", "schedule": {"cron": "0 * * * *"}}}))
    capsys.readouterr()
    cli("plan", "--dir", str(d), "--journal", str(j), "--output", "json")
    (chg,) = [c for c in json.loads(capsys.readouterr().out)["changes"] if c["action"] == "update"]
    assert chg["fields"] == [{"path": "spec.prompt", "before": "hand edit", "after": "say hello"}]
    assert chg["after"]["spec"]["trigger"]["schedule"]["cron"] == "0 * * * *"
    assert cli("apply", "--dir", str(d), "--journal", str(j), "--auto-approve") == 0
    with open_journal(j) as jr:
        stored = jr.get_resource("Routine", "hourly-check")
        assert stored.body["spec"]["prompt"] == "say hello" and not stored.drifted
        assert stored.hash == Resource("Routine", "hourly-check", stored.body).hash
