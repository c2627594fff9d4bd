"""Runs handed between daemons on a SQLite journal (SPEC §11; the PostgreSQL side is
`postgres_handover`): the fencing token's check, peers' cancel requests, `queue_one`'s journal-wide
mark, and parked runs (retry waits, quiet-hours deferrals) any daemon takes when they come due.

On SQLite one daemon holds the journal, so nothing is ever handed to a peer; the methods exist so
that one gateway speaks one protocol to both stores (and the contract suite holds them to it): a
restarted daemon takes back the parked runs of the one before it.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager

from palyra_ops.clock import Clock
from palyra_ops.journal.sqlite_conn import SQLiteTxn


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


__all__ = ["SQLiteHandover"]
