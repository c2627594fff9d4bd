"""The SQLite journal: the only place in palyra-ops that speaks SQL.

Callers see a narrow interface of named operations (read a snapshot, run an apply transaction, claim
an occurrence, record a run) rather than tables, so a PostgreSQL backend for several daemons sharing
one journal can implement the same methods without touching them.

Connections run in autocommit mode and every multi-statement write is an explicit
`BEGIN IMMEDIATE … COMMIT`, taking the write lock up front so two writers never deadlock on upgrade
and a killed process leaves either the old or the new state (SQLite's WAL guarantees the rest).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ulid import ULID

if TYPE_CHECKING:
    import sqlite_utils

from palyra_ops.clock import Clock, SystemClock
from palyra_ops.errors import JournalBusy, JournalError
from palyra_ops.fsmodes import private_dir, private_file
from palyra_ops.journal.faults import (
    JournalConnection,
    busy_timeout_ms,
    check_location,
    os_problem,
    translate,
)
from palyra_ops.journal.migrations import all_migrations
from palyra_ops.model import canonical_json

log = logging.getLogger("palyra_ops.journal")

#: statuses of a run that is still in flight
ACTIVE_STATUSES = ("accepted", "running")
FINAL_STATUSES = ("succeeded", "failed", "skipped", "throttled", "denied", "cancelled")


class StoredResource:
    """An object as stored; the body JSON is decoded only when looked at (plan compares hashes)."""

    __slots__ = ("kind", "name", "body_json", "hash", "applied_hash", "managed", "source_file",
                 "created_at_ms", "updated_at_ms", "_body")

    def __init__(self, kind: str, name: str, body_json: str, hash: str, applied_hash: str | None,
                 managed: bool, source_file: str | None, created_at_ms: int, updated_at_ms: int) -> None:
        self.kind = kind
        self.name = name
        self.body_json = body_json
        self.hash = hash
        self.applied_hash = applied_hash
        self.managed = managed
        self.source_file = source_file
        self.created_at_ms = created_at_ms
        self.updated_at_ms = updated_at_ms
        self._body: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"StoredResource({self.kind}/{self.name}, managed={self.managed}, hash={self.hash[:8]})"

    def _key(self) -> tuple[Any, ...]:
        return (self.kind, self.name, self.body_json, self.hash, self.applied_hash, self.managed,
                self.source_file, self.created_at_ms, self.updated_at_ms)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoredResource) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = json.loads(self.body_json)
        return self._body

    @property
    def drifted(self) -> bool:
        """Managed and changed outside git (API upsert, enable/disable) since the last apply."""
        return self.managed and self.applied_hash is not None and self.applied_hash != self.hash


class ResourceWrite(NamedTuple):
    """One object for `put_resources`: `body` is its canonical JSON."""

    kind: str
    name: str
    body: str
    hash: str
    managed: bool
    applied_hash: str | None
    source_file: str | None


@dataclass(frozen=True)
class Snapshot:
    """What plan diffs against: identity of the journal plus every stored object."""

    lineage: str | None
    serial: int
    resources: dict[tuple[str, str], StoredResource]
    jobs: dict[str, dict[str, Any]]


def encode_payload(value: Any) -> str:
    """A trigger payload that is not text is stored as JSON text: a number bound as itself overflows
    SQLite's 64-bit integers (a 20-digit integer was a 500). Text is stored as it is, because rows read
    back (already JSON text) are handed on to retries as they are."""
    return json.dumps(value)


def new_id() -> str:
    return str(ULID())


def connect(path: Path, *, autocommit: bool = True, busy_timeout: int | None = None,
            on_fault: Any = None) -> JournalConnection:
    """A connection to the journal file with the settings every user of it needs (WAL, waits on
    busy instead of failing, NORMAL sync — durable at checkpoints, safe against corruption).

    Environmental failures (busy, full, read-only, cannot open) raise named `JournalError`s from
    here and from every later statement on the connection (see `journal.faults`).
    """
    wait_ms = busy_timeout_ms(busy_timeout)
    t0 = time.monotonic()
    try:
        conn = sqlite3.connect(str(path), isolation_level=None if autocommit else "", check_same_thread=False,
                               timeout=wait_ms / 1000, factory=JournalConnection)
    except sqlite3.Error as exc:
        err = translate(exc, str(path), time.monotonic() - t0)
        if err is None:
            raise
        raise err from None
    assert isinstance(conn, JournalConnection)
    conn.journal_path = str(path)
    conn.on_fault = on_fault
    try:
        conn.execute(f"PRAGMA busy_timeout={wait_ms}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except JournalError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise JournalError(f"{path}: not a palyra journal ({exc})", path=str(path)) from None
    return conn


class _FaultState:
    """Whether the journal can be written right now, as the last writes found it.

    A fault is set by a failed write (full, read-only, unavailable) and cleared by the next write
    that commits, per source ("write": the journal's own connection; "checkpoint": the WAL
    checkpointer), so the checkpointer failing every second does not flap a healthy writer.
    Transitions are logged once each way — never one line per failed statement.
    """

    _LABELS = {"write": "writes", "checkpoint": "WAL checkpoints"}

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self.faults: dict[str, tuple[JournalError, int]] = {}
        self._logged: dict[str, str] = {}
        #: the daemon logs transitions; a CLI command reports the error itself (one line, no log)
        self.log = False

    def note(self, source: str, err: JournalError) -> None:
        if isinstance(err, JournalBusy):  # contention, not a broken journal: the caller reports it
            return
        prev = self.faults.get(source)
        since = prev[1] if prev is not None and type(prev[0]) is type(err) else self.clock.now_ms()
        self.faults[source] = (err, since)
        if self.log and self._logged.get(source) != err.message:
            self._logged[source] = err.message
            log.error("%s (%s failing); the daemon retries and resumes by itself", err.message,
                      self._LABELS.get(source, source))

    def clear(self, source: str) -> None:
        prev = self.faults.pop(source, None)
        if prev is not None and self._logged.pop(source, None) is not None:
            log.warning("journal %s is writable again (%s had failed for %.1f s)", self.path,
                        self._LABELS.get(source, source), max(0, self.clock.now_ms() - prev[1]) / 1000)

    def current(self) -> tuple[JournalError, int] | None:
        """The oldest current fault (error, since ms), or None when the last writes succeeded."""
        if not self.faults:
            return None
        return min(self.faults.values(), key=lambda f: f[1])


class SQLiteJournal:
    def __init__(self, path: Path, *, clock: Clock | None = None, busy_timeout: int | None = None) -> None:
        self.path = check_location(path)
        self.clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._busy_timeout = busy_timeout
        self._faults = _FaultState(self.path, self.clock)
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
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested use joins the outer one."""
        with self._lock:
            if self.conn.in_transaction:
                yield self.conn
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
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
                fn(c)
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

    def data_version(self) -> int:
        """Changes whenever *another* connection commits; cheap to poll for cross-process wake-ups."""
        with self._lock:
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def _bump_serial(self, c: sqlite3.Connection) -> int:
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
                jobs = {r["routine_id"]: dict(r) for r in self.conn.execute("SELECT * FROM journal_cron_jobs")}
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
        c: sqlite3.Connection,
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

    def put_resources(self, c: sqlite3.Connection, rows: Iterable[ResourceWrite]) -> None:
        """`put_resource` for many objects in one statement (apply of 100,000 routines); call inside
        `transaction()`. Every row gets the same write time: one apply is one instant."""
        now = self.clock.now_ms()
        c.executemany(
            """INSERT INTO journal_resources
                 (kind, name, body, hash, applied_hash, managed, source_file, created_at_ms, updated_at_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (kind, name) DO UPDATE SET
                 body=excluded.body, hash=excluded.hash, applied_hash=excluded.applied_hash,
                 managed=excluded.managed, source_file=excluded.source_file,
                 updated_at_ms=excluded.updated_at_ms""",
            ((r.kind, r.name, r.body, r.hash, r.applied_hash, int(r.managed), r.source_file, now, now) for r in rows),
        )

    def delete_resources(self, c: sqlite3.Connection, keys: Sequence[tuple[str, str]]) -> None:
        """`delete_resource` for many objects at once; call inside `transaction()`."""
        c.executemany("DELETE FROM journal_resources WHERE kind=? AND name=?", keys)
        routines = [(name,) for kind, name in keys if kind == "Routine"]
        c.executemany("DELETE FROM journal_cron_jobs WHERE routine_id=?", routines)
        now = self.clock.now_ms()
        c.executemany(
            "UPDATE journal_approvals SET state='cancelled', decided_at_ms=? WHERE routine_id=? AND state='pending'",
            ((now, name) for (name,) in routines),
        )

    def delete_resource(self, c: sqlite3.Connection, kind: str, name: str) -> None:
        c.execute("DELETE FROM journal_resources WHERE kind=? AND name=?", (kind, name))
        if kind == "Routine":
            c.execute("DELETE FROM journal_cron_jobs WHERE routine_id=?", (name,))
            c.execute(
                "UPDATE journal_approvals SET state='cancelled', decided_at_ms=? WHERE routine_id=? AND state='pending'",
                (self.clock.now_ms(), name),
            )

    def bump_serial(self, c: sqlite3.Connection) -> int:
        return self._bump_serial(c)

    def identity(self, c: sqlite3.Connection) -> tuple[str, int]:
        """Current (lineage, serial) read inside the caller's transaction, for stale-plan checks."""
        cur_lineage = c.execute("SELECT value FROM journal_meta WHERE key='lineage'").fetchone()[0]
        cur_serial = int(c.execute("SELECT value FROM journal_meta WHERE key='serial'").fetchone()[0])
        return cur_lineage, cur_serial

    # -- jobs ------------------------------------------------------------------------------------

    def put_job(self, c: sqlite3.Connection, routine_id: str, **fields: Any) -> None:
        """Create or update a job row; only the given fields change on update."""
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

    def jobs_for(self, c: sqlite3.Connection, routine_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The job rows of `routine_ids` that exist, read inside the caller's transaction in one query."""
        rows = c.execute(
            "SELECT * FROM journal_cron_jobs WHERE routine_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(routine_ids)),),
        )
        return {r["routine_id"]: dict(r) for r in rows}

    def put_jobs(self, c: sqlite3.Connection, writes: Sequence[tuple[str, dict[str, Any]]],
                 existing: Collection[str]) -> None:
        """`put_job` for many routines: `existing` names those whose row exists (`jobs_for`), updated
        with only their given fields; the others are inserted. One statement per shape of fields."""
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
                c.executemany(f"UPDATE journal_cron_jobs SET {sets} WHERE routine_id=?", [(*r[1:], r[0]) for r in rows])
            else:
                marks = ", ".join("?" * (len(cols) + 1))
                c.executemany(f"INSERT INTO journal_cron_jobs ({', '.join(['routine_id', *cols])}) VALUES ({marks})", rows)

    def get_job(self, routine_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.conn.execute("SELECT * FROM journal_cron_jobs WHERE routine_id=?", (routine_id,)).fetchone()
        return dict(row) if row else None

    def update_job(self, routine_id: str, **fields: Any) -> None:
        with self.transaction() as c:
            self.put_job(c, routine_id, **fields)

    def due_jobs(self, now_ms: int, limit: int = 64) -> list[dict[str, Any]]:
        """Enabled jobs whose next run is due, oldest first (SPEC §5: batches of at most 64)."""
        with self._lock:
            rows = self.conn.execute(
                """SELECT * FROM journal_cron_jobs
                   WHERE next_run_at_unix_ms IS NOT NULL AND next_run_at_unix_ms <= ? AND enabled = 1
                   ORDER BY next_run_at_unix_ms LIMIT ?""",
                (now_ms, limit),
            ).fetchall()
        return [dict(r) for r in rows]

    def next_due_ms(self) -> int | None:
        with self._lock:
            row = self.conn.execute(
                "SELECT MIN(next_run_at_unix_ms) FROM journal_cron_jobs WHERE enabled = 1"
            ).fetchone()
        return row[0] if row else None

    def upcoming_jobs(self, limit: int = 10) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.conn.execute(
                """SELECT * FROM journal_cron_jobs WHERE next_run_at_unix_ms IS NOT NULL AND enabled = 1
                   ORDER BY next_run_at_unix_ms LIMIT ?""",
                (limit,),
            ).fetchall()
        return [dict(r) for r in rows]

    def list_jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.conn.execute("SELECT * FROM journal_cron_jobs ORDER BY routine_id")]

    # -- runs ------------------------------------------------------------------------------------

    def insert_run(self, c: sqlite3.Connection | None = None, **fields: Any) -> str | None:
        """Insert a run record; returns its id, or None when its occurrence/dedupe key already exists.

        The unique occurrence key is what makes a claim exclusive: a second scheduler (or a restarted
        one) inserting the same (routine, nominal instant) gets None and must not dispatch.
        """
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

    def update_run(self, run_id: str, c: sqlite3.Connection | None = None, **fields: Any) -> None:
        if fields.get("trigger_payload") is not None and not isinstance(fields["trigger_payload"], str):
            fields["trigger_payload"] = encode_payload(fields["trigger_payload"])
        sets = ", ".join(f"{k}=?" for k in fields)
        sql = f"UPDATE journal_cron_runs SET {sets} WHERE run_id=?"
        if c is None:
            with self.transaction() as c2:
                c2.execute(sql, (*fields.values(), run_id))
        else:
            c.execute(sql, (*fields.values(), run_id))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.conn.execute("SELECT * FROM journal_cron_runs WHERE run_id=?", (run_id,)).fetchone()
        return dict(row) if row else None

    def list_runs(
        self,
        routine_id: str | None = None,
        *,
        status: str | None = None,
        limit: int = 50,
        before_run_id: str | None = None,
    ) -> list[dict[str, Any]]:
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
            return [dict(r) for r in self.conn.execute(sql, (*args, limit))]

    def active_runs(self, routine_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM journal_cron_runs WHERE status IN ('accepted', 'running')"
        args: tuple[Any, ...] = ()
        if routine_id is not None:
            sql += " AND routine_id = ?"
            args = (routine_id,)
        with self._lock:
            return [dict(r) for r in self.conn.execute(sql + " ORDER BY run_id", args)]

    def count_runs_by_status(self) -> dict[str, int]:
        with self._lock:
            return {r[0]: r[1] for r in self.conn.execute("SELECT status, COUNT(*) FROM journal_cron_runs GROUP BY status")}

    def finalize_orphans(self, reason: str, now_ms: int, daemon_id: str | None = None) -> list[dict[str, Any]]:
        """Mark runs left active by a dead process as failed; returns them (crash recovery)."""
        with self.transaction() as c:
            sql = "SELECT * FROM journal_cron_runs WHERE status IN ('accepted', 'running')"
            args: tuple[Any, ...] = ()
            if daemon_id is not None:
                sql += " AND (daemon_id IS NULL OR daemon_id != ?)"
                args = (daemon_id,)
            rows = [dict(r) for r in c.execute(sql, args)]
            for r in rows:
                c.execute(
                    "UPDATE journal_cron_runs SET status='failed', reason=?, finished_at_ms=? WHERE run_id=?",
                    (reason, now_ms, r["run_id"]),
                )
        return rows

    # -- apply log -------------------------------------------------------------------------------

    def add_apply_log(self, c: sqlite3.Connection, **fields: Any) -> None:
        cols = ", ".join(fields)
        c.execute(f"INSERT INTO journal_apply_log ({cols}) VALUES ({', '.join('?' * len(fields))})", tuple(fields.values()))

    def last_apply(self) -> dict[str, Any] | None:
        with self._lock:
            row = self.conn.execute("SELECT * FROM journal_apply_log ORDER BY id DESC LIMIT 1").fetchone()
        return dict(row) if row else None

    def apply_log(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.conn.execute("SELECT * FROM journal_apply_log ORDER BY id DESC LIMIT ?", (limit,))]

    # -- approvals -------------------------------------------------------------------------------

    def add_approval(self, c: sqlite3.Connection, *, routine_id: str, kind: str, run_id: str | None = None) -> str:
        approval_id = new_id()
        c.execute(
            "INSERT INTO journal_approvals (approval_id, routine_id, kind, run_id, state, created_at_ms) VALUES (?, ?, ?, ?, 'pending', ?)",
            (approval_id, routine_id, kind, run_id, self.clock.now_ms()),
        )
        return approval_id

    def cancel_pending_approvals(self, c: sqlite3.Connection, routine_id: str, kind: str | None = None) -> None:
        sql = "UPDATE journal_approvals SET state='cancelled', decided_at_ms=? WHERE routine_id=? AND state='pending'"
        args: tuple[Any, ...] = (self.clock.now_ms(), routine_id)
        if kind is not None:
            sql += " AND kind=?"
            args = (*args, kind)
        c.execute(sql, args)

    def get_approval(self, approval_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.conn.execute("SELECT * FROM journal_approvals WHERE approval_id=?", (approval_id,)).fetchone()
        return dict(row) if row else None

    def list_approvals(self, state: str | None = "pending") -> list[dict[str, Any]]:
        sql = "SELECT * FROM journal_approvals"
        args: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state=?"
            args = (state,)
        with self._lock:
            return [dict(r) for r in self.conn.execute(sql + " ORDER BY created_at_ms", args)]

    def decide_approval(self, c: sqlite3.Connection, approval_id: str, state: str, by: str | None) -> None:
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

    def list_events(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.conn.execute("SELECT * FROM journal_events ORDER BY id DESC LIMIT ?", (limit,))]

    # -- daemon runtime --------------------------------------------------------------------------
    # Operations of the scheduler and gateway (task E). Claims and job advances share one
    # transaction so a crash leaves either both or neither.

    def claim_occurrences(
        self, claims: list[tuple[str, int, list[dict[str, Any]], dict[str, Any]]]
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

    def count_due(self, now_ms: int) -> int:
        with self._lock:
            row = self.conn.execute(
                "SELECT COUNT(*) FROM journal_cron_jobs WHERE next_run_at_unix_ms IS NOT NULL"
                " AND next_run_at_unix_ms <= ? AND enabled = 1",
                (now_ms,),
            ).fetchone()
        return int(row[0])

    def jobs_by_trigger(self, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
        marks = ", ".join("?" * len(kinds))
        with self._lock:
            rows = self.conn.execute(
                f"SELECT * FROM journal_cron_jobs WHERE trigger_kind IN ({marks}) ORDER BY routine_id", kinds
            ).fetchall()
        return [dict(r) for r in rows]

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
                           job_fields: dict[str, Any] | None) -> None:
        """A run transition and the job's last-run summary together (one commit on the hot path)."""
        with self.transaction() as c:
            if run_fields:
                self.update_run(run_id, c, **run_fields)
            if routine_id is not None and job_fields:
                fields = {**job_fields, "updated_at_ms": self.clock.now_ms()}
                sets = ", ".join(f"{k}=?" for k in fields)
                c.execute(f"UPDATE journal_cron_jobs SET {sets} WHERE routine_id=?", (*fields.values(), routine_id))

    def pending_approval(self, routine_id: str, kind: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.conn.execute(
                "SELECT * FROM journal_approvals WHERE routine_id=? AND kind=? AND state='pending'"
                " ORDER BY created_at_ms LIMIT 1",
                (routine_id, kind),
            ).fetchone()
        return dict(row) if row else None

    def runs_with_occurrences(self, routine_id: str) -> list[dict[str, Any]]:
        """Every run of a routine that claimed an occurrence, oldest first (tests and audits)."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT * FROM journal_cron_runs WHERE routine_id=? AND occurrence_key IS NOT NULL"
                " ORDER BY scheduled_at_ms, run_id",
                (routine_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    def runs_in_order(self, routine_id: str | None = None) -> list[dict[str, Any]]:
        """Runs in insertion order (run ids are ULIDs from wall time; a FakeClock test needs this)."""
        sql = "SELECT * FROM journal_cron_runs"
        args: tuple[Any, ...] = ()
        if routine_id is not None:
            sql += " WHERE routine_id=?"
            args = (routine_id,)
        with self._lock:
            return [dict(r) for r in self.conn.execute(sql + " ORDER BY rowid", args)]

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
