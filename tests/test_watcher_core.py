"""Watcher reconcile semantics (SPEC §5 `--watch`), driven synchronously through `reconcile_now`.

Real routine files, a real SQLite journal, the real plan/apply path; only the filesystem observer is
not started here (tests/test_watcher_fs.py runs the real watchdog).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from gitops_helpers import channel_yaml, routine_yaml, write

from palyra_ops.clock import FakeClock
from palyra_ops.journal import open_journal, read_snapshot
from palyra_ops.model import Resource
from palyra_ops.reconcile import set_enabled, upsert_resource
from palyra_ops.views.status_text import format_status
from palyra_ops.watcher import Watcher

T0 = 1_790_000_000_000  # 2026-09-21T14:13:20Z


def fields(r: Any) -> tuple[Any, ...]:
    """StoredResource has no value equality; compare everything a reconcile could touch."""
    return (r.kind, r.name, r.body, r.hash, r.applied_hash, r.managed, r.source_file, r.created_at_ms, r.updated_at_ms)


class Env:
    def __init__(self, tmp: Path, **options: Any) -> None:
        self.dir = tmp / "routines.d"
        self.dir.mkdir()
        self.journal_path = tmp / "state" / "journal.sqlite3"
        self.clock = FakeClock(T0)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.applied = 0
        self.watcher = Watcher(
            self.dir, self.journal_path, clock=self.clock, display_root="routines.d",
            on_event=lambda n, p: self.events.append((n, p)), on_applied=self._applied, **options,
        )

    def _applied(self) -> None:
        self.applied += 1

    def resources(self) -> dict[str, Any]:
        return {name: r for (kind, name), r in read_snapshot(self.journal_path).resources.items() if kind == "Routine"}

    def jobs(self) -> dict[str, dict[str, Any]]:
        return read_snapshot(self.journal_path).jobs

    def event_names(self) -> list[str]:
        return [n for n, _ in self.events]


@pytest.fixture
def env(tmp_path: Path) -> Any:
    e = Env(tmp_path)
    yield e
    e.watcher.stop()


def test_initial_reconcile_creates_and_reports_synced(env: Env) -> None:
    write(env.dir, "a.yaml", routine_yaml("alpha"))
    write(env.dir, "team/b.yaml", routine_yaml("beta"), routine_yaml("gamma"))
    r = env.watcher.reconcile_now()
    assert (r.state, r.added, r.changed, r.deleted, r.applied) == ("Synced", 3, 0, 0, True)
    assert sorted(env.resources()) == ["alpha", "beta", "gamma"]
    assert env.resources()["gamma"].source_file == "team/b.yaml"
    st = env.watcher.status()
    assert st["state"] == "Synced"
    assert st["files"] == {
        "a.yaml": {"state": "Synced", "diagnostics": [], "objects": ["Routine/alpha"]},
        "team/b.yaml": {"state": "Synced", "diagnostics": [], "objects": ["Routine/beta", "Routine/gamma"]},
    }
    assert st["reconcile_count"] == 1 and st["last_reconcile_at"] == "2026-09-21T14:13:20+00:00"
    assert st["counts"]["added"] == 3 and st["running"] is False
    assert env.event_names() == ["routines.reloaded"]
    assert env.events[0][1]["added"] == 3 and env.applied == 1
    # converges: a second reconcile is a no-op, emits nothing and does not wake the scheduler
    r2 = env.watcher.reconcile_now()
    assert (r2.applied, r2.unchanged, env.event_names(), env.applied) == (False, 3, ["routines.reloaded"], 1)


def test_invalid_file_keeps_last_good_and_others_still_reconcile(env: Env) -> None:
    write(env.dir, "a.yaml", routine_yaml("alpha"))
    write(env.dir, "b.yaml", routine_yaml("beta", cron="0 7 * * *"))
    env.watcher.reconcile_now()
    before_beta = env.resources()["beta"]
    job_beta = env.jobs()["beta"]

    # 1. bad YAML in b.yaml, a real change in a.yaml in the same reconcile
    (env.dir / "b.yaml").write_text("apiVersion: palyra/v1\nkind: [Routine\n", encoding="utf-8")
    write(env.dir, "a.yaml", routine_yaml("alpha", cron="0 10 * * *"))
    env.clock.advance(60_000)
    r = env.watcher.reconcile_now()
    assert (r.state, r.changed, r.deleted, r.kept_invalid) == ("Invalid", 1, 0, ["beta"])
    assert fields(env.resources()["beta"]) == fields(before_beta)
    assert env.jobs()["beta"] == job_beta
    assert env.resources()["alpha"].body["spec"]["trigger"]["schedule"]["cron"] == "0 10 * * *"
    st = env.watcher.status()
    assert st["state"] == "Invalid"
    assert st["files"]["a.yaml"]["state"] == "Synced"
    assert st["files"]["b.yaml"] == {
        "state": "Invalid",
        "diagnostics": [
            "routines.d/b.yaml:3:1: YAML syntax error: did not find expected ',' or ']' "
            "(while parsing a flow sequence at line 2, column 7)"
        ],
        "objects": ["Routine/beta"],
    }
    assert env.event_names() == ["routines.reloaded", "routines.reloaded", "routines.invalid"]
    assert env.events[-1][1]["files"] == {"b.yaml": st["files"]["b.yaml"]["diagnostics"]}
    assert env.events[-1][1]["kept"] == ["beta"]

    # the same breakage again: no new routines.invalid event
    env.watcher.reconcile_now()
    assert env.event_names().count("routines.invalid") == 1

    # 2. now a schema error instead: still kept, new diagnostics, a new event
    write(env.dir, "b.yaml", routine_yaml("beta", cron="0 7 * * *", extra_spec="policies:\n  concurrency: sometimes\n"))
    r = env.watcher.reconcile_now()
    assert (r.state, r.applied, r.kept_invalid) == ("Invalid", False, ["beta"])
    assert fields(env.resources()["beta"]) == fields(before_beta)
    assert env.watcher.status()["files"]["b.yaml"]["diagnostics"] == [
        "routines.d/b.yaml:14:18: spec.policies.concurrency: 'sometimes' is not one of allow, forbid, replace, queue_one"
    ]
    assert env.event_names().count("routines.invalid") == 2

    # 3. fixed (with a change): reconciles, Synced
    write(env.dir, "b.yaml", routine_yaml("beta", cron="0 8 * * *"))
    r = env.watcher.reconcile_now()
    assert (r.state, r.changed, r.kept_invalid) == ("Synced", 1, [])
    assert env.resources()["beta"].body["spec"]["trigger"]["schedule"]["cron"] == "0 8 * * *"
    assert env.watcher.status()["files"]["b.yaml"]["state"] == "Synced"
    assert "Synced" in format_status(env.watcher.status())[0]


def test_invalid_file_that_was_never_applied_creates_nothing(env: Env) -> None:
    write(env.dir, "a.yaml", routine_yaml("alpha"))
    (env.dir / "new.yaml").write_text("kind: Routine\n", encoding="utf-8")
    r = env.watcher.reconcile_now()
    assert (r.state, r.added, r.kept_invalid) == ("Invalid", 1, [])
    assert sorted(env.resources()) == ["alpha"]
    lines = format_status(env.watcher.status())
    assert lines[0].startswith("watcher: Invalid, last reconcile")
    assert lines[1] == "  Invalid   new.yaml"


def test_deleted_file_prunes_its_routines(env: Env) -> None:
    write(env.dir, "a.yaml", routine_yaml("alpha"))
    write(env.dir, "b.yaml", routine_yaml("beta"))
    env.watcher.reconcile_now()
    (env.dir / "b.yaml").unlink()
    r = env.watcher.reconcile_now()
    assert (r.state, r.deleted) == ("Synced", 1)
    assert sorted(env.resources()) == ["alpha"]
    assert "beta" not in env.jobs()


def test_moved_file_keeps_routines_history_and_next_run(env: Env) -> None:
    write(env.dir, "a.yaml", routine_yaml("alpha", cron="*/5 * * * *"))
    env.watcher.reconcile_now()
    next_run = env.jobs()["alpha"]["next_run_at_unix_ms"]
    with open_journal(env.journal_path) as j:
        run_id = j.insert_run(routine_id="alpha", trigger_kind="schedule", status="succeeded", scheduled_at_ms=T0)
    env.clock.advance(3_600_000)  # an hour later: a re-created job would get a new next run
    (env.dir / "archive").mkdir()
    os.rename(env.dir / "a.yaml", env.dir / "archive" / "renamed.yaml")
    r = env.watcher.reconcile_now()
    assert (r.added, r.changed, r.deleted) == (0, 1, 0)
    assert env.resources()["alpha"].source_file == "archive/renamed.yaml"
    assert env.jobs()["alpha"]["next_run_at_unix_ms"] == next_run
    with open_journal(env.journal_path) as j:
        assert j.get_run(run_id) is not None  # type: ignore[arg-type]
        assert [e["deleted"] for e in j.apply_log()] == [0, 0]


def test_missing_or_emptied_directory_never_prunes(env: Env) -> None:
    write(env.dir, "a.yaml", routine_yaml("alpha"))
    env.watcher.reconcile_now()
    (env.dir / "a.yaml").unlink()
    r = env.watcher.reconcile_now()
    assert r.state == "Error"
    assert r.error == (
        "refusing to delete all 1 managed object(s): the directory routines.d is empty "
        "(pass --allow-empty if that is really what you want)"
    )
    assert sorted(env.resources()) == ["alpha"]
    st = env.watcher.status()
    assert st["state"] == "Error" and st["last_error"] == r.error
    assert st["files"] == {"a.yaml": {"state": "Synced", "diagnostics": [], "objects": ["Routine/alpha"]}}

    env.dir.rmdir()
    r = env.watcher.reconcile_now()
    assert r.state == "Error"
    assert r.error == (
        "routine directory routines.d does not exist; nothing changed, the last good state stays "
        "(waiting for it to come back)"
    )
    assert env.watcher.status()["directory_present"] is False
    assert sorted(env.resources()) == ["alpha"]

    env.dir.mkdir()
    write(env.dir, "a.yaml", routine_yaml("alpha"))
    assert env.watcher.reconcile_now().state == "Synced"


def test_drift_is_left_alone_without_self_heal(env: Env) -> None:
    write(env.dir, "a.yaml", routine_yaml("alpha"))
    write(env.dir, "b.yaml", routine_yaml("beta"))
    env.watcher.reconcile_now()
    with open_journal(env.journal_path) as j:
        set_enabled(j, "alpha", False)  # an operator paused it through the console
    r = env.watcher.reconcile_now()
    assert (r.state, r.applied, r.drift_pending) == ("OutOfSync", False, ["alpha"])
    assert env.resources()["alpha"].body["spec"]["enabled"] is False
    st = env.watcher.status()
    assert st["files"]["a.yaml"]["state"] == "OutOfSync"
    assert st["files"]["b.yaml"]["state"] == "Synced"
    assert st["drift_pending"] == ["alpha"]
    assert format_status(st)[-1] == "  drift left alone (apply or --self-heal restores git): alpha"
    # a real edit of the file wins over the drift: git is applied for that routine
    write(env.dir, "a.yaml", routine_yaml("alpha", prompt="say hi"))
    r = env.watcher.reconcile_now()
    assert (r.state, r.changed, r.drift_pending) == ("Synced", 1, [])
    assert env.resources()["alpha"].body["spec"]["enabled"] is True


def test_self_heal_restores_drift_and_reports_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = Env(tmp_path, self_heal=True)
    try:
        write(env.dir, "a.yaml", routine_yaml("alpha"))
        env.watcher.reconcile_now()
        good = env.resources()["alpha"]
        with open_journal(env.journal_path) as j:
            body = {"metadata": {"name": "alpha"}, "spec": {**good.body["spec"], "prompt": "hacked"}}
            upsert_resource(j, Resource(kind="Routine", name="alpha", body=body, source_file="a.yaml"))
        assert env.resources()["alpha"].drifted
        with caplog.at_level("WARNING", logger="palyra_ops.watcher"):
            r = env.watcher.reconcile_now()
        assert (r.state, r.changed, r.healed) == ("Synced", 1, ["alpha"])
        assert env.resources()["alpha"].hash == good.hash and not env.resources()["alpha"].drifted
        assert "self-heal: alpha was changed outside git; restored the git version" in caplog.text
        assert env.events[-1] == ("routines.reloaded", {
            "reason": "manual", "added": 0, "changed": 1, "deleted": 0, "serial": 3, "healed": ["alpha"],
            "files_invalid": [], "git_commit": None,
        })
        assert env.watcher.status()["totals"]["healed"] == 1
    finally:
        env.watcher.stop()


def test_unmanaged_routines_are_left_alone(env: Env) -> None:
    write(env.dir, "a.yaml", routine_yaml("alpha"))
    env.watcher.reconcile_now()
    with open_journal(env.journal_path) as j:
        body = {"metadata": {"name": "adhoc"}, "spec": dict(env.resources()["alpha"].body["spec"])}
        upsert_resource(j, Resource(kind="Routine", name="adhoc", body=body))
    r = env.watcher.reconcile_now()
    assert (r.state, r.applied) == ("Synced", False)
    assert sorted(env.resources()) == ["adhoc", "alpha"]


def test_file_replaced_by_fifo_or_directory_keeps_last_good(env: Env) -> None:
    write(env.dir, "a.yaml", routine_yaml("alpha"))
    write(env.dir, "b.yaml", routine_yaml("beta"))
    write(env.dir, "c.yaml", routine_yaml("gamma"))
    env.watcher.reconcile_now()
    (env.dir / "b.yaml").unlink()
    os.mkfifo(env.dir / "b.yaml")
    (env.dir / "c.yaml").unlink()
    (env.dir / "c.yaml").mkdir()
    r = env.watcher.reconcile_now()
    assert (r.state, r.deleted, r.kept_invalid) == ("Invalid", 0, ["beta", "gamma"])
    assert sorted(env.resources()) == ["alpha", "beta", "gamma"]
    assert env.watcher.status()["files"]["b.yaml"] == {
        "state": "Invalid",
        "diagnostics": ["routines.d/b.yaml: a FIFO is in place of this routine file; its objects keep their last applied version"],
        "objects": ["Routine/beta"],
    }
    assert env.watcher.status()["files"]["c.yaml"]["diagnostics"][0].startswith("routines.d/c.yaml: a directory is in place")
    (env.dir / "b.yaml").unlink()
    (env.dir / "c.yaml").rmdir()
    r = env.watcher.reconcile_now()
    assert (r.state, r.deleted) == ("Synced", 2)


def test_symlink_leaving_the_directory_is_refused_and_keeps_last_good(env: Env, tmp_path: Path) -> None:
    write(env.dir, "a.yaml", routine_yaml("alpha"))
    write(env.dir, "b.yaml", routine_yaml("beta"))
    env.watcher.reconcile_now()
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(routine_yaml("beta", prompt="from outside"), encoding="utf-8")
    (env.dir / "b.yaml").unlink()
    (env.dir / "b.yaml").symlink_to(outside)
    r = env.watcher.reconcile_now()
    assert (r.state, r.kept_invalid, r.applied) == ("Invalid", ["beta"], False)
    assert env.resources()["beta"].body["spec"]["prompt"] == "say hello"
    assert env.watcher.status()["files"]["b.yaml"]["diagnostics"] == [
        f"routines.d/b.yaml: symlink leaves the routine directory (points to {outside}); refusing to follow it"
    ]


def test_channel_reference_into_a_broken_file_keeps_both(env: Env) -> None:
    extra = "delivery:\n  mode: specific_channel\n  channel: ops\n"
    write(env.dir, "routines.yaml", routine_yaml("alpha", extra_spec=extra))
    write(env.dir, "channels.yaml", channel_yaml("ops"))
    env.watcher.reconcile_now()
    (env.dir / "channels.yaml").write_text("apiVersion: palyra/v1\nkind: Channel\nmetadata: {name: ops\n", encoding="utf-8")
    r = env.watcher.reconcile_now()
    assert (r.state, r.deleted, r.kept_invalid) == ("Invalid", 0, ["alpha", "ops"])
    files = env.watcher.status()["files"]
    assert files["channels.yaml"]["state"] == "Invalid" and files["routines.yaml"]["state"] == "Invalid"


def test_events_default_to_the_journal(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    write(d, "a.yaml", routine_yaml("alpha"))
    (d / "bad.yaml").write_text("kind: [\n", encoding="utf-8")
    w = Watcher(d, tmp_path / "j.sqlite3", clock=FakeClock(T0))
    try:
        w.reconcile_now()
    finally:
        w.stop()
    with open_journal(tmp_path / "j.sqlite3") as j:
        assert [e["name"] for e in reversed(j.list_events())] == ["routines.reloaded", "routines.invalid"]


UNREADABLE_CHILD = textwrap.dedent(
    """
    import os, shutil, sys, tempfile
    from pathlib import Path
    from palyra_ops.clock import FakeClock
    from palyra_ops.journal import read_snapshot
    from palyra_ops.watcher import Watcher

    def scenario(root):
        w = Watcher(root / "routines.d", root / "state" / "j.sqlite3", clock=FakeClock(1), display_root="routines.d")
        assert w.reconcile_now().added == 2
        os.chmod(root / "routines.d" / "b.yaml", 0)
        r = w.reconcile_now()
        lines = [f"{r.state} {r.deleted} {r.kept_invalid} {w.status()['files']['b.yaml']['diagnostics']}",
                 str(sorted(n for _, n in read_snapshot(root / "state" / "j.sqlite3").resources))]
        w.stop()
        return lines

    root = Path(sys.argv[1])
    # The checkout (schemas/, lazily imported modules) and the interpreter may live under a directory
    # `nobody` cannot enter (a clone in `mktemp -d`, a venv under /root): run the whole scenario once
    # first, on a scratch copy, so everything it reads from there is loaded before dropping to nobody.
    warm = Path(tempfile.mkdtemp())
    shutil.copytree(root / "routines.d", warm / "routines.d")
    scenario(warm)
    shutil.rmtree(warm)
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    print("\\n".join(scenario(root)))
    """
)


def test_unreadable_file_keeps_last_good() -> None:
    """chmod 000 does not stop root from reading, so as root the check runs in a child that drops to
    `nobody` first (a real permission check, not a simulation); as a normal user it runs unchanged.
    pytest's tmp_path lives under a 0700 directory nobody cannot enter, hence a plain /tmp dir; and
    the child loads what it needs from the checkout before dropping privileges, so the test passes
    wherever the repository is cloned (tests/test_checkout_location.py)."""
    with tempfile.TemporaryDirectory(prefix="palyra-watcher-") as tmp:
        root = Path(tmp)
        d = root / "routines.d"
        write(d, "a.yaml", routine_yaml("alpha"))
        write(d, "b.yaml", routine_yaml("beta"))
        (root / "state").mkdir()
        for p in (root, d, root / "state", d / "a.yaml", d / "b.yaml"):
            os.chmod(p, 0o777)
            if os.geteuid() == 0:
                os.chown(p, 65534, 65534)  # nobody owns its files, so it may chmod them
        script = UNREADABLE_CHILD if os.geteuid() == 0 else UNREADABLE_CHILD.replace(
            "os.setgroups([]); os.setgid(65534); os.setuid(65534)", "")
        out = subprocess.run(
            [sys.executable, "-c", script, str(root)], capture_output=True, text=True, timeout=180,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "Invalid 0 ['beta'] ['routines.d/b.yaml: cannot read file: Permission denied']",
        "['alpha', 'beta']",
    ]


def test_unusable_journal_is_reported_not_raised(tmp_path: Path) -> None:
    d = tmp_path / "r"
    write(d, "a.yaml", routine_yaml("alpha"))
    bad = tmp_path / "j.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    w = Watcher(d, bad, clock=FakeClock(T0))
    try:
        r = w.reconcile_now()
        assert r.state == "Error" and r.error is not None and "not a palyra journal" in r.error
        assert w.status()["state"] == "Error"
        bad.unlink()
        assert w.reconcile_now().state == "Synced"  # the journal is opened again on the next attempt
    finally:
        w.stop()


def test_format_status_without_watch() -> None:
    assert format_status({"enabled": False}) == ["watcher: off (daemon started without --watch)"]
