"""The PostgreSQL store's reads on the daemon's run path, each one round trip for what would be several.

A mixin of `PgJournal` (kept apart so each module stays under 600 lines). On PostgreSQL a read is a
round trip to the server — a few hundred µs on a loaded machine, with the event loop blocked
meanwhile (docs/ha.md, "where the time goes") — so the run path asks for what it needs together:
a claimed run's arrival (`run_context`: the run, its job, its routine's hash and the serial) and a
claimed batch's routines (`resource_hashes`, `resources_named`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.rows import DictRow

from palyra_ops.journal.postgres_conn import record
from palyra_ops.journal.records import JobRecord, RunContext, RunRecord, StoredResource


class PgRunPath:
    def _one(self, sql: str, params: Any = None) -> DictRow | None:  # pragma: no cover - PgJournal's
        raise NotImplementedError

    def _all(self, sql: str, params: Any = None) -> list[DictRow]:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def _resource(row: DictRow) -> StoredResource:  # pragma: no cover
        raise NotImplementedError

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
