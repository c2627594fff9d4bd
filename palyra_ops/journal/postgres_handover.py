"""Runs handed between daemons on a PostgreSQL journal (SPEC §11; see `sqlite_handover`): the
fencing token's check, peers' cancel requests, `queue_one`'s journal-wide mark, and parked runs
(retry waits and quiet-hours deferrals of a daemon that died) any daemon takes when they come due.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from psycopg.rows import DictRow

from palyra_ops.journal.postgres_conn import PgTxn


class PgHandover:
    """A mixin of `PgJournal`."""

    def transaction(self) -> AbstractContextManager[PgTxn]:  # pragma: no cover - PgJournal's
        raise NotImplementedError

    def _one(self, sql: str, params: Any = None) -> DictRow | None:  # pragma: no cover - PgJournal's
        raise NotImplementedError

    def fence_holds(self, run_id: str, fence: str | None) -> bool:
        return self._one("SELECT 1 AS held FROM journal_cron_runs WHERE run_id=%s AND status IN ('accepted', 'running')"
                         " AND fence IS NOT DISTINCT FROM %s", (run_id, fence)) is not None


__all__ = ["PgHandover"]
