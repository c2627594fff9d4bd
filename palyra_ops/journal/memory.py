"""All SQL for memory items (SPEC §9), kept in the journal package like every other query.

Memory items are immutable text plus provenance. The embedding vector is stored here as a float32
BLOB next to the model key that produced it, so the hnswlib index beside the journal is only a cache:
it can be deleted, corrupted or built for another model and is always rebuilt from these rows without
calling the embedder again.

`label` is an AUTOINCREMENT integer primary key because hnswlib identifies vectors by an integer
label: AUTOINCREMENT guarantees a label is never reused after a delete (not even across VACUUM), so a
stale index entry can never be mistaken for a newer item.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ulid import ULID

if TYPE_CHECKING:  # both are heavy imports (~150 ms); every CLI command opens the journal
    import numpy as np
    import sqlite_utils

TABLE = "journal_memory_items"
STATE_TABLE = "journal_memory_state"

#: sources that come from the daemon's delivery step; one item per (run, source) so a retried
#: delivery does not store the same output twice
RUN_SOURCES = ("delivery:local_only", "delivery:audit_only")
SOURCES = (*RUN_SOURCES, "api", "cli")
_RUN_SOURCES_SQL = ", ".join(f"'{s}'" for s in RUN_SOURCES)

_COLUMNS = (
    "label, id, routine_id, run_id, source, text, created_at_ms, expires_at_ms, bytes, "
    "embedding_model, embedding_dim, embedding_version, embedded_at_ms"
)


def _create(db: sqlite_utils.Database) -> None:
    """Create the memory tables; idempotent so a pre-runner test DB can later be migrated."""
    conn = db.conn
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {TABLE} (
            label INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            routine_id TEXT,
            run_id TEXT,
            source TEXT NOT NULL,
            text TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL,
            expires_at_ms INTEGER,
            bytes INTEGER NOT NULL,
            embedding_model TEXT,
            embedding_dim INTEGER,
            embedding_version TEXT,
            embedded_at_ms INTEGER,
            vector BLOB
        )"""
    )
    conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_created ON {TABLE} (created_at_ms, label)")
    conn.execute(
        f"CREATE INDEX IF NOT EXISTS {TABLE}_expires ON {TABLE} (expires_at_ms) WHERE expires_at_ms IS NOT NULL"
    )
    conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_routine ON {TABLE} (routine_id, created_at_ms)")
    conn.execute(
        f"CREATE INDEX IF NOT EXISTS {TABLE}_embedding ON {TABLE} "
        "(embedding_model, embedding_dim, embedding_version)"
    )
    conn.execute(
        f"CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_run ON {TABLE} (run_id, source) "
        f"WHERE run_id IS NOT NULL AND source IN ({_RUN_SOURCES_SQL})"
    )
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at_ms INTEGER NOT NULL
        )"""
    )


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [("0100_memory_items", _create)]


@dataclass(frozen=True)
class ModelKey:
    """Identity of the vectors an embedder produces; a different key means re-embedding."""

    model: str
    dim: int
    version: str

    def to_json(self) -> dict[str, object]:
        return {"model": self.model, "dim": self.dim, "version": self.version}


@dataclass(frozen=True)
class MemoryRow:
    label: int
    id: str
    routine_id: str | None
    run_id: str | None
    source: str
    text: str
    created_at_ms: int
    expires_at_ms: int | None
    bytes: int
    embedding_model: str | None
    embedding_dim: int | None
    embedding_version: str | None
    embedded_at_ms: int | None


@dataclass(frozen=True)
class RetentionDeletion:
    """Labels deleted by one retention pass, grouped by the limit that named them."""

    ttl: list[int]
    max_age: list[int]
    max_items: list[int]
    max_bytes: list[int]
    freed_text_bytes: int

    @property
    def labels(self) -> list[int]:
        return [*self.ttl, *self.max_age, *self.max_items, *self.max_bytes]


@dataclass(frozen=True)
class FileStats:
    page_size: int
    page_count: int
    freelist_count: int


def vector_to_blob(vec: np.ndarray) -> bytes:
    import numpy as np

    return np.ascontiguousarray(vec, dtype="<f4").tobytes()


def blob_to_vectors(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    import numpy as np

    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32)


def _key_mismatch_sql() -> str:
    return (
        "(vector IS NULL OR embedding_model IS NOT :model OR embedding_dim IS NOT :dim "
        "OR embedding_version IS NOT :version)"
    )


def _key_match_sql() -> str:
    return "(vector IS NOT NULL AND embedding_model = :model AND embedding_dim = :dim AND embedding_version = :version)"


class MemoryStore:
    """Every memory query. Takes an open journal database; never opens or closes it."""

    engine = "sqlite"

    def __init__(self, db: sqlite_utils.Database | sqlite3.Connection) -> None:
        self.conn: sqlite3.Connection = db if isinstance(db, sqlite3.Connection) else db.conn

    # -- plumbing -----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE (or a savepoint inside someone else's transaction).

        IMMEDIATE takes the write lock up front so a multi-statement retention pass sees one
        consistent snapshot and cannot fail half-way with SQLITE_BUSY on lock upgrade.
        """
        if self.conn.in_transaction:
            self.conn.execute("SAVEPOINT memory_tx")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK TO memory_tx")
                self.conn.execute("RELEASE memory_tx")
                raise
            self.conn.execute("RELEASE memory_tx")
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def has_schema(self) -> bool:
        row = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone()
        return row is not None

    # -- items --------------------------------------------------------------------------------

    def insert(
        self,
        *,
        text: str,
        source: str,
        routine_id: str | None,
        run_id: str | None,
        created_at_ms: int,
        expires_at_ms: int | None,
    ) -> tuple[MemoryRow, bool]:
        """Insert an item; returns (row, created). A run output already stored is returned as is."""
        with self.transaction():
            if run_id is not None and source in RUN_SOURCES:
                # repeating the partial index's own condition lets SQLite use it (else: a full scan)
                existing = self.conn.execute(
                    f"SELECT {_COLUMNS} FROM {TABLE} WHERE run_id = ? AND source = ? AND source IN ({_RUN_SOURCES_SQL})",
                    (run_id, source),
                ).fetchone()
                if existing is not None:
                    return MemoryRow(*existing), False
            item_id = str(ULID.from_timestamp(created_at_ms / 1000))
            cur = self.conn.execute(
                f"""INSERT INTO {TABLE} (id, routine_id, run_id, source, text, created_at_ms,
                    expires_at_ms, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (item_id, routine_id, run_id, source, text, created_at_ms, expires_at_ms, len(text.encode("utf-8"))),
            )
            label = cur.lastrowid
            row = self.conn.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE label = ?", (label,)).fetchone()
        return MemoryRow(*row), True

    def get(self, item_id: str) -> MemoryRow | None:
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = ?", (item_id,)).fetchone()
        return MemoryRow(*row) if row else None

    def rows_by_labels(self, labels: Sequence[int]) -> dict[int, MemoryRow]:
        out: dict[int, MemoryRow] = {}
        for start in range(0, len(labels), 500):
            chunk = list(labels[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE label IN ({marks})", chunk):
                out[row[0]] = MemoryRow(*row)
        return out

    def list(
        self,
        *,
        routine_id: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 50,
        before: tuple[int, int] | None = None,
    ) -> list[MemoryRow]:
        """Newest first; `before` is the (created_at_ms, label) keyset cursor of the previous page."""
        where, params = self._filters(routine_id, since_ms, until_ms)
        if before is not None:
            where.append("(created_at_ms < ? OR (created_at_ms = ? AND label < ?))")
            params.extend([before[0], before[0], before[1]])
        sql = f"SELECT {_COLUMNS} FROM {TABLE}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at_ms DESC, label DESC LIMIT ?"
        params.append(limit)
        return [MemoryRow(*r) for r in self.conn.execute(sql, params)]

    @staticmethod
    def _filters(routine_id: str | None, since_ms: int | None, until_ms: int | None) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if routine_id is not None:
            where.append("routine_id = ?")
            params.append(routine_id)
        if since_ms is not None:
            where.append("created_at_ms >= ?")
            params.append(since_ms)
        if until_ms is not None:
            where.append("created_at_ms < ?")
            params.append(until_ms)
        return where, params

    def delete(self, item_ids: Sequence[str]) -> list[int]:
        """Delete items by id; returns the labels removed (for the index)."""
        labels: list[int] = []
        with self.transaction():
            for start in range(0, len(item_ids), 500):
                chunk = list(item_ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                labels += [r[0] for r in self.conn.execute(f"SELECT label FROM {TABLE} WHERE id IN ({marks})", chunk)]
                self.conn.execute(f"DELETE FROM {TABLE} WHERE id IN ({marks})", chunk)
        return labels

    # -- retention ----------------------------------------------------------------------------

    def apply_retention(
        self,
        *,
        now_ms: int,
        max_age_ms: int | None,
        max_items: int | None,
        max_bytes: int | None,
    ) -> RetentionDeletion:
        """TTL, then max age, then max items, then max bytes, oldest first, in one transaction.

        Each limit is evaluated on what the previous ones left, so an item is attributed to the
        first limit that names it and the counts add up to what was deleted.
        """
        order = "ORDER BY created_at_ms DESC, label DESC"
        with self.transaction():
            ttl = self._labels(
                f"SELECT label FROM {TABLE} WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?", (now_ms,)
            )
            freed = self._delete_labels(ttl)
            age: list[int] = []
            if max_age_ms is not None:
                age = self._labels(f"SELECT label FROM {TABLE} WHERE created_at_ms < ?", (now_ms - max_age_ms,))
                freed += self._delete_labels(age)
            items: list[int] = []
            if max_items is not None:
                items = self._labels(f"SELECT label FROM {TABLE} {order} LIMIT -1 OFFSET ?", (max_items,))
                freed += self._delete_labels(items)
            size: list[int] = []
            if max_bytes is not None:
                size = self._labels(
                    f"""SELECT label FROM (SELECT label, SUM(bytes) OVER ({order}
                        ROWS UNBOUNDED PRECEDING) AS kept FROM {TABLE}) WHERE kept > ?""",
                    (max_bytes,),
                )
                freed += self._delete_labels(size)
        return RetentionDeletion(ttl=ttl, max_age=age, max_items=items, max_bytes=size, freed_text_bytes=freed)

    def _labels(self, sql: str, params: Sequence[Any]) -> list[int]:
        return sorted(r[0] for r in self.conn.execute(sql, params))

    def _delete_labels(self, labels: Sequence[int]) -> int:
        freed = 0
        for start in range(0, len(labels), 500):
            chunk = list(labels[start : start + 500])
            marks = ",".join("?" * len(chunk))
            freed += self.conn.execute(
                f"SELECT COALESCE(SUM(bytes), 0) FROM {TABLE} WHERE label IN ({marks})", chunk
            ).fetchone()[0]
            self.conn.execute(f"DELETE FROM {TABLE} WHERE label IN ({marks})", chunk)
        return int(freed)

    # -- embeddings ---------------------------------------------------------------------------

    def max_label(self) -> int:
        return int(self.conn.execute(f"SELECT COALESCE(MAX(label), 0) FROM {TABLE}").fetchone()[0])

    def pending_batch(self, key: ModelKey, *, after_label: int, upto_label: int, limit: int) -> list[tuple[int, str]]:
        """(label, text) of items without a vector from `key`, in label order."""
        return list(
            self.conn.execute(
                f"""SELECT label, text FROM {TABLE} WHERE label > :after AND label <= :upto
                    AND {_key_mismatch_sql()} ORDER BY label LIMIT :limit""",
                {"after": after_label, "upto": upto_label, "limit": limit, **key.to_json()},
            )
        )

    def store_vectors(self, key: ModelKey, labels: Sequence[int], vectors: np.ndarray, now_ms: int) -> list[int]:
        """Write vectors; returns the labels that still existed (a concurrent delete wins)."""
        stored: list[int] = []
        with self.transaction():
            for label, vec in zip(labels, vectors, strict=True):
                cur = self.conn.execute(
                    f"""UPDATE {TABLE} SET vector = ?, embedding_model = ?, embedding_dim = ?,
                        embedding_version = ?, embedded_at_ms = ? WHERE label = ?""",
                    (vector_to_blob(vec), key.model, key.dim, key.version, now_ms, label),
                )
                if cur.rowcount:
                    stored.append(label)
        return stored

    def embedded_labels(self, key: ModelKey) -> list[int]:
        return [
            r[0]
            for r in self.conn.execute(f"SELECT label FROM {TABLE} WHERE {_key_match_sql()} ORDER BY label", key.to_json())
        ]

    def iter_vectors(
        self, key: ModelKey, labels: Sequence[int] | None = None, chunk: int = 4096
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Stored vectors of `key` in chunks, all of them or only `labels`."""
        if labels is None:
            last = 0
            while True:
                rows = list(
                    self.conn.execute(
                        f"""SELECT label, vector FROM {TABLE} WHERE label > :last AND {_key_match_sql()}
                            ORDER BY label LIMIT :chunk""",
                        {"last": last, "chunk": chunk, **key.to_json()},
                    )
                )
                if not rows:
                    return
                last = rows[-1][0]
                yield [r[0] for r in rows], blob_to_vectors([r[1] for r in rows], key.dim)
            return
        for start in range(0, len(labels), 500):
            part = list(labels[start : start + 500])
            marks = ",".join("?" * len(part))
            rows = list(
                self.conn.execute(
                    f"SELECT label, vector FROM {TABLE} WHERE label IN ({marks}) AND vector IS NOT NULL "
                    "AND embedding_model = ? AND embedding_dim = ? AND embedding_version = ? ORDER BY label",
                    [*part, key.model, key.dim, key.version],
                )
            )
            if rows:
                yield [r[0] for r in rows], blob_to_vectors([r[1] for r in rows], key.dim)

    def filtered_labels(
        self, key: ModelKey, routine_id: str | None, since_ms: int | None, until_ms: int | None
    ) -> list[int]:
        where, params = self._filters(routine_id, since_ms, until_ms)
        named = {f"p{i}": v for i, v in enumerate(params)}
        clauses = [w.replace("?", f":p{i}") for i, w in enumerate(where)]
        sql = f"SELECT label FROM {TABLE} WHERE {_key_match_sql()}"
        if clauses:
            sql += " AND " + " AND ".join(clauses)
        return [r[0] for r in self.conn.execute(sql, {**named, **key.to_json()})]

    # -- stats and state ----------------------------------------------------------------------

    def stats(self, key: ModelKey | None, now_ms: int) -> dict[str, Any]:
        total, size, oldest, newest, with_ttl, expired = self.conn.execute(
            f"""SELECT COUNT(*), COALESCE(SUM(bytes), 0), MIN(created_at_ms), MAX(created_at_ms),
                COUNT(expires_at_ms), COALESCE(SUM(expires_at_ms <= ?), 0) FROM {TABLE}""",
            (now_ms,),
        ).fetchone()
        out: dict[str, Any] = {
            "items": total,
            "text_bytes": size,
            "oldest_ms": oldest,
            "newest_ms": newest,
            "with_ttl": with_ttl,
            "expired": expired,
        }
        models = [
            {"model": m, "dim": d, "version": v, "items": n}
            for m, d, v, n in self.conn.execute(
                f"""SELECT embedding_model, embedding_dim, embedding_version, COUNT(*) FROM {TABLE}
                    WHERE vector IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 4 DESC"""
            )
        ]
        out["models"] = models
        if key is not None:
            embedded = self.embedded_count(key)
            out["embedded"] = embedded
            out["pending"] = total - embedded
        return out

    def pending_count(self, key: ModelKey) -> int:
        """Items without a vector from `key`, as index range counts only (O(pending), not O(items)),
        so every search can report it. Embedding columns are only ever set together with the vector."""
        e = f"SELECT COUNT(*) FROM {TABLE} WHERE"
        sql = " + ".join(
            f"({e} {cond})"
            for cond in (
                "embedding_model IS NULL",
                "embedding_model < :model",
                "embedding_model > :model",
                "embedding_model = :model AND embedding_dim < :dim",
                "embedding_model = :model AND embedding_dim > :dim",
                "embedding_model = :model AND embedding_dim = :dim AND embedding_version < :version",
                "embedding_model = :model AND embedding_dim = :dim AND embedding_version > :version",
            )
        )
        return int(self.conn.execute(f"SELECT {sql}", key.to_json()).fetchone()[0])

    def embedded_count(self, key: ModelKey) -> int:
        return int(
            self.conn.execute(
                f"""SELECT COUNT(*) FROM {TABLE} WHERE embedding_model = :model AND embedding_dim = :dim
                    AND embedding_version = :version""",
                key.to_json(),
            ).fetchone()[0]
        )

    def get_state(self, key: str) -> Any | None:
        row = self.conn.execute(f"SELECT value FROM {STATE_TABLE} WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_state(self, key: str, value: Any, now_ms: int) -> None:
        with self.transaction():
            self.conn.execute(
                f"""INSERT INTO {STATE_TABLE} (key, value, updated_at_ms) VALUES (?, ?, ?)
                    ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at_ms = excluded.updated_at_ms""",
                (key, json.dumps(value, sort_keys=True), now_ms),
            )

    # -- whole-file maintenance ---------------------------------------------------------------

    def file_stats(self) -> FileStats:
        page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        page_count = self.conn.execute("PRAGMA page_count").fetchone()[0]
        freelist = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return FileStats(page_size=page_size, page_count=page_count, freelist_count=freelist)

    def vacuum(self) -> tuple[int, int, int]:
        """VACUUM, then checkpoint so the WAL copy of the rebuilt file lands and the file shrinks.

        Returns the checkpoint's (busy, wal_frames, checkpointed_frames); busy=1 means a reader kept
        the old pages alive and the file shrinks at a later checkpoint instead.
        """
        self.conn.execute("VACUUM")
        busy, log, done = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(busy), int(log), int(done)

    def optimize(self) -> None:
        self.conn.execute("PRAGMA optimize")


def db_file_bytes(path: Path) -> int:
    """Size of the journal on disk: main file plus WAL (what an operator's `du` would see)."""
    total = 0
    for p in (path, Path(str(path) + "-wal")):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total
