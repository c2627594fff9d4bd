"""The PostgreSQL store: the journal in a PostgreSQL database, for several daemons (SPEC §4, §11).

This module holds the store's lifecycle, health, migrations, identity, desired state and jobs; runs,
approvals, events and the daemon's claim path are in `postgres_runs`, the driver plumbing in
`postgres_conn`, the schema in `postgres_schema`. Together they implement `JournalStore`
(`journal/store.py`) with the behaviour the SQLite store has (tests/journal_contract.py runs on both).

Transactions: one pooled connection per `transaction()`, remembered per thread so nested use joins
the outer one and the store's reads inside it see its uncommitted writes (as on SQLite). Reads
outside a transaction run in autocommit on any pooled connection. Where SQLite serializes writers
with `BEGIN IMMEDIATE`, this store locks what it must: the serial row (`identity`, stale-plan checks
of concurrent applies) and the due jobs of a claim (`FOR UPDATE SKIP LOCKED`).

Clocks: due times are judged by the database's clock as well as the caller's (`due_jobs` takes the
earlier of the two), so a daemon whose clock runs ahead cannot fire early; `next_due_ms` is given in
the caller's clock, so that daemon sleeps until the database agrees instead of spinning.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from palyra_ops.clock import Clock, SystemClock
from palyra_ops.errors import Conflict, JournalError, JournalUnavailable, NotFound
from palyra_ops.journal.faults import busy_timeout_ms, redact, side_path
from palyra_ops.journal.postgres_conn import (
    DB_NOW_MS,
    PgTxn,
    Recent,
    columns,
    pool_kwargs,
    record,
    records,
    translate,
)
from palyra_ops.journal.postgres_daemons import PgDaemons
from palyra_ops.journal.postgres_handover import PgHandover
from palyra_ops.journal.postgres_listen import CHANNEL, NOTIFY_SQL, ChangeListener
from palyra_ops.journal.postgres_runs import PgRuns
from palyra_ops.journal.postgres_schema import MIGRATION_LOCK, pg_migrations
from palyra_ops.journal.records import JobRecord, ResourceWrite, Snapshot, StoredResource
from palyra_ops.journal.sqlite_conn import FaultState
from palyra_ops.journal.store import Txn, own_txn
from palyra_ops.model import canonical_json

# the pool logs every failed reconnect attempt (two lines, several a second while the server is
# down); the store logs the outage itself, once when writes start failing and once when they work
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

#: how long a statement waits for a pooled connection (server down: fail, back off, retry)
POOL_TIMEOUT_S = 5.0
#: ... while the server is known to be unreachable (a standing `JournalUnavailable`): fail at once
#: rather than hold the caller (some are on the event loop: /healthz, the journal watcher) for
#: POOL_TIMEOUT_S per statement; the pool reconnects in the background with its own backoff, and
#: the scheduler's probe clears the fault as soon as a connection works again
DOWN_POOL_TIMEOUT_S = 0.2
CONNECT_TIMEOUT_S = 5
POOL_MAX = 8
#: how often `judged_now_ms` re-measures the database's clock against ours
SKEW_REFRESH_S = 1.0


class PgJournal(PgRuns, PgDaemons, PgHandover):
    def __init__(self, url: str, *, clock: Clock | None = None, state_root: Path | None = None,
                 pool_max: int = POOL_MAX) -> None:
        self.url = url
        self.where = redact(url)
        self.clock = clock or SystemClock()
        self._side = side_path(url, state_root)
        self._local = threading.local()
        self._skew_ms = 0
        self._skew_at: float | None = None
        self._faults = FaultState(self.where, self.clock)
        kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": None, "row_factory": dict_row}
        if "connect_timeout" not in url:
            kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
        # one direct connection first: its failure says why (refused, no such database, bad
        # password) where a pool would only time out; it also runs the migrations
        try:
            first = psycopg.connect(url, **kwargs)
        except psycopg.Error as exc:
            err = translate(exc, self.where)
            raise (err or JournalError(f"journal {self.where}: {exc}", path=self.where)) from None
        try:
            with first:
                self._migrate(first)
        except psycopg.Error as exc:
            err = translate(exc, self.where)
            if err is None:
                raise
            raise err from None
        self._kwargs = kwargs
        self._listeners: list[ChangeListener] = []
        self._recent = recent = Recent()
        self.pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            url, min_size=1, max_size=max(1, pool_max), kwargs=pool_kwargs(url, kwargs), open=False,
            timeout=POOL_TIMEOUT_S,
            check=recent.check, reset=recent.returned, name="palyra-journal",
        )
        self.pool.open(wait=False)

    @property
    def path(self) -> Path:
        """Side files (memory index, caches) of this process live beside this name (`side_path`)."""
        return self._side

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()
        self.pool.close()

    def on_change(self, callback: Callable[[], None]) -> bool:
        """Call `callback` (from a thread of the store's) when any process commits a change the
        schedulers must see (`postgres_listen`); True: changes are pushed, polling is the fallback."""
        self.on_notify(CHANNEL, callback)
        return True

    def on_notify(self, channel: str, callback: Callable[[], None]) -> None:
        """Call `callback` on each NOTIFY on `channel` (and once per (re)connect), on the one
        listening connection of this store (memory's index follower uses `palyra_memory`)."""
        if self._listeners:
            self._listeners[0].add(channel, callback)
        else:
            self._listeners.append(ChangeListener(self.url, self._kwargs, callback, channel))

    def __enter__(self) -> PgJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Environmental psycopg errors as journal errors (noted for `/healthz`), others as they are."""
        try:
            yield
        except JournalError:
            raise
        except Exception as exc:
            err = translate(exc, self.where)
            if err is None:
                raise
            self._faults.note("write", err)
            raise err from None

    def _txn(self) -> PgTxn | None:
        return getattr(self._local, "txn", None)

    def _connection(self) -> contextlib.AbstractContextManager[psycopg.Connection[DictRow]]:
        """A pooled connection, waited for briefly while the server is known to be down."""
        down = self._faults.faults.get("write")
        if down is not None and isinstance(down[0], JournalUnavailable):
            return self.pool.connection(timeout=DOWN_POOL_TIMEOUT_S)
        return self.pool.connection()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PgTxn]:
        """One write transaction on one pooled connection; nested use (same thread) joins it."""
        outer = self._txn()
        if outer is not None:
            yield outer
            return
        with self._guard(), self._connection() as conn, conn.transaction():
            txn = PgTxn(conn)
            self._local.txn = txn
            try:
                yield txn
            finally:
                self._local.txn = None
        if self._faults.faults:
            self._faults.clear("write")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[DictRow]]:
        """A connection to read on: the thread's open transaction, else any pooled one."""
        txn = self._txn()
        if txn is not None:
            yield txn.conn
            return
        with self._guard(), self._connection() as conn:
            yield conn

    def _read(self, sql: str, params: Any, one: bool) -> Any:
        """One read statement. Outside a transaction it is retried on another connection when the
        one it ran on turns out broken (the server restarted since that connection was last used:
        `Recent` skips the pool's check for connections used in the last second)."""
        txn = self._txn()
        if txn is not None:
            with self._guard():
                cur = txn.conn.execute(sql, params)  # type: ignore[arg-type]
                return cur.fetchone() if one else cur.fetchall()
        with self._guard():
            for attempt in range(3):
                with self._connection() as conn:
                    try:
                        cur = conn.execute(sql, params)  # type: ignore[arg-type]
                        return cur.fetchone() if one else cur.fetchall()
                    except (psycopg.OperationalError, psycopg.InterfaceError):
                        if not conn.broken or attempt == 2:
                            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _all(self, sql: str, params: Any = None) -> list[DictRow]:
        return self._read(sql, params, False)  # type: ignore[no-any-return]

    def _one(self, sql: str, params: Any = None) -> DictRow | None:
        return self._read(sql, params, True)  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def maintenance_lock(self, name: str) -> Iterator[bool]:
        """Maintenance on one daemon at a time: a transaction-scoped advisory lock on the task's
        name, tried (never waited for) on a connection of its own and held in an open transaction
        while the task runs — pooler-safe, released by the server if this process dies, and the
        task's own journal writes go through other connections (not this idle transaction)."""
        with self._guard(), self._connection() as conn, conn.transaction():
            row = conn.execute("SELECT pg_try_advisory_xact_lock(hashtextextended('palyra.maintenance:' || %s, 0))"
                               " AS got", (name,)).fetchone()
            yield bool(row and row["got"])

    # -- health ----------------------------------------------------------------------------------

    @property
    def fault(self) -> JournalError | None:
        cur = self._faults.current()
        return cur[0] if cur is not None else None

    @property
    def write_fault(self) -> JournalError | None:
        cur = self._faults.faults.get("write")
        return cur[0] if cur is not None else None

    def fault_since_ms(self) -> int | None:
        cur = self._faults.current()
        return cur[1] if cur is not None else None

    def log_faults(self) -> None:
        self._faults.log = True

    def probe_write(self) -> None:
        """One small write: clears the fault once the database is reachable and writable again."""
        with self.transaction() as c:
            c.execute("INSERT INTO journal_meta VALUES ('write_probe_ms', %s) ON CONFLICT (key) DO UPDATE"
                      " SET value = excluded.value", (str(self.clock.now_ms()),))

    def data_version(self) -> int:
        """Changes when a write transaction starts or ends anywhere on the server: the snapshot's
        in-progress set moves on every commit. (Spurious changes only cost the scheduler one look.)"""
        row = self._one("SELECT pg_current_snapshot()::text AS s")
        assert row is not None
        return int.from_bytes(hashlib.blake2b(str(row["s"]).encode(), digest_size=7).digest(), "big")

    def defer_checkpoints(self) -> None:
        """Nothing to defer: the server checkpoints on its own."""

    def checkpoint(self) -> tuple[int, int, int]:
        return (0, 0, 0)

    def close_checkpointer(self) -> None:
        """No checkpointer connection to close."""

    # -- migrations ------------------------------------------------------------------------------

    def _migrate(self, conn: psycopg.Connection[DictRow]) -> None:
        """Bring the schema up to date; a current journal is opened with reads only."""
        names = [name for name, _ in pg_migrations()]
        row = conn.execute("SELECT to_regclass('journal_migrations') IS NOT NULL AS ok").fetchone()
        if row is not None and row["ok"]:
            done = {r["name"] for r in conn.execute("SELECT name FROM journal_migrations")}
            # another process may be half-way through creating the journal: look further only
            # once every step is recorded (journal_meta exists from the first one on)
            if done.issuperset(names) and conn.execute(
                    "SELECT 1 FROM journal_meta WHERE key='lineage'").fetchone() is not None:
                return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS journal_migrations (name TEXT PRIMARY KEY,"
                         " applied_at_ms BIGINT NOT NULL, seq BIGINT GENERATED ALWAYS AS IDENTITY)")
        for name, fn in pg_migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                if conn.execute("SELECT 1 FROM journal_migrations WHERE name=%s", (name,)).fetchone():
                    continue
                fn(PgTxn(conn))
                conn.execute("INSERT INTO journal_migrations (name, applied_at_ms) VALUES (%s, %s)",
                             (name, self.clock.now_ms()))
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            if conn.execute("SELECT 1 FROM journal_meta WHERE key='lineage'").fetchone() is None:
                conn.execute("INSERT INTO journal_meta VALUES ('lineage', %s), ('serial', '0'), ('created_at_ms', %s)",
                             (str(uuid.uuid4()), str(self.clock.now_ms())))

    def migrations_applied(self) -> list[str]:
        return [r["name"] for r in self._all("SELECT name FROM journal_migrations ORDER BY seq")]

    # -- identity --------------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM journal_meta WHERE key=%s", (key,))
        return row["value"] if row else None

    def lineage(self) -> str:
        return self._meta("lineage") or ""

    def serial(self) -> int:
        return int(self._meta("serial") or 0)

    def identity(self, c: Txn) -> tuple[str, int]:
        """(lineage, serial) inside the caller's transaction, the serial row locked: two applies
        checking for a stale plan at once are serialized here, as SQLite's write lock does."""
        t = own_txn(c, PgTxn)
        # wait for a concurrent apply as long as SQLite would for its write lock, then JournalBusy
        t.execute("SELECT set_config('lock_timeout', %s, true)", (f"{busy_timeout_ms()}ms",))
        rows = {r["key"]: r["value"] for r in t.execute(
            "SELECT key, value FROM journal_meta WHERE key IN ('lineage', 'serial') ORDER BY key FOR UPDATE")}
        return rows["lineage"], int(rows["serial"])

    def bump_serial(self, c: Txn) -> int:
        t = own_txn(c, PgTxn)
        row = t.execute("UPDATE journal_meta SET value = (value::bigint + 1)::text WHERE key='serial'"
                        " RETURNING value").fetchone()
        assert row is not None
        t.execute(NOTIFY_SQL)  # apply: peers' schedulers look at once (delivered at commit)
        return int(row["value"])

    # -- desired state ---------------------------------------------------------------------------

    @staticmethod
    def _resource(row: DictRow) -> StoredResource:
        return StoredResource(kind=row["kind"], name=row["name"], body_json=row["body"], hash=row["hash"],
                              applied_hash=row["applied_hash"], managed=bool(row["managed"]),
                              source_file=row["source_file"], created_at_ms=row["created_at_ms"],
                              updated_at_ms=row["updated_at_ms"])

    def snapshot(self) -> Snapshot:
        """Identity, objects and jobs as of one instant (a repeatable-read transaction)."""
        txn = self._txn()
        with contextlib.ExitStack() as stack:
            if txn is None:
                conn = stack.enter_context(self._reading())
                stack.enter_context(conn.transaction())
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            else:
                conn = txn.conn
            meta = {r["key"]: r["value"] for r in conn.execute(
                "SELECT key, value FROM journal_meta WHERE key IN ('lineage', 'serial')")}
            resources = {(r["kind"], r["name"]): self._resource(r)
                         for r in conn.execute("SELECT * FROM journal_resources")}
            jobs = {r["routine_id"]: r for r in records(conn.execute("SELECT * FROM journal_cron_jobs"), JobRecord)}
        return Snapshot(lineage=meta.get("lineage", ""), serial=int(meta.get("serial") or 0), resources=resources,
                        jobs=jobs)

    def get_resource(self, kind: str, name: str) -> StoredResource | None:
        row = self._one("SELECT * FROM journal_resources WHERE kind=%s AND name=%s", (kind, name))
        return self._resource(row) if row else None

    def list_resources(self, kind: str) -> list[StoredResource]:
        return [self._resource(r) for r in self._all("SELECT * FROM journal_resources WHERE kind=%s ORDER BY name",
                                                      (kind,))]

    def resource_hash(self, kind: str, name: str) -> str | None:
        row = self._one("SELECT hash FROM journal_resources WHERE kind=%s AND name=%s", (kind, name))
        return row["hash"] if row else None

    _UPSERT_RESOURCE = """INSERT INTO journal_resources
             (kind, name, body, hash, applied_hash, managed, source_file, created_at_ms, updated_at_ms)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (kind, name) DO UPDATE SET
             body=excluded.body, hash=excluded.hash, applied_hash=excluded.applied_hash,
             managed=excluded.managed, source_file=excluded.source_file, updated_at_ms=excluded.updated_at_ms"""

    def put_resource(self, c: Txn, *, kind: str, name: str, body: dict[str, Any] | str, hash: str,
                     managed: bool, applied_hash: str | None, source_file: str | None) -> None:
        t = own_txn(c, PgTxn)
        now = self.clock.now_ms()
        t.execute(self._UPSERT_RESOURCE, (kind, name, body if isinstance(body, str) else canonical_json(body), hash,
                                          applied_hash, int(managed), source_file, now, now))

    def put_resources(self, c: Txn, rows: Iterable[ResourceWrite]) -> None:
        """Many objects in one pipelined `executemany`, one write time for all (one apply)."""
        t = own_txn(c, PgTxn)
        now = self.clock.now_ms()
        with t.conn.cursor() as cur:
            cur.executemany(self._UPSERT_RESOURCE, [
                (r.kind, r.name, r.body, r.hash, r.applied_hash, int(r.managed), r.source_file, now, now) for r in rows])

    def delete_resource(self, c: Txn, kind: str, name: str) -> None:
        self.delete_resources(c, [(kind, name)])

    def delete_resources(self, c: Txn, keys: Sequence[tuple[str, str]]) -> None:
        """Objects gone; a routine's job goes with it and its pending approvals are cancelled."""
        t = own_txn(c, PgTxn)
        if not keys:
            return
        t.execute("DELETE FROM journal_resources WHERE (kind, name) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                  ([k for k, _ in keys], [n for _, n in keys]))
        routines = [n for k, n in keys if k == "Routine"]
        if routines:
            t.execute("DELETE FROM journal_cron_jobs WHERE routine_id = ANY(%s)", (routines,))
            t.execute("UPDATE journal_approvals SET state='cancelled', decided_at_ms=%s"
                      " WHERE routine_id = ANY(%s) AND state='pending'", (self.clock.now_ms(), routines))

    def rename_routine(self, c: Txn, old: str, new: str) -> None:
        t = own_txn(c, PgTxn)
        if t.execute("SELECT 1 FROM journal_resources WHERE kind='Routine' AND name=%s", (old,)).fetchone() is None:
            raise NotFound(f"routine {old!r} does not exist")
        if t.execute("SELECT 1 FROM journal_resources WHERE kind='Routine' AND name=%s", (new,)).fetchone() is not None:
            raise Conflict(f"cannot rename routine {old!r} to {new!r}: a routine {new!r} exists")
        try:
            with t.savepoint():
                t.execute("UPDATE journal_resources SET name=%s WHERE kind='Routine' AND name=%s", (new, old))
                t.execute("DELETE FROM journal_cron_jobs WHERE routine_id=%s", (new,))  # a leftover of no routine
                t.execute("UPDATE journal_cron_jobs SET routine_id=%s WHERE routine_id=%s", (new, old))
                t.execute(
                    "UPDATE journal_cron_runs SET routine_id=%(new)s, occurrence_key=CASE"
                    " WHEN left(occurrence_key, %(n)s) = %(old)s || '|'"
                    " THEN %(new)s || '|' || substr(occurrence_key, %(n)s + 1) ELSE occurrence_key END"
                    " WHERE routine_id=%(old)s",
                    {"new": new, "old": old, "n": len(old) + 1},
                )
        except psycopg.errors.UniqueViolation:
            raise Conflict(
                f"cannot rename routine {old!r} to {new!r}: the journal still holds runs of an earlier routine "
                f"named {new!r} at the same scheduled times or with the same dedupe keys"
            ) from None
        t.execute("UPDATE journal_approvals SET routine_id=%s WHERE routine_id=%s", (new, old))

    # -- jobs ------------------------------------------------------------------------------------

    def put_job(self, c: Txn, routine_id: str, **fields: Any) -> None:
        """Create or update a job row; only the given fields change on update."""
        t = own_txn(c, PgTxn)
        fields["updated_at_ms"] = self.clock.now_ms()
        cols = columns(fields)
        insert_fields = {"trigger_kind": "manual", **fields}
        icols = columns(insert_fields)
        t.execute(
            f"INSERT INTO journal_cron_jobs (routine_id, {', '.join(icols)}) VALUES (%s{', %s' * len(icols)})"
            f" ON CONFLICT (routine_id) DO UPDATE SET {', '.join(f'{k}=excluded.{k}' for k in cols)}",
            (routine_id, *insert_fields.values()),
        )
        t.execute(NOTIFY_SQL)  # a new or changed job (pause, resume, approvals): peers look at once

    def put_jobs(self, c: Txn, writes: Sequence[tuple[str, dict[str, Any]]], existing: Collection[str]) -> None:
        """`put_job` for many: one pipelined statement per shape of fields, `existing` updated."""
        t = own_txn(c, PgTxn)
        now = self.clock.now_ms()
        groups: dict[tuple[bool, tuple[str, ...]], list[tuple[Any, ...]]] = {}
        for routine_id, given in writes:
            fields = {**given, "updated_at_ms": now}
            if routine_id not in existing:
                fields.setdefault("trigger_kind", "manual")
            groups.setdefault((routine_id in existing, tuple(columns(fields))), []).append(
                (routine_id, *fields.values()))
        with t.conn.cursor() as cur:
            for (update, cols), rows in groups.items():
                if update:
                    sets = ", ".join(f"{k}=%s" for k in cols)
                    cur.executemany(f"UPDATE journal_cron_jobs SET {sets} WHERE routine_id=%s",
                                    [(*r[1:], r[0]) for r in rows])
                else:
                    cur.executemany(f"INSERT INTO journal_cron_jobs (routine_id, {', '.join(cols)})"
                                    f" VALUES (%s{', %s' * len(cols)})", rows)
        if writes:
            t.execute(NOTIFY_SQL)

    def jobs_for(self, c: Txn, routine_ids: Sequence[str]) -> dict[str, JobRecord]:
        rows = own_txn(c, PgTxn).execute("SELECT * FROM journal_cron_jobs WHERE routine_id = ANY(%s)",
                                         (list(routine_ids),))
        return {r["routine_id"]: r for r in records(rows, JobRecord)}

    def get_job(self, routine_id: str) -> JobRecord | None:
        return record(self._one("SELECT * FROM journal_cron_jobs WHERE routine_id=%s", (routine_id,)), JobRecord)

    def update_job(self, routine_id: str, **fields: Any) -> None:
        with self.transaction() as c:
            self.put_job(c, routine_id, **fields)

    def list_jobs(self) -> list[JobRecord]:
        return records(self._all("SELECT * FROM journal_cron_jobs ORDER BY routine_id"), JobRecord)

    def job_times(self) -> list[tuple[str, int | None, int | None]]:
        rows = self._all("SELECT routine_id, last_success_at_ms, next_run_at_unix_ms FROM journal_cron_jobs"
                         " ORDER BY routine_id")
        return [(r["routine_id"], r["last_success_at_ms"], r["next_run_at_unix_ms"]) for r in rows]

    def jobs_by_trigger(self, kinds: tuple[str, ...]) -> list[JobRecord]:
        return records(self._all("SELECT * FROM journal_cron_jobs WHERE trigger_kind = ANY(%s) ORDER BY routine_id",
                                 (list(kinds),)), JobRecord)

    def due_jobs(self, now_ms: int, limit: int = 64) -> list[JobRecord]:
        """Enabled jobs due by the caller's clock *and* the database's, oldest first, at most `limit`."""
        return records(self._all(
            f"""SELECT * FROM journal_cron_jobs
               WHERE next_run_at_unix_ms IS NOT NULL AND enabled = 1
                 AND next_run_at_unix_ms <= LEAST(%s, {DB_NOW_MS} + %s)
               ORDER BY next_run_at_unix_ms LIMIT %s""", (now_ms, self.DB_LEAD_MS, limit)), JobRecord)

    def count_due(self, now_ms: int) -> int:
        row = self._one(f"SELECT COUNT(*) AS n FROM journal_cron_jobs WHERE next_run_at_unix_ms IS NOT NULL"
                        f" AND enabled = 1 AND next_run_at_unix_ms <= LEAST(%s, {DB_NOW_MS} + %s)",
                        (now_ms, self.DB_LEAD_MS))
        return int(row["n"]) if row else 0

    def next_due_ms(self) -> int | None:
        """The earliest due time, in the caller's clock: when a clock ahead of the database's says
        it is due, the database will not yet, so the instant is moved by that difference."""
        row = self._one(f"SELECT MIN(next_run_at_unix_ms) AS due, {DB_NOW_MS} AS db_now FROM journal_cron_jobs"
                        " WHERE enabled = 1")
        if row is None or row["due"] is None:
            return None
        ahead = self.clock.now_ms() - int(row["db_now"])
        return int(row["due"]) + max(0, ahead)

    def judged_now_ms(self, local_ms: int) -> int:
        """The earlier of the caller's reading and the database's clock (in the caller's terms).

        The offset between this store's clock and the database's is measured at most once a second
        (one round trip, halved); `claim_occurrences` checks every instant against the database's
        own clock anyway, so a stale offset can delay a claim by a tick but never let one through early.
        """
        now = time.monotonic()
        if self._skew_at is None or now - self._skew_at >= SKEW_REFRESH_S:
            before = self.clock.now_ms()
            row = self._one(f"SELECT {DB_NOW_MS} AS db_now")
            after = self.clock.now_ms()
            assert row is not None
            self._skew_ms = int(row["db_now"]) - (before + after) // 2
            self._skew_at = now
        return min(local_ms, local_ms + self._skew_ms)

    def upcoming_jobs(self, limit: int = 10) -> list[JobRecord]:
        return records(self._all("SELECT * FROM journal_cron_jobs WHERE next_run_at_unix_ms IS NOT NULL AND enabled = 1"
                                 " ORDER BY next_run_at_unix_ms LIMIT %s", (limit,)), JobRecord)


__all__ = ["PgJournal"]
