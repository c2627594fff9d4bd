"""Runs handed between daemons on a PostgreSQL journal (SPEC §11; see `sqlite_handover`): the
fencing token's check, peers' cancel requests, `queue_one`'s journal-wide mark, and parked runs
(retry waits and quiet-hours deferrals of a daemon that died) any daemon takes when they come due.

`queue_exclusive` holds the same transaction-scoped advisory lock on the routine as
`start_exclusive`, so a check and what follows from it are one step across daemons; `take_parked`
locks the due parked rows `FOR UPDATE SKIP LOCKED`, so two daemons taking at once get disjoint runs.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from psycopg.rows import DictRow

from palyra_ops.journal.postgres_conn import PgTxn, records
from palyra_ops.journal.records import BUSY_SQL, RunRecord, new_id

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('palyra.forbid:' || %s, 0))"


class PgHandover:
    """A mixin of `PgJournal`."""

    def transaction(self) -> AbstractContextManager[PgTxn]:  # pragma: no cover - PgJournal's
        raise NotImplementedError

    def _one(self, sql: str, params: Any = None) -> DictRow | None:  # pragma: no cover - PgJournal's
        raise NotImplementedError

    def _all(self, sql: str, params: Any = None) -> list[DictRow]:  # pragma: no cover - PgJournal's
        raise NotImplementedError

    def fence_holds(self, run_id: str, fence: str | None) -> bool:
        return self._one("SELECT 1 AS held FROM journal_cron_runs WHERE run_id=%s AND status IN ('accepted', 'running')"
                         " AND fence IS NOT DISTINCT FROM %s", (run_id, fence)) is not None

    def request_cancel(self, routine_id: str, reason: str, *, daemon_id: str) -> list[str]:
        """Ask the daemons holding the routine's busy runs to cancel them; they read it on their next
        heartbeat (`cancel_requests`)."""
        with self.transaction() as t:
            rows = t.execute(f"UPDATE journal_cron_runs SET cancel_reason=%s WHERE routine_id=%s AND {BUSY_SQL}"
                             " AND daemon_id IS NOT NULL AND daemon_id != %s AND cancel_reason IS NULL RETURNING run_id",
                             (reason, routine_id, daemon_id)).fetchall()
        return sorted(str(r["run_id"]) for r in rows)

    def cancel_requests(self, daemon_id: str) -> list[tuple[str, str]]:
        rows = self._all("SELECT run_id, cancel_reason FROM journal_cron_runs WHERE daemon_id=%s"
                         " AND status IN ('accepted', 'running') AND cancel_reason IS NOT NULL ORDER BY run_id",
                         (daemon_id,))
        return [(str(r["run_id"]), str(r["cancel_reason"])) for r in rows]

    def queue_exclusive(self, run_id: str, routine_id: str, now_ms: int, *, busy: bool = False) -> tuple[str, str | None]:
        with self.transaction() as t:
            t.execute(_LOCK, (routine_id,))
            queued = t.execute("SELECT run_id FROM journal_cron_runs WHERE routine_id=%s AND status='accepted'"
                               " AND queued_at_ms IS NOT NULL AND run_id != %s ORDER BY run_id LIMIT 1",
                               (routine_id, run_id)).fetchone()
            if queued is not None:
                return "skipped", str(queued["run_id"])
            blocker = t.execute(f"SELECT run_id FROM journal_cron_runs WHERE routine_id=%s AND {BUSY_SQL}"
                                " AND run_id != %s ORDER BY run_id LIMIT 1", (routine_id, run_id)).fetchone()
            if blocker is None and not busy:
                t.execute("UPDATE journal_cron_runs SET status='running', started_at_ms=%s WHERE run_id=%s",
                          (now_ms, run_id))
                return "started", None
            t.execute("UPDATE journal_cron_runs SET queued_at_ms=%s WHERE run_id=%s", (now_ms, run_id))
        return "queued", str(blocker["run_id"]) if blocker is not None else None

    def defer_exclusive(self, run_id: str, routine_id: str, until_ms: int, *, fence: str,
                        received_at_ms: int | None = None) -> str | None:
        with self.transaction() as t:
            t.execute(_LOCK, (routine_id,))
            row = t.execute("SELECT run_id FROM journal_cron_runs WHERE routine_id=%s AND status='accepted' AND attempt=1"
                            " AND not_before_ms=%s AND run_id != %s ORDER BY run_id LIMIT 1",
                            (routine_id, until_ms, run_id)).fetchone()
            if row is not None:
                return str(row["run_id"])
            t.execute("UPDATE journal_cron_runs SET not_before_ms=%s, fence=%s,"
                      " received_at_ms=coalesce(%s, received_at_ms) WHERE run_id=%s",
                      (until_ms, fence, received_at_ms, run_id))
        return None

    def take_parked(self, daemon_id: str, now_ms: int, limit: int = 64) -> list[RunRecord]:
        with self.transaction() as t:
            rows = records(t.execute(
                "UPDATE journal_cron_runs SET daemon_id=%s, fence=%s || ':' || run_id WHERE run_id IN ("
                " SELECT run_id FROM journal_cron_runs WHERE status='accepted' AND daemon_id IS NULL"
                " AND not_before_ms IS NOT NULL AND not_before_ms <= %s ORDER BY not_before_ms, run_id LIMIT %s"
                " FOR UPDATE SKIP LOCKED) RETURNING *", (daemon_id, new_id(), now_ms, limit)), RunRecord)
        return sorted(rows, key=lambda r: (r["not_before_ms"] or 0, r["run_id"]))

    def next_parked_ms(self) -> int | None:
        row = self._one("SELECT MIN(not_before_ms) AS due FROM journal_cron_runs WHERE status='accepted'"
                        " AND daemon_id IS NULL AND not_before_ms IS NOT NULL")
        return int(row["due"]) if row and row["due"] is not None else None


__all__ = ["PgHandover"]
