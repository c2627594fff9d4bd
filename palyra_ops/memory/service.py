"""`MemoryService`: the one façade the daemon, the HTTP routes and the CLI use for memory.

Threading model: every public method is blocking and safe to call from several threads at once
(the daemon calls `maintain`/`backfill` through `asyncio.to_thread`, or the `a*` wrappers, so the
scheduler's event loop never waits on SQLite or an embedding endpoint). Each thread gets its own
SQLite connection. Index mutations and the journal writes they mirror happen under one lock per
service, plus an advisory file lock, so a CLI `memory backfill` and the daemon never interleave;
embedding (the slow part) happens outside both locks.

Read paths never write the index file: `search` uses the index when it is sound for the embedder's
model, and otherwise answers exactly from the vectors stored in the journal.
"""

from __future__ import annotations

import asyncio
import fcntl
import heapq
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from palyra_ops.clock import Clock, SystemClock, rfc3339
from palyra_ops.errors import NotFound, PalyraError
from palyra_ops.fsmodes import open_private
from palyra_ops.journal.memory import SOURCES, MemoryStore, ModelKey, db_file_bytes
from palyra_ops.journal.sqlite import connect
from palyra_ops.memory.embedders import Embedder, EmbedderSpec, HashingEmbedder
from palyra_ops.memory.index import IndexParams, MemoryIndex, index_path_for, read_sidecar
from palyra_ops.memory.maintenance import (
    BackfillResult,
    MaintenanceResult,
    MemoryConfig,
    VacuumResult,
    vacuum_if_worthwhile,
)
from palyra_ops.memory.results import (
    ItemPage,
    MemoryItem,
    SearchHit,
    SearchResult,
    _decode_cursor,
    _encode_cursor,
)

if TYPE_CHECKING:
    from palyra_ops.journal.postgres import PgJournal
    from palyra_ops.journal.postgres_memory import PgMemoryStore
    from palyra_ops.memory.follower import IndexFollower

__all__ = ["ItemPage", "MemoryItem", "MemoryService", "SearchHit", "SearchResult", "result_key"]

#: largest item text accepted; memory is for summaries and outputs, not documents
MAX_TEXT_BYTES = 1024 * 1024
#: a filtered search whose filter matches at most this many items is answered exactly
EXACT_FILTER_LIMIT = 4096
MAX_K = 1000
_EMBEDDER_STATE = "embedder"


class MemoryService:
    """Memory items, retention, backfill and search over one journal file."""

    def __init__(
        self,
        journal_path: Path | str,
        embedder: Embedder | EmbedderSpec | None = None,
        clock: Clock | None = None,
        config: MemoryConfig | None = None,
        *,
        create: bool = True,
        index_params: IndexParams | None = None,
        state_root: Path | None = None,
        journal: PgJournal | None = None,
    ) -> None:
        """`journal_path` is a SQLite file or a `postgresql://` URL. On PostgreSQL the items live in
        the journal's database (`journal`: the daemon's own store, else one opened here) and the
        side files (index, lock) under `state_root` (`journal.faults.side_path`)."""
        from palyra_ops.journal.faults import is_postgres_url, side_path

        self.clock = clock or SystemClock()
        self.config = config or MemoryConfig()
        #: the journal as given (a URL stays text): what a backfill child opens
        self.location: Path | str = journal_path if is_postgres_url(journal_path) else Path(journal_path)
        self.state_root = state_root
        self._pg: PgMemoryStore | None = None
        self._own_journal: PgJournal | None = None
        self.follower: IndexFollower | None = None
        if is_postgres_url(journal_path):
            self.journal_path = side_path(str(journal_path), state_root)  # side files are named after it
            self._pg = self._open_postgres(str(journal_path), journal, create)
        else:
            self.journal_path = Path(journal_path)
        self.index_path = index_path_for(self.journal_path)
        self.index_params = index_params or IndexParams()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._lock_fd: int | None = None
        self._index: MemoryIndex | None = None
        self._index_reason: str | None = None
        #: (added, removed) by the last load-time reconcile, for results and tests
        self._last_reconcile: tuple[int, int] = (0, 0)
        self._closed = False
        if self._pg is None:
            if not self.journal_path.exists() and not create:
                raise NotFound(f"no journal at {self.journal_path} (run `palyra-ops apply` or pass --journal)")
            self._migrate()  # open_journal creates the directory, or says why it cannot
        self._spec: EmbedderSpec | None = None
        #: the spec of the embedder in use, whoever chose it (None: an Embedder object was passed)
        self.embedder_spec: EmbedderSpec | None = None
        if isinstance(embedder, EmbedderSpec):
            self._spec = self.embedder_spec = embedder
            self.embedder: Embedder = embedder.build()
        elif embedder is None:
            remembered = self.store.get_state(_EMBEDDER_STATE)
            self.embedder_spec = EmbedderSpec.from_dict(remembered) if remembered else EmbedderSpec()
            self.embedder = self.embedder_spec.build() if remembered else HashingEmbedder()
        else:
            self.embedder = embedder

    # -- connections and locks ----------------------------------------------------------------

    def _open_postgres(self, url: str, journal: PgJournal | None, create: bool) -> PgMemoryStore:
        """The PostgreSQL memory store over `journal`, or over a store of our own (closed with us);
        opening it migrates the journal (memory's step included), so only a read refuses a missing one."""
        from palyra_ops.journal import journal_exists, open_journal
        from palyra_ops.journal.faults import redact
        from palyra_ops.journal.postgres import PgJournal
        from palyra_ops.journal.postgres_memory import PgMemoryStore

        if journal is None:
            if not create and not journal_exists(url):
                raise NotFound(f"no journal at {redact(url)} (run `palyra-ops apply` or pass --journal)")
            opened = open_journal(url, clock=self.clock)
            assert isinstance(opened, PgJournal)
            self._own_journal = journal = opened
        return PgMemoryStore(journal)

    def follow(self, poll_s: float = 1.0) -> IndexFollower:
        """PostgreSQL, in the daemon: keep this process's index current with every peer's writes
        (`memory/follower.py`): built from the journal now, then the change feed (NOTIFY, polling)."""
        from palyra_ops.memory.follower import IndexFollower

        if self._pg is None:
            raise PalyraError("only a PostgreSQL journal has peers to follow")
        if self.follower is None:
            self.follower = IndexFollower(self, self._pg, poll_s=poll_s)
        return self.follower

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.journal_path, autocommit=False)
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _migrate(self) -> None:
        """The journal's runner applies our named migration with the others and tracks it."""
        from palyra_ops.journal import open_journal

        open_journal(self.journal_path, clock=self.clock).close()

    @property
    def store(self) -> MemoryStore | PgMemoryStore:
        if self._closed:
            raise PalyraError("memory service is closed")
        if self._pg is not None:
            return self._pg
        store = getattr(self._local, "store", None)
        if store is None:
            store = MemoryStore(self._connect())
            self._local.store = store
        return store

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Service lock plus an flock on `<journal>.memory.lock` (taken once per outermost entry,
        because a second flock on a new descriptor would block even in the same process)."""
        with self._lock:
            if self._lock_depth == 0:
                fd = open_private(f"{self.journal_path}.memory.lock")
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_fd = fd
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def close(self) -> None:
        """Close every thread's connection; the daemon calls this on shutdown."""
        if self.follower is not None:
            self.follower.close()
        with self._lock:
            if self._index is not None and self._index.dirty:
                self._save_index()
            self._closed = True
        close = getattr(self.embedder, "close", None)
        if close is not None:
            close()
        with self._conns_lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
        if self._own_journal is not None:
            self._own_journal.close()

    def __enter__(self) -> MemoryService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- items --------------------------------------------------------------------------------

    def add_item(
        self,
        text: str,
        *,
        routine_id: str | None = None,
        run_id: str | None = None,
        source: str = "api",
        ttl_ms: int | None = None,
    ) -> MemoryItem:
        """Store one item. A run output (`delivery:*` source) already stored for that run is
        returned unchanged, so a retried delivery is idempotent. Embedding happens at backfill."""
        if not isinstance(text, str) or not text.strip():
            raise PalyraError("memory item text must not be empty")
        size = len(text.encode("utf-8"))
        if size > MAX_TEXT_BYTES:
            raise PalyraError(f"memory item text is {size} bytes; the limit is {MAX_TEXT_BYTES}")
        if source not in SOURCES:
            raise PalyraError(f"unknown memory source {source!r} (expected one of {', '.join(SOURCES)})")
        if ttl_ms is not None and ttl_ms <= 0:
            raise PalyraError("memory item ttl must be longer than 0s")
        now = self.clock.now_ms()
        ttl = ttl_ms if ttl_ms is not None else self.config.retention.default_ttl_ms
        row, _ = self.store.insert(
            text=text,
            source=source,
            routine_id=routine_id,
            run_id=run_id,
            created_at_ms=now,
            expires_at_ms=now + ttl if ttl is not None else None,
        )
        return MemoryItem.from_row(row)

    def get(self, item_id: str) -> MemoryItem:
        row = self.store.get(item_id)
        if row is None:
            raise NotFound(f"memory item {item_id} not found")
        return MemoryItem.from_row(row)

    def list(
        self,
        *,
        routine_id: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ItemPage:
        """Newest first, keyset-paginated (stable while items are added or deleted)."""
        if not 1 <= limit <= 1000:
            raise PalyraError("limit must be between 1 and 1000")
        rows = self.store.list(
            routine_id=routine_id,
            since_ms=since_ms,
            until_ms=until_ms,
            limit=limit + 1,
            before=_decode_cursor(cursor) if cursor else None,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return ItemPage([MemoryItem.from_row(r) for r in rows], _encode_cursor(rows[-1]) if more else None)

    def delete(self, item_ids: list[str]) -> int:
        """Delete items now (journal and index together); returns how many existed."""
        with self._exclusive():
            labels = self.store.delete(item_ids)
            if labels and self._index is not None:
                self._index.remove(labels)
                self._save_index()
        return len(labels)

    # -- index lifecycle ----------------------------------------------------------------------

    def _save_index(self) -> None:
        if self._index is not None and self._index.dirty:
            self._index.save(self.clock.now_ms())

    def _index_for_write(self, *, build: bool) -> tuple[MemoryIndex | None, str]:
        """The index for the current model, loaded, reconciled or (when `build`) rebuilt.

        Called under `_exclusive`. If another process saved a newer file since we loaded ours, the
        file wins and is reconciled with the journal, which restores anything we had not saved.
        """
        key = self.embedder.key
        idx = self._index
        if idx is not None and idx.key == key:
            side = read_sidecar(self.index_path)
            disk_gen = side.get("generation") if side else None
            if disk_gen is None or disk_gen == idx.generation:
                return idx, "loaded"
        loaded, reason = MemoryIndex.load(self.index_path, key, self.index_params)
        if loaded is not None:
            self._last_reconcile = loaded.reconcile(self.store)
            self._index = loaded
            self._index_reason = None
            return loaded, "loaded"
        if idx is not None and idx.key == key and reason == "missing":
            # our in-memory copy is fine; the file was removed underneath us
            idx.dirty = True
            return idx, "loaded"
        if not build:
            return None, reason or "missing"
        fresh = MemoryIndex(self.index_path, key, self.index_params)
        fresh.rebuild(self.store)
        self._index = fresh
        self._index_reason = None
        return fresh, f"rebuilt ({reason})"

    def _index_for_read(self) -> MemoryIndex | None:
        """Called under `_lock`: the index if it is sound for the current model, else None."""
        key = self.embedder.key
        idx = self._index
        side = read_sidecar(self.index_path)
        if idx is not None and idx.key == key:
            disk_gen = side.get("generation") if side else None
            if disk_gen is None or disk_gen == idx.generation or idx.dirty:
                return idx
        loaded, reason = MemoryIndex.load(self.index_path, key, self.index_params)
        if loaded is None:
            self._index_reason = reason
            return idx if idx is not None and idx.key == key else None
        self._last_reconcile = loaded.reconcile(self.store)
        loaded.dirty = False  # reconciled in memory only; a read never writes the file
        self._index = loaded
        return loaded

    # -- backfill -----------------------------------------------------------------------------

    def backfill(self, *, batch_size: int | None = None, limit: int | None = None,
                 keep_going: Callable[[], bool] | None = None) -> BackfillResult:
        """Embed items lacking a vector from the current model, in batches, and index them.
        `keep_going` is asked before each batch (the daemon's child: is the daemon still there).

        Only items that existed when the run started are considered, so a steady stream of new
        items cannot keep one run going forever; they are picked up by the next run.
        """
        batch = batch_size or self.config.batch_size
        started = self.clock.now_ms()
        t0 = time.perf_counter()
        result = BackfillResult(started_at_ms=started)
        try:
            key = self.embedder.key
            result.model = key.to_json()
            if self._spec is not None and limit != 0:  # limit 0 embeds nothing: only the index file
                self.store.set_state(_EMBEDDER_STATE, self._spec.to_dict(), started)
            with self._exclusive():
                idx, action = self._index_for_write(build=True)
                result.index_action = action
            upto = self.store.max_label()
            after = 0
            while limit is None or result.embedded + result.skipped_deleted < limit:
                if keep_going is not None and not keep_going():
                    result.error = "stopped: the daemon that started this backfill is gone"
                    break
                n = batch if limit is None else min(batch, limit - result.embedded - result.skipped_deleted)
                rows = self.store.pending_batch(key, after_label=after, upto_label=upto, limit=n)
                if not rows:
                    break
                labels = [r[0] for r in rows]
                vectors = self.embedder.embed([r[1] for r in rows])
                if vectors.shape != (len(rows), key.dim):
                    raise PalyraError(f"embedder returned shape {vectors.shape} for {len(rows)} texts of dim {key.dim}")
                with self._exclusive():
                    idx, _ = self._index_for_write(build=True)
                    stored = self.store.store_vectors(key, labels, vectors, self.clock.now_ms())
                    keep = set(stored)
                    pick = [i for i, label in enumerate(labels) if label in keep]
                    if idx is not None and pick:
                        idx.add([labels[i] for i in pick], vectors[pick])
                result.embedded += len(stored)
                result.skipped_deleted += len(labels) - len(stored)
                result.batches += 1
                after = labels[-1]
        except PalyraError as exc:
            result.error = exc.message
        finally:
            with self._exclusive():
                if self._index is not None and self._index.key == result_key(result):
                    if self._index.dirty:
                        self._save_index()
                        result.index_saved = True
                    result.index_count = self._index.count
            result.duration_ms = int((time.perf_counter() - t0) * 1000)
            try:
                result.pending_after = self.store.pending_count(self.embedder.key)
            except PalyraError:
                pass
        return result

    # -- maintenance --------------------------------------------------------------------------

    def maintain(self, *, force_vacuum: bool = False, vacuum: bool = True) -> MaintenanceResult:
        """Retention (one transaction), index removals, then VACUUM when worthwhile and optimize."""
        started = self.clock.now_ms()
        t0 = time.perf_counter()
        res = MaintenanceResult(started_at_ms=started)
        r = self.config.retention
        try:
            with self._exclusive():
                deletion = self.store.apply_retention(
                    now_ms=started, max_age_ms=r.max_age_ms, max_items=r.max_items, max_bytes=r.max_bytes
                )
                res.deleted_ttl = len(deletion.ttl)
                res.deleted_max_age = len(deletion.max_age)
                res.deleted_max_items = len(deletion.max_items)
                res.deleted_max_bytes = len(deletion.max_bytes)
                res.freed_text_bytes = deletion.freed_text_bytes
                if deletion.labels:
                    idx = self._index if self._index is not None and self._index.key == self.embedder.key else None
                    if idx is None:
                        # not in memory: loading reconciles with the journal, which drops the deleted labels
                        self._last_reconcile = (0, 0)
                        idx, _ = self._index_for_write(build=False)
                        res.index_removed = self._last_reconcile[1]
                    if idx is not None:
                        res.index_removed += idx.remove(deletion.labels)
                        self._save_index()
                if vacuum and self._pg is not None:
                    res.vacuum = VacuumResult(False, "PostgreSQL: autovacuum reclaims space", 0, 0, 0)
                elif vacuum:
                    store = self.store
                    assert isinstance(store, MemoryStore)
                    res.vacuum = vacuum_if_worthwhile(
                        store,
                        self.journal_path,
                        min_free_bytes=self.config.vacuum_min_free_bytes,
                        min_free_ratio=self.config.vacuum_min_free_ratio,
                        force=force_vacuum,
                    )
                self.store.optimize()
                res.optimized = True
        except sqlite3.OperationalError as exc:
            # e.g. the journal stayed locked past busy_timeout: report it, the next pass retries
            res.error = f"sqlite: {exc}"
        except PalyraError as exc:  # the embedder could not name its model; the index catches up on load
            res.error = exc.message
        res.duration_ms = int((time.perf_counter() - t0) * 1000)
        return res

    async def amaintain(self, **kw: Any) -> MaintenanceResult:
        return await asyncio.to_thread(self.maintain, **kw)

    async def abackfill(self, **kw: Any) -> BackfillResult:
        return await asyncio.to_thread(self.backfill, **kw)

    async def asearch(self, query: str, **kw: Any) -> SearchResult:
        return await asyncio.to_thread(self.search, query, **kw)

    async def aadd_item(self, text: str, **kw: Any) -> MemoryItem:
        return await asyncio.to_thread(self.add_item, text, **kw)

    # -- search -------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        routine_id: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> SearchResult:
        """Nearest items by cosine similarity of embeddings from the current model."""
        if not isinstance(query, str) or not query.strip():
            raise PalyraError("search text must not be empty")
        if not 1 <= k <= MAX_K:
            raise PalyraError(f"k must be between 1 and {MAX_K}")
        t0 = time.perf_counter()
        key = self.embedder.key
        qvec = self.embedder.embed([query])[0]
        store = self.store
        filtered = routine_id is not None or since_ms is not None or until_ms is not None
        allowed = set(store.filtered_labels(key, routine_id, since_ms, until_ms)) if filtered else None
        notes: list[str] = []
        pairs: list[tuple[int, float]] | None = None
        method = "exact"
        if allowed is None or len(allowed) > EXACT_FILTER_LIMIT:
            with self._lock:
                idx = self._index_for_read()
                if idx is not None:
                    pairs = idx.query(qvec, k, allowed)
                    if pairs is not None:
                        method = "hnsw"
        if pairs is None:
            if allowed is None and self._index_reason:
                notes.append(f"index unavailable ({self._index_reason}); searched exactly")
            pairs = self._exact(key, qvec, k, sorted(allowed) if allowed is not None else None)
        rows = store.rows_by_labels([label for label, _ in pairs])
        hits = [SearchHit(score, MemoryItem.from_row(rows[label])) for label, score in pairs if label in rows]
        pending = store.pending_count(key)
        if pending:
            notes.append(f"{pending} item(s) not embedded with {key.model} yet; run backfill")
        return SearchResult(query, key, method, hits, pending, (time.perf_counter() - t0) * 1000, notes)

    def _exact(self, key: ModelKey, qvec: np.ndarray, k: int, labels: list[int] | None) -> list[tuple[int, float]]:
        """Brute-force cosine over stored vectors (also the ground truth the bench measures against)."""
        best: list[tuple[float, int]] = []
        for chunk_labels, mat in self.store.iter_vectors(key, labels):
            sims = mat @ qvec
            for i in np.argsort(-sims)[:k]:
                item = (float(sims[i]), -chunk_labels[i])
                if len(best) < k:
                    heapq.heappush(best, item)
                else:
                    heapq.heappushpop(best, item)
        best.sort(reverse=True)
        return [(-neg_label, score) for score, neg_label in best]

    # -- stats --------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        now = self.clock.now_ms()
        key = self.embedder.key
        out = self.store.stats(key, now)
        out["oldest"] = rfc3339(out.pop("oldest_ms"))
        out["newest"] = rfc3339(out.pop("newest_ms"))
        out["embedder"] = key.to_json()
        side = read_sidecar(self.index_path)
        index: dict[str, Any] = {"path": str(self.index_path), "exists": self.index_path.exists()}
        if side:
            index.update({k: side.get(k) for k in ("model", "dim", "version", "count", "elements", "max_elements", "size")})
            index["saved_at"] = rfc3339(side.get("saved_at_ms"))
        if self._index is not None:
            index["loaded_count"] = self._index.count
        out["index"] = index
        if self._pg is not None:
            from palyra_ops.journal.faults import redact

            out["journal"] = {"location": redact(str(self.location)), "table_bytes": self._pg.table_bytes()}
            return out
        fs = self.store.file_stats()
        out["journal"] = {
            "path": str(self.journal_path),
            "file_bytes": db_file_bytes(self.journal_path),
            "free_bytes": fs.freelist_count * fs.page_size,
            "page_size": fs.page_size,
        }
        return out


def result_key(result: BackfillResult) -> ModelKey | None:
    m = result.model
    return ModelKey(m["model"], m["dim"], m["version"]) if m else None
