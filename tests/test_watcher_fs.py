"""The watcher against real file operations on a temp dir, with the real watchdog observer (inotify).

Each test asserts the end state (journal == directory, checked with the CLI's own plan) and that the
number of reconciles stays small however many filesystem events the operation produced.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gitops_helpers import MODELINE, routine_yaml, write

from palyra_ops.journal import read_snapshot
from palyra_ops.reconcile import plan_directory
from palyra_ops.watcher import Watcher


def wait_until(pred: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def fields(r: Any) -> tuple[Any, ...]:
    """StoredResource has no value equality; compare everything a reconcile could touch."""
    return (r.kind, r.name, r.body, r.hash, r.applied_hash, r.managed, r.source_file, r.created_at_ms, r.updated_at_ms)


class Live:
    def __init__(self, tmp: Path, **options: Any) -> None:
        self.dir = tmp / "routines.d"
        self.dir.mkdir(exist_ok=True)
        self.journal_path = tmp / "state" / "journal.sqlite3"
        self.options = {"debounce_ms": 100, **options}
        self.watcher: Watcher | None = None

    def start(self) -> Watcher:
        self.watcher = Watcher(self.dir, self.journal_path, display_root="routines.d", **self.options)
        self.watcher.start()
        return self.watcher

    @property
    def w(self) -> Watcher:
        assert self.watcher is not None
        return self.watcher

    def count(self) -> int:
        return int(self.w.status()["reconcile_count"])

    def settle(self, after: int, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for at least one reconcile after count `after`, then for quiet; return status."""
        wait_until(lambda: self.count() > after, timeout, "a reconcile")
        time.sleep(0.25)  # longer than the debounce: nothing else should be pending
        wait_until(lambda: not self.w.status()["pending"] and self.w.wait_idle(), timeout, "quiet")
        return self.w.status()

    def routines(self) -> dict[str, Any]:
        return {n: r for (k, n), r in read_snapshot(self.journal_path).resources.items() if k == "Routine"}

    def assert_in_sync(self) -> None:
        plan, source = plan_directory(self.dir, self.journal_path)
        assert source.ok
        assert [c for c in plan.changes if c.is_change] == []


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    lv = Live(tmp_path)
    yield lv
    if lv.watcher is not None:
        lv.watcher.stop()
        assert not lv.watcher.running


def test_atomic_rename_save_is_one_reconcile(live: Live) -> None:
    write(live.dir, "a.yaml", routine_yaml("alpha"))
    live.start()
    assert live.routines()["alpha"].body["spec"]["prompt"] == "say hello"
    n = live.count()
    # what editors do: write a hidden temp file, fsync, rename over the original; plus swap/backup noise
    tmp = live.dir / ".a.yaml.tmp-1234"
    tmp.write_text(MODELINE + routine_yaml("alpha", prompt="saved atomically"), encoding="utf-8")
    (live.dir / ".a.yaml.swp").write_bytes(b"vim swap")
    (live.dir / "a.yaml~").write_text("backup", encoding="utf-8")
    os.replace(tmp, live.dir / "a.yaml")
    st = live.settle(n)
    assert st["reconcile_count"] == n + 1
    assert st["state"] == "Synced" and st["counts"]["changed"] == 1
    assert live.routines()["alpha"].body["spec"]["prompt"] == "saved atomically"
    live.assert_in_sync()
    # nothing the watcher itself does (reading files, writing the journal) triggers another reconcile
    time.sleep(0.3)
    assert live.count() == n + 1


def test_in_place_truncate_and_write_is_one_reconcile(live: Live) -> None:
    write(live.dir, "a.yaml", routine_yaml("alpha"))
    live.start()
    n = live.count()
    text = MODELINE + routine_yaml("alpha", prompt="written in place")
    with open(live.dir / "a.yaml", "r+", encoding="utf-8") as fh:
        fh.truncate(0)
        fh.flush()
        time.sleep(0.03)  # a slow writer: the half-written state must not be applied
        fh.write(text[:40])
        fh.flush()
        time.sleep(0.03)
        fh.write(text[40:])
    st = live.settle(n)
    assert st["reconcile_count"] == n + 1 and st["state"] == "Synced"
    assert live.routines()["alpha"].body["spec"]["prompt"] == "written in place"


def test_noise_only_events_do_not_reconcile(live: Live) -> None:
    write(live.dir, "a.yaml", routine_yaml("alpha"))
    live.start()
    n = live.count()
    (live.dir / ".a.yaml.swp").write_bytes(b"x")
    (live.dir / "4913").write_text("vim probe", encoding="utf-8")
    (live.dir / "4913").unlink()
    (live.dir / "notes.txt").write_text("not a routine", encoding="utf-8")
    (live.dir / ".git").mkdir()
    (live.dir / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    (live.dir / "a.yaml").read_text(encoding="utf-8")
    time.sleep(0.4)
    assert live.count() == n
    assert live.w.status()["events"]["ignored"] >= 4


def test_burst_of_saves_coalesces(live: Live) -> None:
    live.start()
    n = live.count()
    for i in range(30):
        write(live.dir, f"r{i:02d}.yaml", routine_yaml(f"r{i:02d}"))
        time.sleep(0.002)
    st = live.settle(n)
    assert st["reconcile_count"] <= n + 2
    assert sorted(live.routines()) == [f"r{i:02d}" for i in range(30)]
    live.assert_in_sync()


def test_break_fix_delete_move_live(live: Live) -> None:
    write(live.dir, "a.yaml", routine_yaml("alpha"))
    write(live.dir, "b.yaml", routine_yaml("beta"))
    live.start()
    beta = live.routines()["beta"]
    n = live.count()
    (live.dir / "b.yaml").write_text("apiVersion: palyra/v1\nkind: Routine\nmetadata: [\n", encoding="utf-8")
    st = live.settle(n)
    assert st["state"] == "Invalid"
    assert st["files"]["b.yaml"]["diagnostics"][0].startswith("routines.d/b.yaml:4:1: YAML syntax error")
    assert fields(live.routines()["beta"]) == fields(beta)

    n = live.count()
    write(live.dir, "b.yaml", routine_yaml("beta"))
    st = live.settle(n)
    assert st["state"] == "Synced" and live.routines()["beta"].hash == beta.hash

    n = live.count()
    (live.dir / "sub").mkdir()
    shutil.move(live.dir / "b.yaml", live.dir / "sub" / "b2.yaml")
    st = live.settle(n)
    assert (st["counts"]["changed"], st["counts"]["deleted"]) == (1, 0)
    assert live.routines()["beta"].source_file == "sub/b2.yaml"

    n = live.count()
    shutil.rmtree(live.dir / "sub")
    st = live.settle(n)
    assert st["counts"]["deleted"] == 1 and sorted(live.routines()) == ["alpha"]
    live.assert_in_sync()


def test_directory_removed_and_recreated(live: Live) -> None:
    write(live.dir, "a.yaml", routine_yaml("alpha"))
    live.start()
    n = live.count()
    shutil.rmtree(live.dir)
    st = live.settle(n)
    assert st["state"] == "Error" and st["directory_present"] is False
    assert "does not exist; nothing changed" in st["last_error"]
    assert sorted(live.routines()) == ["alpha"]
    assert live.w.running

    n = live.count()
    live.dir.mkdir()
    write(live.dir, "a.yaml", routine_yaml("alpha", prompt="back again"))
    st = live.settle(n)
    assert st["state"] == "Synced"
    assert live.routines()["alpha"].body["spec"]["prompt"] == "back again"
    # the new directory is watched again: a later save is picked up by events, not a rescan
    n = live.count()
    write(live.dir, "a.yaml", routine_yaml("alpha", prompt="and again"))
    live.settle(n, timeout=3.0)
    assert live.routines()["alpha"].body["spec"]["prompt"] == "and again"


def test_symlink_pointing_outside_is_refused_live(live: Live, tmp_path: Path) -> None:
    write(live.dir, "a.yaml", routine_yaml("alpha"))
    live.start()
    outside = tmp_path / "outside.yaml"
    outside.write_text(routine_yaml("intruder"), encoding="utf-8")
    n = live.count()
    (live.dir / "link.yaml").symlink_to(outside)
    st = live.settle(n)
    assert st["state"] == "Invalid"
    assert st["files"]["link.yaml"]["diagnostics"] == [
        f"routines.d/link.yaml: symlink leaves the routine directory (points to {outside}); refusing to follow it"
    ]
    assert sorted(live.routines()) == ["alpha"]
    assert live.w.running


def test_periodic_rescan_catches_dropped_events(tmp_path: Path) -> None:
    live = Live(tmp_path, rescan_interval_s=0.5)
    write(live.dir, "a.yaml", routine_yaml("alpha"))
    w = live.start()
    try:
        w.fs.observer.unschedule(w.fs.watch)  # from now on the OS "drops" every event
        write(live.dir, "a.yaml", routine_yaml("alpha", prompt="seen by the rescan"))
        wait_until(lambda: live.routines()["alpha"].body["spec"]["prompt"] == "seen by the rescan", 3.0, "rescan")
        assert "rescan" in w.status()["last_reconcile_reason"]
    finally:
        w.stop()


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main", *args],
        cwd=cwd, check=True, capture_output=True, timeout=60,
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_checkout_of_200_files(live: Live) -> None:
    _git(live.dir, "init", "-q")
    for i in range(200):
        write(live.dir, f"team{i % 4}/r{i:03d}.yaml", routine_yaml(f"r{i:03d}", cron="0 9 * * *"))
    _git(live.dir, "add", "-A")
    _git(live.dir, "commit", "-qm", "main")
    _git(live.dir, "checkout", "-qb", "other")
    for i in range(200):
        p = live.dir / f"team{i % 4}/r{i:03d}.yaml"
        if i % 10 == 0:  # 20 files move to another directory (same routine names)
            p.unlink()
            write(live.dir, f"moved/r{i:03d}.yaml", routine_yaml(f"r{i:03d}", cron="0 9 * * *"))
        else:
            write(live.dir, f"team{i % 4}/r{i:03d}.yaml", routine_yaml(f"r{i:03d}", cron="30 9 * * *"))
    _git(live.dir, "add", "-A")
    _git(live.dir, "commit", "-qm", "other")
    _git(live.dir, "checkout", "-q", "main")

    live.start()
    assert live.w.status()["counts"]["added"] == 200
    jobs_before = read_snapshot(live.journal_path).jobs
    n = live.count()
    _git(live.dir, "checkout", "-q", "other")
    st = live.settle(n, timeout=10.0)
    assert st["state"] == "Synced"
    assert st["reconcile_count"] - n <= 3, st["reconcile_count"] - n
    assert st["totals"]["deleted"] == 0  # the 20 moves were never seen as delete + create
    live.assert_in_sync()
    snap = read_snapshot(live.journal_path)
    assert snap.resources[("Routine", "r010")].source_file == "moved/r010.yaml"
    assert snap.jobs["r010"]["next_run_at_unix_ms"] == jobs_before["r010"]["next_run_at_unix_ms"]
    assert st["git"] is not None and len(st["git"]["commit"]) == 40 and st["git"]["dirty"] is False
