"""The hnswlib index beside the journal, treated as a verified, rebuildable cache.

Files: `<journal>.memory.hnsw` (hnswlib's own format) and `<journal>.memory.hnsw.json`, a sidecar with
the model key, the index parameters, the live count, a random generation and the SHA-256 of the index
file. The sidecar is written after the index (both atomically via rename), so any torn write, bit rot
or foreign file shows up as a checksum mismatch and the index is rebuilt from the vectors stored in
the journal instead of being handed to hnswlib's loader, which trusts its input.

Labels are the journal's AUTOINCREMENT item labels and are never reused, so reconciling an index with
the journal is a set difference: labels the journal no longer has are marked deleted, embedded labels
the index lacks are added from their stored vectors. Deleted slots are reused by later inserts
(`allow_replace_deleted`), so retention churn does not grow the file without bound.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hnswlib
import numpy as np

from palyra_ops.fsmodes import private_file, write_private
from palyra_ops.journal.memory import MemoryStore, ModelKey

if TYPE_CHECKING:
    from palyra_ops.journal.postgres_memory import PgMemoryStore

FORMAT = 1


def index_path_for(journal_path: Path) -> Path:
    return Path(str(journal_path) + ".memory.hnsw")


def sidecar_path_for(index_path: Path) -> Path:
    return Path(str(index_path) + ".json")


@dataclass(frozen=True)
class IndexParams:
    """HNSW parameters; the defaults reach recall@10 >= 0.95 at 100k items (bench/bench_memory.py)."""

    M: int = 16
    ef_construction: int = 200
    ef_search: int = 256
    initial_capacity: int = 1024
    num_threads: int = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_sidecar(index_path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(sidecar_path_for(index_path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class MemoryIndex:
    """One in-memory hnswlib index for one model key, with its on-disk persistence.

    Not thread-safe by itself: the service serialises every call under its lock.
    """

    def __init__(self, path: Path, key: ModelKey, params: IndexParams | None = None) -> None:
        self.path = path
        self.key = key
        self.params = params or IndexParams()
        self._index = self._new(self.params.initial_capacity)
        self.live: set[int] = set()
        #: generation of the file this index was loaded from or last saved as (None: never on disk)
        self.generation: str | None = None
        self.dirty = False

    # -- construction -------------------------------------------------------------------------

    def _new(self, capacity: int) -> hnswlib.Index:
        idx = hnswlib.Index(space="cosine", dim=self.key.dim)
        idx.init_index(
            max_elements=max(capacity, 16),
            M=self.params.M,
            ef_construction=self.params.ef_construction,
            random_seed=100,
            allow_replace_deleted=True,
        )
        idx.set_num_threads(self.params.num_threads)
        return idx

    @classmethod
    def verify_file(cls, path: Path, key: ModelKey) -> tuple[dict[str, Any] | None, str | None]:
        """(sidecar, None) when the file on disk is a sound index for `key`, else (None, reason)."""
        if not path.exists():
            return None, "missing"
        side = read_sidecar(path)
        if side is None:
            return None, "corrupt: sidecar missing or unreadable"
        if side.get("format") != FORMAT:
            return None, f"corrupt: unknown sidecar format {side.get('format')!r}"
        if side.get("dim") != key.dim:
            return None, f"dimension mismatch: index has {side.get('dim')}, embedder makes {key.dim}"
        if side.get("model") != key.model or side.get("version") != key.version:
            return None, (
                f"model mismatch: index has {side.get('model')}@{side.get('version')}, "
                f"embedder is {key.model}@{key.version}"
            )
        try:
            size = path.stat().st_size
        except OSError as exc:
            return None, f"corrupt: {exc}"
        if size != side.get("size") or _sha256(path) != side.get("sha256"):
            return None, "corrupt: checksum mismatch"
        return side, None

    @classmethod
    def load(cls, path: Path, key: ModelKey, params: IndexParams | None = None) -> tuple[MemoryIndex | None, str | None]:
        """Load a verified index file; (None, reason) when it must be rebuilt."""
        side, reason = cls.verify_file(path, key)
        if side is None:
            return None, reason
        self = cls(path, key, params)
        idx = hnswlib.Index(space="cosine", dim=key.dim)
        try:
            idx.load_index(str(path), max_elements=0, allow_replace_deleted=True)
        except (RuntimeError, ValueError, MemoryError) as exc:
            return None, f"corrupt: {exc}"
        idx.set_num_threads(self.params.num_threads)
        self._index = idx
        self.live = set(int(x) for x in idx.get_ids_list())  # refined by reconcile()
        self.generation = side.get("generation")
        return self, None

    # -- reconciliation -----------------------------------------------------------------------

    def reconcile(self, store: MemoryStore | PgMemoryStore) -> tuple[int, int]:
        """Make the index hold exactly the journal's vectors for this key; returns (added, removed)."""
        want = set(store.embedded_labels(self.key))
        extra = self.live - want
        removed = self.remove(extra)
        missing = sorted(want - self.live)
        added = 0
        for labels, vecs in store.iter_vectors(self.key, missing):
            added += self.add(labels, vecs)
        return added, removed

    def rebuild(self, store: MemoryStore | PgMemoryStore) -> int:
        """Fresh index from every stored vector of this key (no embedder call)."""
        want = store.embedded_labels(self.key)
        self._index = self._new(max(self.params.initial_capacity, int(len(want) * 1.25)))
        self.live = set()
        added = 0
        for labels, vecs in store.iter_vectors(self.key):
            added += self.add(labels, vecs)
        self.dirty = True
        self.generation = None
        return added

    # -- mutation -----------------------------------------------------------------------------

    def add(self, labels: list[int], vectors: np.ndarray) -> int:
        """Add vectors for labels not yet in the index (a present label is never re-added: hnswlib
        would create a second node for it when reusing a deleted slot)."""
        pick = [i for i, label in enumerate(labels) if label not in self.live]
        if not pick:
            return 0
        new_labels = np.asarray([labels[i] for i in pick], dtype=np.uint64)
        vecs = np.ascontiguousarray(vectors[pick], dtype=np.float32)
        need = self._index.element_count + len(pick)
        cap = self._index.get_max_elements()
        if need > cap:
            self._index.resize_index(max(need, cap * 2))
        self._index.add_items(vecs, new_labels, num_threads=self.params.num_threads, replace_deleted=True)
        self.live.update(int(x) for x in new_labels)
        self.dirty = True
        return len(pick)

    def remove(self, labels: set[int] | list[int]) -> int:
        removed = 0
        for label in labels:
            try:
                self._index.mark_deleted(int(label))
                removed += 1
            except RuntimeError:
                pass  # never added, or already deleted: the goal is reached either way
            self.live.discard(int(label))
        if removed:
            self.dirty = True
        return removed

    # -- queries ------------------------------------------------------------------------------

    def query(self, vec: np.ndarray, k: int, allowed: set[int] | None = None) -> list[tuple[int, float]] | None:
        """Nearest labels with cosine similarity; None when hnswlib cannot fill k (caller goes exact)."""
        n = len(self.live) if allowed is None else len(allowed & self.live)
        k = min(k, n)
        if k <= 0:
            return []
        self._index.set_ef(max(self.params.ef_search, k))
        try:
            labels, dists = self._index.knn_query(
                np.asarray(vec, dtype=np.float32).reshape(1, -1),
                k=k,
                num_threads=1,
                filter=allowed.__contains__ if allowed is not None else None,
            )
        except RuntimeError:
            return None
        return [(int(label), float(1.0 - d)) for label, d in zip(labels[0], dists[0], strict=True)]

    @property
    def count(self) -> int:
        return len(self.live)

    @property
    def element_slots(self) -> int:
        return int(self._index.element_count)

    # -- persistence --------------------------------------------------------------------------

    def save(self, now_ms: int) -> None:
        """Write index then sidecar, each via temp file + fsync + rename."""
        tmp = Path(f"{self.path}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            private_file(tmp)  # hnswlib truncates and keeps the mode: owner-only whatever the umask
            self._index.save_index(str(tmp))
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            digest = _sha256(tmp)
            size = tmp.stat().st_size
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        generation = secrets.token_hex(8)
        side = {
            "format": FORMAT,
            **self.key.to_json(),
            "space": "cosine",
            "M": self.params.M,
            "ef_construction": self.params.ef_construction,
            "count": len(self.live),
            "elements": int(self._index.element_count),
            "max_elements": int(self._index.get_max_elements()),
            "size": size,
            "sha256": digest,
            "generation": generation,
            "saved_at_ms": now_ms,
        }
        write_private(sidecar_path_for(self.path), json.dumps(side, indent=2))
        self.generation = generation
        self.dirty = False
