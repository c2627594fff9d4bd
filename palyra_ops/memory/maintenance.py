"""Memory maintenance configuration, the VACUUM decision, and the results the daemon records.

The daemon runs `MemoryService.maintain()` every `maintenance_interval_ms` and
`MemoryService.backfill()` every `backfill_interval_ms`, each via `asyncio.to_thread`; both return a
result dataclass whose `to_event()` gives the system event (`memory.maintenance.run`,
`memory.backfill.run`) to record, so what retention deleted and what VACUUM freed is on the record.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from palyra_ops.durations import format_duration_ms, parse_duration_ms
from palyra_ops.errors import PalyraError
from palyra_ops.journal.memory import MemoryStore, db_file_bytes
from palyra_ops.memory.embedders import EmbedderSpec

MAINTENANCE_EVENT = "memory.maintenance.run"
BACKFILL_EVENT = "memory.backfill.run"

_SIZE = re.compile(r"[ \t]*([0-9]{1,15})[ \t]*(B|KB|KiB|MB|MiB|GB|GiB)?[ \t]*", re.IGNORECASE | re.ASCII)  # fullmatch
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size_bytes(value: int | str) -> int:
    """`1048576`, `512KiB`, `256MB`, `1GiB` -> bytes; raises PalyraError on anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.fullmatch(value)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    raise PalyraError(f"invalid size {value!r}: expected bytes or e.g. 512KiB, 256MB, 1GiB")


@dataclass(frozen=True)
class RetentionConfig:
    """Limits applied oldest first; None disables a limit. `bytes` counts item text (UTF-8)."""

    max_age_ms: int | None = None
    max_items: int | None = None
    max_bytes: int | None = None
    #: TTL given to items added without one; None keeps them until another limit removes them
    default_ttl_ms: int | None = None


@dataclass(frozen=True)
class MemoryConfig:
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    maintenance_interval_ms: int = 5 * 60_000
    backfill_interval_ms: int = 10 * 60_000
    batch_size: int = 64
    #: VACUUM only when at least this much of the file is free pages, and at least this fraction
    vacuum_min_free_bytes: int = 1024 * 1024
    vacuum_min_free_ratio: float = 0.10
    embedder: EmbedderSpec = field(default_factory=EmbedderSpec)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MemoryConfig:
        """Parse the daemon config's `memory:` mapping; durations and sizes as strings or numbers.

        Example::

            memory:
              retention: {max_age: 30d, max_items: 100000, max_bytes: 256MiB, default_ttl: null}
              intervals: {maintenance: 5m, backfill: 10m}
              batch: 64
              vacuum: {min_free_bytes: 1MiB, min_free_ratio: 0.1}
              embedder: {kind: openai, model: text-embedding-3-small, base_url: https://api.openai.com/v1}
        """
        data = data or {}
        if not isinstance(data, dict):
            raise PalyraError("memory: must be a mapping")
        known = {"retention", "intervals", "batch", "vacuum", "embedder"}
        _no_unknown("memory", data, known)
        ret = data.get("retention") or {}
        if not isinstance(ret, dict):
            raise PalyraError("memory.retention: must be a mapping")
        _no_unknown("memory.retention", ret, {"max_age", "max_items", "max_bytes", "default_ttl"})
        max_items = ret.get("max_items")
        if max_items is not None and (not isinstance(max_items, int) or isinstance(max_items, bool) or max_items < 0):
            raise PalyraError(f"memory.retention.max_items must be a non-negative integer, got {max_items!r}")
        retention = RetentionConfig(
            max_age_ms=_duration("memory.retention.max_age", ret.get("max_age")),
            max_items=max_items,
            max_bytes=_size("memory.retention.max_bytes", ret.get("max_bytes")),
            default_ttl_ms=_duration("memory.retention.default_ttl", ret.get("default_ttl")),
        )
        vac = data.get("vacuum") or {}
        if not isinstance(vac, dict):
            raise PalyraError("memory.vacuum: must be a mapping")
        _no_unknown("memory.vacuum", vac, {"min_free_bytes", "min_free_ratio"})
        ratio = vac.get("min_free_ratio", 0.10)
        if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
            raise PalyraError(f"memory.vacuum.min_free_ratio must be between 0 and 1, got {ratio!r}")
        batch = data.get("batch", 64)
        if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 2048:
            raise PalyraError(f"memory.batch must be an integer between 1 and 2048, got {batch!r}")
        iv = data.get("intervals") or {}
        if not isinstance(iv, dict):
            raise PalyraError("memory.intervals: must be a mapping")
        _no_unknown("memory.intervals", iv, {"maintenance", "backfill"})
        return cls(
            retention=retention,
            maintenance_interval_ms=_duration("memory.intervals.maintenance", iv.get("maintenance", "5m"), positive=True) or 300_000,
            backfill_interval_ms=_duration("memory.intervals.backfill", iv.get("backfill", "10m"), positive=True) or 600_000,
            batch_size=batch,
            vacuum_min_free_bytes=_size("memory.vacuum.min_free_bytes", vac.get("min_free_bytes", 1024 * 1024)) or 0,
            vacuum_min_free_ratio=float(ratio),
            embedder=EmbedderSpec.from_dict(data.get("embedder") or {}),
        )


def _no_unknown(where: str, data: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise PalyraError(f"{where}: unknown field(s) {', '.join(unknown)} (expected {', '.join(sorted(known))})")


def _duration(where: str, value: Any, positive: bool = False) -> int | None:
    if value is None:
        return None
    try:
        ms = parse_duration_ms(value)
    except ValueError as exc:
        raise PalyraError(f"{where}: {exc}") from None
    if positive and ms <= 0:
        raise PalyraError(f"{where}: must be longer than 0s")
    return ms


def _size(where: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        return parse_size_bytes(value)
    except PalyraError as exc:
        raise PalyraError(f"{where}: {exc.message}") from None


@dataclass
class VacuumResult:
    ran: bool
    reason: str
    freelist_bytes: int
    file_bytes_before: int
    file_bytes_after: int
    checkpoint_busy: bool = False

    @property
    def freed_bytes(self) -> int:
        return max(0, self.file_bytes_before - self.file_bytes_after)


def vacuum_if_worthwhile(
    store: MemoryStore, journal_path: Path, *, min_free_bytes: int, min_free_ratio: float, force: bool = False
) -> VacuumResult:
    """VACUUM only when free pages are both many and a real share of the file.

    VACUUM rewrites the whole journal and holds the write lock meanwhile, so running it every five
    minutes for a few freed pages would cost more than it returns; SQLite reuses free pages anyway.
    """
    fs = store.file_stats()
    free = fs.freelist_count * fs.page_size
    ratio = fs.freelist_count / fs.page_count if fs.page_count else 0.0
    before = db_file_bytes(journal_path)
    if not force and (free < min_free_bytes or ratio < min_free_ratio):
        reason = (
            f"not worthwhile: {free} free bytes ({ratio:.1%} of the file); needs >= {min_free_bytes} "
            f"bytes and >= {min_free_ratio:.0%}"
        )
        return VacuumResult(False, reason, free, before, before)
    busy, _, _ = store.vacuum()
    after = db_file_bytes(journal_path)
    reason = "forced" if force else f"{free} free bytes ({ratio:.1%} of the file)"
    return VacuumResult(True, reason, free, before, after, checkpoint_busy=bool(busy))


@dataclass
class MaintenanceResult:
    started_at_ms: int
    duration_ms: int = 0
    deleted_ttl: int = 0
    deleted_max_age: int = 0
    deleted_max_items: int = 0
    deleted_max_bytes: int = 0
    freed_text_bytes: int = 0
    index_removed: int = 0
    vacuum: VacuumResult | None = None
    optimized: bool = False
    error: str | None = None

    @property
    def deleted(self) -> int:
        return self.deleted_ttl + self.deleted_max_age + self.deleted_max_items + self.deleted_max_bytes

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["deleted"] = self.deleted
        if self.vacuum is not None:
            d["vacuum"]["freed_bytes"] = self.vacuum.freed_bytes
        d["duration"] = format_duration_ms(self.duration_ms)
        return d

    def to_event(self) -> tuple[str, dict[str, Any]]:
        return MAINTENANCE_EVENT, self.to_json()


@dataclass
class BackfillResult:
    started_at_ms: int
    model: dict[str, Any] = field(default_factory=dict)
    duration_ms: int = 0
    embedded: int = 0
    batches: int = 0
    skipped_deleted: int = 0
    pending_after: int = 0
    index_action: str = "none"
    index_count: int = 0
    index_saved: bool = False
    error: str | None = None

    @property
    def items_per_s(self) -> float:
        return self.embedded / (self.duration_ms / 1000) if self.duration_ms else 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["items_per_s"] = round(self.items_per_s, 1)
        d["duration"] = format_duration_ms(self.duration_ms)
        return d

    def to_event(self) -> tuple[str, dict[str, Any]]:
        return BACKFILL_EVENT, self.to_json()
