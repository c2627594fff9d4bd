"""The daemon registry on PostgreSQL (see `daemons.py`): heartbeats by the database's clock."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from psycopg.rows import DictRow

from palyra_ops.journal.daemons import daemon_record, lost_reason
from palyra_ops.journal.postgres_conn import DB_NOW_MS, PgTxn, records
from palyra_ops.journal.records import DaemonRecord, LostDaemon, RunRecord

_ACTIVE = "('accepted', 'running')"
#: `records.is_parked` as SQL
_PARKED = "status = 'accepted' AND not_before_ms IS NOT NULL"


class PgDaemons:
    """The registry on a PostgreSQL journal (`PgJournal` mixes it in); the database's clock."""

    def transaction(self) -> AbstractContextManager[PgTxn]:  # pragma: no cover - PgJournal's
        raise NotImplementedError

    def _all(self, sql: str, params: Any = None) -> list[DictRow]:  # pragma: no cover - PgJournal's
        raise NotImplementedError

    def register_daemon(self, daemon_id: str, *, lease_ms: int, host: str, pid: int, address: str | None,
                        version: str) -> None:
        with self.transaction() as t:
            t.execute(f"INSERT INTO journal_daemons VALUES (%s, %s, %s, %s, %s, {DB_NOW_MS}, {DB_NOW_MS}, %s)"
                      " ON CONFLICT (daemon_id) DO UPDATE SET host=excluded.host, pid=excluded.pid,"
                      " address=excluded.address, version=excluded.version,"
                      " heartbeat_at_ms=excluded.heartbeat_at_ms, lease_ms=excluded.lease_ms",
                      (daemon_id, host, pid, address, version, lease_ms))

    def heartbeat(self, daemon_id: str, address: str | None = None) -> bool:
        with self.transaction() as t:
            cur = t.execute(f"UPDATE journal_daemons SET heartbeat_at_ms={DB_NOW_MS}, address=coalesce(%s, address)"
                            " WHERE daemon_id=%s", (address, daemon_id))
        return cur.rowcount == 1

    def deregister_daemon(self, daemon_id: str) -> None:
        with self.transaction() as t:
            t.execute("DELETE FROM journal_daemons WHERE daemon_id=%s", (daemon_id,))

    def list_daemons(self) -> list[DaemonRecord]:
        rows = self._all(f"SELECT *, {DB_NOW_MS} AS judged_ms FROM journal_daemons ORDER BY started_at_ms, daemon_id")
        return [daemon_record(r, int(r["judged_ms"])) for r in rows]

    def live_daemon_ids(self) -> set[str]:
        return {d["daemon_id"] for d in self.list_daemons() if d["alive"]}

    def reap_lost_daemons(self, now_ms: int, spare: str | None = None) -> list[LostDaemon]:
        out: list[LostDaemon] = []
        with self.transaction() as t:
            # a heartbeat holding a row's lock right now is alive: skipped, never waited for; a
            # concurrent reaper holding it has it: skipped too, so each gone daemon has one reaper
            rows = t.execute(f"SELECT *, {DB_NOW_MS} AS judged_ms FROM journal_daemons"
                             f" WHERE heartbeat_at_ms + lease_ms < {DB_NOW_MS} AND daemon_id IS DISTINCT FROM %s"
                             " ORDER BY daemon_id FOR UPDATE SKIP LOCKED", (spare,)).fetchall()
            for row in rows:
                d = daemon_record(row, int(row["judged_ms"]))
                reason = lost_reason(d)
                # parked runs (retry waits, deferrals) go to any daemon (`take_parked`), the rest fail
                released = records(t.execute(
                    f"UPDATE journal_cron_runs SET daemon_id=NULL, fence=NULL WHERE daemon_id=%s AND {_PARKED}"
                    " RETURNING *", (d["daemon_id"],)), RunRecord)
                released.sort(key=lambda r: r["run_id"])
                runs = records(t.execute(
                    f"UPDATE journal_cron_runs SET status='failed', reason=%s, finished_at_ms=%s"
                    f" WHERE daemon_id=%s AND status IN {_ACTIVE} RETURNING *", (reason, now_ms, d["daemon_id"])),
                    RunRecord)
                runs.sort(key=lambda r: r["run_id"])
                if runs:
                    t.execute("UPDATE journal_cron_jobs SET last_status='failed', last_finished_at_ms=%s"
                              " WHERE last_run_id = ANY(%s)", (now_ms, [r["run_id"] for r in runs]))
                t.execute("DELETE FROM journal_daemons WHERE daemon_id=%s", (d["daemon_id"],))
                out.append(LostDaemon(d, runs, released))
        return out


__all__ = ["PgDaemons"]
