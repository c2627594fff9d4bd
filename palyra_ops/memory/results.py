"""What `MemoryService` answers: items, pages of items and search results, as JSON-ready records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from palyra_ops.clock import rfc3339
from palyra_ops.errors import PalyraError
from palyra_ops.journal.memory import MemoryRow, ModelKey


@dataclass(frozen=True)
class MemoryItem:
    id: str
    routine_id: str | None
    run_id: str | None
    source: str
    text: str
    created_at_ms: int
    expires_at_ms: int | None
    bytes: int
    embedding: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: MemoryRow) -> MemoryItem:
        emb = None
        if row.embedding_model is not None:
            emb = {
                "model": row.embedding_model,
                "dim": row.embedding_dim,
                "version": row.embedding_version,
                "embedded_at_ms": row.embedded_at_ms,
            }
        return cls(
            id=row.id,
            routine_id=row.routine_id,
            run_id=row.run_id,
            source=row.source,
            text=row.text,
            created_at_ms=row.created_at_ms,
            expires_at_ms=row.expires_at_ms,
            bytes=row.bytes,
            embedding=emb,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "routine_id": self.routine_id,
            "run_id": self.run_id,
            "source": self.source,
            "text": self.text,
            "created_at": rfc3339(self.created_at_ms),
            "expires_at": rfc3339(self.expires_at_ms),
            "bytes": self.bytes,
            "embedding": self.embedding,
        }


@dataclass(frozen=True)
class ItemPage:
    items: list[MemoryItem]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"items": [i.to_json() for i in self.items], "next_cursor": self.next_cursor}


@dataclass(frozen=True)
class SearchHit:
    score: float
    item: MemoryItem

    def to_json(self) -> dict[str, Any]:
        return {"score": round(self.score, 6), **self.item.to_json()}


@dataclass(frozen=True)
class SearchResult:
    query: str
    model: ModelKey
    method: str  # "hnsw" or "exact"
    hits: list[SearchHit]
    pending: int  # items not yet embedded with this model (not searchable until backfill)
    took_ms: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "model": self.model.to_json(),
            "method": self.method,
            "pending": self.pending,
            "took_ms": round(self.took_ms, 3),
            "notes": self.notes,
            "results": [h.to_json() for h in self.hits],
        }


def _encode_cursor(row: MemoryRow) -> str:
    return f"{row.created_at_ms}.{row.label}"


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        a, b = cursor.split(".")
        return int(a), int(b)
    except ValueError:
        raise PalyraError(f"invalid cursor {cursor!r}") from None
