"""The daemon registry of both stores (SPEC §11): who is on the journal, who is gone, and the reaper.

Each daemon registers (`register_daemon`) and heartbeats; it is *gone* once its last heartbeat is
older than its own lease. Liveness is judged by the journal's clock: on PostgreSQL heartbeats are
written and read with the database's clock, so daemons whose clocks disagree still agree on who is
gone; on SQLite (one daemon per journal file) by the store's clock.

A run's owner is its `daemon_id`. `reap_lost_daemons` finalizes the active runs of gone daemons
(`failed`, reason `daemon_lost: …`), hands their parked runs (retry waits, quiet-hours deferrals)
to any daemon (owner and fencing token cleared: `take_parked` gives them a new one), and drops their
rows, all in one transaction that locks the gone
daemons' rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, SQLite's single writer): two live daemons
reaping at once each get a disjoint part, so every reaped run is reported (and emitted) once.
The PostgreSQL side is `postgres_daemons` (this module must not import the driver).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from contextlib import AbstractContextManager
from typing import Any

from palyra_ops.clock import Clock
from palyra_ops.journal.records import DaemonRecord, LostDaemon, RunRecord, is_parked
from palyra_ops.journal.sqlite_conn import SQLiteTxn, records

_ACTIVE = "('accepted', 'running')"


def lost_reason(daemon: DaemonRecord) -> str:
    """The reason a reaped run carries: which daemon, and why it counts as gone."""
    return (f"daemon_lost: daemon {daemon['daemon_id']} ({daemon['host']} pid {daemon['pid']}) stopped heartbeating"
            f" (last heartbeat {daemon['heartbeat_age_ms'] / 1000:.1f}s ago, lease {daemon['lease_ms'] / 1000:g}s)")


def daemon_record(row: Any, now_ms: int) -> DaemonRecord:
    hb = int(row["heartbeat_at_ms"])
    lease = int(row["lease_ms"])
    return DaemonRecord(daemon_id=row["daemon_id"], host=row["host"], pid=int(row["pid"]), address=row["address"],
                        version=row["version"], started_at_ms=int(row["started_at_ms"]), heartbeat_at_ms=hb,
                        lease_ms=lease, alive=hb + lease >= now_ms, heartbeat_age_ms=max(now_ms - hb, 0))


class SQLiteDaemons:
    """The registry on a SQLite journal (`SQLiteJournal` mixes it in)."""

    conn: sqlite3.Connection
    clock: Clock
    _lock: threading.RLock

    def transaction(self) -> AbstractContextManager[SQLiteTxn]:  # pragma: no cover - SQLiteJournal's
        raise NotImplementedError

    def register_daemon(self, daemon_id: str, *, lease_ms: int, host: str, pid: int, address: str | None,
                        version: str) -> None:
        now = self.clock.now_ms()
        with self.transaction() as c:
            c.execute("INSERT INTO journal_daemons VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (daemon_id) DO UPDATE SET"
                      " host=excluded.host, pid=excluded.pid, address=excluded.address, version=excluded.version,"
                      " heartbeat_at_ms=excluded.heartbeat_at_ms, lease_ms=excluded.lease_ms",
                      (daemon_id, host, pid, address, version, now, now, lease_ms))

    def heartbeat(self, daemon_id: str, address: str | None = None) -> bool:
        with self.transaction() as c:
            cur = c.execute("UPDATE journal_daemons SET heartbeat_at_ms=?, address=coalesce(?, address)"
                            " WHERE daemon_id=?", (self.clock.now_ms(), address, daemon_id))
        return cur.rowcount == 1

    def deregister_daemon(self, daemon_id: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM journal_daemons WHERE daemon_id=?", (daemon_id,))

    def list_daemons(self) -> list[DaemonRecord]:
        now = self.clock.now_ms()
        with self._lock:
            rows = self.conn.execute("SELECT * FROM journal_daemons ORDER BY started_at_ms, daemon_id").fetchall()
        return [daemon_record(r, now) for r in rows]

    def live_daemon_ids(self) -> set[str]:
        return {d["daemon_id"] for d in self.list_daemons() if d["alive"]}

    def maintenance_lock(self, name: str) -> AbstractContextManager[bool]:
        """Always got: one daemon holds a SQLite journal (its lock file), so no peer can run it."""
        return contextlib.nullcontext(True)

    def reap_lost_daemons(self, now_ms: int, spare: str | None = None) -> list[LostDaemon]:
        out: list[LostDaemon] = []
        with self.transaction() as c:
            judged = self.clock.now_ms()
            rows = c.execute("SELECT * FROM journal_daemons WHERE heartbeat_at_ms + lease_ms < ? ORDER BY daemon_id",
                             (judged,)).fetchall()
            for row in rows:
                d = daemon_record(row, judged)
                if d["daemon_id"] == spare:
                    continue
                active = records(c.execute(f"SELECT * FROM journal_cron_runs WHERE daemon_id=? AND status IN {_ACTIVE}"
                                           " ORDER BY rowid", (d["daemon_id"],)), RunRecord)
                released = [r for r in active if is_parked(r)]
                runs = [r for r in active if not is_parked(r)]
                for r in released:  # parked: any daemon takes it when due (`take_parked`)
                    c.execute("UPDATE journal_cron_runs SET daemon_id=NULL, fence=NULL WHERE run_id=?", (r["run_id"],))
                    r.update(daemon_id=None, fence=None)
                reason = lost_reason(d)
                for r in runs:
                    c.execute("UPDATE journal_cron_runs SET status='failed', reason=?, finished_at_ms=? WHERE run_id=?",
                              (reason, now_ms, r["run_id"]))
                    c.execute("UPDATE journal_cron_jobs SET last_status='failed', last_finished_at_ms=?"
                              " WHERE last_run_id=?", (now_ms, r["run_id"]))
                    r.update(status="failed", reason=reason, finished_at_ms=now_ms)
                c.execute("DELETE FROM journal_daemons WHERE daemon_id=?", (d["daemon_id"],))
                out.append(LostDaemon(d, runs, released))
        return out


__all__ = ["SQLiteDaemons", "daemon_record", "lost_reason"]
