"""Runs handed between daemons on a SQLite journal (SPEC §11; the PostgreSQL side is
`postgres_handover`): the fencing token's check, peers' cancel requests, `queue_one`'s journal-wide
mark, and parked runs (retry waits, quiet-hours deferrals) any daemon takes when they come due.

On SQLite one daemon holds the journal, so nothing is handed to a live peer; the methods exist so
that one gateway speaks one protocol to both stores (and the contract suite holds them to it): a
restarted daemon takes back the parked runs of the one before it. SQLite's write lock (`BEGIN
IMMEDIATE`) is what PostgreSQL's routine lock is there.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager

from palyra_ops.clock import Clock
from palyra_ops.journal.records import BUSY_SQL, RunRecord, new_id
from palyra_ops.journal.sqlite_conn import SQLiteTxn, records


class SQLiteHandover:
    """A mixin of `SQLiteJournal`."""

    conn: sqlite3.Connection
    clock: Clock
    _lock: threading.RLock

    def transaction(self) -> AbstractContextManager[SQLiteTxn]:  # pragma: no cover - SQLiteJournal's
        raise NotImplementedError

    def fence_holds(self, run_id: str, fence: str | None) -> bool:
        with self._lock:
            row = self.conn.execute("SELECT 1 FROM journal_cron_runs WHERE run_id=? AND status IN ('accepted', 'running')"
                                    " AND fence IS ?", (run_id, fence)).fetchone()
        return row is not None

    def request_cancel(self, routine_id: str, reason: str, *, daemon_id: str) -> list[str]:
        with self.transaction() as c:
            rows = c.execute(f"SELECT run_id FROM journal_cron_runs WHERE routine_id=? AND {BUSY_SQL}"
                             " AND daemon_id IS NOT NULL AND daemon_id != ? AND cancel_reason IS NULL ORDER BY run_id",
                             (routine_id, daemon_id)).fetchall()
            ids = [str(r[0]) for r in rows]
            c.conn.executemany("UPDATE journal_cron_runs SET cancel_reason=? WHERE run_id=?", [(reason, i) for i in ids])
        return ids

    def cancel_requests(self, daemon_id: str) -> list[tuple[str, str]]:
        with self._lock:
            rows = self.conn.execute("SELECT run_id, cancel_reason FROM journal_cron_runs WHERE daemon_id=?"
                                     " AND status IN ('accepted', 'running') AND cancel_reason IS NOT NULL ORDER BY run_id",
                                     (daemon_id,)).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def queue_exclusive(self, run_id: str, routine_id: str, now_ms: int, *, busy: bool = False) -> tuple[str, str | None]:
        with self.transaction() as c:
            queued = c.execute("SELECT run_id FROM journal_cron_runs WHERE routine_id=? AND status='accepted'"
                               " AND queued_at_ms IS NOT NULL AND run_id != ? ORDER BY run_id LIMIT 1",
                               (routine_id, run_id)).fetchone()
            if queued is not None:
                return "skipped", str(queued[0])
            blocker = c.execute(f"SELECT run_id FROM journal_cron_runs WHERE routine_id=? AND {BUSY_SQL}"
                                " AND run_id != ? ORDER BY run_id LIMIT 1", (routine_id, run_id)).fetchone()
            if blocker is None and not busy:
                c.execute("UPDATE journal_cron_runs SET status='running', started_at_ms=? WHERE run_id=?", (now_ms, run_id))
                return "started", None
            c.execute("UPDATE journal_cron_runs SET queued_at_ms=? WHERE run_id=?", (now_ms, run_id))
        return "queued", str(blocker[0]) if blocker is not None else None

    def defer_exclusive(self, run_id: str, routine_id: str, until_ms: int, *, fence: str,
                        received_at_ms: int | None = None) -> str | None:
        with self.transaction() as c:
            row = c.execute("SELECT run_id FROM journal_cron_runs WHERE routine_id=? AND status='accepted' AND attempt=1"
                            " AND not_before_ms=? AND run_id != ? ORDER BY run_id LIMIT 1",
                            (routine_id, until_ms, run_id)).fetchone()
            if row is not None:
                return str(row[0])
            c.execute("UPDATE journal_cron_runs SET not_before_ms=?, fence=?, received_at_ms=coalesce(?, received_at_ms)"
                      " WHERE run_id=?", (until_ms, fence, received_at_ms, run_id))
        return None

    def take_parked(self, daemon_id: str, now_ms: int, limit: int = 64) -> list[RunRecord]:
        due = self.next_parked_ms()  # a read first: every heartbeat asks, and there is rarely any
        if due is None or due > now_ms:
            return []
        prefix = new_id()
        with self.transaction() as c:
            rows = records(c.execute("SELECT * FROM journal_cron_runs WHERE status='accepted' AND daemon_id IS NULL"
                                     " AND not_before_ms IS NOT NULL AND not_before_ms <= ?"
                                     " ORDER BY not_before_ms, run_id LIMIT ?", (now_ms, limit)), RunRecord)
            for r in rows:
                r.update(daemon_id=daemon_id, fence=f"{prefix}:{r['run_id']}")
                c.execute("UPDATE journal_cron_runs SET daemon_id=?, fence=? WHERE run_id=?",
                          (daemon_id, r["fence"], r["run_id"]))
        return rows

    def next_parked_ms(self) -> int | None:
        with self._lock:
            row = self.conn.execute("SELECT MIN(not_before_ms) FROM journal_cron_runs WHERE status='accepted'"
                                    " AND daemon_id IS NULL AND not_before_ms IS NOT NULL").fetchone()
        return int(row[0]) if row and row[0] is not None else None


__all__ = ["SQLiteHandover"]
