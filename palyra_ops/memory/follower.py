"""A daemon's hnswlib index kept current with its peers' writes (PostgreSQL journal, SPEC §9, §11).

On one SQLite journal one daemon writes everything, so its index only ever changes by its own hand.
On a PostgreSQL journal every daemon reads and writes the same items: a peer's backfill stores
vectors and a peer's retention or delete removes items, and this daemon's index must follow, or a
search here would miss what was embedded there (or keep returning slots of deleted items).

`IndexFollower` runs in a thread of the daemon:

- **Start:** the index file beside the journal (verified, then reconciled with the journal: a set
  difference) or, without a sound one, a fresh index from every stored vector — in a spawned child
  process when there are more than `IN_PROCESS_BUILD_MAX` (it saves the file, the daemon loads it),
  else here; outside the service lock either way, so searches meanwhile answer exactly; the feed position (`head`) is
  read *before* building, so a change that lands during the build is applied after it.
- **Then:** the change feed (`journal_memory_changes`, `postgres_memory.py`) after that position,
  woken by `NOTIFY palyra_memory` on the journal's one listening connection, polled every
  `poll_s` as the fallback. A `vector` change adds the stored vector (when it is of this daemon's
  model key: a vector of another model leaves the index, as a reconcile would), a `delete` removes
  the label. Applying is idempotent, so a change seen twice (the build raced it) is harmless.
- **Fell behind the pruned feed** (offline for over an hour): reconcile with the journal instead.
- **Model key changed** (configured embedder): start again for the new key.

Its health is a task entry like the maintenance tasks' (`health`, shown by the daemon as
`tasks["memory.follow"]` in `GET /console/v1/system/status`): last round, outcome, and in `detail`
the feed position, the index's item count, changes applied and builds.

The index is saved after the start-up build (so the backfill child loads it instead of rebuilding)
and on close; the in-memory copy is the one searches use (`MemoryService._index_for_read` keeps a
dirty index over an older file).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from palyra_ops.clock import rfc3339
from palyra_ops.journal.postgres_memory import MEMORY_CHANNEL
from palyra_ops.memory.index import MemoryIndex

if TYPE_CHECKING:
    from palyra_ops.journal.memory import ModelKey
    from palyra_ops.journal.postgres_memory import PgMemoryStore
    from palyra_ops.memory.backfill_process import IndexBuildChild
    from palyra_ops.memory.service import MemoryService

log = logging.getLogger("palyra_ops.memory")

#: more embedded items than this and a missing index is rebuilt in a child process, not in the
#: daemon's interpreter (where hnswlib inserts, ~1,000-2,000/s, would hold its event loop up)
IN_PROCESS_BUILD_MAX = 5000
#: longest wait between retries after a failed round (journal down, embedder endpoint down): what
#: a recovery may take, and how often a down embedding endpoint is asked for its model's dimension
MAX_BACKOFF_S = 5.0


class IndexFollower:
    def __init__(self, service: MemoryService, store: PgMemoryStore, *, poll_s: float = 1.0) -> None:
        self.service = service
        self.store = store
        self.poll_s = poll_s
        #: feed position the index is current with, and for which key (None: not built yet)
        self.cursor: int | None = None
        self.key: ModelKey | None = None
        #: what the follower did, for status and tests: builds, changes applied, last error
        self.builds = 0
        self.applied = 0
        self.last_error: str | None = None
        self.ready = threading.Event()
        #: the task-health entry (the maintenance tasks' shape) the daemon shows as `memory.follow`
        self.health: dict[str, Any] = {"interval_ms": int(poll_s * 1000), "enabled": True, "last_run_at": None,
                                       "duration_ms": None, "outcome": None, "detail": None, "runs": 0,
                                       "next_run_at": None}
        self._wake = threading.Event()
        self._child: IndexBuildChild | None = None
        self._stop = threading.Event()
        store.journal.on_notify(MEMORY_CHANNEL, self._wake.set)
        self._thread = threading.Thread(target=self._run, name="palyra-memory-follow", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        first = backoff = min(self.poll_s, 0.5)
        while not self._stop.is_set():
            started, t0 = self.service.clock.now_ms(), time.perf_counter()
            try:
                self.sync()
                self.last_error = None
                backoff = first
            except Exception as exc:  # the journal is down, the embedder cannot name its model (an
                # endpoint probe), or closing: retry with backoff, not at every peer's notification
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.debug("memory index follower: %s", self.last_error)
                self._report(started, t0, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            self._report(started, t0, self.poll_s)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _report(self, started_ms: int, t0: float, next_s: float) -> None:
        idx = self.service._index
        self.health.update({
            "last_run_at": rfc3339(started_ms), "duration_ms": round((time.perf_counter() - t0) * 1000, 1),
            "outcome": "failed" if self.last_error else "ok", "runs": self.health["runs"] + 1,
            "next_run_at": rfc3339(started_ms + int(next_s * 1000)),
            "detail": {"cursor": self.cursor, "index_count": idx.count if idx is not None else None,
                       "applied": self.applied, "builds": self.builds, "error": self.last_error},
        })

    def sync(self) -> int:
        """One round: build if needed, then apply the feed; returns the changes applied."""
        svc = self.service
        key = svc.embedder.key
        if self.cursor is None or self.key != key:
            self._build(key)
        applied = 0
        while self.cursor is not None:
            changes = self.store.changes_after(self.cursor)
            if self.store.pruned_through() > self.cursor:  # the feed lost changes we had not read
                head = self.store.change_head()
                with svc._lock:
                    idx = self._current(key)
                    if idx is not None:
                        idx.reconcile(self.store)
                self.cursor = head
                return applied
            if not changes:
                return applied
            deleted = {label for _, label, op in changes if op == "delete"}
            stored = sorted({label for _, label, op in changes if op == "vector"} - deleted)
            fetched = list(self.store.iter_vectors(key, stored)) if stored else []
            with svc._lock:
                idx = self._current(key)
                if idx is None:  # replaced for another key meanwhile: the next round rebuilds
                    self.cursor = None
                    return applied
                got: set[int] = set()
                for labels, vecs in fetched:
                    idx.add(labels, vecs)
                    got.update(labels)
                idx.remove(deleted | (set(stored) - got))  # gone, or now embedded with another model
            self.cursor = changes[-1][0]
            applied += len(changes)
            self.applied += len(changes)
        return applied

    def _current(self, key: ModelKey) -> MemoryIndex | None:
        idx = self.service._index
        return idx if idx is not None and idx.key == key else None

    def _build(self, key: ModelKey) -> None:
        svc = self.service
        t0 = time.perf_counter()
        spec = svc.embedder_spec
        remembered = self.store.get_state("embedder")  # what the journal's last backfill embedded with
        if spec is not None and remembered is not None and spec.to_dict() != remembered:
            log.warning("memory.embedder here is %s but the journal's last backfill used %s: daemons on one "
                        "journal with different embedders re-embed each other's items (docs/ha.md)",
                        spec.to_dict(), remembered)
        head = self.store.change_head()
        idx, how = MemoryIndex.load(svc.index_path, key, svc.index_params)
        if idx is None and self.store.embedded_count(key) > IN_PROCESS_BUILD_MAX:
            why = self._build_in_child()
            idx, _ = MemoryIndex.load(svc.index_path, key, svc.index_params)
            if idx is not None:
                how = f"rebuilt in a child process ({how})"
            else:
                log.warning("memory index not built in a child process (%s): building it here", why)
        if idx is not None:
            idx.reconcile(self.store)
            how = how if how and how.startswith("rebuilt") else "loaded"
        else:
            idx = MemoryIndex(svc.index_path, key, svc.index_params)
            idx.rebuild(self.store)
            how = f"rebuilt ({how})"
        with svc._exclusive():
            svc._index = idx
            svc._index_reason = None
            if idx.dirty:
                svc._save_index()
        self.cursor, self.key = head, key
        self.builds += 1
        self.ready.set()
        log.info("memory index %s from the journal: %d item(s) in %.0f ms", how, idx.count,
                 (time.perf_counter() - t0) * 1000)

    def _build_in_child(self) -> str | None:
        from palyra_ops.memory.backfill_process import IndexBuildChild

        child = self._child = IndexBuildChild(self.service)
        if self._stop.is_set():
            return "stopping"
        try:
            return child.run()
        finally:
            self._child = None

    def close(self) -> None:
        self._stop.set()
        child = self._child
        if child is not None:
            child.stop()
        self._wake.set()
        self._thread.join(timeout=5)
