"""Memory items, their retention and their embeddings index (SPEC §9).

Entry points for other areas: `MemoryService` (add_item / list / search / backfill / maintain /
stats, plus `a*` wrappers that run off the event loop) and `MemoryConfig.from_dict` for the
daemon's config file.
"""

from palyra_ops.memory.embedders import EmbedderSpec, HashingEmbedder, OpenAIEmbedder
from palyra_ops.memory.maintenance import (
    BACKFILL_EVENT,
    MAINTENANCE_EVENT,
    BackfillResult,
    MaintenanceResult,
    MemoryConfig,
    RetentionConfig,
)
from palyra_ops.memory.service import MemoryItem, MemoryService, SearchHit, SearchResult

__all__ = [
    "BACKFILL_EVENT",
    "MAINTENANCE_EVENT",
    "BackfillResult",
    "EmbedderSpec",
    "HashingEmbedder",
    "MaintenanceResult",
    "MemoryConfig",
    "MemoryItem",
    "MemoryService",
    "OpenAIEmbedder",
    "RetentionConfig",
    "SearchHit",
    "SearchResult",
]
