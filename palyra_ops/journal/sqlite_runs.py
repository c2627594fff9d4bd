"""The SQLite store's runs, approvals, events, apply log and the daemon's claim path.

A mixin of `SQLiteJournal` (split out to keep each room under 600 lines): it relies on the
store's connection, lock, clock and `transaction()`. Claims and job advances share one transaction
so a crash leaves either both or neither.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from palyra_ops.clock import Clock
from palyra_ops.journal.records import (
    BUSY_SQL,
    FINAL_STATUSES,
    ApplyLogRecord,
    ApprovalRecord,
    Claim,
    EventRecord,
    JobRecord,
    RunContext,
    RunRecord,
    encode_payload,
    is_parked,
    new_id,
)
from palyra_ops.journal.sqlite_conn import SQLiteTxn, record, records
from palyra_ops.journal.store import Txn, own_txn

#: final statuses as SQL: the fence of `update_run_and_job`
_FINAL = "(" + ", ".join(f"'{s}'" for s in FINAL_STATUSES) + ")"


class SQLiteRuns:
    conn: sqlite3.Connection
    clock: Clock
    path: Path
    _lock: threading.RLock

    @property
    def location(self) -> Path:
        """The journal as `open_journal` was given it: what another handle on it is opened with
        (plan's snapshot, the watcher). For SQLite the file itself, which is also `path`."""
        return self.path

    def transaction(self) -> AbstractContextManager[SQLiteTxn]:  # pragma: no cover - SQLiteJournal's
        raise NotImplementedError

    def put_job(self, c: Txn, routine_id: str, **fields: Any) -> None:  # pragma: no cover
        raise NotImplementedError

    def due_jobs(self, now_ms: int, limit: int = 64) -> list[JobRecord]:  # pragma: no cover - SQLiteJournal's
        raise NotImplementedError

    # -- runs ------------------------------------------------------------------------------------

    def insert_run(self, c: Txn | None = None, **fields: Any) -> str | None:
        """Insert a run record; returns its id, or None when its occurrence/dedupe key already exists.

        The unique occurrence key is what makes a claim exclusive: a second scheduler (or a restarted
        one) inserting the same (routine, nominal instant) gets None and must not dispatch.
        """
        c = own_txn(c, SQLiteTxn) if c is not None else None
        fields.setdefault("run_id", new_id())
        fields.setdefault("created_at_ms", self.clock.now_ms())
        if fields.get("trigger_payload") is not None and not isinstance(fields["trigger_payload"], str):
            fields["trigger_payload"] = encode_payload(fields["trigger_payload"])
        if isinstance(fields.get("skipped_times"), list):
            fields["skipped_times"] = json.dumps(fields["skipped_times"])
        cols = ", ".join(fields)
        marks = ", ".join("?" * len(fields))
        sql = f"INSERT OR IGNORE INTO journal_cron_runs ({cols}) VALUES ({marks})"
        if c is None:
            with self.transaction() as c2:
                cur = c2.execute(sql, tuple(fields.values()))
        else:
            cur = c.execute(sql, tuple(fields.values()))
        return fields["run_id"] if cur.rowcount == 1 else None

    def update_run(self, run_id: str, c: Txn | None = None, **fields: Any) -> None:
        c = own_txn(c, SQLiteTxn) if c is not None else None
        if fields.get("trigger_payload") is not None and not isinstance(fields["trigger_payload"], str):
            fields["trigger_payload"] = encode_payload(fields["trigger_payload"])
        sets = ", ".join(f"{k}=?" for k in fields)
        sql = f"UPDATE journal_cron_runs SET {sets} WHERE run_id=?"
        if c is None:
            with self.transaction() as c2:
                c2.execute(sql, (*fields.values(), run_id))
        else:
            c.execute(sql, (*fields.values(), run_id))

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            row = self.conn.execute("SELECT * FROM journal_cron_runs WHERE run_id=?", (run_id,)).fetchone()
        return record(row, RunRecord)

    def run_context(self, run_id: str, routine_id: str) -> RunContext:
        """Four reads under the store's lock (in process: no round trips to save here)."""
        with self._lock:
            run = self.conn.execute("SELECT * FROM journal_cron_runs WHERE run_id=?", (run_id,)).fetchone()
            job = self.conn.execute("SELECT * FROM journal_cron_jobs WHERE routine_id=?", (routine_id,)).fetchone()
            h = self.conn.execute("SELECT hash FROM journal_resources WHERE kind='Routine' AND name=?",
                                  (routine_id,)).fetchone()
            serial = self.conn.execute("SELECT value FROM journal_meta WHERE key='serial'").fetchone()
        return RunContext(record(run, RunRecord), record(job, JobRecord), h[0] if h else None,
                          int(serial[0]) if serial else 0)

    def run_contexts(self, pairs: Sequence[tuple[str, str]]) -> dict[str, RunContext]:
        """`run_context` per pair (in process: nothing to gain from one statement)."""
        return {run_id: self.run_context(run_id, routine_id) for run_id, routine_id in pairs}

    def list_runs(
        self,
        routine_id: str | None = None,
        *,
        status: str | None = None,
        limit: int = 50,
        before_run_id: str | None = None,
    ) -> list[RunRecord]:
        """Newest first; `before_run_id` pages backwards (run ids are ULIDs, so they sort by time)."""
        where, args = [], []
        if routine_id is not None:
            where.append("routine_id = ?")
            args.append(routine_id)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if before_run_id is not None:
            where.append("run_id < ?")
            args.append(before_run_id)
        sql = "SELECT * FROM journal_cron_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY run_id DESC LIMIT ?"
        with self._lock:
            return records(self.conn.execute(sql, (*args, limit)), RunRecord)

    def active_runs(self, routine_id: str | None = None) -> list[RunRecord]:
        sql = "SELECT * FROM journal_cron_runs WHERE status IN ('accepted', 'running')"
        args: tuple[Any, ...] = ()
        if routine_id is not None:
            sql += " AND routine_id = ?"
            args = (routine_id,)
        with self._lock:
            return records(self.conn.execute(sql + " ORDER BY run_id", args), RunRecord)

    def count_runs_by_status(self) -> dict[str, int]:
        with self._lock:
            return {r[0]: r[1] for r in self.conn.execute("SELECT status, COUNT(*) FROM journal_cron_runs GROUP BY status")}

    def finalize_orphans(self, reason: str, now_ms: int, daemon_id: str | None = None, *,
                         spare_live: bool = False, release_parked: bool = False) -> list[RunRecord]:
        """Mark runs left active by a dead process as failed; returns them (crash recovery).
        `spare_live`: leave the runs of daemons whose lease holds (`journal_daemons`) alone;
        `release_parked`: parked runs (retry waits, deferrals) are handed to any daemon instead."""
        with self.transaction() as c:
            sql = "SELECT * FROM journal_cron_runs WHERE status IN ('accepted', 'running')"
            args: tuple[Any, ...] = ()
            if daemon_id is not None:
                sql += " AND (daemon_id IS NULL OR daemon_id != ?)"
                args = (daemon_id,)
            if spare_live:
                sql += (" AND (daemon_id IS NULL OR daemon_id NOT IN (SELECT daemon_id FROM journal_daemons"
                        " WHERE heartbeat_at_ms + lease_ms >= ?))")
                args = (*args, self.clock.now_ms())
            rows = records(c.execute(sql, args), RunRecord)
            if release_parked:
                parked = [r["run_id"] for r in rows if is_parked(r)]
                rows = [r for r in rows if not is_parked(r)]
                c.conn.executemany("UPDATE journal_cron_runs SET daemon_id=NULL, fence=NULL WHERE run_id=?",
                                   [(rid,) for rid in parked])
            for r in rows:
                c.execute(
                    "UPDATE journal_cron_runs SET status='failed', reason=?, finished_at_ms=? WHERE run_id=?",
                    (reason, now_ms, r["run_id"]),
                )
        return rows

    # -- apply log -------------------------------------------------------------------------------

    def add_apply_log(self, c: Txn, **fields: Any) -> None:
        c = own_txn(c, SQLiteTxn)
        cols = ", ".join(fields)
        c.execute(f"INSERT INTO journal_apply_log ({cols}) VALUES ({', '.join('?' * len(fields))})", tuple(fields.values()))

    def last_apply(self) -> ApplyLogRecord | None:
        with self._lock:
            row = self.conn.execute("SELECT * FROM journal_apply_log ORDER BY id DESC LIMIT 1").fetchone()
        return record(row, ApplyLogRecord)

    def apply_log(self, limit: int = 20) -> list[ApplyLogRecord]:
        with self._lock:
            return records(self.conn.execute("SELECT * FROM journal_apply_log ORDER BY id DESC LIMIT ?", (limit,)),
                           ApplyLogRecord)

    # -- approvals -------------------------------------------------------------------------------

    def add_approval(self, c: Txn, *, routine_id: str, kind: str, run_id: str | None = None) -> str:
        c = own_txn(c, SQLiteTxn)
        approval_id = new_id()
        c.execute(
            "INSERT INTO journal_approvals (approval_id, routine_id, kind, run_id, state, created_at_ms) VALUES (?, ?, ?, ?, 'pending', ?)",
            (approval_id, routine_id, kind, run_id, self.clock.now_ms()),
        )
        return approval_id

    def cancel_pending_approvals(self, c: Txn, routine_id: str, kind: str | None = None) -> None:
        c = own_txn(c, SQLiteTxn)
        sql = "UPDATE journal_approvals SET state='cancelled', decided_at_ms=? WHERE routine_id=? AND state='pending'"
        args: tuple[Any, ...] = (self.clock.now_ms(), routine_id)
        if kind is not None:
            sql += " AND kind=?"
            args = (*args, kind)
        c.execute(sql, args)

    def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        with self._lock:
            row = self.conn.execute("SELECT * FROM journal_approvals WHERE approval_id=?", (approval_id,)).fetchone()
        return record(row, ApprovalRecord)

    def list_approvals(self, state: str | None = "pending") -> list[ApprovalRecord]:
        sql = "SELECT * FROM journal_approvals"
        args: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state=?"
            args = (state,)
        with self._lock:
            return records(self.conn.execute(sql + " ORDER BY created_at_ms", args), ApprovalRecord)

    def decide_approval(self, c: Txn, approval_id: str, state: str, by: str | None) -> None:
        c = own_txn(c, SQLiteTxn)
        c.execute(
            "UPDATE journal_approvals SET state=?, decided_at_ms=?, decided_by=? WHERE approval_id=?",
            (state, self.clock.now_ms(), by, approval_id),
        )

    # -- events ----------------------------------------------------------------------------------

    def add_event(self, name: str, payload: dict[str, Any] | None = None) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO journal_events (name, payload, created_at_ms) VALUES (?, ?, ?)",
                (name, json.dumps(payload or {}), self.clock.now_ms()),
            )

    def list_events(self, limit: int = 50) -> list[EventRecord]:
        with self._lock:
            return records(self.conn.execute("SELECT * FROM journal_events ORDER BY id DESC LIMIT ?", (limit,)),
                           EventRecord)

    # -- daemon runtime --------------------------------------------------------------------------
    # Operations of the scheduler and gateway (task E). Claims and job advances share one
    # transaction so a crash leaves either both or neither.

    def claim_occurrences(
        self, claims: list[Claim]
    ) -> list[list[str | None] | None]:
        """Claim due occurrences of several jobs in one write transaction.

        Each claim is (routine_id, expected next_run_at, run rows, job fields). The job row is
        compare-and-swapped on `next_run_at_unix_ms`: a scheduler that read a stale row (another
        scheduler or an apply got there first) gets None for that job and must dispatch nothing.
        Otherwise each run row is inserted with INSERT OR IGNORE on its occurrence key (its id, or
        None when the occurrence was already claimed) and the job advances.
        """
        out: list[list[str | None] | None] = []
        with self.transaction() as c:
            for routine_id, expected, runs, job_fields in claims:
                row = c.execute(
                    "SELECT next_run_at_unix_ms, enabled FROM journal_cron_jobs WHERE routine_id=?", (routine_id,)
                ).fetchone()
                if row is None or row[0] != expected or not row[1]:
                    out.append(None)
                    continue
                ids = [self.insert_run(c, **r) for r in runs]
                if job_fields:
                    self.put_job(c, routine_id, **job_fields)
                out.append(ids)
        return out

    def claim_due(self, now_ms: int, limit: int,
                  plan: Callable[[list[JobRecord]], list[Claim]]) -> tuple[int, list[list[str | None] | None]]:
        """One write transaction (one daemon holds a SQLite journal: nothing to spread)."""
        with self.transaction():
            jobs = self.due_jobs(now_ms, limit)
            return len(jobs), (self.claim_occurrences(plan(jobs)) if jobs else [])

    def count_due(self, now_ms: int) -> int:
        with self._lock:
            row = self.conn.execute(
                "SELECT COUNT(*) FROM journal_cron_jobs WHERE next_run_at_unix_ms IS NOT NULL"
                " AND next_run_at_unix_ms <= ? AND enabled = 1",
                (now_ms,),
            ).fetchone()
        return int(row[0])

    def judged_now_ms(self, local_ms: int) -> int:
        """One daemon on one file: its own clock is the journal's."""
        return local_ms

    def jobs_by_trigger(self, kinds: tuple[str, ...]) -> list[JobRecord]:
        marks = ", ".join("?" * len(kinds))
        with self._lock:
            rows = self.conn.execute(
                f"SELECT * FROM journal_cron_jobs WHERE trigger_kind IN ({marks}) ORDER BY routine_id", kinds
            ).fetchall()
        return records(rows, JobRecord)

    def set_dedupe_key(self, run_id: str, dedupe_key: str) -> str | None:
        """Attach a dedupe key to a first attempt; returns the id of the run that already holds it."""
        with self.transaction() as c:
            try:
                c.execute("UPDATE journal_cron_runs SET dedupe_key=? WHERE run_id=?", (dedupe_key, run_id))
            except sqlite3.IntegrityError:
                row = c.execute(
                    "SELECT run_id FROM journal_cron_runs WHERE routine_id=(SELECT routine_id FROM journal_cron_runs"
                    " WHERE run_id=?) AND dedupe_key=? AND attempt=1",
                    (run_id, dedupe_key),
                ).fetchone()
                return row[0] if row else "?"
        return None

    def update_run_and_job(self, run_id: str, run_fields: dict[str, Any], routine_id: str | None,
                           job_fields: dict[str, Any] | None, *, fence: str | None = None) -> bool:
        """A run transition and the job's last-run summary together (one commit on the hot path).

        Fenced: a run already final (a peer reaped it, `daemon_lost`), or whose fencing token is not
        `fence` (a peer took it over), is not overwritten, and its job summary is left alone; False."""
        with self.transaction() as c:
            if run_fields:
                if run_fields.get("trigger_payload") is not None and not isinstance(run_fields["trigger_payload"], str):
                    run_fields = {**run_fields, "trigger_payload": encode_payload(run_fields["trigger_payload"])}
                sets = ", ".join(f"{k}=?" for k in run_fields)
                cur = c.execute(f"UPDATE journal_cron_runs SET {sets} WHERE run_id=? AND status NOT IN {_FINAL}"
                                " AND fence IS ?", (*run_fields.values(), run_id, fence))
                if cur.rowcount == 0 and c.execute("SELECT 1 FROM journal_cron_runs WHERE run_id=?",
                                                   (run_id,)).fetchone() is not None:
                    return False
            if routine_id is not None and job_fields:
                fields = {**job_fields, "updated_at_ms": self.clock.now_ms()}
                sets = ", ".join(f"{k}=?" for k in fields)
                c.execute(f"UPDATE journal_cron_jobs SET {sets} WHERE routine_id=?", (*fields.values(), routine_id))
        return True

    def start_exclusive(self, run_id: str, routine_id: str, now_ms: int) -> str | None:
        """`forbid` across writers: SQLite's write lock (BEGIN IMMEDIATE) is the routine's lock."""
        with self.transaction() as c:
            row = c.execute(f"SELECT run_id FROM journal_cron_runs WHERE routine_id=? AND {BUSY_SQL} AND run_id != ?"
                            " ORDER BY run_id LIMIT 1", (routine_id, run_id)).fetchone()
            if row is not None:
                return str(row[0])
            c.execute("UPDATE journal_cron_runs SET status='running', started_at_ms=? WHERE run_id=?", (now_ms, run_id))
        return None

    def pending_approval(self, routine_id: str, kind: str) -> ApprovalRecord | None:
        with self._lock:
            row = self.conn.execute(
                "SELECT * FROM journal_approvals WHERE routine_id=? AND kind=? AND state='pending'"
                " ORDER BY created_at_ms LIMIT 1",
                (routine_id, kind),
            ).fetchone()
        return record(row, ApprovalRecord)

    def runs_with_occurrences(self, routine_id: str) -> list[RunRecord]:
        """Every run of a routine that claimed an occurrence, oldest first (tests and audits)."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT * FROM journal_cron_runs WHERE routine_id=? AND occurrence_key IS NOT NULL"
                " ORDER BY scheduled_at_ms, run_id",
                (routine_id,),
            ).fetchall()
        return records(rows, RunRecord)

    def claimed_instants(self, routine_id: str, start_ms: int, end_ms: int) -> set[int]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT scheduled_at_ms FROM journal_cron_runs WHERE routine_id=? AND occurrence_key IS NOT NULL"
                " AND scheduled_at_ms BETWEEN ? AND ?",
                (routine_id, start_ms, end_ms),
            ).fetchall()
        return {int(r[0]) for r in rows}

    def runs_in_order(self, routine_id: str | None = None) -> list[RunRecord]:
        """Runs in insertion order (run ids are ULIDs from wall time; a FakeClock test needs this)."""
        sql = "SELECT * FROM journal_cron_runs"
        args: tuple[Any, ...] = ()
        if routine_id is not None:
            sql += " WHERE routine_id=?"
            args = (routine_id,)
        with self._lock:
            return records(self.conn.execute(sql + " ORDER BY rowid", args), RunRecord)
