"""Wake-ups across processes on a PostgreSQL journal: LISTEN/NOTIFY (SPEC §11, issue 10 point 5).

A daemon polls the journal for other processes' changes every `cluster.poll_interval` — here 10 s,
so only a pushed notification can explain a quick pick-up. A routine applied by another process
(the CLI's apply) while the daemon sleeps with nothing due must run on time: its first occurrence
received well under a second late, not up to 10 s. On SQLite nothing is pushed (polling only).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from conftest import DaemonHandle

from palyra_ops.journal import open_journal

CONFIG = {"cluster": {"poll_interval": "10s"}}


def _routine(name: str) -> dict:
    return {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": name},
            "spec": {"prompt": "tick", "trigger": {"kind": "schedule", "schedule": {"every": "1s"}}}}


def test_a_routine_applied_by_another_process_is_picked_up_at_once(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str) -> None:
    d = daemon_factory(journal=pg_url, config=CONFIG)
    d.wait_for(lambda: d.client().get("/healthz").status_code == 200, timeout=20, what="the daemon serving")
    time.sleep(1.0)  # the daemon asleep: nothing due (it would wake only at its 15 s idle cap or 10 s poll)
    for attempt in range(3):  # three separate applies, each must be seen at once
        name = f"late{attempt}"
        for old in d.paths.dir.glob("*.yaml"):
            old.unlink()  # one routine at a time: the earlier ones' ticks would wake the daemon
        d.write(f"{name}.yaml", [_routine(name)])
        applied_ms = time.time_ns() // 1_000_000
        d.apply()
        d.wait_for(lambda name=name: any(r["received_at_ms"] for r in d.runs(name)), timeout=20,
                   what=f"the first run of {name}")
        first = min((r for r in d.runs(name) if r["received_at_ms"]), key=lambda r: r["scheduled_at_ms"])
        lag_ms = first["received_at_ms"] - first["scheduled_at_ms"]
        assert first["scheduled_at_ms"] - applied_ms < 2500, (first, applied_ms)
        assert lag_ms < 1000, f"{name}: first run {lag_ms} ms late (the poll is 10 s: no wake-up came)"
    assert "Traceback" not in d.log(), d.log()[-3000:]


def test_only_postgresql_pushes_changes(pg_url: str, tmp_path) -> None:
    import threading

    got = threading.Event()
    with open_journal(tmp_path / "j.sqlite3") as lite:
        assert lite.on_change(got.set) is False
    with open_journal(pg_url) as listener, open_journal(pg_url) as writer:
        assert listener.on_change(got.set) is True
        time.sleep(0.3)
        got.clear()  # the call made on connecting
        with writer.transaction() as c:
            writer.bump_serial(c)
        assert got.wait(5), "no notification after a peer's commit"
        got.clear()
        try:
            with writer.transaction() as c:
                writer.bump_serial(c)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        assert not got.wait(0.5), "a rolled back change was notified"
