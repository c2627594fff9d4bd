"""Renames that keep history: `metadata.previous_names` (SPEC §12), validated, planned as a `move`,
applied as a rename in the journal — through the CLI on a real SQLite journal, and on a running
daemon."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from gitops_helpers import channel_yaml, routine_yaml, write

from palyra_ops.cli import main
from palyra_ops.clock import to_ms
from palyra_ops.journal import new_id, open_journal


def renamed(new: str, *previous: str, cron: str = "0 9 * * *", prompt: str = "say hello") -> str:
    text = routine_yaml(new, cron=cron, prompt=prompt)
    names = ", ".join(previous)
    return text.replace(f"  name: {new}\n", f"  name: {new}\n  previous_names: [{names}]\n")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "palyra_ops", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})


# -- validation ----------------------------------------------------------------------------------


def test_previous_names_are_validated(tmp_path: Path) -> None:
    d = tmp_path / "routines.d"
    write(d, "a.yaml", renamed("alpha", "beta"), routine_yaml("beta"))
    write(d, "b.yaml", renamed("gamma", "old", "gamma"), renamed("delta", "old"))
    write(d, "c.yaml", channel_yaml("pager").replace("  name: pager\n", "  name: pager\n  previous_names: [pg]\n"))
    write(d, "d.yaml", renamed("eps", "Not_A_Name"))
    r = run_cli("validate", str(d))
    assert r.returncode == 1
    lines = [line for line in r.stdout.splitlines() if line.startswith(str(d))]
    assert lines == [
        f"{d}/a.yaml:6:20: metadata.previous_names[0]: 'beta' is the name of a live routine "
        f"(defined at {d}/a.yaml:18:9); a previous name must not be in use",
        f"{d}/b.yaml:6:25: metadata.previous_names[1]: 'gamma' is this routine's own name, not a previous one",
        f"{d}/b.yaml:19:20: metadata.previous_names[0]: 'old' is already a previous name of routine 'gamma'",
        f"{d}/c.yaml:6:3: metadata.previous_names: only a Routine can be renamed with previous_names, not a Channel",
        f"{d}/d.yaml:6:20: metadata.previous_names[0]: 'Not_A_Name' is not a valid name (lowercase letters, digits, "
        "'.', '_' or '-', 1-63 characters, starting and ending with a letter or digit)",
    ], r.stdout
    assert r.stdout.endswith("Invalid: 5 errors in 4 of 4 files.\n")


# -- plan and apply ------------------------------------------------------------------------------

T0 = to_ms(datetime(2026, 11, 27, 12, 0, tzinfo=UTC))


@pytest.fixture
def applied(tmp_path: Path) -> tuple[Path, Path]:
    """`old` applied, with three runs recorded the way the scheduler records them."""
    d = tmp_path / "routines.d"
    j = tmp_path / "state" / "journal.sqlite3"
    write(d, "a.yaml", routine_yaml("old", cron="0 9 * * 1"), routine_yaml("other"))
    assert main(["apply", "--dir", str(d), "--journal", str(j), "--auto-approve"]) == 0
    with open_journal(j) as jr:
        for i in range(3):
            nominal = T0 - (3 - i) * 7 * 86_400_000
            jr.insert_run(run_id=new_id(), routine_id="old", occurrence_key=f"old|{nominal}", scheduled_at_ms=nominal,
                          trigger_kind="schedule", status="succeeded", attempt=1, created_at_ms=nominal)
        jr.update_job("old", last_status="succeeded")
    return d, j


def test_a_rename_plans_as_one_move_and_keeps_history(applied, capsys) -> None:
    d, j = applied
    with open_journal(j) as jr:
        job_before = jr.get_job("old")
        runs_before = [r["run_id"] for r in jr.runs_in_order("old")]
    assert job_before is not None and len(runs_before) == 3
    write(d, "a.yaml", renamed("new", "old", cron="0 9 * * 1"), routine_yaml("other"))
    capsys.readouterr()

    assert main(["plan", "--dir", str(d), "--journal", str(j)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("palyra-ops will perform the following actions:\n\n"
                           '  # routine "old" has moved to "new" (metadata.previous_names in a.yaml)\n'
                           '  ~ routine "new"\n'
                           '      ~ metadata.previous_names: (none) → ["old"]\n')
    assert "Plan: 0 to add, 1 to change, 0 to delete." in text
    assert "will be deleted" not in text and "will be created" not in text

    assert main(["plan", "--dir", str(d), "--journal", str(j), "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    moves = [c for c in doc["changes"] if c["action"] != "no-op"]
    assert [(c["kind"], c["name"], c["action"], c["moved_from"]) for c in moves] == [("Routine", "new", "move", "old")]
    assert moves[0]["schedule"] is None  # same schedule: the next run does not move
    assert doc["summary"] == {"add": 0, "change": 1, "delete": 0, "unchanged": 1, "unmanaged": 0}

    assert main(["apply", "--dir", str(d), "--journal", str(j), "--auto-approve"]) == 0
    assert "Apply complete! Resources: 0 added, 1 changed, 0 deleted." in capsys.readouterr().out
    with open_journal(j) as jr:
        assert jr.get_resource("Routine", "old") is None and jr.get_job("old") is None
        job = jr.get_job("new")
        assert job is not None
        for key in ("next_run_at_unix_ms", "anchor_ms", "schedule_fingerprint", "last_status"):
            assert job[key] == job_before[key], key  # type: ignore[literal-required]
        runs = jr.runs_in_order("new")
        assert [r["run_id"] for r in runs] == runs_before
        assert all(r["occurrence_key"] == f"new|{r['scheduled_at_ms']}" for r in runs)
        stored = jr.get_resource("Routine", "new")
        assert stored is not None and stored.body["metadata"]["previous_names"] == ["old"] and not stored.drifted
    assert main(["plan", "--dir", str(d), "--journal", str(j), "--detailed-exitcode"]) == 0  # converged


def test_a_move_with_edits_shows_the_fields_and_the_new_schedule(applied, capsys) -> None:
    d, j = applied
    write(d, "a.yaml", renamed("new", "old", cron="0 10 * * 1", prompt="hello again"), routine_yaml("other"))
    capsys.readouterr()
    assert main(["plan", "--dir", str(d), "--journal", str(j), "--output", "json"]) == 0
    (move,) = [c for c in json.loads(capsys.readouterr().out)["changes"] if c["action"] == "move"]
    assert [f["path"] for f in move["fields"]] == ["metadata.previous_names", "spec.prompt",
                                                   "spec.trigger.schedule.cron"]
    before, after = (datetime.fromisoformat(move["schedule"][k][0]) for k in ("before", "after"))
    assert (before.weekday(), before.hour, after.weekday(), after.hour) == (0, 9, 0, 10)  # Mondays, 09:00 → 10:00


def test_two_renames_in_a_row_and_a_targeted_move(applied, capsys) -> None:
    d, j = applied
    write(d, "a.yaml", renamed("newest", "newer", "old", cron="0 9 * * 1"), routine_yaml("other"))
    capsys.readouterr()
    # the old name selects the move too
    assert main(["apply", "--dir", str(d), "--journal", str(j), "--auto-approve", "--target", "old"]) == 0
    with open_journal(j) as jr:
        assert len(jr.runs_in_order("newest")) == 3 and jr.get_resource("Routine", "old") is None


def test_when_both_names_exist_nothing_moves_and_the_plan_says_so(applied, capsys) -> None:
    d, j = applied
    write(d, "a.yaml", routine_yaml("old", cron="0 9 * * 1"), routine_yaml("other"), routine_yaml("new"))
    assert main(["apply", "--dir", str(d), "--journal", str(j), "--auto-approve"]) == 0
    write(d, "a.yaml", renamed("new", "old"), routine_yaml("other"))
    capsys.readouterr()
    assert main(["plan", "--dir", str(d), "--journal", str(j), "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["action"]) for c in doc["changes"] if c["action"] != "no-op"] == [
        ("new", "update"), ("old", "delete")]
    assert doc["warnings"] == ["routine 'new' lists 'old' in metadata.previous_names, but the journal holds both: "
                               "nothing moves ('old' is planned as the directory says)"]


def test_a_saved_plan_with_a_move_applies_it(applied, capsys) -> None:
    d, j = applied
    write(d, "a.yaml", renamed("new", "old", cron="0 9 * * 1"), routine_yaml("other"))
    planfile = d.parent / "move.plan"
    assert main(["plan", "--dir", str(d), "--journal", str(j), "--out", str(planfile)]) == 0
    assert main(["apply", str(planfile), "--auto-approve"]) == 0
    with open_journal(j) as jr:
        assert len(jr.runs_in_order("new")) == 3


# -- on a running daemon -------------------------------------------------------------------------


def test_a_running_daemon_keeps_running_the_renamed_routine(daemon) -> None:
    every = textwrap.dedent("""\
        apiVersion: palyra/v1
        kind: Routine
        metadata:
          name: {name}{previous}
        spec:
          prompt: tick
          trigger:
            kind: schedule
            schedule: {{every: 1s}}
        """)
    daemon.write("tick.yaml", every.format(name="tick", previous=""))
    daemon.apply()
    daemon.wait_for(lambda: len([r for r in daemon.runs("tick") if r["status"] == "succeeded"]) >= 2,
                    timeout=30, what="two runs of tick")
    daemon.write("tick.yaml", every.format(name="tock", previous="\n  previous_names: [tick]"))
    r = run_cli("apply", "--dir", str(daemon.paths.dir), "--journal", str(daemon.paths.journal), "--auto-approve")
    assert r.returncode == 0, r.stderr
    assert "Apply complete! Resources: 0 added, 1 changed, 0 deleted." in r.stdout
    moved = len(daemon.runs("tock"))
    assert moved >= 2
    # the schedule goes on under the new name, after the history it kept
    daemon.wait_for(lambda: len([x for x in daemon.runs("tock") if x["status"] == "succeeded"]) >= moved + 2,
                    timeout=30, what="runs of tock after the rename")
    assert daemon.runs("tick") == []
    keys = [x["occurrence_key"] for x in daemon.runs("tock") if x["occurrence_key"]]
    assert keys and all(k.startswith("tock|") for k in keys) and len(keys) == len(set(keys))
