"""The SQLite store: one journal file (WAL), one daemon (SPEC §4, §11).

This module holds the store's lifecycle, health, migrations, identity, desired state and jobs; runs,
approvals, events and the daemon's claim path are in `sqlite_runs`, the connection plumbing in
`sqlite_conn`. Together they implement `JournalStore` (`journal/store.py`), the seam every caller
sees, so the PostgreSQL store can stand in without callers changing.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

from palyra_ops.clock import Clock, SystemClock
from palyra_ops.errors import Conflict, JournalError, NotFound
from palyra_ops.fsmodes import private_dir, private_file
from palyra_ops.journal.daemons import SQLiteDaemons
from palyra_ops.journal.faults import check_location, os_problem
from palyra_ops.journal.migrations import all_migrations
from palyra_ops.journal.records import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    JobRecord,
    ResourceWrite,
    Snapshot,
    StoredResource,
    encode_payload,
    new_id,
)
from palyra_ops.journal.sqlite_conn import FaultState, SQLiteTxn, connect, record, records
from palyra_ops.journal.sqlite_handover import SQLiteHandover
from palyra_ops.journal.sqlite_runs import SQLiteRuns
from palyra_ops.journal.store import Txn, own_txn
from palyra_ops.model import canonical_json


class SQLiteJournal(SQLiteRuns, SQLiteDaemons, SQLiteHandover):
    def __init__(self, path: Path, *, clock: Clock | None = None, busy_timeout: int | None = None) -> None:
        self.path = check_location(path)
        self.clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._busy_timeout = busy_timeout
        self._faults = FaultState(self.path, self.clock)
        try:
            private_dir(self.path.parent)
        except OSError as exc:
            raise os_problem(self.path, exc) from None
        try:
            private_file(self.path)  # 0600 before SQLite opens it: -wal/-shm inherit the main file's mode
        except OSError as exc:
            raise os_problem(self.path, exc, beside=Path(self.path.name)) from None
        conn = connect(self.path, busy_timeout=busy_timeout, on_fault=lambda e: self._faults.note("write", e))
        conn.row_factory = sqlite3.Row
        self.conn = conn
        self._db: Any = None
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except BaseException:
            conn.close()
            raise

    @property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the same connection, imported on first use (it pulls in numpy,
        ~150 ms that a `palyra-ops status` should not pay)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> SQLiteJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SQLiteTxn]:
        """One write transaction; nested use joins the outer one."""
        with self._lock:
            if self.conn.in_transaction:
                yield SQLiteTxn(self.conn)
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield SQLiteTxn(self.conn)
            except BaseException:
                self._rollback()
                raise
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                # a failed COMMIT (busy, full) can leave the transaction open; joining it later
                # would silently make every following write part of one that never commits
                self._rollback()
                raise
            if self._faults.faults:
                self._faults.clear("write")

    def _rollback(self) -> None:
        """Roll back if a transaction is still open: SQLite already rolled back after some errors
        (SQLITE_FULL, SQLITE_IOERR), and a ROLLBACK then would hide the error that caused it."""
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error, JournalError):
                self.conn.execute("ROLLBACK")

    # -- health ----------------------------------------------------------------------------------

    @property
    def fault(self) -> JournalError | None:
        """Why the last writes failed (full, read-only, unavailable), or None when they succeed."""
        cur = self._faults.current()
        return cur[0] if cur is not None else None

    def log_faults(self) -> None:
        """Log when writes start and stop failing (the daemon's log; one line each way)."""
        self._faults.log = True

    @property
    def write_fault(self) -> JournalError | None:
        """The fault of the journal's own connection only (not the checkpointer's)."""
        cur = self._faults.faults.get("write")
        return cur[0] if cur is not None else None

    def fault_since_ms(self) -> int | None:
        cur = self._faults.current()
        return cur[1] if cur is not None else None

    def probe_write(self) -> None:
        """One small write transaction: clears the fault when the journal is writable again.

        The daemon calls it while a fault stands and nothing else writes (no run due), so /healthz
        recovers by itself; it raises the journal's error while the fault lasts.
        """
        with self.transaction() as c:
            c.execute("INSERT INTO journal_meta VALUES ('write_probe_ms', ?) ON CONFLICT (key) DO UPDATE"
                      " SET value=excluded.value", (str(self.clock.now_ms()),))

    def _migrate(self) -> None:
        """Bring the schema up to date; a journal already current is opened without any write.

        Opening must not need the write lock: a reader (status, plan) has to work while another
        process holds an apply transaction open. Each step re-checks inside its own transaction so
        two processes opening a new journal at once do not both run a migration.
        """
        if not self._pending_migrations() and self._has_lineage():
            return
        with self.transaction() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS journal_migrations (name TEXT PRIMARY KEY, applied_at_ms INTEGER NOT NULL)"
            )
        for name, fn in all_migrations():
            with self.transaction() as c:
                if c.execute("SELECT 1 FROM journal_migrations WHERE name=?", (name,)).fetchone():
                    continue
                fn(c.conn)
                if not c.in_transaction:  # an area migration committed on its own; keep bookkeeping
                    c.execute("BEGIN IMMEDIATE")
                c.execute("INSERT INTO journal_migrations VALUES (?, ?)", (name, self.clock.now_ms()))
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM journal_meta WHERE key='lineage'").fetchone() is None:
                c.execute("INSERT INTO journal_meta VALUES ('lineage', ?)", (str(uuid.uuid4()),))
                c.execute("INSERT INTO journal_meta VALUES ('serial', '0')")
                c.execute("INSERT INTO journal_meta VALUES ('created_at_ms', ?)", (str(self.clock.now_ms()),))

    def _pending_migrations(self) -> list[str]:
        known = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='journal_migrations'"
        ).fetchone()
        done = {r[0] for r in self.conn.execute("SELECT name FROM journal_migrations")} if known else set()
        return [name for name, _ in all_migrations() if name not in done]

    def _has_lineage(self) -> bool:
        known = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='journal_meta'").fetchone()
        return bool(known) and self._meta("lineage") is not None

    def migrations_applied(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM journal_migrations ORDER BY rowid")]

    # -- identity --------------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM journal_meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def lineage(self) -> str:
        return self._meta("lineage") or ""

    def serial(self) -> int:
        return int(self._meta("serial") or 0)

    def on_change(self, callback: Callable[[], None]) -> bool:
        """Nothing pushes changes of a SQLite file: False, the scheduler polls `data_version`."""
        return False

    def data_version(self) -> int:
        """Changes whenever *another* connection commits; cheap to poll for cross-process wake-ups."""
        with self._lock:
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def _bump_serial(self, c: Txn) -> int:
        c = own_txn(c, SQLiteTxn)
        c.execute("UPDATE journal_meta SET value = CAST(value AS INTEGER) + 1 WHERE key='serial'")
        return int(c.execute("SELECT value FROM journal_meta WHERE key='serial'").fetchone()[0])

    # -- desired-state objects ---------------------------------------------------------------------

    @staticmethod
    def _resource(row: sqlite3.Row) -> StoredResource:
        return StoredResource(
            kind=row["kind"],
            name=row["name"],
            body_json=row["body"],
            hash=row["hash"],
            applied_hash=row["applied_hash"],
            managed=bool(row["managed"]),
            source_file=row["source_file"],
            created_at_ms=row["created_at_ms"],
            updated_at_ms=row["updated_at_ms"],
        )

    def snapshot(self) -> Snapshot:
        with self._lock:
            self.conn.execute("BEGIN")
            try:
                lineage, serial = self.lineage(), self.serial()
                resources = {
                    (r["kind"], r["name"]): self._resource(r)
                    for r in self.conn.execute("SELECT * FROM journal_resources")
                }
                jobs = {r["routine_id"]: r for r in records(self.conn.execute("SELECT * FROM journal_cron_jobs"), JobRecord)}
            finally:
                self.conn.execute("COMMIT")
        return Snapshot(lineage=lineage, serial=serial, resources=resources, jobs=jobs)

    def get_resource(self, kind: str, name: str) -> StoredResource | None:
        with self._lock:
            row = self.conn.execute(
                "SELECT * FROM journal_resources WHERE kind=? AND name=?", (kind, name)
            ).fetchone()
        return self._resource(row) if row else None

    def list_resources(self, kind: str) -> list[StoredResource]:
        with self._lock:
            rows = self.conn.execute("SELECT * FROM journal_resources WHERE kind=? ORDER BY name", (kind,)).fetchall()
        return [self._resource(r) for r in rows]

    def put_resource(
        self,
        c: Txn,
        *,
        kind: str,
        name: str,
        body: dict[str, Any] | str,
        hash: str,
        managed: bool,
        applied_hash: str | None,
        source_file: str | None,
    ) -> None:
        """Insert or replace one object; call inside `transaction()`. `body` may be canonical JSON."""
        c = own_txn(c, SQLiteTxn)
        now = self.clock.now_ms()
        c.execute(
            """INSERT INTO journal_resources
                 (kind, name, body, hash, applied_hash, managed, source_file, created_at_ms, updated_at_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (kind, name) DO UPDATE SET
                 body=excluded.body, hash=excluded.hash, applied_hash=excluded.applied_hash,
                 managed=excluded.managed, source_file=excluded.source_file,
                 updated_at_ms=excluded.updated_at_ms""",
            (kind, name, body if isinstance(body, str) else canonical_json(body), hash, applied_hash,
             int(managed), source_file, now, now),
        )

    def put_resources(self, c: Txn, rows: Iterable[ResourceWrite]) -> None:
        """`put_resource` for many objects in one statement (apply of 100,000 routines); call inside
        `transaction()`. Every row gets the same write time: one apply is one instant."""
        conn = own_txn(c, SQLiteTxn).conn
        now = self.clock.now_ms()
        conn.executemany(
            """INSERT INTO journal_resources
                 (kind, name, body, hash, applied_hash, managed, source_file, created_at_ms, updated_at_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (kind, name) DO UPDATE SET
                 body=excluded.body, hash=excluded.hash, applied_hash=excluded.applied_hash,
                 managed=excluded.managed, source_file=excluded.source_file,
                 updated_at_ms=excluded.updated_at_ms""",
            ((r.kind, r.name, r.body, r.hash, r.applied_hash, int(r.managed), r.source_file, now, now) for r in rows),
        )

    def delete_resources(self, c: Txn, keys: Sequence[tuple[str, str]]) -> None:
        """`delete_resource` for many objects at once; call inside `transaction()`."""
        conn = own_txn(c, SQLiteTxn).conn
        conn.executemany("DELETE FROM journal_resources WHERE kind=? AND name=?", keys)
        routines = [(name,) for kind, name in keys if kind == "Routine"]
        conn.executemany("DELETE FROM journal_cron_jobs WHERE routine_id=?", routines)
        now = self.clock.now_ms()
        conn.executemany(
            "UPDATE journal_approvals SET state='cancelled', decided_at_ms=? WHERE routine_id=? AND state='pending'",
            [(now, name) for (name,) in routines],
        )

    def delete_resource(self, c: Txn, kind: str, name: str) -> None:
        c = own_txn(c, SQLiteTxn)
        c.execute("DELETE FROM journal_resources WHERE kind=? AND name=?", (kind, name))
        if kind == "Routine":
            c.execute("DELETE FROM journal_cron_jobs WHERE routine_id=?", (name,))
            c.execute(
                "UPDATE journal_approvals SET state='cancelled', decided_at_ms=? WHERE routine_id=? AND state='pending'",
                (self.clock.now_ms(), name),
            )

    def rename_routine(self, c: Txn, old: str, new: str) -> None:
        c = own_txn(c, SQLiteTxn)
        if c.execute("SELECT 1 FROM journal_resources WHERE kind='Routine' AND name=?", (old,)).fetchone() is None:
            raise NotFound(f"routine {old!r} does not exist")
        if c.execute("SELECT 1 FROM journal_resources WHERE kind='Routine' AND name=?", (new,)).fetchone() is not None:
            raise Conflict(f"cannot rename routine {old!r} to {new!r}: a routine {new!r} exists")
        prefix = len(old) + 2  # occurrence keys are "routine|nominal instant"
        try:
            c.execute("UPDATE journal_resources SET name=? WHERE kind='Routine' AND name=?", (new, old))
            c.execute("DELETE FROM journal_cron_jobs WHERE routine_id=?", (new,))  # a leftover row of no routine
            c.execute("UPDATE journal_cron_jobs SET routine_id=? WHERE routine_id=?", (new, old))
            c.execute(
                "UPDATE journal_cron_runs SET routine_id=?1, occurrence_key=CASE"
                " WHEN substr(occurrence_key, 1, ?3) = ?2 || '|' THEN ?1 || '|' || substr(occurrence_key, ?4)"
                " ELSE occurrence_key END WHERE routine_id=?2",
                (new, old, prefix - 1, prefix),
            )
        except sqlite3.IntegrityError:
            raise Conflict(
                f"cannot rename routine {old!r} to {new!r}: the journal still holds runs of an earlier routine "
                f"named {new!r} at the same scheduled times or with the same dedupe keys"
            ) from None
        c.execute("UPDATE journal_approvals SET routine_id=? WHERE routine_id=?", (new, old))

    def bump_serial(self, c: Txn) -> int:
        c = own_txn(c, SQLiteTxn)
        return self._bump_serial(c)

    def identity(self, c: Txn) -> tuple[str, int]:
        """Current (lineage, serial) read inside the caller's transaction, for stale-plan checks."""
        c = own_txn(c, SQLiteTxn)
        cur_lineage = c.execute("SELECT value FROM journal_meta WHERE key='lineage'").fetchone()[0]
        cur_serial = int(c.execute("SELECT value FROM journal_meta WHERE key='serial'").fetchone()[0])
        return cur_lineage, cur_serial

    # -- jobs ------------------------------------------------------------------------------------

    def put_job(self, c: Txn, routine_id: str, **fields: Any) -> None:
        """Create or update a job row; only the given fields change on update."""
        c = own_txn(c, SQLiteTxn)
        fields["updated_at_ms"] = self.clock.now_ms()
        exists = c.execute("SELECT 1 FROM journal_cron_jobs WHERE routine_id=?", (routine_id,)).fetchone()
        if exists:
            sets = ", ".join(f"{k}=?" for k in fields)
            c.execute(f"UPDATE journal_cron_jobs SET {sets} WHERE routine_id=?", (*fields.values(), routine_id))
        else:
            fields.setdefault("trigger_kind", "manual")
            cols = ", ".join(["routine_id", *fields])
            marks = ", ".join("?" * (len(fields) + 1))
            c.execute(f"INSERT INTO journal_cron_jobs ({cols}) VALUES ({marks})", (routine_id, *fields.values()))

    def jobs_for(self, c: Txn, routine_ids: Sequence[str]) -> dict[str, JobRecord]:
        """The job rows of `routine_ids` that exist, read inside the caller's transaction in one query."""
        rows = own_txn(c, SQLiteTxn).execute(
            "SELECT * FROM journal_cron_jobs WHERE routine_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(routine_ids)),),
        )
        return {r["routine_id"]: r for r in records(rows, JobRecord)}

    def put_jobs(self, c: Txn, writes: Sequence[tuple[str, dict[str, Any]]], existing: Collection[str]) -> None:
        """`put_job` for many routines: `existing` names those whose row exists (`jobs_for`), updated
        with only their given fields; the others are inserted. One statement per shape of fields."""
        conn = own_txn(c, SQLiteTxn).conn
        now = self.clock.now_ms()
        groups: dict[tuple[bool, tuple[str, ...]], list[tuple[Any, ...]]] = {}
        for routine_id, given in writes:
            fields = {**given, "updated_at_ms": now}
            if routine_id not in existing:
                fields.setdefault("trigger_kind", "manual")
            groups.setdefault((routine_id in existing, tuple(fields)), []).append((routine_id, *fields.values()))
        for (update, cols), rows in groups.items():
            if update:
                sets = ", ".join(f"{k}=?" for k in cols)
                conn.executemany(f"UPDATE journal_cron_jobs SET {sets} WHERE routine_id=?", [(*r[1:], r[0]) for r in rows])
            else:
                marks = ", ".join("?" * (len(cols) + 1))
                conn.executemany(f"INSERT INTO journal_cron_jobs ({', '.join(['routine_id', *cols])}) VALUES ({marks})",
                                 rows)

    def get_job(self, routine_id: str) -> JobRecord | None:
        with self._lock:
            row = self.conn.execute("SELECT * FROM journal_cron_jobs WHERE routine_id=?", (routine_id,)).fetchone()
        return record(row, JobRecord)

    def update_job(self, routine_id: str, **fields: Any) -> None:
        with self.transaction() as c:
            self.put_job(c, routine_id, **fields)

    def due_jobs(self, now_ms: int, limit: int = 64) -> list[JobRecord]:
        """Enabled jobs whose next run is due, oldest first (SPEC §5: batches of at most 64)."""
        with self._lock:
            rows = self.conn.execute(
                """SELECT * FROM journal_cron_jobs
                   WHERE next_run_at_unix_ms IS NOT NULL AND next_run_at_unix_ms <= ? AND enabled = 1
                   ORDER BY next_run_at_unix_ms LIMIT ?""",
                (now_ms, limit),
            ).fetchall()
        return records(rows, JobRecord)

    def next_due_ms(self) -> int | None:
        with self._lock:
            row = self.conn.execute(
                "SELECT MIN(next_run_at_unix_ms) FROM journal_cron_jobs WHERE enabled = 1"
            ).fetchone()
        return row[0] if row else None

    def upcoming_jobs(self, limit: int = 10) -> list[JobRecord]:
        with self._lock:
            rows = self.conn.execute(
                """SELECT * FROM journal_cron_jobs WHERE next_run_at_unix_ms IS NOT NULL AND enabled = 1
                   ORDER BY next_run_at_unix_ms LIMIT ?""",
                (limit,),
            ).fetchall()
        return records(rows, JobRecord)

    def list_jobs(self) -> list[JobRecord]:
        with self._lock:
            return records(self.conn.execute("SELECT * FROM journal_cron_jobs ORDER BY routine_id"), JobRecord)

    def job_times(self) -> list[tuple[str, int | None, int | None]]:
        with self._lock:
            rows = self.conn.execute("SELECT routine_id, last_success_at_ms, next_run_at_unix_ms"
                                     " FROM journal_cron_jobs ORDER BY routine_id").fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    # -- WAL maintenance -------------------------------------------------------------------------

    def defer_checkpoints(self) -> None:
        """Stop this connection from checkpointing the WAL on commit.

        An automatic checkpoint runs inside whichever commit crosses the threshold and fsyncs the
        database: a multi-millisecond stall on the daemon's event loop. The daemon turns it off and
        calls `checkpoint()` from a worker thread instead.
        """
        with self._lock:
            self.conn.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> tuple[int, int, int]:
        """PASSIVE WAL checkpoint on a private connection (safe to call from another thread)."""
        conn = getattr(self, "_ckpt_conn", None)
        if conn is None:
            conn = connect(self.path, busy_timeout=self._busy_timeout,
                           on_fault=lambda e: self._faults.note("checkpoint", e))
            self._ckpt_conn = conn
        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if self._faults.faults:
            self._faults.clear("checkpoint")
        return int(row[0]), int(row[1]), int(row[2])

    def close_checkpointer(self) -> None:
        conn = getattr(self, "_ckpt_conn", None)
        if conn is not None:
            conn.close()
            self._ckpt_conn = None

    def resource_hash(self, kind: str, name: str) -> str | None:
        """Just the content hash: lets the gateway reuse a parsed object without reading its body."""
        with self._lock:
            row = self.conn.execute("SELECT hash FROM journal_resources WHERE kind=? AND name=?", (kind, name)).fetchone()
        return row[0] if row else None

    def resource_hashes(self, kind: str, names: Sequence[str]) -> dict[str, str]:
        with self._lock:
            return {r[0]: r[1] for r in self.conn.execute(
                "SELECT name, hash FROM journal_resources WHERE kind=? AND name IN (SELECT value FROM json_each(?))",
                (kind, json.dumps(list(names))))}

    def resources_named(self, kind: str, names: Sequence[str]) -> list[StoredResource]:
        with self._lock:
            rows = self.conn.execute("SELECT * FROM journal_resources WHERE kind=? AND name IN"
                                     " (SELECT value FROM json_each(?)) ORDER BY name", (kind, json.dumps(list(names))))
            return [self._resource(r) for r in rows]


__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "SQLiteJournal",
    "Snapshot",
    "StoredResource",
    "connect",
    "encode_payload",
    "new_id",
]
