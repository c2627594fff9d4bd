"""One daemon per SQLite journal (SPEC §11, last paragraph; issue 9, point 11).

Two real daemon processes on one journal, on different ports: the second is refused with one line
naming the first (pid, address), exits non-zero, and the first daemon's live run is left alone.
Before, it started silently, finalized the first one's runs as `failed/daemon_restart`, and with
two schedulers `forbid` stopped holding.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

from conftest import free_port

from palyra_ops.journal import open_journal


def routine(name: str, spec: dict, labels: dict | None = None) -> dict:
    meta: dict = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": meta, "spec": spec}


def second_daemon(first, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "palyra_ops", "daemon", "--listen", f"127.0.0.1:{port}",
                           "--journal", str(first.paths.journal), "--dir", str(first.paths.dir), *extra],
                          env=first.env, capture_output=True, text=True, timeout=60, cwd=first.paths.cwd)


def test_a_second_daemon_on_the_same_journal_is_refused_naming_the_first(daemon) -> None:
    daemon.write("s.yaml", [
        routine("long", {"prompt": "p", "trigger": {"kind": "manual"}}, {"echo-sleep": "60s"}),
        routine("tick", {"prompt": "p", "trigger": {"kind": "schedule", "schedule": {"every": "1s"}},
                         "policies": {"concurrency": "forbid"}}, {"echo-sleep": "3s"}),
    ])
    daemon.apply()
    assert daemon.client().post("/console/v1/routines/dispatch", json={"routine_id": "long"}).status_code == 202
    daemon.wait_for(lambda: [r for r in daemon.runs("long") if r["status"] == "running"], what="a live run")
    lock = daemon.paths.journal.with_name(daemon.paths.journal.name + ".lock")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    holder = json.loads(lock.read_text())
    assert holder["pid"] == daemon.proc.pid and holder["address"] == f"127.0.0.1:{daemon.paths.port}"

    other = free_port()
    out = second_daemon(daemon, other)
    assert out.returncode == 1, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [f"palyra-ops: journal {daemon.paths.journal} is in use by the daemon pid {daemon.proc.pid} "
                     f"on 127.0.0.1:{daemon.paths.port}; stop it first (one daemon per SQLite journal)"], out.stderr
    # the first daemon's live run was not "recovered", and forbid still holds with one scheduler
    (long_run,) = daemon.runs("long")
    assert long_run["status"] == "running" and long_run["reason"] is None
    assert not [r for r in daemon.runs() if r["reason"] == "daemon_restart"]
    time.sleep(3.5)
    ticks = daemon.runs("tick")
    started = sorted((r["started_at_ms"], r["finished_at_ms"] or 1 << 62) for r in ticks if r["started_at_ms"])
    assert all(a[1] <= b[0] for a, b in zip(started, started[1:], strict=False)), "two `tick` runs overlapped under forbid"
    assert json.loads(lock.read_text())["pid"] == daemon.proc.pid, "the refused daemon left the lock record alone"


def test_the_lock_goes_with_the_process_even_after_sigkill(daemon) -> None:
    daemon.write("s.yaml", [routine("long", {"prompt": "p", "trigger": {"kind": "manual"}}, {"echo-sleep": "60s"})])
    daemon.apply()
    assert daemon.client().post("/console/v1/routines/dispatch", json={"routine_id": "long"}).status_code == 202
    daemon.wait_for(lambda: [r for r in daemon.runs("long") if r["status"] == "running"], what="a live run")
    daemon.kill()
    daemon.restart()  # same journal: the kernel released the dead daemon's lock
    daemon.wait_for(lambda: daemon.runs("long")[0]["status"] == "failed", what="recovery")
    (run,) = daemon.runs("long")
    assert run["reason"] == "daemon_restart"
    lock = daemon.paths.journal.with_name(daemon.paths.journal.name + ".lock")
    assert json.loads(lock.read_text())["pid"] == daemon.proc.pid


def test_a_stale_lock_file_does_not_block_a_start(tmp_path, daemon_factory) -> None:
    d = daemon_factory()
    d.stop()
    lock = d.paths.journal.with_name(d.paths.journal.name + ".lock")
    lock.write_text(json.dumps({"pid": 999999, "address": "127.0.0.1:1"}))
    os.chmod(lock, 0o644)
    d.restart()
    assert json.loads(lock.read_text())["pid"] == d.proc.pid
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    with open_journal(d.paths.journal) as j:  # the CLI and tests still open the journal freely
        assert j.serial() >= 0
