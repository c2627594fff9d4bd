"""Memory items in a PostgreSQL journal (SPEC §9, §11): every daemon on the journal sees the same items.

The same queries and answers as the SQLite `MemoryStore` (journal/memory.py), over the PostgreSQL
store's pool (`PgJournal`: its transactions, fault translation and retried reads), so `MemoryService`
works on either without knowing which. Vectors are float32 BYTEA, as SQLite's BLOBs.

What SQLite does not need: a **change feed** for the hnswlib index each daemon keeps in memory.
Every write that changes what an index must hold — a vector stored (`vector`), an item deleted
(`delete`) — adds rows to `journal_memory_changes` in its transaction, after taking one advisory
lock, so `seq` grows in commit order: a reader that saw `seq` N has seen every change before N
(no commit can land behind it later). The same transaction sends `NOTIFY palyra_memory`, so peers
look at once; polling `change_head` is the fallback. Items without a vector are not in any index,
so adding an item writes no change. The feed is pruned after `CHANGES_KEEP_MS`; a reader whose
position is older than what was pruned (`pruned_through`) reconciles its index with the journal
instead (a set difference, as after loading an index file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ulid import ULID

from palyra_ops.journal.memory import (
    _COLUMNS,
    RUN_SOURCES,
    STATE_TABLE,
    TABLE,
    FileStats,
    MemoryRow,
    ModelKey,
    RetentionDeletion,
    blob_to_vectors,
    vector_to_blob,
)
from palyra_ops.journal.postgres_conn import DB_NOW_MS, PgTxn

if TYPE_CHECKING:
    import numpy as np

    from palyra_ops.journal.postgres import PgJournal

CHANGES = "journal_memory_changes"
#: the notification channel of memory changes (the journal's listener connection carries it)
MEMORY_CHANNEL = "palyra_memory"
#: advisory lock every change-writing transaction takes first ("pmem" in ASCII)
CHANGE_LOCK = 0x706D656D
#: how long the change feed is kept; a daemon that fell further behind reconciles instead
CHANGES_KEEP_MS = 3_600_000
_PRUNED_STATE = "changes_pruned_through"
_FIELDS = [c.strip() for c in _COLUMNS.split(",")]
_RUN_SOURCES_SQL = ", ".join(f"'{s}'" for s in RUN_SOURCES)
_KEY_MATCH = ("(vector IS NOT NULL AND embedding_model = %(model)s AND embedding_dim = %(dim)s"
              " AND embedding_version = %(version)s)")
_KEY_MISMATCH = ("(vector IS NULL OR embedding_model IS DISTINCT FROM %(model)s OR embedding_dim IS DISTINCT FROM"
                 " %(dim)s OR embedding_version IS DISTINCT FROM %(version)s)")


def _row(r: Any) -> MemoryRow:
    return MemoryRow(**{f: r[f] for f in _FIELDS})


class PgMemoryStore:
    """Every memory query on PostgreSQL; shared by all threads (the pool hands out connections)."""

    engine = "postgresql"

    def __init__(self, journal: PgJournal) -> None:
        self.journal = journal

    # -- plumbing -----------------------------------------------------------------------------

    def _all(self, sql: str, params: Any = None) -> list[Any]:
        return self.journal._all(sql, params)

    def _one(self, sql: str, params: Any = None) -> Any:
        return self.journal._one(sql, params)

    def _changing(self, t: PgTxn) -> None:
        """First statement of a transaction that writes changes: commit order = `seq` order."""
        t.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGE_LOCK,))

    @staticmethod
    def _log(t: PgTxn, labels: Sequence[int], op: str) -> None:
        if not labels:
            return
        t.execute(f"INSERT INTO {CHANGES} (label, op, at_ms) SELECT unnest(%s::bigint[]), %s, {DB_NOW_MS}",
                  (list(labels), op))
        t.execute("SELECT pg_notify(%s, '')", (MEMORY_CHANNEL,))

    def has_schema(self) -> bool:
        row = self._one("SELECT to_regclass(%s) IS NOT NULL AS ok", (TABLE,))
        return bool(row and row["ok"])

    # -- items --------------------------------------------------------------------------------

    def insert(self, *, text: str, source: str, routine_id: str | None, run_id: str | None,
               created_at_ms: int, expires_at_ms: int | None) -> tuple[MemoryRow, bool]:
        """Insert an item; returns (row, created). A run output already stored is returned as is
        (`ON CONFLICT DO NOTHING` on the run's unique index: two writers at once store it once)."""
        item_id = str(ULID.from_timestamp(created_at_ms / 1000))
        with self.journal.transaction() as t:
            row = t.execute(
                f"""INSERT INTO {TABLE} (id, routine_id, run_id, source, text, created_at_ms, expires_at_ms, bytes)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING {_COLUMNS}""",
                (item_id, routine_id, run_id, source, text, created_at_ms, expires_at_ms, len(text.encode("utf-8"))),
            ).fetchone()
            if row is not None:
                return _row(row), True
            existing = t.execute(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE run_id = %s AND source = %s AND source IN ({_RUN_SOURCES_SQL})",
                (run_id, source)).fetchone()
        if existing is None:  # pragma: no cover - only a ULID collision gets here
            raise RuntimeError("memory item insert conflicted with nothing")
        return _row(existing), False

    def get(self, item_id: str) -> MemoryRow | None:
        row = self._one(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = %s", (item_id,))
        return _row(row) if row else None

    def rows_by_labels(self, labels: Sequence[int]) -> dict[int, MemoryRow]:
        if not labels:
            return {}
        rows = self._all(f"SELECT {_COLUMNS} FROM {TABLE} WHERE label = ANY(%s::bigint[])", (list(labels),))
        return {r["label"]: _row(r) for r in rows}

    @staticmethod
    def _filters(routine_id: str | None, since_ms: int | None, until_ms: int | None) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for cond, value in (("routine_id = %s", routine_id), ("created_at_ms >= %s", since_ms),
                            ("created_at_ms < %s", until_ms)):
            if value is not None:
                where.append(cond)
                params.append(value)
        return where, params

    def list(self, *, routine_id: str | None = None, since_ms: int | None = None, until_ms: int | None = None,
             limit: int = 50, before: tuple[int, int] | None = None) -> list[MemoryRow]:
        """Newest first; `before` is the (created_at_ms, label) keyset cursor of the previous page."""
        where, params = self._filters(routine_id, since_ms, until_ms)
        if before is not None:
            where.append("(created_at_ms < %s OR (created_at_ms = %s AND label < %s))")
            params.extend([before[0], before[0], before[1]])
        sql = f"SELECT {_COLUMNS} FROM {TABLE}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at_ms DESC, label DESC LIMIT %s"
        return [_row(r) for r in self._all(sql, [*params, limit])]

    def delete(self, item_ids: Sequence[str]) -> list[int]:
        """Delete items by id; returns the labels removed (for the index, and every peer's)."""
        if not item_ids:
            return []
        with self.journal.transaction() as t:
            self._changing(t)
            labels = sorted(r["label"] for r in t.execute(
                f"DELETE FROM {TABLE} WHERE id = ANY(%s::text[]) RETURNING label", (list(item_ids),)).fetchall())
            self._log(t, labels, "delete")
        return labels

    # -- retention ----------------------------------------------------------------------------

    def apply_retention(self, *, now_ms: int, max_age_ms: int | None, max_items: int | None,
                        max_bytes: int | None) -> RetentionDeletion:
        """TTL, then max age, then max items, then max bytes, oldest first, in one transaction
        (each limit on what the previous ones left, as on SQLite); also prunes the change feed."""
        order = "ORDER BY created_at_ms DESC, label DESC"
        with self.journal.transaction() as t:
            self._changing(t)

            def labels(sql: str, params: Sequence[Any]) -> list[int]:
                return sorted(r["label"] for r in t.execute(sql, params).fetchall())

            def drop(found: list[int]) -> int:
                if not found:
                    return 0
                row = t.execute(f"""WITH d AS (DELETE FROM {TABLE} WHERE label = ANY(%s::bigint[])
                                    RETURNING bytes) SELECT COALESCE(SUM(bytes), 0) AS freed FROM d""",
                                (found,)).fetchone()
                self._log(t, found, "delete")
                return int(row["freed"])

            ttl = labels(f"SELECT label FROM {TABLE} WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= %s",
                         (now_ms,))
            freed = drop(ttl)
            age: list[int] = []
            if max_age_ms is not None:
                age = labels(f"SELECT label FROM {TABLE} WHERE created_at_ms < %s", (now_ms - max_age_ms,))
                freed += drop(age)
            items: list[int] = []
            if max_items is not None:
                items = labels(f"SELECT label FROM {TABLE} {order} OFFSET %s", (max_items,))
                freed += drop(items)
            size: list[int] = []
            if max_bytes is not None:
                size = labels(f"""SELECT label FROM (SELECT label, SUM(bytes) OVER ({order}
                                  ROWS UNBOUNDED PRECEDING) AS kept FROM {TABLE}) AS k WHERE kept > %s""",
                              (max_bytes,))
                freed += drop(size)
            self._prune_changes(t)
        return RetentionDeletion(ttl=ttl, max_age=age, max_items=items, max_bytes=size, freed_text_bytes=freed)

    def _prune_changes(self, t: PgTxn) -> None:
        row = t.execute(f"""WITH d AS (DELETE FROM {CHANGES} WHERE at_ms < {DB_NOW_MS} - %s RETURNING seq)
                            SELECT MAX(seq) AS upto FROM d""", (CHANGES_KEEP_MS,)).fetchone()
        if row is not None and row["upto"] is not None:
            self._put_state(t, _PRUNED_STATE, int(row["upto"]), 0)

    # -- the change feed (each daemon's index follows it) -------------------------------------

    def change_head(self) -> int:
        """The newest change's `seq` (0: none yet); where a fresh index starts following."""
        row = self._one(f"SELECT COALESCE(MAX(seq), 0) AS head FROM {CHANGES}")
        return int(row["head"]) if row else 0

    def changes_after(self, seq: int, limit: int = 10_000) -> list[tuple[int, int, str]]:
        """(seq, label, op) after `seq`, oldest first."""
        rows = self._all(f"SELECT seq, label, op FROM {CHANGES} WHERE seq > %s ORDER BY seq LIMIT %s", (seq, limit))
        return [(int(r["seq"]), int(r["label"]), str(r["op"])) for r in rows]

    def pruned_through(self) -> int:
        """The newest `seq` pruned from the feed: a reader behind it missed changes."""
        return int(self.get_state(_PRUNED_STATE) or 0)

    # -- embeddings ---------------------------------------------------------------------------

    def max_label(self) -> int:
        row = self._one(f"SELECT COALESCE(MAX(label), 0) AS m FROM {TABLE}")
        return int(row["m"]) if row else 0

    def pending_batch(self, key: ModelKey, *, after_label: int, upto_label: int, limit: int) -> list[tuple[int, str]]:
        """(label, text) of items without a vector from `key`, in label order."""
        rows = self._all(f"""SELECT label, text FROM {TABLE} WHERE label > %(after)s AND label <= %(upto)s
                             AND {_KEY_MISMATCH} ORDER BY label LIMIT %(limit)s""",
                         {"after": after_label, "upto": upto_label, "limit": limit, **key.to_json()})
        return [(int(r["label"]), str(r["text"])) for r in rows]

    def store_vectors(self, key: ModelKey, labels: Sequence[int], vectors: np.ndarray, now_ms: int) -> list[int]:
        """Write vectors; returns the labels that still existed (a concurrent delete wins)."""
        if not labels:
            return []
        with self.journal.transaction() as t:
            self._changing(t)
            rows = t.execute(
                f"""UPDATE {TABLE} AS i SET vector = v.vector, embedding_model = %(model)s,
                        embedding_dim = %(dim)s, embedding_version = %(version)s, embedded_at_ms = %(now)s
                    FROM unnest(%(labels)s::bigint[], %(vectors)s::bytea[]) AS v(label, vector)
                    WHERE i.label = v.label RETURNING i.label""",
                {"labels": list(labels), "vectors": [vector_to_blob(v) for v in vectors], "now": now_ms,
                 **key.to_json()}).fetchall()
            stored = sorted(int(r["label"]) for r in rows)
            self._log(t, stored, "vector")
        return stored

    def embedded_labels(self, key: ModelKey) -> list[int]:
        return [int(r["label"]) for r in self._all(f"SELECT label FROM {TABLE} WHERE {_KEY_MATCH} ORDER BY label",
                                                   key.to_json())]

    def iter_vectors(self, key: ModelKey, labels: Sequence[int] | None = None,
                     chunk: int = 4096) -> Iterator[tuple[list[int], np.ndarray]]:
        """Stored vectors of `key` in chunks, all of them or only `labels`."""
        if labels is None:
            last = 0
            while True:
                rows = self._all(f"""SELECT label, vector FROM {TABLE} WHERE label > %(last)s AND {_KEY_MATCH}
                                     ORDER BY label LIMIT %(chunk)s""", {"last": last, "chunk": chunk, **key.to_json()})
                if not rows:
                    return
                last = rows[-1]["label"]
                yield [int(r["label"]) for r in rows], blob_to_vectors([bytes(r["vector"]) for r in rows], key.dim)
        for start in range(0, len(labels), chunk):
            part = [int(x) for x in labels[start:start + chunk]]
            rows = self._all(f"""SELECT label, vector FROM {TABLE} WHERE label = ANY(%(labels)s::bigint[])
                                 AND {_KEY_MATCH} ORDER BY label""", {"labels": part, **key.to_json()})
            if rows:
                yield [int(r["label"]) for r in rows], blob_to_vectors([bytes(r["vector"]) for r in rows], key.dim)

    def filtered_labels(self, key: ModelKey, routine_id: str | None, since_ms: int | None,
                        until_ms: int | None) -> list[int]:
        where, params = self._filters(routine_id, since_ms, until_ms)
        named = {f"p{i}": v for i, v in enumerate(params)}
        clauses = [w.replace("%s", f"%(p{i})s") for i, w in enumerate(where)]
        sql = f"SELECT label FROM {TABLE} WHERE {_KEY_MATCH}"
        if clauses:
            sql += " AND " + " AND ".join(clauses)
        return [int(r["label"]) for r in self._all(sql, {**named, **key.to_json()})]

    # -- stats and state ----------------------------------------------------------------------

    def stats(self, key: ModelKey | None, now_ms: int) -> dict[str, Any]:
        r = self._one(f"""SELECT COUNT(*) AS items, COALESCE(SUM(bytes), 0) AS size, MIN(created_at_ms) AS oldest,
                          MAX(created_at_ms) AS newest, COUNT(expires_at_ms) AS with_ttl,
                          COUNT(*) FILTER (WHERE expires_at_ms <= %s) AS expired FROM {TABLE}""", (now_ms,))
        out: dict[str, Any] = {"items": int(r["items"]), "text_bytes": int(r["size"]), "oldest_ms": r["oldest"],
                               "newest_ms": r["newest"], "with_ttl": int(r["with_ttl"]), "expired": int(r["expired"])}
        out["models"] = [
            {"model": m["embedding_model"], "dim": m["embedding_dim"], "version": m["embedding_version"],
             "items": int(m["n"])}
            for m in self._all(f"""SELECT embedding_model, embedding_dim, embedding_version, COUNT(*) AS n
                                   FROM {TABLE} WHERE vector IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 4 DESC""")
        ]
        if key is not None:
            embedded = self.embedded_count(key)
            out["embedded"] = embedded
            out["pending"] = out["items"] - embedded
        return out

    def pending_count(self, key: ModelKey) -> int:
        """Items without a vector from `key` (every search reports it)."""
        row = self._one(f"SELECT COUNT(*) AS n FROM {TABLE} WHERE {_KEY_MISMATCH}", key.to_json())
        return int(row["n"]) if row else 0

    def embedded_count(self, key: ModelKey) -> int:
        row = self._one(f"""SELECT COUNT(*) AS n FROM {TABLE} WHERE embedding_model = %(model)s
                            AND embedding_dim = %(dim)s AND embedding_version = %(version)s""", key.to_json())
        return int(row["n"]) if row else 0

    def get_state(self, key: str) -> Any | None:
        row = self._one(f"SELECT value FROM {STATE_TABLE} WHERE key = %s", (key,))
        return json.loads(row["value"]) if row else None

    @staticmethod
    def _put_state(t: PgTxn, key: str, value: Any, now_ms: int) -> None:
        t.execute(f"""INSERT INTO {STATE_TABLE} (key, value, updated_at_ms) VALUES (%s, %s, %s)
                      ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at_ms = excluded.updated_at_ms""",
                  (key, json.dumps(value, sort_keys=True), now_ms))

    def set_state(self, key: str, value: Any, now_ms: int) -> None:
        with self.journal.transaction() as t:
            self._put_state(t, key, value, now_ms)

    # -- whole-database maintenance -------------------------------------------------------------

    def file_stats(self) -> FileStats:
        """The items table's size in 8 KiB pages; no free list to report (autovacuum reuses space)."""
        row = self._one("SELECT pg_total_relation_size(%s) AS size", (TABLE,))
        return FileStats(page_size=8192, page_count=int(row["size"]) // 8192 if row else 0, freelist_count=0)

    def table_bytes(self) -> int:
        return self.file_stats().page_count * 8192

    def optimize(self) -> None:
        """Nothing to do: the server's autovacuum analyzes and reclaims on its own."""
