"""The PostgreSQL store's runs, approvals, events, apply log and the daemon's claim path.

A mixin of `PgJournal` (split out to keep each module under 600 lines): it relies on the store's
`transaction()`, `_one`/`_all` reads, clock and `put_job`.

The claim path is what makes several daemons on one journal exactly-once (SPEC §11), in one
transaction per batch: the batch's job rows are locked `FOR UPDATE SKIP LOCKED` (a job another daemon
is claiming right now is skipped, not waited for), each is compared-and-set on the next instant the
caller expected and must be due by the database's clock, the run rows go in with `ON CONFLICT DO
NOTHING` on the unique occurrence key, and the jobs advance. Dispatch happens after the commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg.rows import DictRow

from palyra_ops.clock import Clock
from palyra_ops.journal.postgres_conn import DB_NOW_MS, PgTxn, array_types, columns, record, records
from palyra_ops.journal.postgres_runpath import PgRunPath
from palyra_ops.journal.records import (
    BUSY_SQL,
    FINAL_STATUSES,
    ApplyLogRecord,
    ApprovalRecord,
    Claim,
    EventRecord,
    JobRecord,
    RunRecord,
    encode_payload,
    is_parked,
    new_id,
)
from palyra_ops.journal.store import Txn, own_txn

#: final statuses as SQL: the fence of `update_run_and_job`
_FINAL = "(" + ", ".join(f"'{s}'" for s in FINAL_STATUSES) + ")"


def _run_row(fields: dict[str, Any], now_ms: int) -> dict[str, Any]:
    fields.setdefault("run_id", new_id())
    fields.setdefault("created_at_ms", now_ms)
    if fields.get("trigger_payload") is not None and not isinstance(fields["trigger_payload"], str):
        fields["trigger_payload"] = encode_payload(fields["trigger_payload"])
    if isinstance(fields.get("skipped_times"), list):
        fields["skipped_times"] = json.dumps(fields["skipped_times"])
    return fields


def _insert_sql(cols: list[str]) -> str:
    return (f"INSERT INTO journal_cron_runs ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
            " ON CONFLICT DO NOTHING RETURNING run_id")


class PgRuns(PgRunPath):
    clock: Clock
    url: str

    @property
    def location(self) -> str:
        """The journal as `open_journal` was given it (the URL): what another handle on it is opened
        with (plan's snapshot, the watcher). `path` is only the name side files are written beside."""
        return self.url
    #: how far ahead of the database's clock a due time may be claimed (the scheduler's lead, 5 ms)
    DB_LEAD_MS = 10

    def transaction(self) -> AbstractContextManager[PgTxn]:  # pragma: no cover - PgJournal's
        raise NotImplementedError

    def _one(self, sql: str, params: Any = None) -> DictRow | None:  # pragma: no cover
        raise NotImplementedError

    def _all(self, sql: str, params: Any = None) -> list[DictRow]:  # pragma: no cover
        raise NotImplementedError


    # -- runs ------------------------------------------------------------------------------------

    def insert_run(self, c: Txn | None = None, **fields: Any) -> str | None:
        """Insert a run; its id, or None when its occurrence (or dedupe) key is already taken."""
        t = own_txn(c, PgTxn) if c is not None else None
        fields = _run_row(fields, self.clock.now_ms())
        sql = _insert_sql(columns(fields))
        if t is None:
            with self.transaction() as t2:
                row = t2.execute(sql, tuple(fields.values())).fetchone()
        else:
            row = t.execute(sql, tuple(fields.values())).fetchone()
        return row["run_id"] if row is not None else None

    def update_run(self, run_id: str, c: Txn | None = None, **fields: Any) -> None:
        t = own_txn(c, PgTxn) if c is not None else None
        if fields.get("trigger_payload") is not None and not isinstance(fields["trigger_payload"], str):
            fields["trigger_payload"] = encode_payload(fields["trigger_payload"])
        if not fields:
            return
        sql = f"UPDATE journal_cron_runs SET {', '.join(f'{k}=%s' for k in columns(fields))} WHERE run_id=%s"
        if t is None:
            with self.transaction() as t2:
                t2.execute(sql, (*fields.values(), run_id))
        else:
            t.execute(sql, (*fields.values(), run_id))

    def update_run_and_job(self, run_id: str, run_fields: dict[str, Any], routine_id: str | None,
                           job_fields: dict[str, Any] | None, *, fence: str | None = None) -> bool:
        """A run transition and the job's last-run summary in one commit (the hot path).

        Fenced: a run already final (a peer reaped it, `daemon_lost`), or whose fencing token is not
        `fence` (a peer took it over), is not overwritten, and its job summary is left alone; False.

        One statement, so one round trip in autocommit (it was BEGIN, two UPDATEs, a SELECT when
        fenced and COMMIT: five): the run's UPDATE and the job's are data-modifying CTEs, the job's
        conditioned on the run's having matched (or on there being no such run, as before).
        """
        run_set = job_set = ""
        args: list[Any] = []
        if run_fields:
            if run_fields.get("trigger_payload") is not None and not isinstance(run_fields["trigger_payload"], str):
                run_fields = {**run_fields, "trigger_payload": encode_payload(run_fields["trigger_payload"])}
            run_set = ", ".join(f"{k}=%s" for k in columns(run_fields))
            args += [*run_fields.values(), run_id, fence]
        job = routine_id is not None and bool(job_fields)
        if job:
            fields = {**(job_fields or {}), "updated_at_ms": self.clock.now_ms()}
            job_set = ", ".join(f"{k}=%s" for k in columns(fields))
            args += [*fields.values(), routine_id]
        if not run_set and not job:
            return True
        parts = []
        if run_set:
            parts.append(f"r AS (UPDATE journal_cron_runs SET {run_set} WHERE run_id=%s AND status NOT IN {_FINAL}"
                         " AND fence IS NOT DISTINCT FROM %s RETURNING 1)")
        if job:
            cond = (" AND (EXISTS (SELECT 1 FROM r) OR NOT EXISTS"
                    " (SELECT 1 FROM journal_cron_runs WHERE run_id=%s))") if run_set else ""
            parts.append(f"j AS (UPDATE journal_cron_jobs SET {job_set} WHERE routine_id=%s{cond} RETURNING 1)")
            if run_set:
                args.append(run_id)
        if run_set:
            sql = (f"WITH {', '.join(parts)} SELECT EXISTS (SELECT 1 FROM r) AS wrote,"
                   " EXISTS (SELECT 1 FROM journal_cron_runs WHERE run_id=%s) AS present")
            args.append(run_id)
        else:
            sql = f"WITH {', '.join(parts)} SELECT true AS wrote, false AS present"
        row = self._write_one(sql, args)
        assert row is not None
        return bool(row["wrote"]) or not row["present"]

    def start_exclusive(self, run_id: str, routine_id: str, now_ms: int) -> str | None:
        """`forbid` across daemons: the check and the start in one transaction under a transaction-
        scoped advisory lock on the routine (pooler-safe), so of two daemons starting runs of one
        routine at once, the second sees the first's run running. One round trip (`_one_trip`): the
        lock is its own statement, so the check's snapshot is taken after the lock is held."""
        _, rows = self._one_trip([
            ("SELECT pg_advisory_xact_lock(hashtextextended('palyra.forbid:' || %s, 0))", (routine_id,)),
            (f"WITH b AS (SELECT run_id FROM journal_cron_runs WHERE routine_id=%s AND {BUSY_SQL}"
             " AND run_id != %s ORDER BY run_id LIMIT 1),"
             " u AS (UPDATE journal_cron_runs SET status='running', started_at_ms=%s"
             " WHERE run_id=%s AND NOT EXISTS (SELECT 1 FROM b))"
             " SELECT run_id FROM b", (routine_id, run_id, now_ms, run_id)),
        ])
        return str(rows[0]["run_id"]) if rows else None

    def set_dedupe_key(self, run_id: str, dedupe_key: str) -> str | None:
        """Attach a dedupe key to a first attempt; the id of the run already holding it, else None."""
        with self.transaction() as t:
            try:
                with t.savepoint():
                    t.execute("UPDATE journal_cron_runs SET dedupe_key=%s WHERE run_id=%s", (dedupe_key, run_id))
            except psycopg.errors.UniqueViolation:
                row = t.execute(
                    "SELECT run_id FROM journal_cron_runs WHERE routine_id=(SELECT routine_id FROM journal_cron_runs"
                    " WHERE run_id=%s) AND dedupe_key=%s AND attempt=1", (run_id, dedupe_key)).fetchone()
                return row["run_id"] if row else "?"
        return None

    def get_run(self, run_id: str) -> RunRecord | None:
        return record(self._one("SELECT * FROM journal_cron_runs WHERE run_id=%s", (run_id,)), RunRecord)

    def list_runs(self, routine_id: str | None = None, *, status: str | None = None, limit: int = 50,
                  before_run_id: str | None = None) -> list[RunRecord]:
        """Newest first; `before_run_id` pages backwards (run ids are ULIDs, so they sort by time)."""
        where: list[str] = []
        args: list[Any] = []
        for col, op, val in (("routine_id", "=", routine_id), ("status", "=", status), ("run_id", "<", before_run_id)):
            if val is not None:
                where.append(f"{col} {op} %s")
                args.append(val)
        sql = "SELECT * FROM journal_cron_runs" + (" WHERE " + " AND ".join(where) if where else "")
        return records(self._all(sql + " ORDER BY run_id DESC LIMIT %s", (*args, limit)), RunRecord)

    def active_runs(self, routine_id: str | None = None) -> list[RunRecord]:
        sql = "SELECT * FROM journal_cron_runs WHERE status IN ('accepted', 'running')"
        args: tuple[Any, ...] = ()
        if routine_id is not None:
            sql += " AND routine_id = %s"
            args = (routine_id,)
        return records(self._all(sql + " ORDER BY run_id", args), RunRecord)

    def count_runs_by_status(self) -> dict[str, int]:
        return {r["status"]: int(r["n"]) for r in
                self._all("SELECT status, COUNT(*) AS n FROM journal_cron_runs GROUP BY status")}

    def finalize_orphans(self, reason: str, now_ms: int, daemon_id: str | None = None, *,
                         spare_live: bool = False, release_parked: bool = False) -> list[RunRecord]:
        """Mark runs left active by a dead process as failed; returns them as they were.
        `spare_live`: leave the runs of daemons whose lease holds (by the database's clock) alone;
        `release_parked`: parked runs (retry waits, deferrals) are handed to any daemon instead."""
        with self.transaction() as t:
            sql = "SELECT * FROM journal_cron_runs WHERE status IN ('accepted', 'running')"
            args: tuple[Any, ...] = ()
            if daemon_id is not None:
                sql += " AND (daemon_id IS NULL OR daemon_id != %s)"
                args = (daemon_id,)
            if spare_live:
                sql += (" AND (daemon_id IS NULL OR daemon_id NOT IN (SELECT daemon_id FROM journal_daemons"
                        f" WHERE heartbeat_at_ms + lease_ms >= {DB_NOW_MS}))")
            rows = records(t.execute(sql + " ORDER BY seq FOR UPDATE", args), RunRecord)
            if release_parked:
                parked = [r["run_id"] for r in rows if is_parked(r)]
                rows = [r for r in rows if not is_parked(r)]
                if parked:
                    t.execute("UPDATE journal_cron_runs SET daemon_id=NULL, fence=NULL WHERE run_id = ANY(%s)", (parked,))
            if rows:
                t.execute("UPDATE journal_cron_runs SET status='failed', reason=%s, finished_at_ms=%s"
                          " WHERE run_id = ANY(%s)", (reason, now_ms, [r["run_id"] for r in rows]))
        return rows

    def runs_with_occurrences(self, routine_id: str) -> list[RunRecord]:
        return records(self._all("SELECT * FROM journal_cron_runs WHERE routine_id=%s AND occurrence_key IS NOT NULL"
                                 " ORDER BY scheduled_at_ms, run_id", (routine_id,)), RunRecord)

    def claimed_instants(self, routine_id: str, start_ms: int, end_ms: int) -> set[int]:
        rows = self._all("SELECT scheduled_at_ms FROM journal_cron_runs WHERE routine_id=%s"
                         " AND occurrence_key IS NOT NULL AND scheduled_at_ms BETWEEN %s AND %s",
                         (routine_id, start_ms, end_ms))
        return {int(r["scheduled_at_ms"]) for r in rows}

    def runs_in_order(self, routine_id: str | None = None) -> list[RunRecord]:
        """Runs in insertion order (the private `seq`: PostgreSQL has no rowid)."""
        if routine_id is None:
            return records(self._all("SELECT * FROM journal_cron_runs ORDER BY seq"), RunRecord)
        return records(self._all("SELECT * FROM journal_cron_runs WHERE routine_id=%s ORDER BY seq", (routine_id,)),
                       RunRecord)

    # -- the claim path ------------------------------------------------------------------------------

    def claim_occurrences(self, claims: list[Claim]) -> list[list[str | None] | None]:
        """Claim due occurrences of several jobs in one transaction (module docstring).

        Per claim (routine_id, expected next_run_at, run rows, job fields): None when the job is
        locked by another claimer, gone, disabled, moved off `expected`, or it or one of the
        instants to run is not yet due by the database's clock; else the ids of its runs, None for
        an occurrence already claimed.
        """
        if not claims:
            return []
        with self._flight() as t:  # pipelined: the lock, the inserts, the advance and COMMIT in 2 trips
            locked = {r["routine_id"]: r for r in t.execute(
                f"SELECT routine_id, next_run_at_unix_ms, enabled, {DB_NOW_MS} + %s AS due_by"
                " FROM journal_cron_jobs WHERE routine_id = ANY(%s) ORDER BY routine_id FOR UPDATE SKIP LOCKED",
                (self.DB_LEAD_MS, [cl[0] for cl in claims]))}
            finish = self._claim_locked(t, claims, locked)
        return finish()

    def claim_due(self, now_ms: int, limit: int,
                  plan: Callable[[list[JobRecord]], list[Claim]]) -> tuple[int, list[list[str | None] | None]]:
        """The due jobs locked `FOR UPDATE SKIP LOCKED` as they are read (a peer claiming at the same
        moment skips them and takes the next ones: a burst is spread over the daemons), planned by
        the caller while held, claimed; BEGIN and the read are one round trip, the inserts, the
        advance and COMMIT one more (plus what `plan` reads, in the same transaction)."""
        with self._flight() as t:
            rows = t.execute(
                f"""SELECT *, {DB_NOW_MS} + %s AS due_by FROM journal_cron_jobs
                   WHERE next_run_at_unix_ms IS NOT NULL AND enabled = 1
                     AND next_run_at_unix_ms <= LEAST(%s, {DB_NOW_MS} + %s)
                   ORDER BY next_run_at_unix_ms LIMIT %s FOR UPDATE SKIP LOCKED""",
                (self.DB_LEAD_MS, now_ms, self.DB_LEAD_MS, limit)).fetchall()
            locked = {r["routine_id"]: {"next_run_at_unix_ms": r["next_run_at_unix_ms"], "enabled": r["enabled"],
                                        "due_by": r["due_by"]} for r in rows}
            jobs = records([{k: v for k, v in r.items() if k != "due_by"} for r in rows], JobRecord)
            claims = plan(jobs) if jobs else []
            finish = self._claim_locked(t, claims, locked) if claims else (lambda: [])
        return len(jobs), finish()

    def _claim_locked(self, t: PgTxn, claims: list[Claim],
                      locked: dict[str, Any]) -> Callable[[], list[list[str | None] | None]]:
        """The claim's writes on jobs already locked (`locked`: routine id -> the row as locked);
        the RETURNING of the inserts is read after COMMIT (the returned function), so the writes
        and COMMIT go out in one round trip."""
        now = self.clock.now_ms()
        won: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = []
        for routine_id, expected, runs, job_fields in claims:
            row = locked.get(routine_id)
            if row is None or row["next_run_at_unix_ms"] != expected or not row["enabled"]:
                continue
            # due by the database's clock: the job, and every instant the caller would run
            # (a caller whose clock runs ahead plans instants that have not come yet)
            if (expected is not None and expected > row["due_by"]) or any(
                    (r.get("scheduled_at_ms") or 0) > row["due_by"] for r in runs):
                continue
            won.append((routine_id, [_run_row(dict(r), now) for r in runs], job_fields))
        inserted_later = self._insert_many(t, [r for _, runs, _ in won for r in runs])
        self._advance_many(t, [(rid, fields) for rid, _, fields in won if fields])

        def finish() -> list[list[str | None] | None]:
            inserted = inserted_later()
            by_job = {rid: [r["run_id"] if r["run_id"] in inserted else None for r in runs] for rid, runs, _ in won}
            return [by_job.get(cl[0]) if cl[0] in by_job else None for cl in claims]
        return finish

    @staticmethod
    def _insert_many(t: PgTxn, rows: list[dict[str, Any]]) -> Callable[[], set[str]]:
        """Insert run rows, one statement per shape of columns (`INSERT … SELECT FROM unnest(arrays)`:
        a batch of 100 is one parse and one round trip, where 100 statements without prepared plans
        cost 100 parses); a function giving the ids that went in, to call once the statements' answers
        are in (after COMMIT, when pipelined)."""
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for r in rows:
            groups.setdefault(tuple(columns(r)), []).append(tuple(r.values()))
        inserted: set[str] = set()
        pending: list[psycopg.Cursor[DictRow]] = []
        for cols, params in groups.items():
            types = array_types(cols)
            if types is None:  # a column this store does not know the type of: row by row
                with t.conn.cursor() as cur:
                    cur.executemany(_insert_sql(list(cols)), params, returning=True)
                    while True:
                        inserted.update(row["run_id"] for row in cur.fetchall())
                        if not cur.nextset():
                            break
                continue
            arrays = [list(col) for col in zip(*params, strict=True)]
            unnest = ", ".join(f"%s::{ty}[]" for ty in types)
            pending.append(t.execute(f"INSERT INTO journal_cron_runs ({', '.join(cols)}) SELECT * FROM"
                                     f" unnest({unnest}) ON CONFLICT DO NOTHING RETURNING run_id", arrays))

        def ids() -> set[str]:
            for cur in pending:
                inserted.update(row["run_id"] for row in cur.fetchall())
            return inserted
        return ids

    def _advance_many(self, t: PgTxn, writes: list[tuple[str, dict[str, Any]]]) -> None:
        """The claimed jobs' new state (their rows exist: they were locked above), one `UPDATE … FROM
        unnest(arrays)` per shape of fields."""
        now = self.clock.now_ms()
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for routine_id, given in writes:
            fields = {**given, "updated_at_ms": now}
            groups.setdefault(tuple(columns(fields)), []).append((routine_id, *fields.values()))
        for cols, params in groups.items():
            types = array_types(cols)
            if types is None:
                with t.conn.cursor() as cur:
                    cur.executemany(f"UPDATE journal_cron_jobs SET {', '.join(f'{k}=%s' for k in cols)}"
                                    " WHERE routine_id=%s", [(*p[1:], p[0]) for p in params])
                continue
            arrays = [list(col) for col in zip(*params, strict=True)]
            unnest = ", ".join(f"%s::{ty}[]" for ty in ("text", *types))
            t.execute(f"UPDATE journal_cron_jobs AS j SET {', '.join(f'{k} = v.{k}' for k in cols)}"
                      f" FROM unnest({unnest}) AS v(routine_id, {', '.join(cols)}) WHERE j.routine_id = v.routine_id",
                      arrays)

    # -- apply log -----------------------------------------------------------------------------------

    def add_apply_log(self, c: Txn, **fields: Any) -> None:
        t = own_txn(c, PgTxn)
        cols = columns(fields)
        t.execute(f"INSERT INTO journal_apply_log ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                  tuple(fields.values()))

    def last_apply(self) -> ApplyLogRecord | None:
        return record(self._one("SELECT * FROM journal_apply_log ORDER BY id DESC LIMIT 1"), ApplyLogRecord)

    def apply_log(self, limit: int = 20) -> list[ApplyLogRecord]:
        return records(self._all("SELECT * FROM journal_apply_log ORDER BY id DESC LIMIT %s", (limit,)),
                       ApplyLogRecord)

    # -- approvals -------------------------------------------------------------------------------------

    def add_approval(self, c: Txn, *, routine_id: str, kind: str, run_id: str | None = None) -> str:
        t = own_txn(c, PgTxn)
        approval_id = new_id()
        t.execute("INSERT INTO journal_approvals (approval_id, routine_id, kind, run_id, state, created_at_ms)"
                  " VALUES (%s, %s, %s, %s, 'pending', %s)", (approval_id, routine_id, kind, run_id, self.clock.now_ms()))
        return approval_id

    def cancel_pending_approvals(self, c: Txn, routine_id: str, kind: str | None = None) -> None:
        t = own_txn(c, PgTxn)
        sql = "UPDATE journal_approvals SET state='cancelled', decided_at_ms=%s WHERE routine_id=%s AND state='pending'"
        args: tuple[Any, ...] = (self.clock.now_ms(), routine_id)
        if kind is not None:
            sql += " AND kind=%s"
            args = (*args, kind)
        t.execute(sql, args)

    def decide_approval(self, c: Txn, approval_id: str, state: str, by: str | None) -> None:
        own_txn(c, PgTxn).execute("UPDATE journal_approvals SET state=%s, decided_at_ms=%s, decided_by=%s"
                                  " WHERE approval_id=%s", (state, self.clock.now_ms(), by, approval_id))

    def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        return record(self._one("SELECT * FROM journal_approvals WHERE approval_id=%s", (approval_id,)), ApprovalRecord)

    def pending_approval(self, routine_id: str, kind: str) -> ApprovalRecord | None:
        return record(self._one("SELECT * FROM journal_approvals WHERE routine_id=%s AND kind=%s AND state='pending'"
                                " ORDER BY created_at_ms, approval_id LIMIT 1", (routine_id, kind)), ApprovalRecord)

    def list_approvals(self, state: str | None = "pending") -> list[ApprovalRecord]:
        if state is None:
            return records(self._all("SELECT * FROM journal_approvals ORDER BY created_at_ms, approval_id"),
                           ApprovalRecord)
        return records(self._all("SELECT * FROM journal_approvals WHERE state=%s ORDER BY created_at_ms, approval_id",
                                 (state,)), ApprovalRecord)

    # -- events ----------------------------------------------------------------------------------------

    def add_event(self, name: str, payload: dict[str, Any] | None = None) -> None:
        with self.transaction() as t:
            t.execute("INSERT INTO journal_events (name, payload, created_at_ms) VALUES (%s, %s, %s)",
                      (name, json.dumps(payload or {}), self.clock.now_ms()))

    def list_events(self, limit: int = 50) -> list[EventRecord]:
        return records(self._all("SELECT * FROM journal_events ORDER BY id DESC LIMIT %s", (limit,)), EventRecord)


__all__ = ["PgRuns"]
