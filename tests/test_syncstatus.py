"""`syncstatus`: the one place Synced / OutOfSync / Invalid is decided, for `status`, the watcher and
the system status route."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gitops_helpers import routine_yaml, write

from palyra_ops.clock import FakeClock
from palyra_ops.journal import open_journal
from palyra_ops.reconcile import apply_plan, plan_directory
from palyra_ops.syncstatus import (
    SyncState,
    directory_status,
    exit_code,
    file_states,
    last_apply,
    next_runs,
    overall,
    watcher_status,
)
from palyra_ops.views import apply_log_view

T0 = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
S, OUT, INV = SyncState.SYNCED, SyncState.OUT_OF_SYNC, SyncState.INVALID


def test_invalid_beats_out_of_sync_beats_synced() -> None:
    assert overall([]) == S
    assert overall([S, S]) == S
    assert overall([S, OUT, S]) == OUT
    assert overall([OUT, INV, S]) == INV
    assert overall(["Synced", "OutOfSync"]) == OUT  # the strings of a status document work too


def test_detailed_exit_codes() -> None:
    assert [exit_code(s) for s in ("Synced", "OutOfSync", "Invalid", "Error", "Pending")] == [0, 2, 1, 1, 1]


def test_watcher_status_of_a_daemon_without_watch() -> None:
    assert watcher_status(None) == {"enabled": False}


def _applied(tmp_path: Path) -> tuple[Path, Path, FakeClock]:
    d, j = tmp_path / "r", tmp_path / "j.sqlite3"
    write(d, "a.yaml", routine_yaml("alpha"))
    write(d, "b.yaml", routine_yaml("beta"))
    clock = FakeClock(T0)
    with open_journal(j, clock=clock) as jr:
        apply_plan(jr, plan_directory(d, j, clock=clock)[0], directory=d)
    return d, j, clock


def test_file_states_mark_invalid_files_their_kept_objects_and_pending_changes(tmp_path: Path) -> None:
    d, j, clock = _applied(tmp_path)
    (d / "b.yaml").write_text("apiVersion: palyra/v1\nkind: Routine\nmetadata: {name: beta\n")
    plan, source = plan_directory(d, j, clock=clock, isolate_invalid=True, display_root="routines.d")
    files = file_states(source, plan)
    assert files["a.yaml"] == {"state": S, "diagnostics": [], "objects": ["Routine/alpha"]}
    assert files["b.yaml"]["state"] == INV and files["b.yaml"]["objects"] == ["Routine/beta"]  # kept at last good
    assert files["b.yaml"]["diagnostics"][0].startswith("routines.d/b.yaml:")
    assert overall(f["state"] for f in files.values()) == INV

    (alpha,) = [c for c in plan.changes if c.name == "alpha"]
    files = file_states(source, plan, pending=[alpha], unreadable={"c.yaml": "a FIFO is in place"}, shown_root="routines.d")
    assert files["a.yaml"]["state"] == OUT
    assert files["c.yaml"] == {"state": INV, "diagnostics": ["routines.d/c.yaml: a FIFO is in place"], "objects": []}
    assert list(files) == ["a.yaml", "b.yaml", "c.yaml"]


def test_directory_status_synced_then_out_of_sync(tmp_path: Path) -> None:
    d, j, clock = _applied(tmp_path)
    rep = directory_status(d, j, clock=clock)
    assert (rep["state"], rep["out_of_sync"], rep["unmanaged"]) == (S, [], [])
    assert rep["checked_at"] == "2026-03-27T12:00:00+00:00"
    assert list(rep) == ["dir", "journal", "warnings", "state", "out_of_sync", "unmanaged", "serial", "last_apply",
                         "next_runs", "checked_at"]
    with open_journal(j) as jr:
        view = apply_log_view(jr.last_apply())
        assert last_apply(jr) == view
        assert next_runs(jr) == rep["next_runs"] == [
            {"routine_id": "alpha", "next_run_at": "2026-03-28T09:00:00+00:00"},
            {"routine_id": "beta", "next_run_at": "2026-03-28T09:00:00+00:00"},
        ]
    assert rep["last_apply"] == {"at": view["applied_at"], "git_commit": None, "git_dirty": None,
                                 "added": 2, "changed": 0, "deleted": 0}
    (d / "b.yaml").unlink()
    rep = directory_status(d, j, clock=clock)
    assert rep["state"] == OUT
    assert rep["out_of_sync"] == [{"kind": "Routine", "name": "beta", "action": "delete",
                                   "reason": "removed from the directory (was in b.yaml)", "file": "b.yaml"}]


def test_directory_status_of_a_directory_that_cannot_be_planned(tmp_path: Path) -> None:
    d, j, clock = _applied(tmp_path)
    (d / "a.yaml").unlink()
    (d / "b.yaml").unlink()
    rep = directory_status(d, j, clock=clock)  # emptied: plan refuses only without allow_empty; status allows it
    assert rep["state"] == OUT
    missing = tmp_path / "nothing-here"
    rep = directory_status(missing, tmp_path / "new.sqlite3", clock=clock)
    assert (rep["state"], rep["last_apply"], rep["next_runs"]) == (S, None, [])
    assert not (tmp_path / "new.sqlite3").exists()  # read-only
