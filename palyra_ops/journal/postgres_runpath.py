"""The PostgreSQL store's run path in as few round trips as it can: one-statement writes, pipelined
transactions, and reads that ask for several things at once.

A mixin of `PgJournal` (kept apart so each module stays under 600 lines). On PostgreSQL a read is a
round trip to the server — a few hundred µs on a loaded machine, with the event loop blocked
meanwhile (docs/ha.md, "where the time goes") — so the run path asks for what it needs together:
a claimed run's arrival (`run_context`: the run, its job, its routine's hash and the serial) and a
claimed batch's routines (`resource_hashes`, `resources_named`); writes go as one statement in
autocommit (`_write_one`), or as a pipelined transaction (`_one_trip`, `_flight`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg.rows import DictRow

from palyra_ops.journal.postgres_conn import PgTxn, record
from palyra_ops.journal.records import JobRecord, RunContext, RunRecord, StoredResource
from palyra_ops.journal.sqlite_conn import FaultState


class PgRunPath:
    _faults: FaultState
    _local: threading.local

    def _txn(self) -> PgTxn | None:  # pragma: no cover - PgJournal's
        raise NotImplementedError

    def _guard(self) -> AbstractContextManager[None]:  # pragma: no cover
        raise NotImplementedError

    def _connection(self) -> AbstractContextManager[psycopg.Connection[DictRow]]:  # pragma: no cover
        raise NotImplementedError

    def _one(self, sql: str, params: Any = None) -> DictRow | None:  # pragma: no cover - PgJournal's
        raise NotImplementedError

    def _all(self, sql: str, params: Any = None) -> list[DictRow]:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def _resource(row: DictRow) -> StoredResource:  # pragma: no cover
        raise NotImplementedError

    def _write_one(self, sql: str, params: Any) -> DictRow | None:
        """One write statement, its first row: in the thread's transaction, else alone in autocommit
        (an implicit transaction of its own, one round trip where BEGIN … COMMIT costs three)."""
        txn = self._txn()
        if txn is not None:
            with self._guard():
                return txn.conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        with self._guard(), self._connection() as conn:
            row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        if self._faults.faults:
            self._faults.clear("write")
        return row

    @contextlib.contextmanager
    def _flight(self) -> Iterator[PgTxn]:
        """`transaction()` in pipeline mode: BEGIN goes out with the first statement and COMMIT
        with the last, and only reading an answer waits for the server (the claim: three round
        trips where it was five). Nested use joins the thread's transaction, as `transaction()`."""
        outer = self._txn()
        if outer is not None:
            yield outer
            return
        with self._guard(), self._connection() as conn:
            self._local.txn = txn = PgTxn(conn)
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    yield txn
                    conn.execute("COMMIT")
            except BaseException:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.broken:
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()
                raise
            finally:
                self._local.txn = None
        if self._faults.faults:
            self._faults.clear("write")

    def _one_trip(self, statements: Sequence[tuple[str, Any]]) -> list[list[DictRow]]:
        """`statements` as one transaction in ONE round trip (pipeline mode: BEGIN, the statements
        and COMMIT go out together, the server runs them in order); each one's rows. For short
        transactions whose statements do not depend on each other's answers in Python (the run
        path: `start_exclusive`). Joins the thread's open transaction, if any, statement by statement."""
        txn = self._txn()
        if txn is not None:
            with self._guard():
                return [txn.conn.execute(sql, params).fetchall() for sql, params in statements]  # type: ignore[arg-type]
        with self._guard(), self._connection() as conn:
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    curs = [conn.execute(sql, params) for sql, params in statements]  # type: ignore[arg-type]
                    conn.execute("COMMIT")
                rows = [cur.fetchall() if cur.description else [] for cur in curs]
            except BaseException:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.broken:
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()
                raise
        if self._faults.faults:
            self._faults.clear("write")
        return rows

    # -- reads ---------------------------------------------------------------------------------------

    def run_context(self, run_id: str, routine_id: str) -> RunContext:
        """One statement, one snapshot: the four reads a claimed run's arrival made one by one."""
        row = self._one(
            "SELECT (SELECT row_to_json(r) FROM journal_cron_runs r WHERE run_id=%s) AS run,"
            " (SELECT row_to_json(j) FROM journal_cron_jobs j WHERE routine_id=%s) AS job,"
            " (SELECT hash FROM journal_resources WHERE kind='Routine' AND name=%s) AS hash,"
            " (SELECT value FROM journal_meta WHERE key='serial') AS serial",
            (run_id, routine_id, routine_id))
        assert row is not None
        # json (not jsonb) keeps the table's column order; psycopg decodes it to a dict
        return RunContext(record(row["run"], RunRecord), record(row["job"], JobRecord), row["hash"],
                          int(row["serial"] or 0))

    def run_contexts(self, pairs: Sequence[tuple[str, str]]) -> dict[str, RunContext]:
        """A claimed batch's `run_context`s in one statement, one snapshot (one round trip per batch)."""
        if not pairs:
            return {}
        rows = self._all(
            "SELECT p.rid, CASE WHEN r.run_id IS NULL THEN NULL ELSE row_to_json(r) END AS run,"
            " CASE WHEN j.routine_id IS NULL THEN NULL ELSE row_to_json(j) END AS job, res.hash,"
            " (SELECT value FROM journal_meta WHERE key='serial') AS serial"
            " FROM unnest(%s::text[], %s::text[]) AS p(rid, routine)"
            " LEFT JOIN journal_cron_runs r ON r.run_id = p.rid"
            " LEFT JOIN journal_cron_jobs j ON j.routine_id = p.routine"
            " LEFT JOIN journal_resources res ON res.kind = 'Routine' AND res.name = p.routine",
            ([rid for rid, _ in pairs], [routine for _, routine in pairs]))
        return {row["rid"]: RunContext(record(row["run"], RunRecord), record(row["job"], JobRecord), row["hash"],
                                       int(row["serial"] or 0)) for row in rows}

    def resource_hashes(self, kind: str, names: Sequence[str]) -> dict[str, str]:
        if not names:
            return {}
        return {r["name"]: r["hash"] for r in self._all(
            "SELECT name, hash FROM journal_resources WHERE kind=%s AND name = ANY(%s)", (kind, list(names)))}

    def resources_named(self, kind: str, names: Sequence[str]) -> list[StoredResource]:
        if not names:
            return []
        return [self._resource(r) for r in self._all(
            "SELECT * FROM journal_resources WHERE kind=%s AND name = ANY(%s) ORDER BY name", (kind, list(names)))]


__all__ = ["PgRunPath"]
