"""Synced / OutOfSync / Invalid, computed in one place for `status`, the watcher and the API."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gitops_helpers import routine_yaml, write
from plan_values import routine

from palyra_ops.clock import FakeClock
from palyra_ops.journal import open_journal
from palyra_ops.plan import Change, PlanAction
from palyra_ops.reconcile import apply_plan, plan_directory
from palyra_ops.source import load_directory
from palyra_ops.syncstatus import SyncState, directory_status, file_states, overall, system_status

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
BAD = "apiVersion: palyra/v1\nkind: Routine\nmetadata: {name: x\n"


def change(name: str, file: str, *, kept: bool = False) -> Change:
    r = routine(name, file=file)
    return Change("Routine", name, PlanAction.NO_OP if kept else PlanAction.UPDATE, "why", file, None, r.body,
                  kept=kept)


def test_file_states_and_the_overall_state(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", routine_yaml("alpha"))
    write(tmp_path, "bad.yaml", BAD)
    source = load_directory(tmp_path)
    files = file_states(source, kept=[change("beta", "bad.yaml", kept=True)],
                        unreadable={"fifo.yaml": "a FIFO is in place of this routine file"}, shown_root="routines.d")
    assert list(files) == ["bad.yaml", "fifo.yaml", "good.yaml"]
    assert files["good.yaml"] == {"state": "Synced", "diagnostics": [], "objects": ["Routine/alpha"]}
    assert files["bad.yaml"]["state"] == "Invalid" and files["bad.yaml"]["objects"] == ["Routine/beta"]
    assert files["fifo.yaml"] == {"state": "Invalid", "objects": [],
                                  "diagnostics": ["routines.d/fifo.yaml: a FIFO is in place of this routine file"]}
    assert overall(files) is SyncState.INVALID

    (tmp_path / "bad.yaml").unlink()
    source = load_directory(tmp_path)
    assert overall(file_states(source)) is SyncState.SYNCED
    drifted = file_states(source, pending=[change("alpha", "good.yaml")])
    assert drifted["good.yaml"]["state"] == "OutOfSync" and overall(drifted) is SyncState.OUT_OF_SYNC
    # a pending delete has no file left to mark: OutOfSync all the same
    assert overall(file_states(source), [change("gone", "gone.yaml")]) is SyncState.OUT_OF_SYNC


def test_directory_status_follows_the_directory_and_the_journal(tmp_path: Path) -> None:
    d, j = tmp_path / "routines.d", tmp_path / "state" / "journal.sqlite3"
    write(d, "a.yaml", routine_yaml("alpha"))
    clock = FakeClock(T0)
    rep = directory_status(d, j, clock=clock)
    assert (rep["state"], rep["last_apply"], rep["next_runs"]) == ("OutOfSync", None, [])
    assert rep["out_of_sync"] == [{"kind": "Routine", "name": "alpha", "action": "create", "reason": "new in a.yaml",
                                   "file": "a.yaml"}]
    assert rep["checked_at"] == "2026-11-27T12:00:00+00:00" and not j.exists()

    with open_journal(j, clock=clock) as journal:
        apply_plan(journal, plan_directory(d, j, clock=clock)[0], directory=d)
    rep = directory_status(d, j, clock=clock)
    assert (rep["state"], rep["out_of_sync"], rep["serial"]) == ("Synced", [], 1)
    assert rep["last_apply"] == {"at": "2026-11-27T12:00:00+00:00", "git_commit": None, "git_dirty": None,
                                 "added": 1, "changed": 0, "deleted": 0}
    assert rep["next_runs"] == [{"routine_id": "alpha", "next_run_at": "2026-11-28T09:00:00+00:00", "paused": False}]

    write(d, "b.yaml", BAD)
    rep = directory_status(d, j, clock=clock)
    assert rep["state"] == "Invalid" and [f["file"] for f in rep["invalid_files"]] == [str(d / "b.yaml")]


def test_system_status_is_the_api_document(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with open_journal(tmp_path / "j.sqlite3", clock=clock) as journal:
        doc = system_status(journal, now_ms=clock.now_ms() + 90_000, started_at_ms=clock.now_ms(),
                            base_url="http://127.0.0.1:7142", scheduler={"running": True}, watcher=None, tasks={})
        assert doc["daemon"] == {"started_at": "2026-11-27T12:00:00+00:00", "uptime_seconds": 90.0,
                                 "base_url": "http://127.0.0.1:7142", "daemon_id": None}
        assert doc["daemons"] == []  # nothing registered in this journal
        assert doc["now"] == "2026-11-27T12:01:30+00:00"
        assert doc["watcher"] == {"enabled": False} and doc["scheduler"] == {"running": True}
        assert doc["journal"] == {"path": str(journal.path), "lineage": journal.lineage(), "serial": 0,
                                  "runs_by_status": {}, "active_runs": 0, "pending_approvals": 0}
        assert doc["last_apply"] is None


def test_status_lists_paused_routines_from_the_snapshot_in_name_order(tmp_path: Path) -> None:
    """status reads the job rows once (its plan's snapshot): the paused ones, in routine_id order,
    are what `list_jobs` gave before, and the plan's own warnings are not computed for it."""
    from palyra_ops.pause import pause
    from palyra_ops.syncstatus import journal_history

    d, j = tmp_path / "routines.d", tmp_path / "state" / "journal.sqlite3"
    for name in ("zulu", "alpha", "mike"):
        write(d, f"{name}.yaml", routine_yaml(name))
    clock = FakeClock(T0)
    with open_journal(j, clock=clock) as journal:
        apply_plan(journal, plan_directory(d, j, clock=clock)[0], directory=d)
        pause(journal, "zulu", note="later", by="ops")
        pause(journal, "alpha", note=None, by="ops")
    rep = directory_status(d, j, clock=clock)
    assert [(p["routine_id"], p["note"], p["by"]) for p in rep["paused"]] == [("alpha", None, "ops"), ("zulu", "later", "ops")]
    assert rep["paused"] == journal_history(j)["paused"]  # the same as reading every job row again
    assert rep["state"] == "Synced"
