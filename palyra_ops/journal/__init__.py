"""The journal: durable desired state, job state and run history.

`open_journal` is the seam: today it returns the SQLite implementation; a PostgreSQL backend for
several daemons on one journal would be chosen here by URL scheme without touching callers.
"""

from __future__ import annotations

from pathlib import Path

from palyra_ops.clock import Clock
from palyra_ops.journal.sqlite import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Snapshot,
    SQLiteJournal,
    StoredResource,
    new_id,
)

Journal = SQLiteJournal

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "Journal",
    "Snapshot",
    "SQLiteJournal",
    "StoredResource",
    "new_id",
    "open_journal",
    "read_snapshot",
]


def open_journal(path: Path | str, *, clock: Clock | None = None) -> SQLiteJournal:
    """Open (creating and migrating as needed) the journal at `path`."""
    return SQLiteJournal(Path(path), clock=clock)


def read_snapshot(path: Path | str) -> Snapshot:
    """A snapshot without creating anything: a missing journal reads as empty with no lineage.

    Plan must be read-only, so planning against a journal that does not exist yet must not create it.
    """
    p = Path(path)
    if not p.exists():
        return Snapshot(lineage=None, serial=0, resources={}, jobs={})
    with open_journal(p) as j:
        return j.snapshot()
